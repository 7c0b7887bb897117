//! How many connections may be between accept and `Welcome` at once (as sshd's
//! MaxStartups and PerSourceMaxStartups): in all, and per source (an IP address on TLS, a
//! uid on the local socket). Each listener has a budget of its own, so idle connections
//! from one network can use up neither the local socket's nor another listener's, and one
//! source can use up only its share of its listener's. I/O-free; a [`Slot`] gives its place
//! back when dropped (after `Welcome`, or when the connection ends before).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Where a connection comes from, as far as its budget is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A TLS peer's address.
    Ip(IpAddr),
    /// A local peer's uid (SO_PEERCRED).
    Uid(u32),
    /// A connection handed over in-process, by its principal.
    Principal(String),
}

pub struct Budget<K: Hash + Eq + Clone> {
    /// What the budget is for, in log lines ("the local socket", "TLS on ADDR").
    pub name: String,
    total: usize,
    per_source: usize,
    used: Mutex<Used<K>>,
}

struct Used<K> {
    all: usize,
    by_source: HashMap<K, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener's budget is used up.
    Full(usize),
    /// This source's share is used up.
    SourceFull(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full(n) => write!(f, "{n} others have not finished their handshake"),
            Refused::SourceFull(n) => write!(
                f,
                "{n} others from the same source have not finished their handshake"
            ),
        }
    }
}

/// A place in a budget, held until the connection has been welcomed.
pub struct Slot<K: Hash + Eq + Clone> {
    budget: Arc<Budget<K>>,
    source: K,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    pub fn new(name: impl Into<String>, total: usize, per_source: usize) -> Arc<Budget<K>> {
        Arc::new(Budget {
            name: name.into(),
            total,
            per_source: per_source.min(total),
            used: Mutex::new(Used {
                all: 0,
                by_source: HashMap::new(),
            }),
        })
    }

    /// A place for a connection from `source`, or why there is none.
    pub fn try_admit(self: &Arc<Self>, source: K) -> Result<Slot<K>, Refused> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.all >= self.total {
            return Err(Refused::Full(self.total));
        }
        let mine = used.by_source.entry(source.clone()).or_insert(0);
        if *mine >= self.per_source {
            return Err(Refused::SourceFull(self.per_source));
        }
        *mine += 1;
        used.all += 1;
        Ok(Slot {
            budget: self.clone(),
            source,
        })
    }

    /// Places taken now.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).all
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        used.all = used.all.saturating_sub(1);
        if let Some(n) = used.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                used.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_takes_only_its_share() {
        let b = Budget::new("test", 4, 2);
        let a1 = b.try_admit("a").expect("a1");
        let _a2 = b.try_admit("a").expect("a2");
        assert_eq!(b.try_admit("a").err(), Some(Refused::SourceFull(2)));
        let _b1 = b.try_admit("b").expect("another source gets in");
        drop(a1);
        let _a3 = b.try_admit("a").expect("a place given back");
    }

    #[test]
    fn the_total_bounds_every_source() {
        let b = Budget::new("test", 3, 2);
        let held: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|s| b.try_admit(*s).expect("room"))
            .collect();
        assert_eq!(b.try_admit("d").err(), Some(Refused::Full(3)));
        assert_eq!(b.in_use(), 3);
        drop(held);
        assert_eq!(b.in_use(), 0);
        assert!(
            b.used.lock().unwrap().by_source.is_empty(),
            "nothing left behind"
        );
    }
}

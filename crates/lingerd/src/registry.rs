//! Every live session of this daemon, and a short memory of ended ones so a client asking
//! about a session that just closed learns why.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use linger_proto::types::SessionInfo;
use uuid::Uuid;

use crate::session::Session;

/// Ended sessions remembered (per daemon), oldest forgotten first.
const TOMBSTONES: usize = 1024;

#[derive(Default)]
struct Inner {
    live: HashMap<Uuid, Arc<Session>>,
    /// `live` by what `reserve` asks of it, so that a creation among thousands of sessions
    /// does not compare itself with every one of them.
    index: Index,
    /// Sessions being created, so that concurrent `new`s can take neither one name nor
    /// more than a configuration's limit together.
    reserved: Vec<Reserved>,
    ended: VecDeque<(String, SessionInfo)>,
}

/// Live sessions by owner, then name; by owner, then configuration; by uid, then owner.
/// Closed sessions stay until retired, so lookups still check `is_closed`.
#[derive(Default)]
struct Index {
    names: HashMap<String, HashMap<String, Vec<Arc<Session>>>>,
    configurations: HashMap<String, HashMap<String, HashMap<Uuid, Arc<Session>>>>,
    uids: HashMap<u32, HashMap<String, HashSet<Uuid>>>,
}

impl Index {
    fn add(&mut self, s: &Arc<Session>) {
        let m = &s.meta;
        self.names
            .entry(m.owner.clone())
            .or_default()
            .entry(m.name.clone())
            .or_default()
            .push(s.clone());
        self.configurations
            .entry(m.owner.clone())
            .or_default()
            .entry(m.configuration_name.clone())
            .or_default()
            .insert(s.id(), s.clone());
        self.uids
            .entry(m.owner_uid)
            .or_default()
            .entry(m.owner.clone())
            .or_default()
            .insert(s.id());
    }

    fn remove(&mut self, s: &Session) {
        let (m, id) = (&s.meta, s.id());
        if let Some(names) = self.names.get_mut(&m.owner) {
            if let Some(v) = names.get_mut(&m.name) {
                v.retain(|x| x.id() != id);
                if v.is_empty() {
                    names.remove(&m.name);
                }
            }
            if names.is_empty() {
                self.names.remove(&m.owner);
            }
        }
        if let Some(configurations) = self.configurations.get_mut(&m.owner) {
            if let Some(c) = configurations.get_mut(&m.configuration_name) {
                c.remove(&id);
                if c.is_empty() {
                    configurations.remove(&m.configuration_name);
                }
            }
            if configurations.is_empty() {
                self.configurations.remove(&m.owner);
            }
        }
        if let Some(owners) = self.uids.get_mut(&m.owner_uid) {
            if let Some(ids) = owners.get_mut(&m.owner) {
                ids.remove(&id);
                if ids.is_empty() {
                    owners.remove(&m.owner);
                }
            }
            if owners.is_empty() {
                self.uids.remove(&m.owner_uid);
            }
        }
    }

    fn name_taken(&self, owner: &str, name: &str) -> bool {
        self.names
            .get(owner)
            .and_then(|n| n.get(name))
            .is_some_and(|v| v.iter().any(|s| !s.is_closed()))
    }

    fn count(&self, owner: &str, configuration: &str) -> usize {
        self.configurations
            .get(owner)
            .and_then(|c| c.get(configuration))
            .map_or(0, |c| c.values().filter(|s| !s.is_closed()).count())
    }
}

impl Inner {
    fn add(&mut self, session: Arc<Session>) {
        if let Some(old) = self.live.insert(session.id(), session.clone()) {
            self.index.remove(&old);
        }
        self.index.add(&session);
    }
}

#[derive(Clone, PartialEq, Eq)]
struct Reserved {
    owner: String,
    name: String,
    configuration: String,
    /// The uid its session will run as, when principals must not share one.
    uid: Option<u32>,
}

/// Why a session cannot be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NameTaken,
    /// The owner already has (or is creating) this many sessions of the configuration.
    Limit(usize),
    /// Another owner's session runs (or is being made to run) as the same uid.
    UidInUse,
}

/// A session being created: its name is taken and it counts against its configuration's
/// limit until it is [`Reservation::fill`]ed or dropped.
pub struct Reservation<'r> {
    registry: &'r Registry,
    what: Reserved,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves session `name` of `configuration` for `owner`, who may have at most
    /// `limit` live sessions of it. Sessions being created count, and the check and the
    /// reservation are one step under the registry's lock, so concurrent requests cannot
    /// pass the limit together. With `uid`, no other owner's live or reserved session may
    /// run as that uid.
    pub fn reserve(
        &self,
        owner: &str,
        name: &str,
        configuration: &str,
        limit: usize,
        uid: Option<u32>,
    ) -> Result<Reservation<'_>, Refusal> {
        let mut g = self.lock();
        if let Some(uid) = uid {
            let others_live = g.index.uids.get(&uid).is_some_and(|owners| {
                owners
                    .iter()
                    .filter(|(o, _)| o.as_str() != owner)
                    .flat_map(|(_, ids)| ids)
                    .any(|id| g.live.get(id).is_some_and(|s| !s.is_closed()))
            });
            let others_reserved = g
                .reserved
                .iter()
                .any(|r| r.owner != owner && r.uid == Some(uid));
            if others_live || others_reserved {
                return Err(Refusal::UidInUse);
            }
        }
        if g.index.name_taken(owner, name)
            || g.reserved
                .iter()
                .any(|r| r.owner == owner && r.name == name)
        {
            return Err(Refusal::NameTaken);
        }
        let of_configuration = g.index.count(owner, configuration)
            + g.reserved
                .iter()
                .filter(|r| r.owner == owner && r.configuration == configuration)
                .count();
        if of_configuration >= limit {
            return Err(Refusal::Limit(of_configuration));
        }
        let what = Reserved {
            owner: owner.to_string(),
            name: name.to_string(),
            configuration: configuration.to_string(),
            uid,
        };
        g.reserved.push(what.clone());
        Ok(Reservation {
            registry: self,
            what,
        })
    }

    pub fn insert(&self, session: Arc<Session>) {
        self.lock().add(session);
    }

    fn unreserve(g: &mut Inner, what: &Reserved) {
        if let Some(i) = g.reserved.iter().position(|r| r == what) {
            g.reserved.remove(i);
        }
    }

    /// The live session `id`, if `owner` owns it. Another owner's session is invisible.
    pub fn get(&self, owner: &str, id: Uuid) -> Option<Arc<Session>> {
        self.lock()
            .live
            .get(&id)
            .filter(|s| s.meta.owner == owner)
            .cloned()
    }

    pub fn owned_by(&self, owner: &str) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self
            .lock()
            .live
            .values()
            .filter(|s| s.meta.owner == owner)
            .cloned()
            .collect();
        v.sort_by_key(|s| s.meta.created_at_ms);
        v
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.lock().live.values().cloned().collect()
    }

    /// The record of an ended session `id` of `owner`.
    pub fn ended(&self, owner: &str, id: Uuid) -> Option<SessionInfo> {
        self.lock()
            .ended
            .iter()
            .find(|(o, i)| o == owner && i.instance_id == id)
            .map(|(_, i)| i.clone())
    }

    /// Reservations being held (for tests).
    #[cfg(test)]
    fn reserved(&self) -> usize {
        self.lock().reserved.len()
    }

    /// Moves a session that has ended from the live set to the remembered ones.
    pub fn retire(&self, id: Uuid) {
        let mut g = self.lock();
        if let Some(s) = g.live.remove(&id) {
            g.index.remove(&s);
            let info = s.info(Uuid::nil());
            g.ended.push_back((s.meta.owner.clone(), info));
            while g.ended.len() > TOMBSTONES {
                g.ended.pop_front();
            }
        }
    }
}

impl Reservation<'_> {
    /// The session is made: it takes the reservation's place, in one step.
    pub fn fill(self, session: Arc<Session>) {
        let mut g = self.registry.lock();
        Registry::unreserve(&mut g, &self.what);
        g.add(session);
        drop(g);
        std::mem::forget(self);
    }
}

impl Drop for Reservation<'_> {
    /// Creation failed: the name and the place are free again.
    fn drop(&mut self) {
        Registry::unreserve(&mut self.registry.lock(), &self.what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_against_the_limit_and_free_their_place() {
        let r = Registry::default();
        let a = r.reserve("alice", "a", "small", 2, None).expect("first");
        let _b = r.reserve("alice", "b", "small", 2, None).expect("second");
        assert_eq!(
            r.reserve("alice", "c", "small", 2, None).err(),
            Some(Refusal::Limit(2))
        );
        assert_eq!(
            r.reserve("alice", "a", "other", 9, None).err(),
            Some(Refusal::NameTaken)
        );
        // Another owner, another configuration: their own counts.
        let _c = r.reserve("bob", "c", "small", 2, None).expect("bob");
        let _d = r
            .reserve("alice", "d", "other", 2, None)
            .expect("other configuration");
        drop(a);
        let _e = r
            .reserve("alice", "e", "small", 2, None)
            .expect("a place freed");
        assert_eq!(r.reserved(), 4);
    }

    #[test]
    fn two_owners_never_reserve_one_uid() {
        let r = Registry::default();
        let _a = r
            .reserve("alice", "a", "svc", 9, Some(1500))
            .expect("alice");
        let _a2 = r
            .reserve("alice", "a2", "svc", 9, Some(1500))
            .expect("alice again");
        assert_eq!(
            r.reserve("bob", "b", "svc", 9, Some(1500)).err(),
            Some(Refusal::UidInUse)
        );
        let _b = r
            .reserve("bob", "b", "other", 9, Some(1501))
            .expect("bob's own uid");
    }
}

//! Every live session of this daemon, and a short memory of ended ones so a client asking
//! about a session that just closed learns why.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use linger_proto::types::SessionInfo;
use uuid::Uuid;

use crate::session::Session;

/// Ended sessions remembered (per daemon), oldest forgotten first.
const TOMBSTONES: usize = 1024;

#[derive(Default)]
struct Inner {
    live: HashMap<Uuid, Arc<Session>>,
    /// Names being created, per owner, so two concurrent `new`s cannot take one name.
    reserved: Vec<(String, String)>,
    ended: VecDeque<(String, SessionInfo)>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `name` for `owner`, or says it is taken.
    pub fn reserve(&self, owner: &str, name: &str) -> bool {
        let mut g = self.lock();
        let taken =
            g.live.values().any(|s| {
                s.meta.owner == owner && s.meta.name == name && s.closed_reason().is_none()
            }) || g.reserved.iter().any(|(o, n)| o == owner && n == name);
        if !taken {
            g.reserved.push((owner.to_string(), name.to_string()));
        }
        !taken
    }

    pub fn unreserve(&self, owner: &str, name: &str) {
        self.lock()
            .reserved
            .retain(|(o, n)| !(o == owner && n == name));
    }

    pub fn insert(&self, session: Arc<Session>) {
        self.lock().live.insert(session.id(), session);
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

    /// Moves a session that has ended from the live set to the remembered ones.
    pub fn retire(&self, id: Uuid) {
        let mut g = self.lock();
        if let Some(s) = g.live.remove(&id) {
            let info = s.info(Uuid::nil());
            g.ended.push_back((s.meta.owner.clone(), info));
            while g.ended.len() > TOMBSTONES {
                g.ended.pop_front();
            }
        }
    }
}

//! The client's registry: the sessions it created or found, under small local Ids handed
//! out in order of first sight. Stored as JSON in the client home and changed only under an
//! exclusive lock, so concurrent CLI invocations of one client agree on Ids.

use std::fs::File;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::home::ClientHome;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u32,
    pub instance_id: Uuid,
    pub name: String,
    /// The computer as the user wrote it (`localhost` for `.`).
    pub computer_name: String,
    pub configuration_name: String,
    pub created_at_ms: i64,
    /// Set once the client has seen the session end.
    #[serde(default)]
    pub closed_reason: Option<String>,
}

/// A job in this client's job table: a command run as a job, or a background job in one
/// of its sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEntry {
    pub id: u32,
    /// `Job<Id>`.
    pub name: String,
    pub job_id: Uuid,
    /// The session it runs in.
    pub instance_id: Uuid,
    pub session_name: String,
    pub computer_name: String,
    pub kind: linger_proto::types::JobKind,
    pub command: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    #[serde(default)]
    last_id: u32,
    #[serde(default)]
    pub entries: Vec<Entry>,
    #[serde(default)]
    last_job_id: u32,
    #[serde(default)]
    pub jobs: Vec<JobEntry>,
}

impl Sessions {
    /// The next local Id (never reused).
    pub fn allocate_id(&mut self) -> u32 {
        self.last_id += 1;
        self.last_id
    }

    pub fn by_instance(&self, id: Uuid) -> Option<&Entry> {
        self.entries.iter().find(|e| e.instance_id == id)
    }

    /// Records a session, keeping its Id if already known; returns its entry.
    pub fn remember(&mut self, entry: Entry) -> Entry {
        let id = entry.instance_id;
        let fallback = entry.clone();
        self.remember_all(vec![entry]);
        self.by_instance(id).cloned().unwrap_or(fallback)
    }

    /// Records many sessions at once (a server's listing of thousands): one pass over the
    /// registry, not one per session. Known ones keep their Ids.
    pub fn remember_all(&mut self, entries: Vec<Entry>) {
        let mut known: std::collections::HashMap<Uuid, usize> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.instance_id, i))
            .collect();
        let mut ids: std::collections::HashSet<u32> = self.entries.iter().map(|e| e.id).collect();
        for mut entry in entries {
            if let Some(&i) = known.get(&entry.instance_id) {
                let k = &mut self.entries[i];
                k.name = entry.name;
                k.configuration_name = entry.configuration_name;
                k.closed_reason = entry.closed_reason;
                continue;
            }
            if entry.id == 0 || ids.contains(&entry.id) {
                entry.id = self.allocate_id();
            } else {
                self.last_id = self.last_id.max(entry.id);
            }
            ids.insert(entry.id);
            known.insert(entry.instance_id, self.entries.len());
            self.entries.push(entry);
        }
    }

    pub fn mark_closed(&mut self, id: Uuid, reason: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.instance_id == id) {
            if e.closed_reason.is_none() {
                e.closed_reason = Some(reason.to_string());
            }
        }
    }

    pub fn forget(&mut self, id: Uuid) {
        self.entries.retain(|e| e.instance_id != id);
        self.jobs.retain(|j| j.instance_id != id);
    }

    /// Forgets session `id` but not its jobs, which then show Stopped ("its session ended")
    /// until `job remove` forgets them.
    pub fn forget_session(&mut self, id: Uuid) {
        self.entries.retain(|e| e.instance_id != id);
    }

    /// `forget_session` for many at once, in one pass.
    pub fn forget_sessions(&mut self, ids: &std::collections::HashSet<Uuid>) {
        self.entries.retain(|e| !ids.contains(&e.instance_id));
    }

    /// Records a job, keeping its Id if already known; returns its entry.
    pub fn remember_job(&mut self, mut job: JobEntry) -> JobEntry {
        if let Some(known) = self.jobs.iter().find(|j| j.job_id == job.job_id) {
            return known.clone();
        }
        self.last_job_id += 1;
        job.id = self.last_job_id;
        if job.name.is_empty() {
            job.name = format!("Job{}", job.id);
        }
        self.jobs.push(job.clone());
        job
    }

    pub fn forget_job(&mut self, job_id: Uuid) {
        self.jobs.retain(|j| j.job_id != job_id);
    }

    /// The job an Id or Name names.
    pub fn select_job(&self, sel: &str) -> Result<JobEntry> {
        let found = match sel.parse::<u32>() {
            Ok(id) => self.jobs.iter().find(|j| j.id == id),
            Err(_) => self
                .jobs
                .iter()
                .find(|j| j.name == sel || j.job_id.to_string() == sel),
        };
        found.cloned().ok_or_else(|| Error::NoJob(sel.to_string()))
    }

    /// Sessions matching one selector: an Id, an InstanceId, or a Name (wildcards allowed).
    pub fn select(&self, sel: &str) -> Result<Vec<Entry>> {
        let found: Vec<Entry> = if let Ok(id) = sel.parse::<u32>() {
            self.entries
                .iter()
                .filter(|e| e.id == id)
                .cloned()
                .collect()
        } else if let Ok(uuid) = Uuid::parse_str(sel) {
            self.entries
                .iter()
                .filter(|e| e.instance_id == uuid)
                .cloned()
                .collect()
        } else {
            let pattern = glob::Pattern::new(sel)
                .map_err(|e| Error::Usage(format!("invalid name pattern '{sel}': {e}")))?;
            self.entries
                .iter()
                .filter(|e| pattern.matches(&e.name))
                .cloned()
                .collect()
        };
        if found.is_empty() {
            return Err(Error::NoMatch(sel.to_string()));
        }
        Ok(found)
    }
}

/// The registry file and its lock.
#[derive(Debug, Clone)]
pub struct Registry {
    home: ClientHome,
    /// The registry as this process last read or wrote it, with the file's identity then:
    /// while the file is the same (every writer replaces it by rename), it is not parsed
    /// again. A client holding thousands of sessions would otherwise parse megabytes per
    /// operation.
    cache: std::sync::Arc<std::sync::Mutex<Option<(Stamp, Sessions)>>>,
}

/// What tells one version of the registry file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(path: &std::path::Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

impl Registry {
    pub fn new(home: ClientHome) -> Self {
        Registry {
            home,
            cache: Default::default(),
        }
    }

    fn cached(&self, stamp: Option<Stamp>) -> Option<Sessions> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match (&*cache, stamp) {
            (Some((was, sessions)), Some(now)) if *was == now => Some(sessions.clone()),
            _ => None,
        }
    }

    fn path(&self) -> PathBuf {
        self.home.registry_file()
    }

    /// Reads the registry (a consistent snapshot).
    pub fn load(&self) -> Result<Sessions> {
        self.update(|_| Ok(()))
    }

    /// Changes the registry under its lock and writes it back atomically.
    pub fn update(&self, f: impl FnOnce(&mut Sessions) -> Result<()>) -> Result<Sessions> {
        self.home.ensure()?;
        let lock_path = self.home.lock_file();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("cannot open {}", lock_path.display()), e))?;
        let _lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| {
            Error::io(format!("cannot lock {}", lock_path.display()), e.into())
        })?;
        let path = self.path();
        let mut sessions: Sessions = match self.cached(Stamp::of(&path)) {
            Some(known) => known,
            None => match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    Error::State(format!(
                        "{} is corrupt ({e}); move it away to start a new registry",
                        path.display()
                    ))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sessions::default(),
                Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
            },
        };
        let before = sessions.clone();
        f(&mut sessions)?;
        // Written only when changed, compact: thousands of sessions are read and parsed by
        // every client operation.
        if sessions != before {
            let after = serde_json::to_vec(&sessions)
                .map_err(|e| Error::State(format!("cannot encode the registry: {e}")))?;
            crate::home::write_private(&path, &after)
                .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        }
        // Still under the lock: nobody can have replaced the file since.
        if let Some(stamp) = Stamp::of(&path) {
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((stamp, sessions.clone()));
        }
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            id: 0,
            instance_id: Uuid::new_v4(),
            name: name.into(),
            computer_name: "localhost".into(),
            configuration_name: "default".into(),
            created_at_ms: 0,
            closed_reason: None,
        }
    }

    /// Two registries on one home stand for two client processes: each sees what the other
    /// wrote, though each keeps the last version it read.
    #[test]
    fn a_cached_registry_sees_what_another_process_wrote() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = ClientHome::at(dir.path());
        let a = Registry::new(home.clone());
        let b = Registry::new(home);
        a.update(|s| {
            s.remember(entry("one"));
            Ok(())
        })
        .expect("a writes");
        assert_eq!(b.load().expect("b reads").entries.len(), 1);
        b.update(|s| {
            s.remember(entry("two"));
            Ok(())
        })
        .expect("b writes");
        let seen = a.load().expect("a reads");
        let names: Vec<&str> = seen.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(
            seen.entries[1].id, 2,
            "Ids follow first sight across processes"
        );
    }

    /// A listing of many sessions is remembered in one pass, keeping known Ids.
    #[test]
    fn remember_all_keeps_known_ids_and_numbers_new_ones() {
        let mut s = Sessions::default();
        let known = s.remember(entry("known"));
        let mut again = known.clone();
        again.id = 0;
        again.name = "renamed".into();
        s.remember_all(vec![entry("new1"), again, entry("new2")]);
        let ids: Vec<(u32, &str)> = s.entries.iter().map(|e| (e.id, e.name.as_str())).collect();
        assert_eq!(ids, [(1, "renamed"), (2, "new1"), (3, "new2")]);
    }
}

//! The client's registry: the sessions it created or found, under small local Ids handed
//! out in order of first sight, and its job table. This module is the table and its rules,
//! without I/O; `store` keeps it on disk (a snapshot and a journal of changes) under an
//! exclusive lock, so concurrent CLI invocations of one client agree on Ids.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

mod store;
pub use store::Registry;

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
    /// The transport options this client was given when it created or connected the
    /// session, used again for it (SPEC §3).
    #[serde(default, skip_serializing_if = "Reach::is_empty")]
    pub reach: Reach,
}

/// How a session was reached: the identity file and transport options given on the command
/// line that created or connected it. Later commands on the session use them unless they
/// give their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_remote_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_checking: Option<String>,
}

impl Reach {
    pub fn is_empty(&self) -> bool {
        *self == Reach::default()
    }
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
    /// A parent job (`invoke --as-job` on several targets, as PowerShell's): the `job_id`s of
    /// its child jobs, one per target. A parent runs nowhere itself: its `job_id` is the
    /// client's own and its `instance_id` nil.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Uuid>,
    /// How the job ended, once this client has seen it end: a job that ended stays so
    /// after its session or its server record is gone (PowerShell's jobs keep their state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<JobEnd>,
}

/// A job's final state as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnd {
    pub state: EndState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndState {
    Completed,
    Failed,
    Stopped,
}

impl JobEntry {
    pub fn is_parent(&self) -> bool {
        !self.children.is_empty()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Sessions {
    #[serde(default)]
    last_id: u32,
    #[serde(default)]
    entries: Vec<Entry>,
    #[serde(default)]
    last_job_id: u32,
    #[serde(default)]
    jobs: Vec<JobEntry>,
    /// What changed since the last `take_change`: the journal records only that, so a
    /// change costs its own size, not the registry's.
    #[serde(skip)]
    touched: Touched,
}

#[derive(Debug, Default, Clone)]
struct Touched {
    sessions: HashSet<Uuid>,
    jobs: HashSet<Uuid>,
    ids_moved: bool,
}

/// One update of the registry as the journal records it: the new value of every session
/// and job it touched (or that it is gone), and the Id counters. Applying a change twice, or
/// to a snapshot that already holds it, gives the same table: each key takes its last value.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Change {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    set: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    drop: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    set_jobs: Vec<JobEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    drop_jobs: Vec<Uuid>,
    #[serde(default)]
    last_id: u32,
    #[serde(default)]
    last_job_id: u32,
}

impl Sessions {
    /// The sessions, in order of first sight.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// The job table, in order of Ids.
    pub fn jobs(&self) -> &[JobEntry] {
        &self.jobs
    }

    pub fn into_jobs(self) -> Vec<JobEntry> {
        self.jobs
    }

    /// The next local Id (never reused).
    pub fn allocate_id(&mut self) -> u32 {
        self.last_id += 1;
        self.touched.ids_moved = true;
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
        let mut ids: HashSet<u32> = self.entries.iter().map(|e| e.id).collect();
        for mut entry in entries {
            if let Some(&i) = known.get(&entry.instance_id) {
                let k = &mut self.entries[i];
                // A listing names every session again: only a real difference is a change.
                if (&k.name, &k.configuration_name, &k.closed_reason)
                    != (&entry.name, &entry.configuration_name, &entry.closed_reason)
                {
                    k.name = entry.name;
                    k.configuration_name = entry.configuration_name;
                    k.closed_reason = entry.closed_reason;
                    self.touched.sessions.insert(entry.instance_id);
                }
                // A command that reached it with options of its own teaches them.
                if !entry.reach.is_empty() && k.reach != entry.reach {
                    k.reach = entry.reach;
                    self.touched.sessions.insert(entry.instance_id);
                }
                continue;
            }
            if entry.id == 0 || ids.contains(&entry.id) {
                entry.id = self.allocate_id();
            } else {
                self.last_id = self.last_id.max(entry.id);
                self.touched.ids_moved = true;
            }
            ids.insert(entry.id);
            self.touched.sessions.insert(entry.instance_id);
            known.insert(entry.instance_id, self.entries.len());
            self.entries.push(entry);
        }
    }

    pub fn mark_closed(&mut self, id: Uuid, reason: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.instance_id == id) {
            if e.closed_reason.is_none() {
                e.closed_reason = Some(reason.to_string());
                self.touched.sessions.insert(id);
            }
        }
    }

    pub fn forget(&mut self, id: Uuid) {
        self.forget_session(id);
        let touched = &mut self.touched.jobs;
        self.jobs.retain(|j| {
            let keep = j.instance_id != id;
            if !keep {
                touched.insert(j.job_id);
            }
            keep
        });
    }

    /// Forgets session `id` but not its jobs, which then show Stopped ("its session ended")
    /// until `job remove` forgets them.
    pub fn forget_session(&mut self, id: Uuid) {
        self.forget_sessions(&HashSet::from([id]));
    }

    /// `forget_session` for many at once, in one pass.
    pub fn forget_sessions(&mut self, ids: &HashSet<Uuid>) {
        let touched = &mut self.touched.sessions;
        self.entries.retain(|e| {
            let keep = !ids.contains(&e.instance_id);
            if !keep {
                touched.insert(e.instance_id);
            }
            keep
        });
    }

    /// Records a job, keeping its Id if already known; returns its entry.
    pub fn remember_job(&mut self, mut job: JobEntry) -> JobEntry {
        if let Some(known) = self.jobs.iter().find(|j| j.job_id == job.job_id) {
            return known.clone();
        }
        self.last_job_id += 1;
        self.touched.ids_moved = true;
        job.id = self.last_job_id;
        if job.name.is_empty() {
            job.name = format!("Job{}", job.id);
        }
        self.touched.jobs.insert(job.job_id);
        self.jobs.push(job.clone());
        job
    }

    pub fn forget_job(&mut self, job_id: Uuid) {
        let before = self.jobs.len();
        self.jobs.retain(|j| j.job_id != job_id);
        if self.jobs.len() != before {
            self.touched.jobs.insert(job_id);
        }
    }

    /// Records how job `job_id` ended (once; a later sighting of the same end writes nothing).
    pub fn record_job_end(&mut self, job_id: Uuid, end: JobEnd) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.job_id == job_id) {
            if j.ended != Some(end) {
                j.ended = Some(end);
                self.touched.jobs.insert(job_id);
            }
        }
    }

    /// Records the child jobs of parent `parent` (a job already remembered).
    pub fn set_children(&mut self, parent: Uuid, children: Vec<Uuid>) {
        if let Some(p) = self.jobs.iter_mut().find(|j| j.job_id == parent) {
            p.children = children;
            self.touched.jobs.insert(parent);
        }
    }

    /// The child jobs of `parent`, in its order (those still in the table).
    pub fn children_of(&self, parent: &JobEntry) -> Vec<JobEntry> {
        parent
            .children
            .iter()
            .filter_map(|c| self.jobs.iter().find(|j| j.job_id == *c))
            .cloned()
            .collect()
    }

    /// Whether `job` is a child of a parent job still in the table.
    pub fn has_parent(&self, job: &JobEntry) -> bool {
        self.jobs.iter().any(|p| p.children.contains(&job.job_id))
    }

    /// The jobs several selectors name (Ids, InstanceIds, Names with wildcards), each once,
    /// in the order named.
    pub fn select_jobs(&self, sels: &[String]) -> Result<Vec<JobEntry>> {
        let mut found: Vec<JobEntry> = Vec::new();
        for sel in sels {
            let matched: Vec<&JobEntry> = if sel.parse::<u32>().is_ok()
                || Uuid::parse_str(sel).is_ok()
            {
                vec![self
                    .jobs
                    .iter()
                    .find(|j| j.id.to_string() == *sel || j.job_id.to_string() == *sel)
                    .ok_or_else(|| Error::NoJob(sel.to_string()))?]
            } else {
                let pattern = glob::Pattern::new(sel)
                    .map_err(|e| Error::Usage(format!("invalid job name pattern '{sel}': {e}")))?;
                let m: Vec<&JobEntry> = self
                    .jobs
                    .iter()
                    .filter(|j| pattern.matches(&j.name))
                    .collect();
                if m.is_empty() {
                    return Err(Error::NoJob(sel.to_string()));
                }
                m
            };
            for j in matched {
                if !found.iter().any(|f| f.job_id == j.job_id) {
                    found.push(j.clone());
                }
            }
        }
        Ok(found)
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
    /// What changed since the last call, or None: the record the journal appends.
    pub(crate) fn take_change(&mut self) -> Option<Change> {
        let touched = std::mem::take(&mut self.touched);
        if touched.sessions.is_empty() && touched.jobs.is_empty() && !touched.ids_moved {
            return None;
        }
        let mut change = Change {
            last_id: self.last_id,
            last_job_id: self.last_job_id,
            ..Change::default()
        };
        // In table order, so a replay numbers and orders sessions as this process did.
        for e in self
            .entries
            .iter()
            .filter(|e| touched.sessions.contains(&e.instance_id))
        {
            change.set.push(e.clone());
        }
        let present: HashSet<Uuid> = change.set.iter().map(|e| e.instance_id).collect();
        change.drop = touched.sessions.difference(&present).copied().collect();
        for j in self
            .jobs
            .iter()
            .filter(|j| touched.jobs.contains(&j.job_id))
        {
            change.set_jobs.push(j.clone());
        }
        let present: HashSet<Uuid> = change.set_jobs.iter().map(|j| j.job_id).collect();
        change.drop_jobs = touched.jobs.difference(&present).copied().collect();
        Some(change)
    }

    /// Replays changes read from the journal, in order (see `Change`: replaying is
    /// idempotent). One pass however many there are: a journal can hold thousands.
    pub(crate) fn apply_all(&mut self, changes: impl IntoIterator<Item = Change>) {
        let mut entries = Keyed::new(std::mem::take(&mut self.entries), |e| e.instance_id);
        let mut jobs = Keyed::new(std::mem::take(&mut self.jobs), |j| j.job_id);
        for change in changes {
            entries.set(change.set);
            entries.drop(change.drop);
            jobs.set(change.set_jobs);
            jobs.drop(change.drop_jobs);
            self.last_id = self.last_id.max(change.last_id);
            self.last_job_id = self.last_job_id.max(change.last_job_id);
        }
        self.entries = entries.into_vec();
        self.jobs = jobs.into_vec();
    }
}

/// A table being replayed: items in order, found by key, gone ones left as holes until the
/// end.
struct Keyed<T> {
    items: Vec<Option<T>>,
    at: HashMap<Uuid, usize>,
    key: fn(&T) -> Uuid,
}

impl<T> Keyed<T> {
    fn new(items: Vec<T>, key: fn(&T) -> Uuid) -> Self {
        let at = items.iter().enumerate().map(|(i, x)| (key(x), i)).collect();
        Keyed {
            items: items.into_iter().map(Some).collect(),
            at,
            key,
        }
    }

    /// Each in place of the item with its key, or at the end (as `remember` adds it).
    fn set(&mut self, new: Vec<T>) {
        for x in new {
            let k = (self.key)(&x);
            match self.at.get(&k) {
                Some(&i) => self.items[i] = Some(x),
                None => {
                    self.at.insert(k, self.items.len());
                    self.items.push(Some(x));
                }
            }
        }
    }

    fn drop(&mut self, gone: Vec<Uuid>) {
        for k in gone {
            if let Some(i) = self.at.remove(&k) {
                self.items[i] = None;
            }
        }
    }

    fn into_vec(self) -> Vec<T> {
        self.items.into_iter().flatten().collect()
    }
}

/// A new session's entry, for tests of the table and of its file.
#[cfg(test)]
pub(crate) fn test_entry(name: &str) -> Entry {
    Entry {
        id: 0,
        instance_id: Uuid::new_v4(),
        name: name.into(),
        computer_name: "localhost".into(),
        configuration_name: "default".into(),
        created_at_ms: 0,
        closed_reason: None,
        reach: Reach::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::ClientHome;

    use super::test_entry as entry;

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
        assert_eq!(b.load().expect("b reads").entries().len(), 1);
        b.update(|s| {
            s.remember(entry("two"));
            Ok(())
        })
        .expect("b writes");
        let seen = a.load().expect("a reads");
        let names: Vec<&str> = seen.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(
            seen.entries()[1].id,
            2,
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
        let ids: Vec<(u32, &str)> = s
            .entries()
            .iter()
            .map(|e| (e.id, e.name.as_str()))
            .collect();
        assert_eq!(ids, [(1, "renamed"), (2, "new1"), (3, "new2")]);
    }

    fn job(session: &Entry) -> JobEntry {
        JobEntry {
            id: 0,
            name: String::new(),
            job_id: Uuid::new_v4(),
            instance_id: session.instance_id,
            session_name: session.name.clone(),
            computer_name: session.computer_name.clone(),
            kind: linger_proto::types::JobKind::Background,
            command: "sleep 1".into(),
            children: Vec::new(),
            ended: None,
        }
    }

    fn table(s: &Sessions) -> (Vec<Entry>, Vec<JobEntry>, u32, u32) {
        (s.entries.clone(), s.jobs.clone(), s.last_id, s.last_job_id)
    }

    /// What the journal records is enough to rebuild the table, and replaying it again (as
    /// after a crash between a snapshot and emptying the journal) changes nothing.
    #[test]
    fn changes_replayed_rebuild_the_table_and_replaying_twice_changes_nothing() {
        let mut live = Sessions::default();
        let mut changes = Vec::new();
        let a = live.remember(entry("a"));
        let b = live.remember(entry("b"));
        changes.extend(live.take_change());
        live.remember_job(job(&a));
        let jb = live.remember_job(job(&b));
        live.mark_closed(b.instance_id, "it ended");
        changes.extend(live.take_change());
        live.forget(a.instance_id);
        live.forget_job(jb.job_id);
        live.allocate_id();
        changes.extend(live.take_change());
        let c = live.remember(entry("c"));
        changes.extend(live.take_change());
        assert_eq!(live.take_change(), None, "nothing changed since");

        let mut replayed = Sessions::default();
        replayed.apply_all(changes.clone());
        assert_eq!(table(&replayed), table(&live));
        assert_eq!(
            live.entries().iter().map(|e| e.id).collect::<Vec<_>>(),
            [2, 4]
        );
        assert_eq!(c.id, 4, "an allocated Id is never handed out again");
        replayed.apply_all(changes);
        assert_eq!(table(&replayed), table(&live));
    }

    /// A listing that names known sessions unchanged is not a change: `get` on thousands of
    /// sessions must not append thousands of entries each time.
    #[test]
    fn a_listing_of_known_sessions_unchanged_records_nothing() {
        let mut s = Sessions::default();
        let known = s.remember(entry("known"));
        s.take_change();
        s.remember_all(vec![Entry {
            id: 0,
            ..known.clone()
        }]);
        assert_eq!(s.take_change(), None);
        s.remember_all(vec![Entry {
            name: "renamed".into(),
            ..known
        }]);
        let change = s.take_change().expect("a rename is a change");
        assert_eq!(change.set.len(), 1);
    }

    /// A session removed and seen again comes back at the end, as a fresh `remember` puts it.
    #[test]
    fn a_replayed_drop_then_set_puts_the_session_last() {
        let mut s = Sessions::default();
        let a = s.remember(entry("a"));
        s.remember(entry("b"));
        let mut base = s.clone();
        base.take_change();
        s.take_change();
        s.forget(a.instance_id);
        let first = s.take_change().expect("a change");
        s.remember(a.clone());
        let second = s.take_change().expect("a change");
        base.apply_all([first, second]);
        let names: Vec<&str> = base.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(table(&base), table(&s));
    }
}

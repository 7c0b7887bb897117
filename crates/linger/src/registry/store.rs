//! The registry on disk: `sessions.json`, a snapshot of the table, and `sessions.journal`,
//! the changes made since, one JSON line (a `Change`) per update. An update appends its own
//! change, so it costs the size of what changed, not of the registry; once the journal
//! outgrows the snapshot (and 64 KiB), the table is written as a new snapshot (by rename)
//! and the journal emptied, which keeps the total written proportional to what changed.
//!
//! Everything happens under an exclusive flock on `sessions.lock`. A crash cannot lose a
//! finished update or apply half of one: a change is one `write` of one line, a torn last
//! line (no newline) is ignored and cut off by the next writer, and replaying a journal over
//! a snapshot that already holds it gives the same table.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};

use super::{Change, Sessions};
use crate::error::{Error, Result};
use crate::home::ClientHome;

/// The journal may grow to this before the snapshot is rewritten, however small the
/// snapshot is.
const COMPACT_AT: u64 = 64 * 1024;

/// The registry file and its lock.
#[derive(Debug, Clone)]
pub struct Registry {
    home: ClientHome,
    /// The table as this process last read or wrote it, and how far into the journal that
    /// was: while the snapshot is the same file, only the journal's new lines are read. A
    /// client holding thousands of sessions would otherwise parse megabytes per operation.
    cache: Arc<Mutex<Option<Loaded>>>,
}

#[derive(Debug)]
struct Loaded {
    snapshot: Option<Stamp>,
    journal: (u64, u64),
    /// Bytes of the journal already applied to `sessions`.
    journal_at: u64,
    sessions: Sessions,
}

/// What tells one version of the snapshot from another (every writer replaces it by
/// rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
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

    /// Reads the registry (a consistent snapshot).
    pub fn load(&self) -> Result<Sessions> {
        self.update(|s| Ok(s.clone()))
    }

    /// Changes the registry under its lock and records what changed.
    pub fn update<T>(&self, f: impl FnOnce(&mut Sessions) -> Result<T>) -> Result<T> {
        use std::os::unix::fs::MetadataExt;
        self.home.ensure()?;
        let _lock = lock(&self.home.lock_file())?;
        let snapshot_path = self.home.registry_file();
        let journal_path = self.home.registry_journal();
        let mut journal = open_journal(&journal_path)?;
        let meta = journal
            .metadata()
            .map_err(|e| Error::io(format!("cannot read {}", journal_path.display()), e))?;
        let journal_id = (meta.dev(), meta.ino());
        let snapshot = Stamp::of(&snapshot_path);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Taken out: whatever fails below leaves no half-changed table behind.
        let mut loaded = match cache.take() {
            Some(l)
                if l.snapshot == snapshot
                    && l.journal == journal_id
                    && l.journal_at <= meta.len() =>
            {
                l
            }
            _ => Loaded {
                snapshot,
                journal: journal_id,
                journal_at: 0,
                sessions: read_snapshot(&snapshot_path, &journal_path)?,
            },
        };
        let (changes, consumed) = read_journal(
            &mut journal,
            loaded.journal_at,
            &journal_path,
            &snapshot_path,
        )?;
        loaded.sessions.apply_all(changes);
        loaded.journal_at += consumed;
        let torn = loaded.journal_at < meta.len();
        let out = f(&mut loaded.sessions)?;
        if let Some(change) = loaded.sessions.take_change() {
            let write_err = |e| Error::io(format!("cannot write {}", journal_path.display()), e);
            if torn {
                journal.set_len(loaded.journal_at).map_err(write_err)?;
            }
            let mut line = serde_json::to_vec(&change)
                .map_err(|e| Error::State(format!("cannot encode the registry: {e}")))?;
            line.push(b'\n');
            // One write, in append mode: a crash leaves the line whole or torn, never mixed.
            journal.write_all(&line).map_err(write_err)?;
            loaded.journal_at += line.len() as u64;
            let snapshot_len = loaded.snapshot.map(|s| s.len);
            if snapshot_len.is_none_or(|len| loaded.journal_at > COMPACT_AT.max(len)) {
                compact(&mut loaded, &journal, &snapshot_path, &journal_path)?;
            }
        }
        *cache = Some(loaded);
        Ok(out)
    }
}

fn lock(path: &Path) -> Result<Flock<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(format!("cannot lock {}", path.display()), e.into()))
}

fn open_journal(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

/// `path` cannot be read; `partner` is the registry's other file, which goes with it.
fn corrupt(path: &Path, partner: &Path, e: serde_json::Error) -> Error {
    let partner = partner.file_name().unwrap_or(partner.as_os_str());
    Error::State(format!(
        "{} is corrupt ({e}); move it and {} away to start a new registry",
        path.display(),
        partner.to_string_lossy(),
    ))
}

fn read_snapshot(path: &Path, journal: &Path) -> Result<Sessions> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(path, journal, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sessions::default()),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// The whole lines of the journal from byte `from`, and how many bytes they take; a torn
/// last line is left out.
fn read_journal(
    file: &mut File,
    from: u64,
    path: &Path,
    snapshot: &Path,
) -> Result<(Vec<Change>, u64)> {
    let read_err = |e| Error::io(format!("cannot read {}", path.display()), e);
    file.seek(SeekFrom::Start(from)).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let changes = bytes[..whole]
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| corrupt(path, snapshot, e)))
        .collect::<Result<Vec<Change>>>()?;
    Ok((changes, whole as u64))
}

/// Writes the table as the new snapshot and empties the journal. Between the two steps a
/// crash leaves the new snapshot and the old journal, which replays to the same table.
fn compact(
    loaded: &mut Loaded,
    journal: &File,
    snapshot: &Path,
    journal_path: &Path,
) -> Result<()> {
    let bytes = serde_json::to_vec(&loaded.sessions)
        .map_err(|e| Error::State(format!("cannot encode the registry: {e}")))?;
    crate::home::write_private(snapshot, &bytes)
        .map_err(|e| Error::io(format!("cannot write {}", snapshot.display()), e))?;
    journal
        .set_len(0)
        .map_err(|e| Error::io(format!("cannot write {}", journal_path.display()), e))?;
    loaded.snapshot = Stamp::of(snapshot);
    loaded.journal_at = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_entry as entry;

    fn remember(r: &Registry, name: &str) {
        r.update(|s| {
            s.remember(entry(name));
            Ok(())
        })
        .expect("update");
    }

    fn names(r: &Registry) -> Vec<String> {
        let s = r.load().expect("load");
        s.entries().iter().map(|e| e.name.clone()).collect()
    }

    /// A small change appends to the journal and leaves the snapshot alone; once the journal
    /// outgrows the snapshot, the snapshot is rewritten and the journal emptied.
    #[test]
    fn changes_go_to_the_journal_until_it_outgrows_the_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = ClientHome::at(dir.path());
        let r = Registry::new(home.clone());
        remember(&r, "first");
        let snapshot = Stamp::of(&home.registry_file()).expect("the first change writes one");
        remember(&r, "second");
        assert_eq!(Stamp::of(&home.registry_file()), Some(snapshot));
        let journal = std::fs::metadata(home.registry_journal())
            .expect("journal")
            .len();
        assert!(journal > 0, "the second change is in the journal");
        let mut n = 2;
        while Stamp::of(&home.registry_file()) == Some(snapshot) {
            n += 1;
            remember(&r, &format!("s{n}"));
            assert!(n < 10_000, "the snapshot is never rewritten");
        }
        assert_eq!(
            std::fs::metadata(home.registry_journal())
                .expect("journal")
                .len(),
            0
        );
        let fresh = Registry::new(home);
        assert_eq!(names(&fresh).len(), n);
        assert_eq!(names(&fresh), names(&r));
    }

    /// A writer killed in the middle of its line leaves a torn line: readers ignore it and
    /// the next writer cuts it off, so nothing after it is lost.
    #[test]
    fn a_torn_last_line_is_ignored_and_cut_off() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = ClientHome::at(dir.path());
        let r = Registry::new(home.clone());
        remember(&r, "one");
        remember(&r, "two");
        let mut f = File::options()
            .append(true)
            .open(home.registry_journal())
            .expect("journal");
        f.write_all(br#"{"set":[{"id":9,"inst"#)
            .expect("torn write");
        let other = Registry::new(home.clone());
        assert_eq!(names(&other), ["one", "two"]);
        remember(&other, "three");
        assert_eq!(names(&Registry::new(home.clone())), ["one", "two", "three"]);
        assert_eq!(
            names(&r),
            ["one", "two", "three"],
            "a cached reader catches up"
        );
    }

    /// A journal that cannot be opened (here, a directory in its place) fails the update in
    /// one line naming it, and the table is not taken as changed.
    #[test]
    fn an_unwritable_journal_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = ClientHome::at(dir.path());
        let r = Registry::new(home.clone());
        remember(&r, "one");
        std::fs::remove_file(home.registry_journal()).expect("remove the journal");
        std::fs::create_dir(home.registry_journal()).expect("a directory in its place");
        let err = r
            .update(|s| {
                s.remember(entry("two"));
                Ok(())
            })
            .expect_err("cannot open")
            .to_string();
        assert!(
            err.contains("sessions.journal") && !err.contains('\n'),
            "{err}"
        );
        std::fs::remove_dir(home.registry_journal()).expect("remove the directory");
        assert_eq!(names(&Registry::new(home)), ["one"]);
    }

    /// A journal line that is whole but not a change is reported, naming both files.
    #[test]
    fn a_corrupt_journal_line_is_an_error_naming_what_to_move() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = ClientHome::at(dir.path());
        let r = Registry::new(home.clone());
        remember(&r, "one");
        std::fs::write(home.registry_journal(), b"not json\n").expect("write");
        let err = Registry::new(home).load().expect_err("corrupt").to_string();
        assert!(
            err.contains("sessions.journal is corrupt") && err.contains("sessions.json away"),
            "{err}"
        );
    }
}

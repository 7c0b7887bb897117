//! The daemon's log files (`lingerd.log`, `audit.log`): private to the daemon's user
//! (0600, even if an older file was more open: they hold every user's scripts), opened
//! without following a symlink, and bounded in size: past its limit a file becomes
//! `NAME.1` (replacing the previous one) and a new one starts, so the logs never take more
//! than twice their limit on disk.
//!
//! Logging never takes anything down: tracing writes through a [`Sink`], which swallows a
//! failed write (a full disk, a closed stderr), counts the line as lost, and says how many
//! were lost in the next line that gets through.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where `lingerd.log` rotates.
pub const DAEMON_LOG_LIMIT: u64 = 32 << 20;
/// Where `audit.log` rotates.
pub const AUDIT_LOG_LIMIT: u64 = 64 << 20;

pub struct LogFile {
    path: PathBuf,
    file: File,
    len: u64,
    limit: u64,
    /// The [`reopen_all`] generation this file was opened in.
    generation: u64,
}

/// Bumped by [`reopen_all`]: every log opens its path again at its next write.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes every log file open its path again before its next line (SIGUSR1, logrotate's
/// convention after it has moved the files away).
pub fn reopen_all() {
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn open(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    // An existing file keeps its mode on open: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl LogFile {
    pub fn open(path: &Path, limit: u64) -> std::io::Result<LogFile> {
        let file = open(path)?;
        let len = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            len,
            limit,
            generation: GENERATION.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The file grew past its limit: it becomes `NAME.1`, and a new one starts.
    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = open(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let generation = GENERATION.load(std::sync::atomic::Ordering::Relaxed);
        if generation != self.generation {
            // A failed reopen keeps the old file: the line is not lost.
            if let Ok(file) = open(&self.path) {
                self.len = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = file;
            }
            self.generation = generation;
        }
        if self.len > 0 && self.len + buf.len() as u64 > self.limit {
            // A failed rotation must not lose the line: keep writing where we are.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Log lines lost to failed writes since the last note about them.
static LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What tracing writes to: a writer behind a lock that a panic cannot poison for good, whose
/// writes always succeed as far as tracing knows (tracing would otherwise report a failure
/// on stderr, which panics when stderr fails too).
pub struct Sink<W> {
    inner: std::sync::Mutex<W>,
}

impl<W: Write> Sink<W> {
    pub fn new(writer: W) -> Self {
        Sink {
            inner: std::sync::Mutex::new(writer),
        }
    }
}

pub struct SinkWriter<'a, W>(std::sync::MutexGuard<'a, W>);

impl<'a, W: Write + 'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink<W> {
    type Writer = SinkWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<W: Write> Write for SinkWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let lost = LOST.load(Ordering::Relaxed);
        if lost > 0 {
            let note = format!("{lost} log line(s) lost: the log could not be written\n");
            if self.0.write_all(note.as_bytes()).is_ok() {
                LOST.fetch_sub(lost, Ordering::Relaxed);
            }
        }
        if self.0.write_all(buf).and_then(|()| self.0.flush()).is_err() {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_log_is_private_even_if_it_was_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut log = LogFile::open(&path, 1 << 20).unwrap();
        writeln!(log, "new").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
    }

    #[test]
    fn a_moved_log_is_reopened_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lingerd.log");
        let mut log = LogFile::open(&path, 1 << 20).unwrap();
        writeln!(log, "before").unwrap();
        std::fs::rename(&path, dir.path().join("lingerd.log.old")).unwrap();
        reopen_all();
        writeln!(log, "after").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lingerd.log.old")).unwrap(),
            "before\n"
        );
    }

    /// Fails every write while `full` is set, as a full disk does.
    struct Disk {
        full: std::sync::Arc<std::sync::atomic::AtomicBool>,
        written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_log_loses_lines_counted_and_never_fails_its_writer() {
        use tracing_subscriber::fmt::MakeWriter;
        let full = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Sink::new(Disk {
            full: full.clone(),
            written: written.clone(),
        });
        for _ in 0..3 {
            assert_eq!(sink.make_writer().write(b"dropped\n").unwrap(), 8);
        }
        full.store(false, std::sync::atomic::Ordering::Relaxed);
        sink.make_writer().write_all(b"kept\n").unwrap();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "3 log line(s) lost: the log could not be written\nkept\n"
        );
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "precious\n").unwrap();
        let path = dir.path().join("lingerd.log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(LogFile::open(&path, 1 << 20).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn a_full_log_rotates_and_keeps_one_old_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lingerd.log");
        let mut log = LogFile::open(&path, 100).unwrap();
        for i in 0..50 {
            writeln!(log, "line {i:02} of the log").unwrap();
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("lingerd.log.1")).unwrap();
        assert!(now <= 100 && old.len() <= 100, "{now} {}", old.len());
        assert_eq!(old.mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("line 49 of the log\n"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}

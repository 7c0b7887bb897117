//! The daemon's log files (`lingerd.log`, `audit.log`): private to the daemon's user
//! (0600, even if an older file was more open: they hold every user's scripts), opened
//! without following a symlink, and bounded in size: past its limit a file becomes
//! `NAME.1` (replacing the previous one) and a new one starts, so the logs never take more
//! than twice their limit on disk.
//!
//! Tracing writes them through `linger_host::logging::Sink`, so that a failed write takes
//! nothing down.

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

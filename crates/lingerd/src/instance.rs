//! One daemon per socket: an exclusive lock held for the daemon's lifetime. A second daemon
//! for the same socket fails cleanly naming the first one's pid; a stale socket left by a
//! dead daemon is replaced.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::paths::DaemonPaths;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("another lingerd (pid {pid}) is already serving {socket}")]
    AlreadyRunning { pid: String, socket: String },
    #[error("cannot take the daemon lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
}

/// Held for as long as the daemon runs.
pub struct InstanceLock {
    _lock: Flock<File>,
}

pub fn acquire(paths: &DaemonPaths) -> Result<InstanceLock, InstanceError> {
    let lock_path = paths.lock_file();
    let io_err = |source| InstanceError::Lock {
        path: lock_path.display().to_string(),
        source,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(io_err)?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::Error::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(paths.pid_file())
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into());
            return Err(InstanceError::AlreadyRunning {
                pid,
                socket: paths.socket.display().to_string(),
            });
        }
        Err((_, e)) => return Err(io_err(e.into())),
    };
    write_pid(&paths.pid_file()).map_err(io_err)?;
    Ok(InstanceLock { _lock: lock })
}

fn write_pid(path: &Path) -> std::io::Result<()> {
    let mut f = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    writeln!(f, "{}", std::process::id())
}

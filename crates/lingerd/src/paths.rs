//! Where a per-user daemon keeps its socket, state and configuration (SPEC §2).

use std::path::{Path, PathBuf};

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> PathBuf {
    env_dir("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

pub use linger_proto::local::{default_socket, runtime_dir};

/// `$XDG_STATE_HOME/linger/server`, else `~/.local/state/linger/server`.
pub fn default_state_dir() -> PathBuf {
    env_dir("XDG_STATE_HOME")
        .unwrap_or_else(|| home().join(".local/state"))
        .join("linger/server")
}

/// `$XDG_CONFIG_HOME/linger/lingerd.toml`, else `~/.config/linger/lingerd.toml`.
pub fn default_config() -> PathBuf {
    env_dir("XDG_CONFIG_HOME")
        .unwrap_or_else(|| home().join(".config"))
        .join("linger/lingerd.toml")
}

/// The daemon's files beside its socket and in its state directory.
#[derive(Debug, Clone)]
pub struct DaemonPaths {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

impl DaemonPaths {
    pub fn lock_file(&self) -> PathBuf {
        self.socket.with_extension("lock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.socket.with_extension("pid")
    }
    /// Session hosts' sockets live beside the daemon's (short paths: sun_path is 108 bytes).
    pub fn hosts_dir(&self) -> PathBuf {
        self.socket.parent().unwrap_or(Path::new("/")).join("hosts")
    }
    pub fn sessions_dir(&self) -> PathBuf {
        self.state_dir.join("sessions")
    }
    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("lingerd.log")
    }

    /// Who did what to which session (see `audit.rs`).
    pub fn audit_file(&self) -> PathBuf {
        self.state_dir.join("audit.log")
    }
}

/// Creates `dir` (and parents) readable by its owner only. An existing directory is left as
/// it is: it may be a shared one the administrator chose (`--socket /run/x.sock`).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Hands `path` to user `uid` (a system daemon's session host runs as its owner).
pub fn give(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

/// Lets other users pass through `dir` without listing it (mode 0711): the way from a
/// system daemon's state to the directories it hands to session hosts.
pub fn traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// Where a system daemon (`lingerd --system`) keeps its socket, state and configuration.
pub fn system_socket() -> PathBuf {
    PathBuf::from("/run/linger/lingerd.sock")
}

pub fn system_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/linger")
}

pub fn system_config() -> PathBuf {
    PathBuf::from("/etc/linger/lingerd.toml")
}

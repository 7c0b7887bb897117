//! A client's home: its identity, its registry of sessions and its options. Two different
//! homes behave as two different client machines (SPEC §2).

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ClientHome {
    /// Identity and registry.
    pub state_dir: PathBuf,
    /// Options and known hosts.
    pub config_dir: PathBuf,
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

impl ClientHome {
    /// `$LINGER_HOME` if set, else the XDG directories.
    pub fn from_env() -> ClientHome {
        if let Some(home) = env_dir("LINGER_HOME") {
            return ClientHome::at(&home);
        }
        let user_home = env_dir("HOME").unwrap_or_else(|| PathBuf::from("/"));
        ClientHome {
            state_dir: env_dir("XDG_STATE_HOME")
                .unwrap_or_else(|| user_home.join(".local/state"))
                .join("linger/client"),
            config_dir: env_dir("XDG_CONFIG_HOME")
                .unwrap_or_else(|| user_home.join(".config"))
                .join("linger"),
        }
    }

    /// Everything in one directory (what `LINGER_HOME` does).
    pub fn at(dir: &Path) -> ClientHome {
        ClientHome {
            state_dir: dir.to_path_buf(),
            config_dir: dir.to_path_buf(),
        }
    }

    pub fn registry_file(&self) -> PathBuf {
        self.state_dir.join("sessions.json")
    }

    /// The changes made since `registry_file` was last written, one JSON line each.
    pub fn registry_journal(&self) -> PathBuf {
        self.state_dir.join("sessions.journal")
    }

    /// The client's default options (SPEC §11).
    pub fn options_file(&self) -> PathBuf {
        self.config_dir.join("options.toml")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("sessions.lock")
    }

    /// This client's identity, made on first use.
    pub fn client_id(&self) -> Result<Uuid> {
        let path = self.state_dir.join("client_id");
        match std::fs::read_to_string(&path) {
            Ok(text) => Uuid::parse_str(text.trim()).map_err(|_| {
                Error::State(format!(
                    "{} is corrupt (delete it to get a new client identity)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.ensure()?;
                let id = Uuid::new_v4();
                // Clients starting at once on a fresh home (an Ansible fork per host) must all
                // end up with one identity, or one's attachments look like another client's:
                // the first to link its file wins, the others adopt it.
                match create_private_once(&path, format!("{id}\n").as_bytes()) {
                    Ok(()) => Ok(id),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.client_id(),
                    Err(e) => Err(Error::io(format!("cannot write {}", path.display()), e)),
                }
            }
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    pub fn ensure(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.state_dir)
            .map_err(|e| Error::io(format!("cannot create {}", self.state_dir.display()), e))
    }
}

/// Replaces `path` with `bytes`, readable by this user only (the registry and the client's
/// identity say where its sessions are and let it claim them): written to a temporary file
/// (0600, never through a symlink) and renamed over.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_private_tmp(path, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Creates `path` holding `bytes` (0600) only if it does not exist yet, atomically: a reader
/// never sees it partly written, and of several processes racing exactly one succeeds (the
/// others get `AlreadyExists`).
pub(crate) fn create_private_once(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_private_tmp(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// `bytes` in a new 0600 file beside `path`, with a name of its own so concurrent writers
/// (processes or threads) never share one.
fn write_private_tmp(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", Uuid::new_v4().simple()));
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_starting_at_once_on_a_fresh_home_share_one_identity() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let home = ClientHome::at(dir.path());
            let ids: Vec<Uuid> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8).map(|_| s.spawn(|| home.client_id())).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread").expect("client_id"))
                    .collect()
            });
            assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
            assert_eq!(home.client_id().expect("client_id"), ids[0]);
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, ["client_id"], "no temporary file is left behind");
        }
    }
}

//! Reading an authorized_keys file as sshd does with StrictModes, and no more: only a
//! regular file (never a symlink, FIFO or device, so a planted `/dev/zero` or FIFO cannot
//! fill memory or hang a thread), at most [`MAX_KEY_FILE`] bytes, owned by its user or root
//! and writable by nobody else, in directories up to the user's home that nobody else can
//! write either. Callers run it off the async runtime (`auth.rs`).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Longest authorized_keys file read.
pub const MAX_KEY_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a regular file")]
    NotRegular,
    #[error("it is larger than {MAX_KEY_FILE} bytes")]
    TooLarge,
    #[error("{0} is owned by uid {1}, not by its user or root")]
    BadOwner(String, u32),
    #[error("{0} is writable by its group or by others")]
    Writable(String),
}

impl KeyFileError {
    pub fn is_missing(&self) -> bool {
        matches!(self, KeyFileError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Whether `meta` (of `path`) may be trusted as `uid`'s: owned by `uid` or root, and not
/// writable by group or others.
fn strict(path: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<(), KeyFileError> {
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(KeyFileError::BadOwner(
            path.display().to_string(),
            meta.uid(),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(KeyFileError::Writable(path.display().to_string()));
    }
    Ok(())
}

/// The text of key file `path`, which belongs to `uid`. With `home`, every directory from
/// the file's up to `home` (included) is checked as sshd's StrictModes does.
pub fn read(path: &Path, uid: u32, home: Option<&Path>) -> Result<String, KeyFileError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOFOLLOW: never elsewhere.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular);
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge);
    }
    strict(path, &meta, uid)?;
    if let Some(home) = home {
        let mut dir = path.parent();
        while let Some(d) = dir {
            strict(d, &std::fs::symlink_metadata(d)?, uid)?;
            if d == home {
                break;
            }
            dir = d.parent();
        }
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn a_plain_private_file_is_read() {
        let dir = private_dir();
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, "ssh-ed25519 AAAA k\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read(&path, me(), Some(dir.path())).unwrap(),
            "ssh-ed25519 AAAA k\n"
        );
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once() {
        let dir = private_dir();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            read(&fifo, me(), None),
            Err(KeyFileError::NotRegular)
        ));
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(
            read(&zero, me(), None).is_err(),
            "a symlink is not followed"
        );
        assert!(matches!(
            read(Path::new("/dev/zero"), 0, None),
            Err(KeyFileError::NotRegular)
        ));
    }

    #[test]
    fn a_large_or_writable_file_is_refused() {
        let dir = private_dir();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_KEY_FILE as usize + 1]).unwrap();
        assert!(matches!(
            read(&big, me(), None),
            Err(KeyFileError::TooLarge)
        ));
        let open = dir.path().join("open");
        std::fs::write(&open, "k\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(
            read(&open, me(), None),
            Err(KeyFileError::Writable(_))
        ));
    }

    #[test]
    fn a_writable_directory_on_the_way_home_is_refused() {
        let home = private_dir();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = ssh.join("authorized_keys");
        std::fs::write(&path, "k\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read(&path, me(), Some(home.path())),
            Err(KeyFileError::Writable(_))
        ));
    }
}

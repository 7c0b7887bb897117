//! Where the local transport lives: the per-user daemon's Unix socket (SPEC §2). Client and
//! daemon both follow this; it is part of the protocol's contract.

use std::path::PathBuf;

mod autostart;
pub use autostart::{connect_or_start, daemon_program, StartError, EXIT_ALREADY_SERVING};

/// `$XDG_RUNTIME_DIR/linger`, else `/tmp/linger-$UID`.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        Some(d) => d.join("linger"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => PathBuf::from(format!("/tmp/linger-{}", unsafe { libc::getuid() })),
    }
}

/// The per-user daemon's socket: `<runtime dir>/lingerd.sock`.
pub fn default_socket() -> PathBuf {
    runtime_dir().join("lingerd.sock")
}

/// Why a socket directory is not to be trusted.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedDir {
    #[error("cannot inspect {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not a directory")]
    NotDir(String),
    #[error("{0} belongs to uid {1}, not to you (uid {2}) or root: another user may have made it to capture your sessions; remove it, or set XDG_RUNTIME_DIR")]
    Owner(String, u32, u32),
    #[error(
        "{0} has mode {1:o}: others could replace the socket in it; make it 0700, or remove it"
    )]
    Mode(String, u32),
}

/// Whether `dir`, the directory of a local socket, may be used by `uid`: a directory (not a
/// symlink) that `uid` owns with no access for group or others (0700), or that root owns and
/// nobody else may write (a system daemon's `/run/linger`, 0755). Client and daemon both
/// check it before using the socket in it: with `XDG_RUNTIME_DIR` unset the directory is
/// under `/tmp`, where another user may have made it first.
pub fn check_dir(dir: &std::path::Path, uid: u32) -> Result<(), UntrustedDir> {
    use std::os::unix::fs::MetadataExt;
    let shown = dir.display().to_string();
    let meta = std::fs::symlink_metadata(dir).map_err(|e| UntrustedDir::Io(shown.clone(), e))?;
    if !meta.is_dir() {
        return Err(UntrustedDir::NotDir(shown));
    }
    let mode = meta.mode() & 0o7777;
    match meta.uid() {
        owner if owner == uid && mode & 0o077 == 0 => Ok(()),
        0 if mode & 0o022 == 0 => Ok(()),
        owner if owner == uid || owner == 0 => Err(UntrustedDir::Mode(shown, mode)),
        owner => Err(UntrustedDir::Owner(shown, owner, uid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_private_or_a_roots_directory_is_trusted() {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let dir = std::env::temp_dir().join(format!("linger-check-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(check_dir(&dir, me).is_ok());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let refused = check_dir(&dir, me);
        if me == 0 {
            // Root's own directory, writable by all.
            assert!(
                matches!(refused, Err(UntrustedDir::Mode(_, 0o777))),
                "{refused:?}"
            );
        } else {
            assert!(
                matches!(refused, Err(UntrustedDir::Mode(..))),
                "{refused:?}"
            );
            // Someone else's (root's) world-writable /tmp is not ours either.
            assert!(check_dir(std::path::Path::new("/tmp"), me).is_err());
        }
        // Seen from another uid, a directory that is not root's belongs to someone else.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        if me != 0 {
            assert!(matches!(
                check_dir(&dir, me + 1),
                Err(UntrustedDir::Owner(..))
            ));
        }
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert!(matches!(check_dir(&link, me), Err(UntrustedDir::NotDir(_))));
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir(&dir);
    }
}

//! Where the local transport lives: the per-user daemon's Unix socket (SPEC §2). Client and
//! daemon both follow this; it is part of the protocol's contract.

use std::path::PathBuf;

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

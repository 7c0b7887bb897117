//! The session host: one process per session. It holds the session's shell on pipes, turns
//! the shell's output into a numbered log, and serves one daemon connection at a time over
//! its own Unix socket. It knows nothing of clients, principals or the network: it obeys
//! whoever connects to its socket, provided it runs as the host's own user or as root (a
//! system daemon, which runs each host as its session's owner).
//!
//! Architecture invariant: the host never loses an entry the daemon has not acknowledged,
//! so a daemon may die at any moment and re-adopt the host later.

mod conn;
mod copy;
mod input;
mod jobs;
pub mod limits;
mod log;
pub mod logging;
mod marker;
pub mod procs;
mod reader;
mod shell;
mod spool;
mod state;
mod terminal;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use linger_proto::host::HostSpec;
use tokio::net::UnixListener;

pub use log::{Entry, EntryKind, OutputLog, OUTPUT_WINDOW};
pub use state::MAX_RUNNING_JOBS;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{}", io_error_text(.0))]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Spawn(String),
    #[error("bad host specification: {0}")]
    Spec(String),
}

/// Whether `e` says a descriptor limit was reached (this process's or the system's).
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// An I/O error for a message: out of descriptors says what to raise, with the limit.
pub fn io_error_text(e: &std::io::Error) -> String {
    if !out_of_descriptors(e) {
        return e.to_string();
    }
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| format!(" (the limit is {soft})"))
        .unwrap_or_default();
    match e.raw_os_error() {
        Some(libc::ENFILE) => "too many open files on this system: raise fs.file-max".into(),
        _ => format!("too many open files{limit}: raise LimitNOFILE (or ulimit -n) for lingerd"),
    }
}

/// A session host process's whole life (`lingerd-host`, or `lingerd session-host`): logs to
/// stderr, then [`main_from_stdin`]; exits 1 if that fails.
pub fn host_process() -> ! {
    logging::init_stderr();
    match main_from_stdin() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            tracing::error!("session host failed: {e}");
            std::process::exit(1)
        }
    }
}

/// Entry point of `lingerd session-host`: reads the [`HostSpec`] from stdin, starts the
/// shell, reports `READY <pid>` (or `ERROR <why>`) on stdout, then serves until the session
/// ends. Never returns while the session lives.
pub fn main_from_stdin() -> Result<(), HostError> {
    detach()?;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let spec: HostSpec =
        linger_proto::frame::decode(&input).map_err(|e| HostError::Spec(e.to_string()))?;
    become_owner(&spec)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(spec));
    if let Err(e) = &result {
        report(&format!("ERROR {e}"));
    }
    result
}

/// Leaves the daemon's process tree: the daemon waits only for this short-lived parent, so
/// it holds nothing per host but the host's socket (no child handle, no pidfd), and a host
/// is never a zombie of a daemon that stopped waiting. Runs before any thread exists.
fn detach() -> Result<(), HostError> {
    // SAFETY: called first thing in the process, with one thread; the parent only exits.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => {
            // SAFETY: _exit ends the process without running anything of the child's.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Child => {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        }
    }
}

/// Takes on the session's limits and identity before anything of the session runs: the
/// descriptor limit the daemon was started with, and, when a system daemon (root) started
/// this host for another user, that user's groups, gid and uid, in that order (after setuid
/// nothing else may change). Still one thread here.
fn become_owner(spec: &HostSpec) -> Result<(), HostError> {
    if let Some((soft, hard)) = spec.nofile {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
            .map_err(std::io::Error::from)?;
    }
    if let Some(ids) = &spec.run_as {
        let groups: Vec<nix::unistd::Gid> = ids
            .groups
            .iter()
            .map(|&g| nix::unistd::Gid::from_raw(g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(std::io::Error::from)?;
        nix::unistd::setgid(nix::unistd::Gid::from_raw(ids.gid)).map_err(std::io::Error::from)?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(ids.uid)).map_err(std::io::Error::from)?;
        if nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() && ids.uid != 0 {
            return Err(HostError::Spawn("could not give up root".into()));
        }
        // The change of identity made the process undumpable; it holds nothing of root's,
        // and its user may inspect it as before, when it was started as that user.
        let _ = nix::sys::prctl::set_dumpable(true);
    }
    Ok(())
}

/// Writes the one status line the daemon waits for, then detaches stdout so the daemon's
/// pipe closes.
fn report(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall; fd 1 is ours to replace.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

async fn run(mut spec: HostSpec) -> Result<(), HostError> {
    // Orphans of the session (double-forked daemons) reparent to us, so the session's
    // processes can always be found and ended.
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;

    let socket_path = Path::new(&spec.socket_path);
    if socket_path.exists() {
        std::fs::remove_file(socket_path)?;
    }
    let listener = UnixListener::bind(socket_path)?;
    std::fs::set_permissions(socket_path, std::fs::Permissions::from_mode(0o600))?;

    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let id = spec.meta.instance_id.simple().to_string();
    let limits = match &spec.cgroups {
        Some(given) => limits::inherited(given, &spec.limits),
        None => limits::prepare(&id, &spec.limits),
    };
    for how in &limits.how {
        tracing::info!(session = %spec.meta.instance_id, "limit {how}");
    }
    let shell = shell::spawn(
        &spec.shell,
        &spec.environment,
        &spec.working_directory,
        &nonce,
        Arc::new(limits),
    )
    .inspect_err(|_| limits::remove_cgroups())?;
    spec.meta.host_pid = std::process::id();
    spec.meta.shell_pid = shell.pid as u32;
    let meta_path = Path::new(&spec.session_dir).join("meta.json");
    let meta_json =
        serde_json::to_vec_pretty(&spec.meta).map_err(|e| HostError::Spec(e.to_string()))?;
    std::fs::write(&meta_path, meta_json)?;

    let state = Arc::new(state::HostState::new(spec.clone(), shell.pid, &nonce));
    state::start(state.clone(), shell, &nonce)?;
    report(&format!("READY {}", std::process::id()));
    tracing::info!(session = %spec.meta.instance_id, shell_pid = spec.meta.shell_pid, "session host ready");

    conn::serve(listener, state).await;
    Ok(())
}

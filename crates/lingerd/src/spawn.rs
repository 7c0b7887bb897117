//! Starting a session host: `lingerd-host` (beside lingerd; else `lingerd session-host`)
//! in its own Unix session (setsid), so it outlives the daemon; the spec goes in on stdin
//! and one status line comes back on stdout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use linger_proto::host::HostSpec;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// How long a host may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start a session host: {}", linger_host::io_error_text(.0))]
    Io(#[from] std::io::Error),
    #[error("the session host failed: {0}")]
    Host(String),
}

/// The descriptor limit this daemon was started with, restored in each session host (and so
/// in every shell) after the daemon raised its own.
static STARTED_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Raises this process's soft descriptor limit to its hard limit: the daemon holds one
/// descriptor per session and per connection, and the usual soft limit of 1024 would stop it
/// near 1,000. Sessions keep the limit the daemon was started with. Returns (before, now).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = STARTED_NOFILE.set((soft, hard));
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard.max(soft)))
}

/// The program a session host runs: `lingerd-host` beside this executable, which is much
/// smaller; else this executable's own `session-host` (lingerd installed on its own).
fn host_program() -> std::io::Result<(std::path::PathBuf, &'static [&'static str])> {
    let exe = std::env::current_exe()?;
    let small = exe.with_file_name("lingerd-host");
    if small.is_file() {
        return Ok((small, &[]));
    }
    Ok((exe, &["session-host"]))
}

/// The Unix identity a system daemon runs a session host as (its owner's).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, from the group database).
    pub groups: Vec<u32>,
}

/// Starts the host (as `run_as`, when given) and waits for it to be ready to accept the
/// daemon.
/// `inherit`: descriptors the host gets at 3, 4, … in order (the session's `cgroup.procs`,
/// opened by the daemon).
pub async fn spawn_host(
    spec: &HostSpec,
    log: &Path,
    run_as: Option<&RunAs>,
    inherit: &[std::os::fd::RawFd],
) -> Result<(), SpawnError> {
    let inherit = inherit.to_vec();
    let nofile = STARTED_NOFILE.get().copied();
    let (exe, args) = host_program()?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg0(format!("lingerd: session {}", spec.meta.name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(false);
    if run_as.is_some() {
        // The host of another user's session inherits nothing from a root daemon.
        cmd.env_clear();
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
    }
    let ids = run_as.map(|r| {
        (
            nix::unistd::Uid::from_raw(r.uid),
            nix::unistd::Gid::from_raw(r.gid),
            r.groups
                .iter()
                .map(|&g| nix::unistd::Gid::from_raw(g))
                .collect::<Vec<_>>(),
        )
    });
    // SAFETY: setsid, setgroups, setgid and setuid are async-signal-safe syscalls, and the
    // group list was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some((soft, hard)) = nofile {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    soft,
                    hard,
                )?;
            }
            // Up out of the way first, then down to 3, 4, …: a source may sit on a target.
            let mut high = Vec::with_capacity(inherit.len());
            for &fd in &inherit {
                let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 1000);
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(moved);
            }
            for (i, &fd) in high.iter().enumerate() {
                // dup2 leaves the copy open across exec.
                if libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Groups, then gid, then uid: after setuid nothing else may change.
            if let Some((uid, gid, groups)) = &ids {
                nix::unistd::setgroups(groups)?;
                nix::unistd::setgid(*gid)?;
                nix::unistd::setuid(*uid)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let frame = linger_proto::frame::encode(spec).map_err(|e| SpawnError::Host(e.to_string()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| SpawnError::Host("no stdin".into()))?;
    stdin.write_all(&frame).await?;
    drop(stdin);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SpawnError::Host("no stdout".into()))?;
    let mut line = String::new();
    let read = tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line))
        .await
        .map_err(|_| SpawnError::Host("it did not report ready in time".into()))?;
    read?;
    // What was started is the host's short-lived parent (the host leaves at once): reap it
    // now, so the daemon holds nothing of the host but its socket.
    let _ = child.wait().await;
    let line = line.trim();
    if line.starts_with("READY") {
        Ok(())
    } else if let Some(why) = line.strip_prefix("ERROR ") {
        Err(SpawnError::Host(why.to_string()))
    } else {
        Err(SpawnError::Host(format!(
            "it exited without reporting ready (see {})",
            log.display()
        )))
    }
}

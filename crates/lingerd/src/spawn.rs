//! Starting a session host: `lingerd-host` (beside lingerd; else `lingerd session-host`)
//! in its own Unix session (setsid), so it outlives the daemon; the spec goes in on stdin
//! and one status line comes back on stdout.
//!
//! Hosts are started by the *spawner*, a small process the daemon starts while it still holds
//! few descriptors: an exec costs in proportion to the descriptors of the process that execs
//! (the kernel copies the table and closes every close-on-exec entry in the child), and a daemon
//! holding 10,000 sessions paid milliseconds per new one. The daemon hands the spawner the
//! host's program, arguments, environment and descriptors (`SCM_RIGHTS`) over a seqpacket
//! socket and gets the pid back; if the spawner is gone, the daemon spawns the host itself.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use linger_proto::host::HostSpec;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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

fn cstring(s: &str) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(std::io::Error::other)
}

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from(e)
}

/// glibc's `POSIX_SPAWN_SETSID` (2.26 on), which the libc crate does not name for Linux.
const POSIX_SPAWN_SETSID: libc::c_short = 0x80;

/// The spawner's socket, while it lives.
static SPAWNER: std::sync::Mutex<Option<std::os::fd::OwnedFd>> = std::sync::Mutex::new(None);

/// The spawner's program: `lingerd-host --spawner` beside this executable, else this
/// executable's own `spawner`.
fn spawner_program() -> std::io::Result<(std::path::PathBuf, &'static str)> {
    let exe = std::env::current_exe()?;
    let small = exe.with_file_name("lingerd-host");
    if small.is_file() {
        return Ok((small, "--spawner"));
    }
    Ok((exe, "spawner"))
}

/// Starts the spawner; called once, early, while the daemon holds few descriptors. Without
/// it (it failed to start, or died) hosts are spawned by the daemon itself.
pub fn start_spawner() -> std::io::Result<()> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io)?;
    let (exe, arg) = spawner_program()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let argv = [cstring("lingerd: spawner")?, cstring(arg)?];
    let fds = [
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (null.as_raw_fd(), 2),
        (theirs.as_raw_fd(), 3),
    ];
    let pid = posix_spawn(&exe, &argv, &[], &fds, false)?;
    drop((theirs, null));
    *SPAWNER.lock().unwrap_or_else(|p| p.into_inner()) = Some(ours);
    std::thread::Builder::new()
        .name("spawner-reaper".into())
        .spawn(move || {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            // Gone (killed?): the daemon spawns hosts itself from now on.
            SPAWNER.lock().unwrap_or_else(|p| p.into_inner()).take();
            tracing::warn!("the spawner exited; session hosts are now started by the daemon");
        })?;
    Ok(())
}

/// What the daemon asks of the spawner (the descriptors travel beside it, for 0, 1, 2, …).
#[derive(serde::Serialize, serde::Deserialize)]
struct SpawnRequest {
    exe: Vec<u8>,
    argv: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
}

/// Asks the spawner to start `exe`; None if there is no spawner (or it went away).
fn spawn_via_spawner(
    exe: &Path,
    argv: &[std::ffi::CString],
    env: &[std::ffi::CString],
    fds: &[std::os::fd::RawFd],
) -> Option<std::io::Result<libc::pid_t>> {
    use nix::sys::socket::{recv, sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::unix::ffi::OsStrExt;
    let mut guard = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    let sock = guard.as_ref()?;
    let request = SpawnRequest {
        exe: exe.as_os_str().as_bytes().to_vec(),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: env.iter().map(|e| e.as_bytes().to_vec()).collect(),
    };
    let bytes = match linger_proto::frame::encode(&request) {
        Ok(b) => b,
        Err(e) => return Some(Err(std::io::Error::other(e.to_string()))),
    };
    let sent = sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(&bytes)],
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    let mut answer = [0u8; 64];
    let got = sent.and_then(|_| recv(sock.as_raw_fd(), &mut answer, MsgFlags::empty()));
    match got {
        Ok(n) if n > 0 => Some(
            linger_proto::frame::decode::<Result<i32, i32>>(&answer[..n])
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r.map_err(std::io::Error::from_raw_os_error)),
        ),
        // The spawner is gone: forget it, and let the daemon spawn this one itself.
        _ => {
            guard.take();
            None
        }
    }
}

/// The spawner's life: starts what the daemon asks, until the daemon closes its socket.
/// Its children are reaped by the kernel (SIGCHLD ignored here, default again in them).
pub fn spawner_main() -> ! {
    use nix::sys::socket::{recvmsg, send, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::FromRawFd;
    // SAFETY: descriptor 3 is the socket the daemon placed there when it started us.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(3) };
    // SAFETY: setting a signal's disposition to ignore has no other precondition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 16]);
        let (n, fds) = {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            match recvmsg::<UnixAddr>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut fds = Vec::new();
                    if let Ok(cmsgs) = m.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(got) = c {
                                // SAFETY: descriptors just received, owned by nobody else.
                                fds.extend(
                                    got.into_iter()
                                        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
                                );
                            }
                        }
                    }
                    (m.bytes, fds)
                }
                Err(nix::Error::EINTR) => continue,
                Err(_) => std::process::exit(1),
            }
        };
        if n == 0 {
            std::process::exit(0);
        }
        let answer: Result<i32, i32> = spawn_requested(&buf[..n], &fds);
        let bytes = linger_proto::frame::encode(&answer).unwrap_or_default();
        if send(sock.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL).is_err() {
            std::process::exit(0);
        }
    }
}

fn spawn_requested(bytes: &[u8], fds: &[std::os::fd::OwnedFd]) -> Result<i32, i32> {
    use std::os::unix::ffi::OsStrExt;
    let req: SpawnRequest = linger_proto::frame::decode(bytes).map_err(|_| libc::EINVAL)?;
    let cs = |v: Vec<u8>| std::ffi::CString::new(v).map_err(|_| libc::EINVAL);
    let argv = req
        .argv
        .into_iter()
        .map(cs)
        .collect::<Result<Vec<_>, _>>()?;
    let env = req.env.into_iter().map(cs).collect::<Result<Vec<_>, _>>()?;
    let exe = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&req.exe));
    let given: Vec<(std::os::fd::RawFd, std::os::fd::RawFd)> = fds
        .iter()
        .enumerate()
        .map(|(i, fd)| (fd.as_raw_fd(), i as i32))
        .collect();
    posix_spawn(&exe, &argv, &env, &given, true).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// `posix_spawn` of `exe` with `argv` and `env`, with each `(from, to)` of `fds` at `to`
/// (every other descriptor of the daemon is close-on-exec), in a new Unix session if
/// `setsid`, with every signal unblocked and SIGCHLD at its default. Returns the pid.
fn posix_spawn(
    exe: &Path,
    argv: &[std::ffi::CString],
    env: &[std::ffi::CString],
    fds: &[(std::os::fd::RawFd, std::os::fd::RawFd)],
    setsid: bool,
) -> std::io::Result<libc::pid_t> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(exe.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // Each source first goes out of the way of every target (a source may sit on another's
    // target); these copies are the daemon's, closed when this returns.
    let above = fds.iter().map(|&(_, to)| to + 1).max().unwrap_or(0);
    let mut high = Vec::with_capacity(fds.len());
    for &(from, _) in fds {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller keeps open.
        let moved = unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, above) };
        if moved < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `moved` is a new descriptor this function owns.
        high.push(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(moved) });
    }
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr() as *mut _).collect();
    env_ptrs.push(std::ptr::null_mut());
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // after; every pointer handed over lives until posix_spawn returns.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            for (moved, &(_, to)) in high.iter().zip(fds) {
                // dup2 leaves the copy open across exec.
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    std::os::fd::AsRawFd::as_raw_fd(moved),
                    to,
                ))?;
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            let mut chld: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut chld);
            libc::sigaddset(&mut chld, libc::SIGCHLD);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &chld))?;
            let mut flags =
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
            if setsid {
                flags |= POSIX_SPAWN_SETSID;
            }
            check(libc::posix_spawnattr_setflags(&mut attr, flags))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                env_ptrs.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}

/// posix_spawn's functions answer an errno rather than set it.
fn check(code: libc::c_int) -> std::io::Result<()> {
    match code {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// The Unix identity a system daemon runs a session host as (its owner's; the groups from
/// the group database).
pub use linger_proto::host::RunAsIds as RunAs;

/// Starts the host (as `run_as`, when given) and waits for it to be ready to accept the
/// daemon.
/// `inherit`: descriptors the host gets at 3, 4, … in order (the session's `cgroup.procs`,
/// opened by the daemon).
///
/// With `posix_spawn` (a vfork: the daemon's page tables are not copied): a fork costs in
/// proportion to the forking process's memory, and a daemon holding thousands of sessions
/// made each new one slower than the last. The host itself gives up root and takes on its
/// descriptor limit (`HostSpec.run_as`, `HostSpec.nofile`), which a vfork child cannot.
pub async fn spawn_host(
    spec: &HostSpec,
    log: &Path,
    run_as: Option<&RunAs>,
    inherit: &[std::os::fd::RawFd],
) -> Result<(), SpawnError> {
    let (exe, args) = host_program()?;
    let mut spec = spec.clone();
    spec.run_as = run_as.cloned();
    spec.nofile = STARTED_NOFILE.get().copied();
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let (stdin_r, stdin_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io)?;
    let (stdout_r, stdout_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io)?;
    let mut argv = vec![cstring(&format!("lingerd: session {}", spec.meta.name))?];
    for a in args {
        argv.push(cstring(a)?);
    }
    // The host of another user's session inherits nothing from a root daemon.
    let env: Vec<std::ffi::CString> = match run_as {
        Some(_) => std::env::var("RUST_LOG")
            .ok()
            .map(|f| cstring(&format!("RUST_LOG={f}")))
            .into_iter()
            .collect::<Result<_, _>>()?,
        None => std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend(v.into_encoded_bytes());
                std::ffi::CString::new(kv).ok()
            })
            .collect(),
    };
    let mut given: Vec<(std::os::fd::RawFd, std::os::fd::RawFd)> = vec![
        (stdin_r.as_raw_fd(), 0),
        (stdout_w.as_raw_fd(), 1),
        (log_file.as_raw_fd(), 2),
    ];
    given.extend(
        inherit
            .iter()
            .enumerate()
            .map(|(i, &fd)| (fd, 3 + i as i32)),
    );
    let spawned = tokio::task::spawn_blocking(move || {
        let fds: Vec<std::os::fd::RawFd> = given.iter().map(|&(fd, _)| fd).collect();
        let by_spawner = spawn_via_spawner(&exe, &argv, &env, &fds);
        let result = match by_spawner {
            Some(r) => r.map(|_| ()),
            None => posix_spawn(&exe, &argv, &env, &given, true).map(|pid| {
                // The short-lived parent of the host (the host forks away at once), reaped
                // here, off the runtime, so the daemon holds nothing of the host but its
                // socket. (The spawner's children are reaped by the kernel.)
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            }),
        };
        drop((stdin_r, stdout_w, log_file));
        result
    })
    .await
    .map_err(|e| SpawnError::Host(format!("the spawning task failed: {e}")))?;
    spawned?;
    let frame = linger_proto::frame::encode(&spec).map_err(|e| SpawnError::Host(e.to_string()))?;
    let mut stdin = tokio::net::unix::pipe::Sender::from_owned_fd(stdin_w)?;
    stdin.write_all(&frame).await?;
    drop(stdin);
    let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout_r)?;
    let mut line = String::new();
    let read = tokio::time::timeout(READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line))
        .await
        .map_err(|_| SpawnError::Host("it did not report ready in time".into()))?;
    read?;
    let line = line.trim();
    if line.starts_with("READY") {
        Ok(())
    } else if let Some(why) = line.strip_prefix("ERROR ") {
        Err(SpawnError::Host(why.to_string()))
    } else {
        // Its directory (and the log in it) goes with the failed start: say what it said.
        let said = std::fs::read_to_string(log)
            .ok()
            .and_then(|text| last_words(&text));
        Err(SpawnError::Host(match said {
            Some(line) => format!("it exited without reporting ready; its log ends: {line}"),
            None => "it exited without reporting ready, and logged nothing".to_string(),
        }))
    }
}

/// The last line a log holds, at most 300 characters of it.
fn last_words(log: &str) -> Option<String> {
    let line = log.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut cut: String = line.chars().take(300).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_host_is_described_by_its_last_log_line() {
        assert_eq!(
            last_words("2026 INFO starting\n2026 ERROR cannot open spool: disk full\n\n"),
            Some("2026 ERROR cannot open spool: disk full".into())
        );
        assert_eq!(last_words(" \n"), None);
        let long = "x".repeat(500);
        assert_eq!(last_words(&long).map(|l| l.chars().count()), Some(301));
    }
}

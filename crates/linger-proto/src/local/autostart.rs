//! Reaching the per-user daemon on its socket, starting `lingerd` on demand (detached, as
//! tmux starts its server) when nothing answers. Part of the local socket's contract, so the
//! client library and the daemon's own ssh bridge (`lingerd --stdio`) share it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

/// How long a freshly started daemon gets to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon that beat ours to the socket's lock gets to open the socket before
/// ours is started again (the lock's holder may have been a daemon on its way out).
const RACE_GRACE: Duration = Duration::from_millis(250);

/// lingerd's exit status when another daemon already serves its socket: a starter that
/// lost the race to start one then simply connects to the winner.
pub const EXIT_ALREADY_SERVING: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket or its directory cannot be used (nothing was sent).
    #[error("{0}")]
    Unreachable(String),
    /// No daemon answered and none could be started.
    #[error("{0}")]
    Start(String),
}

/// Connects to the daemon's socket, starting the daemon first if nothing listens. The
/// socket's directory must be this user's (or root's) alone, and the daemon that answers
/// must run as this user or root: otherwise nothing is sent.
pub async fn connect_or_start(socket: &Path) -> Result<UnixStream, StartError> {
    check_socket_dir(socket)?;
    match UnixStream::connect(socket).await {
        Ok(s) => return verified(s, socket),
        Err(e) if is_absent(&e) => {}
        Err(e) => {
            return Err(StartError::Unreachable(format!(
                "{}: {e}",
                socket.display()
            )))
        }
    }
    let mut child = spawn_daemon(socket)?;
    let started = Instant::now();
    // Set when our daemon exited because another daemon held the socket: a concurrent
    // starter's, whose socket appears at once, or one still exiting, after which we start
    // ours again.
    let mut lost_race: Option<Instant> = None;
    loop {
        check_socket_dir(socket)?;
        match UnixStream::connect(socket).await {
            Ok(s) => {
                // Reap the daemon if it ever exits while we live; it usually outlives us.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return verified(s, socket);
            }
            Err(e) if is_absent(&e) => {}
            Err(e) => {
                return Err(StartError::Unreachable(format!(
                    "{}: {e}",
                    socket.display()
                )))
            }
        }
        match lost_race {
            Some(at) if at.elapsed() > RACE_GRACE => {
                lost_race = None;
                child = spawn_daemon(socket)?;
            }
            Some(_) => {}
            None => {
                if let Ok(Some(status)) = child.try_wait() {
                    if status.code() == Some(EXIT_ALREADY_SERVING) {
                        lost_race = Some(Instant::now());
                    } else {
                        let mut why = String::new();
                        if let Some(mut err) = child.stderr.take() {
                            use std::io::Read;
                            let _ = err.read_to_string(&mut why);
                        }
                        let why = why.lines().last().unwrap_or("").trim().to_string();
                        return Err(StartError::Start(if why.is_empty() {
                            format!("lingerd exited with {status}")
                        } else {
                            why
                        }));
                    }
                }
            }
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartError::Start(format!(
                "lingerd did not open {} within {}s",
                socket.display(),
                START_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a socket directory another user could have made or could write (one not made
/// yet is fine: the daemon makes it, and it is checked again before connecting).
fn check_socket_dir(socket: &Path) -> Result<(), StartError> {
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    if !dir.exists() {
        return Ok(());
    }
    super::check_dir(dir, my_uid()).map_err(|e| StartError::Unreachable(e.to_string()))
}

/// The connection, if the daemon on it runs as this user or as root (SO_PEERCRED).
fn verified(stream: UnixStream, socket: &Path) -> Result<UnixStream, StartError> {
    let peer = stream.peer_cred().map_err(|e| {
        StartError::Unreachable(format!("cannot tell who serves {}: {e}", socket.display()))
    })?;
    let me = my_uid();
    if peer.uid() != me && peer.uid() != 0 {
        return Err(StartError::Unreachable(format!(
            "the daemon on {} runs as uid {}, not as you (uid {me}) or root: refusing to talk to it",
            socket.display(),
            peer.uid()
        )));
    }
    Ok(stream)
}

fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// `$LINGERD` if set, else `lingerd` beside this executable (or its parent directory, for
/// examples and tests under target/), else `lingerd` on the PATH.
pub fn daemon_program() -> PathBuf {
    if let Some(p) = std::env::var_os("LINGERD").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("lingerd");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("lingerd")
}

fn spawn_daemon(socket: &Path) -> Result<std::process::Child, StartError> {
    let program = daemon_program();
    let mut cmd = Command::new(&program);
    cmd.arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; detaching from our terminal and process group
    // keeps the daemon alive after this client exits or is interrupted.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| StartError::Start(format!("cannot run {}: {e}", program.display())))
}

//! What a session host leaves behind when it dies without ending its session (SIGKILL, the
//! OOM killer): its shell and everything the shell started, reparented away from linger, and
//! the session's socket, directory and control groups. The daemon ends and removes them as
//! soon as the host's connection closes, so nothing of a dead session runs unseen.
//!
//! The processes are found without reading all of /proc: the session's control groups when
//! it has them (every process, whatever it did), else the shell's process group (the shell,
//! its commands and background jobs; a process that left the group with setsid or `set -m`
//! escapes, as it escapes a terminal's hangup).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use linger_host::procs;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use uuid::Uuid;

/// How long a host whose connection closed may take to exit before it counts as alive.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// A process as it was when the daemon adopted the host: its start time tells it from a
/// later process given the same pid.
#[derive(Debug, Clone, Copy)]
struct Known {
    pid: i32,
    start: u64,
}

impl Known {
    fn alive(&self) -> bool {
        procs::stat(self.pid).is_some_and(|s| s.start == self.start && !s.zombie)
    }
}

/// What the daemon needs to clear up after a session's host.
#[derive(Debug)]
pub struct Remains {
    id: Uuid,
    host: Option<Known>,
    /// The shell, known to be the host's child when noted.
    shell: Option<Known>,
    session_dir: PathBuf,
    socket: PathBuf,
}

/// What [`Remains::clear`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleared {
    /// The host still runs: only its connection went away. Nothing was touched.
    HostAlive,
    /// The host ended its session itself.
    Finished,
    /// The host died and its session was ended here.
    Ended,
}

impl Remains {
    /// Notes the host (`host_pid`, the peer of its socket) and its shell, at adoption.
    pub fn note(
        id: Uuid,
        host_pid: Option<i32>,
        shell_pid: u32,
        session_dir: PathBuf,
        socket: PathBuf,
    ) -> Remains {
        let host = host_pid.and_then(procs::stat);
        let shell = i32::try_from(shell_pid)
            .ok()
            .filter(|&p| p > 0)
            .and_then(procs::stat)
            .filter(|s| host.is_some_and(|h| s.ppid == h.pid));
        let known = |s: procs::ProcStat| Known {
            pid: s.pid,
            start: s.start,
        };
        Remains {
            id,
            host: host.map(known),
            shell: shell.map(known),
            session_dir,
            socket,
        }
    }

    /// After the host's connection closed: if the host died and left its session behind,
    /// ends the session's processes and removes its files; removes its control groups in
    /// any case. Blocking: run it off the runtime.
    pub fn clear(&self) -> Cleared {
        let deadline = Instant::now() + EXIT_WAIT;
        while self.host.is_some_and(|h| h.alive()) {
            if Instant::now() > deadline {
                return Cleared::HostAlive;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let name = self.id.simple().to_string();
        if !self.session_dir.exists() {
            linger_host::limits::remove_for(&name);
            return Cleared::Finished;
        }
        if let Some(shell) = self.shell {
            // The group keeps the shell's number while any member lives, so no new process
            // can have it; if the number is in use by another process now, the group is gone.
            let ours = procs::stat(shell.pid).is_none_or(|s| s.start == shell.start);
            if ours {
                let _ = killpg(Pid::from_raw(shell.pid), Signal::SIGKILL);
            }
        }
        linger_host::limits::kill_and_remove_for(&name);
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir_all(&self.session_dir);
        Cleared::Ended
    }
}

//! Starting the session's shell on pipes, with the bootstrap that turns it into a command
//! loop (see bootstrap.sh).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{pipe2, setpgid, Pid};

use crate::HostError;

pub const BOOTSTRAP: &str = include_str!("bootstrap.sh");

/// The fd the bootstrap reads commands from.
const CMD_FD: RawFd = 250;
/// Output pipes get this much room, so a fast writer needs fewer wakeups of the host.
const PIPE_SIZE: i32 = 1 << 20;

pub struct Shell {
    pub pid: i32,
    pub commands: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub fn spawn(
    argv: &[String],
    env: &[(String, String)],
    cwd: &str,
    nonce: &str,
    limits: std::sync::Arc<crate::limits::Prepared>,
) -> Result<Shell, HostError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| HostError::Spawn("the configured shell is empty".into()))?;
    let (cmd_r, cmd_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    for fd in [&out_w, &err_w] {
        // Best effort: a smaller pipe only costs wakeups.
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }

    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg("-c")
        .arg(BOOTSTRAP)
        .arg("linger")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("__LINGER_NONCE", nonce)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let cmd_r_raw = cmd_r.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls are made (dup2, setpgid,
    // sigaction, sigprocmask), and no memory is allocated.
    unsafe {
        cmd.pre_exec(move || {
            // The command pipe lands on a fixed high fd without CLOEXEC, so bash keeps it.
            if libc::dup2(cmd_r_raw, CMD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Its own process group, so Ctrl-C can signal the shell and its foreground
            // children without touching the host.
            setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            // Undo whatever dispositions the daemon's starter left us (an ignored SIGINT
            // would make Ctrl-C useless in the session).
            for sig in [
                Signal::SIGINT,
                Signal::SIGQUIT,
                Signal::SIGTERM,
                Signal::SIGHUP,
                Signal::SIGPIPE,
                Signal::SIGCHLD,
            ] {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
            }
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            // The session's control groups and rlimits, before anything of it runs.
            limits.enter()?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| HostError::Spawn(format!("cannot start the shell '{program}': {e}")))?;
    drop(cmd_r);
    for fd in [&cmd_w, &out_r, &err_r] {
        set_nonblocking(fd)?;
    }
    Ok(Shell {
        pid: child.id() as i32,
        commands: cmd_w,
        stdout: out_r,
        stderr: err_r,
    })
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), HostError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io)?;
    Ok(())
}

fn io(e: nix::Error) -> HostError {
    HostError::Io(std::io::Error::from(e))
}

/// Encodes one command for the bootstrap's reader: NUL-terminated fields.
pub fn encode_command(script: &str, args: &[String]) -> Result<Vec<u8>, String> {
    if script.contains('\0') || args.iter().any(|a| a.contains('\0')) {
        return Err(
            "the script or an argument contains a NUL byte, which a shell cannot hold".into(),
        );
    }
    let mut out = Vec::with_capacity(script.len() + 16);
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.push(0);
    for a in args {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(script.as_bytes());
    out.push(0);
    Ok(out)
}

//! Starting the session's shell: a real bash whose command loop is not bash code. The loop
//! (loop.c, built by build.rs) is a loadable builtin handed to bash through a memfd; bash
//! reads one line on stdin that enables and enters it, and from then on commands arrive as
//! records on a Unix socket, each with its own stdin descriptor. Nothing the user defines in
//! the shell can reach the loop: see loop.c.

use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::pipe2;
use tokio::io::Interest;

use crate::HostError;

/// The command loop, a shared object bash loads with `enable -f`.
const LOOP_SO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/linger_shell.so"));
/// The one line bash reads on stdin: load the loop and enter it (it never returns), telling
/// it where its descriptors are.
fn bootstrap(base: RawFd) -> Vec<u8> {
    format!(
        "enable -f /proc/self/fd/{} linger_shell && linger_shell {base}\n",
        base + 3
    )
    .into_bytes()
}

/// Where the loop's four descriptors start: just under 256, out of the way of the user's
/// redirections (bash numbers those from 10 up), or under the descriptor limit when it is
/// lower, keeping two spare below it for bash's own high descriptors.
fn fd_base() -> Result<RawFd, HostError> {
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_err(io)?;
    let top = soft.min(256) as RawFd;
    let base = top - 6;
    if base < 16 {
        return Err(HostError::Spawn(format!(
            "the descriptor limit ({soft}) is too low for a shell session: raise it (ulimit -n, or LimitNOFILE= in the daemon's unit)"
        )));
    }
    Ok(base)
}
/// Output pipes get this much room, so a fast writer needs fewer wakeups of the host.
const PIPE_SIZE: i32 = 1 << 20;
/// How long the shell may take to load the loop.
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Shell {
    pub pid: i32,
    pub commands: UnixStream,
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
    let (commands, shell_end) = UnixStream::pair()?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    for fd in [&out_w, &err_w] {
        // Best effort: a smaller pipe only costs wakeups.
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    let so = loop_memfd()?;
    let (boot_r, boot_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    let base = fd_base()?;
    std::fs::File::from(boot_w).write_all(&bootstrap(base))?;

    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("__LINGER_NONCE", nonce)
        .current_dir(cwd)
        .stdin(Stdio::from(boot_r))
        .stdout(Stdio::from(out_w.try_clone()?))
        .stderr(Stdio::from(err_w.try_clone()?));
    let fixed = [
        (shell_end.as_raw_fd(), base),
        (out_w.as_raw_fd(), base + 1),
        (err_w.as_raw_fd(), base + 2),
        (so.as_raw_fd(), base + 3),
    ];
    // SAFETY: between fork and exec only async-signal-safe calls are made (dup2, setsid,
    // sigaction, sigprocmask, writes to cgroup files), and no memory is allocated.
    unsafe {
        cmd.pre_exec(move || {
            // The loop's descriptors land on fixed high fds without CLOEXEC, so bash keeps
            // them; the loop marks them close-on-exec once it runs.
            for (from, to) in fixed {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Its own session (and so its own process group), so Ctrl-C can signal the
            // shell and its foreground children without touching the host, and so the
            // loop can give a terminal command a controlling terminal (loop.c).
            nix::unistd::setsid()?;
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
    let child = cmd.spawn().map_err(|e| {
        HostError::Spawn(format!(
            "cannot start the shell '{program}': {}",
            crate::io_error_text(&e)
        ))
    })?;
    drop((shell_end, out_w, err_w, so));
    wait_loaded(&commands, program)?;
    commands.set_nonblocking(true)?;
    for fd in [&out_r, &err_r] {
        set_nonblocking(fd)?;
    }
    Ok(Shell {
        pid: child.id() as i32,
        commands,
        stdout: out_r,
        stderr: err_r,
    })
}

fn loop_memfd() -> Result<OwnedFd, HostError> {
    let fd =
        nix::sys::memfd::memfd_create(c"linger_shell.so", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(io)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(LOOP_SO)?;
    Ok(OwnedFd::from(file))
}

/// Waits for the loop's first byte: it is running, or the shell could not load it.
fn wait_loaded(commands: &UnixStream, program: &str) -> Result<(), HostError> {
    use std::io::Read;
    commands.set_read_timeout(Some(LOAD_TIMEOUT))?;
    let mut byte = [0u8; 1];
    let mut reader = commands;
    match reader.read(&mut byte) {
        Ok(1) if byte[0] == b'R' => Ok(()),
        Ok(_) | Err(_) => Err(HostError::Spawn(format!(
            "the shell '{program}' could not start linger's command loop (it must be bash 5.0 \
             or newer, with loadable builtins)"
        ))),
    }
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

/// Most unread type-ahead the loop reports after a terminal command (loop.c's UNREAD_MAX).
pub const UNREAD_MAX: usize = 4096;

/// What the loop is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Run a script in the shell.
    Command,
    /// Start a background job: the arguments are its FIFO prefix, its script, then its own.
    Job,
    /// Run a script on the terminal whose slave travels with the record: the first
    /// argument is the client's `$TERM`, the rest are the script's own.
    Terminal,
}

/// Refuses what a shell cannot hold (bash strings end at NUL).
pub fn check_fields(script: &str, args: &[String]) -> Result<(), String> {
    if script.contains('\0') || args.iter().any(|a| a.contains('\0')) {
        return Err(
            "the script or an argument contains a NUL byte, which a shell cannot hold".into(),
        );
    }
    Ok(())
}

/// One record for the loop: u32 length (LE), then the kind, the argument count, and each
/// argument and the script as u32 length + bytes.
pub fn encode_record(kind: RecordKind, script: &str, args: &[String]) -> Result<Vec<u8>, String> {
    check_fields(script, args)?;
    let len32 = |n: usize| {
        u32::try_from(n)
            .map_err(|_| "the script or its arguments are larger than 4 GiB".to_string())
    };
    let mut out =
        Vec::with_capacity(script.len() + 16 + args.iter().map(|a| a.len() + 4).sum::<usize>());
    out.extend_from_slice(&[0; 4]);
    out.push(match kind {
        RecordKind::Command => b'C',
        RecordKind::Job => b'J',
        RecordKind::Terminal => b'T',
    });
    out.extend_from_slice(&len32(args.len())?.to_le_bytes());
    for field in args
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(script))
    {
        out.extend_from_slice(&len32(field.len())?.to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    let body = len32(out.len() - 4)?;
    out[..4].copy_from_slice(&body.to_le_bytes());
    Ok(out)
}

/// A record on its way to the loop, with the command's stdin (none: `/dev/null`).
pub struct Record {
    pub bytes: Vec<u8>,
    pub stdin: Option<OwnedFd>,
}

/// Writes a record; the stdin descriptor travels with its first byte.
pub async fn send_record(sock: &tokio::net::UnixStream, record: Record) -> std::io::Result<()> {
    let fds: Vec<RawFd> = record.stdin.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = 0;
    while sent < record.bytes.len() {
        let n = sock
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(&record.bytes[sent..])];
                let rights = [ControlMessage::ScmRights(&fds)];
                let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !fds.is_empty() {
                    &rights
                } else {
                    &[]
                };
                sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(std::io::Error::from)
            })
            .await?;
        sent += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout() {
        let r = encode_record(RecordKind::Command, "echo", &["a".into(), "".into()]).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&(1u32 + 4 + 4 + 1 + 4 + 4 + 4).to_le_bytes());
        want.push(b'C');
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.push(b'a');
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(b"echo");
        assert_eq!(r, want);
    }

    /// The stdin descriptor arrives with the record's first byte, as loop.c reads it.
    #[tokio::test]
    async fn a_record_carries_its_stdin_descriptor() {
        use std::io::Read;
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let sock = tokio::net::UnixStream::from_std(ours).unwrap();
        let (pipe_r, pipe_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        std::fs::File::from(pipe_w).write_all(b"forwarded").unwrap();
        let bytes = encode_record(RecordKind::Command, &"x".repeat(300_000), &[]).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 4];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut got)];
            let msg = nix::sys::socket::recvmsg::<()>(
                theirs.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_WAITALL,
            )
            .unwrap();
            let fd = msg
                .cmsgs()
                .unwrap()
                .find_map(|c| match c {
                    nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                })
                .expect("a descriptor with the first bytes");
            let mut rest = Vec::new();
            (&theirs).read_to_end(&mut rest).unwrap();
            // SAFETY: the descriptor was just received and nothing else owns it.
            let mut stdin = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let mut text = String::new();
            stdin.read_to_string(&mut text).unwrap();
            (got.len() + rest.len(), text)
        });
        send_record(
            &sock,
            Record {
                bytes: bytes.clone(),
                stdin: Some(pipe_r),
            },
        )
        .await
        .unwrap();
        drop(sock);
        let (len, text) = reader.join().unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(text, "forwarded");
    }

    #[test]
    fn nul_is_refused() {
        assert!(encode_record(RecordKind::Job, "a\0b", &[]).is_err());
        assert!(encode_record(RecordKind::Command, "ok", &["x\0".into()]).is_err());
    }
}

//! The host's live state and the tasks that feed it: the two pipe readers, the reaper, and
//! the command writer.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use linger_proto::host::{HostSpec, HostStatus, SessionSettings};
use linger_proto::types::StreamKind;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::log::{LogSettings, OutputLog};
use crate::marker::{MarkerScanner, Piece};
use crate::procs;
use crate::shell::{self, Shell};
use crate::HostError;

/// Largest chunk read from a pipe at once.
const READ_CHUNK: usize = 256 * 1024;
/// Running commands are shown truncated to this many bytes.
const SHOWN_COMMAND_LEN: usize = 200;

pub struct Running {
    pub id: Uuid,
    pub script: String,
    pub started_ticks: u64,
    stdout_end: Option<i32>,
    stderr_end: bool,
}

struct Inner {
    running: Option<Running>,
    /// Output is attributed to the command running, or else to the last one that ran
    /// (a background process it left behind).
    current: Uuid,
    shell_exited: Option<String>,
}

pub struct HostState {
    pub spec: HostSpec,
    pub shell_pid: i32,
    pub log: OutputLog,
    inner: Mutex<Inner>,
    /// Kept for the daemon, which may restart; only the buffering mode matters here.
    settings: Mutex<SessionSettings>,
    commands: mpsc::UnboundedSender<Vec<u8>>,
    commands_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
    /// Bumped on every change the daemon should hear about (start, end, shell exit).
    pub changed: watch::Sender<u64>,
}

impl HostState {
    pub fn new(spec: HostSpec, shell_pid: i32) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = OutputLog::new(LogSettings {
            mode: spec.settings.buffering,
            memory_cap: spec.meta.output_buffer_size,
            spool_path: std::path::Path::new(&spec.session_dir).join("spool"),
            spool_limit: spec.meta.spool_limit,
        });
        HostState {
            settings: Mutex::new(spec.settings.clone()),
            spec,
            shell_pid,
            log,
            inner: Mutex::new(Inner {
                running: None,
                current: Uuid::nil(),
                shell_exited: None,
            }),
            commands: tx,
            commands_rx: Mutex::new(Some(rx)),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn status(&self) -> HostStatus {
        let g = self.lock();
        HostStatus {
            running: g.running.as_ref().map(|r| (r.id, shown(&r.script))),
            pending_output_bytes: self.log.pending_bytes(),
            dropped_output_bytes: self.log.dropped_bytes(),
            shell_exited: g.shell_exited.clone(),
            last_seq: self.log.last_seq(),
        }
    }

    pub fn settings(&self) -> SessionSettings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_settings(&self, settings: SessionSettings) {
        self.log.set_mode(settings.buffering);
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    pub fn shell_exited(&self) -> Option<String> {
        self.lock().shell_exited.clone()
    }

    /// Starts a command, or says why not.
    pub fn run(&self, id: Uuid, script: &str, args: &[String]) -> Result<(), String> {
        let bytes = shell::encode_command(script, args)?;
        let mut g = self.lock();
        if let Some(why) = &g.shell_exited {
            return Err(format!("the session's shell has exited ({why})"));
        }
        if let Some(r) = &g.running {
            return Err(format!("command {} is still running", r.id));
        }
        g.running = Some(Running {
            id,
            script: script.to_string(),
            started_ticks: procs::now_ticks().unwrap_or(0),
            stdout_end: None,
            stderr_end: false,
        });
        g.current = id;
        drop(g);
        self.commands
            .send(bytes)
            .map_err(|_| "the session's shell is not accepting commands".to_string())?;
        self.bump();
        Ok(())
    }

    /// Ctrl-C: SIGINT to the shell's process group; if the command has not ended after
    /// `escalate_after`, SIGKILL to every process it started.
    pub fn interrupt(self: &Arc<Self>, id: Uuid, escalate_after: Duration) {
        let started = match &self.lock().running {
            Some(r) if r.id == id => r.started_ticks,
            _ => return,
        };
        let _ = killpg(Pid::from_raw(self.shell_pid), Signal::SIGINT);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(escalate_after).await;
            let still = matches!(&me.lock().running, Some(r) if r.id == id);
            if still {
                tracing::warn!(command = %id, "command ignored SIGINT; killing what it started");
                let pids: Vec<i32> = procs::descendants(me.shell_pid)
                    .into_iter()
                    .filter(|&(_, start)| start >= started)
                    .map(|(pid, _)| pid)
                    .collect();
                procs::signal_all(&pids, Signal::SIGKILL);
            }
        });
    }

    /// Ends every process of the session: SIGHUP and SIGTERM, then SIGKILL after `grace`.
    pub async fn kill_all(&self, grace: Duration) {
        let me = std::process::id() as i32;
        let victims: Vec<i32> = procs::descendants(me).into_iter().map(|(p, _)| p).collect();
        procs::signal_all(&victims, Signal::SIGHUP);
        procs::signal_all(&victims, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if procs::descendants(me).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rest: Vec<i32> = procs::descendants(me).into_iter().map(|(p, _)| p).collect();
        procs::signal_all(&rest, Signal::SIGKILL);
    }

    fn current(&self) -> Uuid {
        self.lock().current
    }

    /// A pipe reader saw its end marker.
    fn end_marker(&self, stream: StreamKind, status: Option<i32>) {
        let mut g = self.lock();
        let Some(r) = g.running.as_mut() else {
            tracing::warn!("end marker without a running command");
            return;
        };
        match stream {
            StreamKind::Stdout => r.stdout_end = Some(status.unwrap_or(1)),
            StreamKind::Stderr => r.stderr_end = true,
        }
        if let (Some(status), true) = (r.stdout_end, r.stderr_end) {
            // The end goes into the log before the command stops showing as running, so a
            // status that says "nothing running" always counts the end in `last_seq`.
            self.log.push_finished(r.id, status);
            g.running = None;
            drop(g);
            self.bump();
        }
    }

    fn shell_gone(&self, reason: String, status: i32) {
        let mut g = self.lock();
        if let Some(r) = &g.running {
            self.log.push_finished(r.id, status);
        }
        g.running = None;
        g.shell_exited = Some(reason);
        drop(g);
        self.bump();
    }
}

fn shown(script: &str) -> String {
    let line = script.trim();
    if line.len() <= SHOWN_COMMAND_LEN {
        return line.to_string();
    }
    let mut end = SHOWN_COMMAND_LEN;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Starts the tasks that connect the shell to the state.
pub fn start(state: Arc<HostState>, shell: Shell, nonce: &str) -> Result<(), HostError> {
    let stdout = pipe::Receiver::from_owned_fd(shell.stdout)?;
    let stderr = pipe::Receiver::from_owned_fd(shell.stderr)?;
    tokio::spawn(read_pipe(
        state.clone(),
        stdout,
        StreamKind::Stdout,
        MarkerScanner::stdout(nonce),
    ));
    tokio::spawn(read_pipe(
        state.clone(),
        stderr,
        StreamKind::Stderr,
        MarkerScanner::stderr(nonce),
    ));
    let rx = state
        .commands_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(rx) = rx {
        tokio::spawn(write_commands(shell.commands, rx));
    }
    tokio::spawn(reap(state));
    Ok(())
}

async fn read_pipe(
    state: Arc<HostState>,
    mut pipe: pipe::Receiver,
    stream: StreamKind,
    mut scanner: MarkerScanner,
) {
    let mut pieces = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(READ_CHUNK);
        match pipe.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(?stream, "reading the shell's output failed: {e}");
                break;
            }
        }
        scanner.feed(buf, &mut pieces);
        for piece in pieces.drain(..) {
            match piece {
                Piece::Data(data) => {
                    state
                        .log
                        .push_output(state.current(), stream, Bytes::from(data))
                        .await
                }
                Piece::End(status) => state.end_marker(stream, status),
            }
        }
    }
    if let Some(rest) = scanner.finish() {
        state
            .log
            .push_output(state.current(), stream, Bytes::from(rest))
            .await;
    }
}

async fn write_commands(fd: OwnedFd, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut pipe = match pipe::Sender::from_owned_fd(fd) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot use the shell's command pipe: {e}");
            return;
        }
    };
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = pipe.write_all(&bytes).await {
            tracing::error!("writing a command to the shell failed: {e}");
            return;
        }
    }
}

/// Reaps every child (the host is a subreaper) and notices when the shell itself exits.
async fn reap(state: Arc<HostState>) {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch for SIGCHLD: {e}");
            return;
        }
    };
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == state.shell_pid => {
                    tracing::warn!(code, "the shell exited");
                    state.shell_gone(format!("its shell exited with status {code}"), code);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == state.shell_pid => {
                    tracing::warn!(?sig, "the shell was killed");
                    state.shell_gone(
                        format!("its shell was killed by {}", sig.as_str()),
                        128 + sig as i32,
                    );
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

//! The host's live state and the tasks that feed it: the two pipe readers, the reaper, and
//! the command writer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use linger_proto::host::{HostSpec, HostStatus, JobStatus, RunKind, SessionSettings};
use linger_proto::types::{JobKind, JobState};
use linger_proto::types::{StreamKind, TerminalSpec};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::input::{Input, ProgressTx};
use crate::jobs::Job;
use crate::log::{LogSettings, OutputLog};
use crate::marker::{MarkerScanner, Piece};
use crate::procs;
use crate::reader::PipeReader;
use crate::shell::{self, Shell};
use crate::terminal::{Pty, Terminal};
use crate::HostError;

/// Between SIGTERM and SIGKILL when a job is stopped.
const JOB_STOP_GRACE: Duration = Duration::from_secs(2);
/// Running commands are shown truncated to this many bytes.
const SHOWN_COMMAND_LEN: usize = 200;

pub struct Running {
    pub id: Uuid,
    pub script: String,
    pub started_ticks: u64,
    stdout_end: Option<i32>,
    stderr_end: bool,
    /// The command's own terminal (`invoke --tty`).
    terminal: Option<Arc<Terminal>>,
    /// What was typed at its terminal and never read; a terminal command ends once the
    /// loop has said (it always does, before its end markers).
    unread_input: Option<Bytes>,
    /// Where the command's forwarded input stood when it ended (see [`Input::stop`]).
    input_offset: Option<u64>,
}

/// A command run with `invoke --as-job`: its record stays for the job table, and its
/// output goes to a log of its own (its channel), never the session's foreground log, so
/// each job keeps its own output and none leaks into the next command's.
struct RemoteJob {
    id: Uuid,
    command: String,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
    status: Option<i32>,
    log: OutputLog,
}

/// Remote job records kept (oldest forgotten first).
const REMOTE_JOBS_KEPT: usize = 64;
/// Background jobs one session may run at once (each holds two FIFOs, reader tasks, a log
/// and a subshell); a further `job start` is refused.
pub const MAX_RUNNING_JOBS: usize = 64;

struct Inner {
    running: Option<Running>,
    remote_jobs: std::collections::VecDeque<RemoteJob>,
    /// Background jobs, oldest first.
    jobs: Vec<Arc<Job>>,
    /// Output is attributed to the command running, or else to the last one that ran
    /// (a background process it left behind).
    current: Uuid,
    shell_exited: Option<String>,
    /// The running command's forwarded input, if it has one.
    input: Option<Input>,
}

pub struct HostState {
    pub spec: HostSpec,
    pub shell_pid: i32,
    pub log: OutputLog,
    inner: Mutex<Inner>,
    /// Kept for the daemon, which may restart; only the buffering mode matters here.
    settings: Mutex<SessionSettings>,
    commands: mpsc::UnboundedSender<shell::Record>,
    commands_rx: Mutex<Option<mpsc::UnboundedReceiver<shell::Record>>>,
    /// Bumped on every change the daemon should hear about (start, end, shell exit).
    pub changed: watch::Sender<u64>,
    /// Signalled when a background job's log has new entries.
    pub jobs_appended: Arc<tokio::sync::Notify>,
    /// How far the forwarded input of the latest command that had one has got.
    pub input_progress: ProgressTx,
    /// Copies of new foreground output for watchers, while the daemon wants them.
    pub tap: Tap,
    nonce: String,
}

/// Chunks of output waiting to go to the daemon for watchers.
const TAP_CHUNKS: usize = 64;

/// The copy of new output watchers get: best effort, bounded, never slowing the command.
pub struct Tap {
    on: std::sync::atomic::AtomicBool,
    tx: mpsc::Sender<(Uuid, StreamKind, Bytes)>,
    rx: Mutex<Option<mpsc::Receiver<(Uuid, StreamKind, Bytes)>>>,
    /// Bytes not tapped since the last chunk that was (the daemon fell behind).
    missed: std::sync::atomic::AtomicU64,
}

impl Tap {
    fn new() -> Tap {
        let (tx, rx) = mpsc::channel(TAP_CHUNKS);
        Tap {
            on: false.into(),
            tx,
            rx: Mutex::new(Some(rx)),
            missed: 0.into(),
        }
    }

    pub fn set(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn copy(&self, id: Uuid, stream: StreamKind, data: &Bytes) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.on.load(Relaxed) {
            return;
        }
        if self.tx.try_send((id, stream, data.clone())).is_err() {
            self.missed.fetch_add(data.len() as u64, Relaxed);
        }
    }

    /// Bytes missed since the last call.
    pub fn take_missed(&self) -> u64 {
        self.missed.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// The receiving end, for the one daemon connection there is at a time.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<(Uuid, StreamKind, Bytes)>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The connection ended: nobody watches until the next daemon says so.
    pub fn give_back(&self, rx: mpsc::Receiver<(Uuid, StreamKind, Bytes)>) {
        self.set(false);
        *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
    }
}

impl HostState {
    pub fn new(spec: HostSpec, shell_pid: i32, nonce: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = OutputLog::new(LogSettings {
            mode: spec.settings.buffering,
            memory: crate::log::MemoryQuota::new(spec.meta.output_buffer_size),
            spool_path: std::path::Path::new(&spec.session_dir).join("spool"),
            spool_quota: crate::spool::SpoolQuota::new(spec.meta.spool_limit),
        });
        HostState {
            settings: Mutex::new(spec.settings.clone()),
            spec,
            shell_pid,
            log,
            inner: Mutex::new(Inner {
                running: None,
                remote_jobs: std::collections::VecDeque::new(),
                jobs: Vec::new(),
                current: Uuid::nil(),
                shell_exited: None,
                input: None,
            }),
            commands: tx,
            commands_rx: Mutex::new(Some(rx)),
            changed: watch::channel(0).0,
            jobs_appended: Arc::new(tokio::sync::Notify::new()),
            input_progress: Arc::new(watch::channel(None).0),
            tap: Tap::new(),
            nonce: nonce.to_string(),
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
            jobs: self.job_statuses(&g),
            blocked: g.running.is_some() && self.log.writer_waiting(),
        }
    }

    fn job_statuses(&self, g: &Inner) -> Vec<JobStatus> {
        let mut out: Vec<JobStatus> = g
            .remote_jobs
            .iter()
            .map(|r| JobStatus {
                job_id: r.id,
                kind: JobKind::Remote,
                command: r.command.clone(),
                state: match r.status {
                    None => JobState::Running,
                    Some(0) => JobState::Completed,
                    Some(130) => JobState::Stopped,
                    Some(_) => JobState::Failed,
                },
                status: r.status,
                // PowerShell's HasMoreData: more may come while it runs, or some is kept.
                has_more_data: r.status.is_none() || !r.log.is_empty(),
                pending_output_bytes: r.log.pending_bytes(),
                started_at_ms: r.started_at_ms,
                ended_at_ms: r.ended_at_ms,
            })
            .collect();
        out.extend(g.jobs.iter().map(|j| j.status()));
        out.sort_by_key(|j| j.started_at_ms);
        out
    }

    pub fn job(&self, id: Uuid) -> Option<Arc<Job>> {
        self.lock().jobs.iter().find(|j| j.id == id).cloned()
    }

    /// The output log of job `id`, of either kind (its channel).
    pub fn job_log(&self, id: Uuid) -> Option<OutputLog> {
        let g = self.lock();
        job_log_in(&g, id).or_else(|| g.jobs.iter().find(|j| j.id == id).map(|j| j.log.clone()))
    }

    /// Where output of command `id` goes: its remote job's log, else the foreground log.
    fn log_of(&self, id: Uuid) -> OutputLog {
        job_log_in(&self.lock(), id).unwrap_or_else(|| self.log.clone())
    }

    /// Output of command `id` arrived.
    async fn push_output(&self, id: Uuid, stream: StreamKind, data: Bytes) {
        let log = self.log_of(id);
        log.push_output(id, stream, data).await;
        if !log.same(&self.log) {
            self.jobs_appended.notify_waiters();
        }
    }

    /// Stops background job `id` (a remote job is interrupted like Ctrl-C).
    pub async fn stop_job(self: &Arc<Self>, id: Uuid) {
        if let Some(job) = self.job(id) {
            job.stop(JOB_STOP_GRACE).await;
        } else {
            self.interrupt(id, JOB_STOP_GRACE);
        }
        self.bump();
    }

    /// Forgets an ended job and what it kept.
    pub fn forget_job(&self, id: Uuid) {
        let mut g = self.lock();
        let spool = self.remote_spool(id);
        let before = g.remote_jobs.len();
        g.remote_jobs.retain(|r| r.id != id || r.status.is_none());
        if g.remote_jobs.len() < before {
            let _ = std::fs::remove_file(spool);
        }
        if let Some(i) = g.jobs.iter().position(|j| j.id == id && !j.is_running()) {
            let job = g.jobs.remove(i);
            job.forget();
        }
        drop(g);
        self.bump();
    }

    /// Where a remote job's log spools.
    fn remote_spool(&self, id: Uuid) -> std::path::PathBuf {
        std::path::Path::new(&self.spec.session_dir).join(format!("job-{}.spool", id.simple()))
    }

    /// Makes background job `job_id` ready and returns the launch record's arguments for
    /// the shell's loop: the job's FIFO prefix, its script, then its own arguments.
    fn prepare_job(
        self: &Arc<Self>,
        job_id: Uuid,
        script: &str,
        args: &[String],
    ) -> Result<Vec<String>, String> {
        let running = self.lock().jobs.iter().filter(|j| j.is_running()).count();
        if running >= MAX_RUNNING_JOBS {
            return Err(format!(
                "the session already runs {running} background jobs, its limit; wait for one to end or stop one"
            ));
        }
        let me = Arc::downgrade(self);
        let on_change: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(me) = me.upgrade() {
                me.jobs_appended.notify_waiters();
                me.bump();
            }
        });
        let dir = std::path::Path::new(&self.spec.session_dir).join("jobs");
        let job = Job::prepare(
            job_id,
            shown(script),
            &dir,
            &self.log,
            &self.nonce,
            on_change,
        )
        .map_err(|e| format!("cannot prepare the job's output: {e}"))?;
        let mut launch_args = vec![job.prefix(), script.to_string()];
        launch_args.extend(args.iter().cloned());
        self.lock().jobs.push(job);
        Ok(launch_args)
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

    /// Starts a command, or says why not. With `stdin`, the command reads a pipe that
    /// [`HostState::offer_input`] fills; otherwise `/dev/null`. With `terminal`, it runs
    /// on a pseudo-terminal of its own instead, which forwarded input is typed into.
    pub fn run(
        self: &Arc<Self>,
        id: Uuid,
        script: &str,
        args: &[String],
        kind: RunKind,
        stdin: bool,
        terminal: Option<TerminalSpec>,
    ) -> Result<(), String> {
        shell::check_fields(script, args)?;
        {
            let g = self.lock();
            if let Some(why) = &g.shell_exited {
                return Err(format!("the session's shell has exited ({why})"));
            }
            if let Some(r) = &g.running {
                return Err(format!("command {} is still running", r.id));
            }
        }
        // Only a plain command has a terminal or reads forwarded input: a job's requester
        // has gone.
        let terminal = terminal.filter(|_| kind == RunKind::Plain);
        let stdin = stdin && kind == RunKind::Plain;
        let bytes = match (kind, &terminal) {
            (RunKind::LaunchJob { job_id }, _) => {
                let launch = self.prepare_job(job_id, script, args)?;
                shell::encode_record(shell::RecordKind::Job, "", &launch)?
            }
            (_, Some(spec)) => {
                let mut fields = vec![spec.term.clone()];
                fields.extend(args.iter().cloned());
                shell::encode_record(shell::RecordKind::Terminal, script, &fields)?
            }
            _ => shell::encode_record(shell::RecordKind::Command, script, args)?,
        };
        let (input, passed, pty) = match (terminal, stdin) {
            (Some(spec), _) => {
                let (pty, slave) = Pty::open(&spec)
                    .map_err(|e| format!("cannot make a terminal for the command: {e}"))?;
                let pty = Arc::new(Terminal::new(pty, &spec));
                let input =
                    stdin.then(|| Input::to_terminal(id, self.input_progress.clone(), pty.clone()));
                (input, Some(slave), Some(pty))
            }
            (None, true) => {
                let (input, read_end) = Input::open(id, self.input_progress.clone())
                    .map_err(|e| format!("cannot make the command's input pipe: {e}"))?;
                (Some(input), Some(read_end), None)
            }
            (None, false) => (None, None, None),
        };
        // A job runs to its end with nobody reading (seed 002): its log spools, whatever
        // the session's mode, and takes none of the session's memory.
        let job_log =
            (kind == RunKind::Job).then(|| self.log.unattended_like(self.remote_spool(id)));
        let mut g = self.lock();
        if let Some(log) = job_log {
            g.remote_jobs.push_back(RemoteJob {
                id,
                command: shown(script),
                started_at_ms: crate::jobs::now_ms(),
                ended_at_ms: None,
                status: None,
                log,
            });
            while g.remote_jobs.len() > REMOTE_JOBS_KEPT {
                if let Some(old) = g.remote_jobs.pop_front() {
                    let _ = std::fs::remove_file(self.remote_spool(old.id));
                }
            }
        }
        g.running = Some(Running {
            id,
            script: script.to_string(),
            started_ticks: procs::now_ticks().unwrap_or(0),
            stdout_end: None,
            stderr_end: false,
            terminal: pty.clone(),
            unread_input: None,
            input_offset: None,
        });
        g.current = id;
        g.input = input;
        drop(g);
        if let Some(pty) = pty {
            tokio::spawn(read_terminal(
                self.clone(),
                pty,
                id,
                MarkerScanner::stdout(&self.nonce),
            ));
        }
        self.commands
            .send(shell::Record {
                bytes,
                stdin: passed,
            })
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
            // A SIGINT that lands while bash forks a program (after the fork, before the
            // child resets its handlers) is lost in the child and ignored by bash, which
            // waits for it: say it again, as a user presses Ctrl-C again, before the kill.
            let mut waited = Duration::ZERO;
            for again in [Duration::from_millis(250), Duration::from_secs(1)] {
                if waited + again >= escalate_after {
                    break;
                }
                tokio::time::sleep(again).await;
                waited += again;
                if !matches!(&me.lock().running, Some(r) if r.id == id) {
                    return;
                }
                let _ = killpg(Pid::from_raw(me.shell_pid), Signal::SIGINT);
            }
            tokio::time::sleep(escalate_after.saturating_sub(waited)).await;
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
    ///
    /// The session's processes are the shell's process group (the shell, its commands, its
    /// background jobs), signalled as one. Anything that left the group (a `set -m` job, a
    /// daemon that called setsid) is still below this host, a subreaper: once the group is
    /// gone, a host with no child left has no descendant left, so /proc is read (once) only
    /// when something outlived the group.
    pub async fn kill_all(&self, grace: Duration) {
        // The shell's pid names its group only while the shell is unreaped: afterwards the
        // number may belong to someone else.
        let group = self
            .shell_exited()
            .is_none()
            .then(|| Pid::from_raw(self.shell_pid));
        let me = std::process::id() as i32;
        let everyone =
            || -> Vec<i32> { procs::descendants(me).into_iter().map(|(p, _)| p).collect() };
        match group {
            Some(group) => {
                let _ = killpg(group, Signal::SIGHUP);
                let _ = killpg(group, Signal::SIGTERM);
            }
            None if procs::has_children() => {
                let victims = everyone();
                procs::signal_all(&victims, Signal::SIGHUP);
                procs::signal_all(&victims, Signal::SIGTERM);
            }
            None => return,
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !procs::has_children() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        procs::signal_all(&everyone(), Signal::SIGKILL);
    }

    /// The client's window changed: the running command's terminal, if it has one, follows.
    pub fn resize(&self, id: Uuid, rows: u16, cols: u16) {
        let terminal = match &self.lock().running {
            Some(r) if r.id == id => r.terminal.clone(),
            _ => None,
        };
        if let Some(terminal) = terminal {
            if let Err(e) = terminal.resize(rows, cols) {
                tracing::warn!(command = %id, "cannot resize the command's terminal: {e}");
            }
        }
    }

    /// A client enters the running terminal command with a window of `rows`×`cols`: the
    /// terminal takes that size, and the screen is drawn as of an entry boundary. Returns
    /// the command, that entry's seq (output up to it is in the screen) and the drawing;
    /// `None` when no terminal command runs.
    pub fn redraw(&self, size: Option<(u16, u16)>) -> Option<(Uuid, u64, Bytes)> {
        let (id, terminal) = match &self.lock().running {
            Some(r) => (r.id, r.terminal.clone()?),
            None => return None,
        };
        if let Some((rows, cols)) = size {
            if let Err(e) = terminal.resize(rows, cols) {
                tracing::warn!(command = %id, "cannot resize the command's terminal: {e}");
            }
        }
        Some(self.log.at_boundary(|seq| (id, seq, terminal.snapshot())))
    }

    /// How far the running command's forwarded input has got, if it has one.
    pub fn running_input(&self) -> Option<crate::input::Progress> {
        let g = self.lock();
        let running = g.input.as_ref()?.command_id();
        (*self.input_progress.borrow()).filter(|p| p.command_id == running)
    }

    /// Forwarded input for command `id`: ignored unless it is running and reads some.
    pub fn offer_input(&self, id: Uuid, offset: u64, data: Bytes, eof: bool) {
        let mut g = self.lock();
        if let Some(input) = g.input.as_mut().filter(|i| i.command_id() == id) {
            input.offer(offset, data, eof);
        }
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
        self.maybe_finished(g);
    }

    /// The loop reports a terminal command's unread type-ahead. Input kept coming while the
    /// loop looked: the writer is stopped where it is and what it wrote since is taken back
    /// from the terminal, so the end says exactly which input the command never saw (the
    /// client holds whatever came after `input_offset`).
    async fn unread_input(&self, data: Bytes) {
        let (input, terminal) = {
            let mut g = self.lock();
            let Some(terminal) = g.running.as_ref().and_then(|r| r.terminal.clone()) else {
                return;
            };
            (g.input.take(), terminal)
        };
        let input_offset = match input {
            Some(input) => Some(input.stop().await),
            None => None,
        };
        let mut unread = data.to_vec();
        if let Err(e) = terminal.pty.take_typed(&mut unread, shell::UNREAD_MAX) {
            tracing::warn!("cannot read back what was typed at the ended command: {e}");
        }
        let mut g = self.lock();
        match g.running.as_mut() {
            Some(r) if r.terminal.is_some() => {
                r.unread_input = Some(Bytes::from(unread));
                r.input_offset = input_offset;
            }
            _ => return,
        }
        self.maybe_finished(g);
    }

    /// Records the running command's end once everything it ends with has arrived.
    fn maybe_finished(&self, mut g: MutexGuard<'_, Inner>) {
        let Some(r) = g.running.as_mut() else {
            return;
        };
        let unread_known = r.terminal.is_none() || r.unread_input.is_some();
        if let (Some(status), true, true) = (r.stdout_end, r.stderr_end, unread_known) {
            // The end goes into the log before the command stops showing as running, so a
            // status that says "nothing running" always counts the end in `last_seq`.
            let unread = r.unread_input.take().unwrap_or_default();
            let input_offset = r.input_offset;
            let id = r.id;
            let log = job_log_in(&g, id).unwrap_or_else(|| self.log.clone());
            log.push_finished_with(id, status, unread, input_offset);
            if !log.same(&self.log) {
                self.jobs_appended.notify_waiters();
            }
            g.running = None;
            g.input = None;
            record_end(&mut g, id, status);
            drop(g);
            self.bump();
        }
    }

    fn shell_gone(&self, reason: String, status: i32) {
        let mut g = self.lock();
        if let Some(r) = g.running.take() {
            let log = job_log_in(&g, r.id).unwrap_or_else(|| self.log.clone());
            log.push_finished(r.id, status);
            record_end(&mut g, r.id, status);
        }
        g.input = None;
        g.shell_exited = Some(reason);
        drop(g);
        self.bump();
    }
}

fn job_log_in(g: &Inner, id: Uuid) -> Option<OutputLog> {
    g.remote_jobs
        .iter()
        .find(|r| r.id == id)
        .map(|r| r.log.clone())
}

/// A remote job's record learns its end.
fn record_end(g: &mut Inner, id: Uuid, status: i32) {
    if let Some(r) = g.remote_jobs.iter_mut().find(|r| r.id == id) {
        r.status = Some(status);
        r.ended_at_ms = Some(crate::jobs::now_ms());
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
        tokio::spawn(command_socket(state.clone(), shell.commands, rx));
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
    let mut reader = PipeReader::default();
    loop {
        let chunk = match reader.read(&mut pipe).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(?stream, "reading the shell's output failed: {e}");
                break;
            }
        };
        scanner.feed(chunk, &mut pieces);
        for piece in pieces.drain(..) {
            match piece {
                Piece::Data(data) => {
                    let id = state.current();
                    state.tap.copy(id, stream, &data);
                    state.push_output(id, stream, data).await
                }
                Piece::End(status) => state.end_marker(stream, status),
            }
        }
    }
    if let Some(rest) = scanner.finish() {
        state.push_output(state.current(), stream, rest).await;
    }
}

/// Reads a terminal command's output from its terminal until the loop's end marker (which
/// the loop writes there, after giving the terminal up, instead of on the stdout pipe).
async fn read_terminal(
    state: Arc<HostState>,
    terminal: Arc<Terminal>,
    id: Uuid,
    mut scanner: MarkerScanner,
) {
    let mut pieces = Vec::new();
    let mut buf = bytes::BytesMut::new();
    loop {
        let chunk = match terminal.pty.read(&mut buf).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(command = %id, "reading the command's terminal failed: {e}");
                break;
            }
        };
        scanner.feed(chunk, &mut pieces);
        for piece in pieces.drain(..) {
            match piece {
                Piece::Data(data) => {
                    state.tap.copy(id, StreamKind::Stdout, &data);
                    let drew = |d: &Bytes| terminal.drew(d);
                    state
                        .log
                        .push_output_observed(id, StreamKind::Stdout, data, drew)
                        .await
                }
                Piece::End(status) => {
                    state.end_marker(StreamKind::Stdout, status);
                    // Whatever the command left behind and still writes is not its output:
                    // the terminal closes with the last holder of this master.
                    return;
                }
            }
        }
    }
    if let Some(rest) = scanner.finish() {
        state.log.push_output(id, StreamKind::Stdout, rest).await;
    }
}

/// The shell's command socket: records go to the loop, the loop's reports come back.
async fn command_socket(
    state: Arc<HostState>,
    sock: std::os::unix::net::UnixStream,
    rx: mpsc::UnboundedReceiver<shell::Record>,
) {
    let sock = match tokio::net::UnixStream::from_std(sock) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("cannot use the shell's command socket: {e}");
            return;
        }
    };
    tokio::spawn(read_reports(state, sock.clone()));
    write_commands(&sock, rx).await;
}

/// What the loop reports: after each terminal command, its unread type-ahead.
async fn read_reports(state: Arc<HostState>, sock: Arc<tokio::net::UnixStream>) {
    loop {
        let mut head = [0u8; 5];
        if read_exact(&sock, &mut head).await.is_err() {
            return;
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if head[0] != b'U' || len > shell::UNREAD_MAX {
            tracing::warn!("the shell's loop sent an unknown report; no more are read");
            return;
        }
        let mut data = vec![0u8; len];
        if read_exact(&sock, &mut data).await.is_err() {
            return;
        }
        state.unread_input(Bytes::from(data)).await;
    }
}

async fn read_exact(sock: &tokio::net::UnixStream, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        sock.readable().await?;
        match sock.try_read(buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_commands(
    sock: &tokio::net::UnixStream,
    mut rx: mpsc::UnboundedReceiver<shell::Record>,
) {
    while let Some(record) = rx.recv().await {
        if let Err(e) = shell::send_record(sock, record).await {
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

//! Background jobs inside the session (`linger job start`): a script run by a background
//! subshell of the session's bash, so it inherits the session's variables, functions and
//! working directory while the shell goes on taking commands. Its stdout and stderr go to
//! two FIFOs of its own in the session's directory, read here into an output log of its
//! own (a channel), with end markers carrying the status as for foreground commands.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use linger_proto::host::JobStatus;
use linger_proto::types::{JobKind, JobState, StreamKind};
use nix::sys::signal::Signal;
use tokio::net::unix::pipe;
use uuid::Uuid;

use crate::log::OutputLog;
use crate::marker::{MarkerScanner, Piece};
use crate::procs;
use crate::reader::PipeReader;

/// How often a running job's process is checked for having died without its end marker.
const LIVENESS_EVERY: Duration = Duration::from_millis(500);

struct Inner {
    state: JobState,
    status: Option<i32>,
    ended_at_ms: Option<i64>,
    stdout_end: Option<i32>,
    stderr_end: bool,
    /// The background subshell, once the launch has reported it.
    pid: Option<i32>,
    /// A stop was asked for: however it ends now, it ends Stopped.
    stopping: bool,
}

pub struct Job {
    pub id: Uuid,
    pub command: String,
    pub started_at_ms: i64,
    pub log: OutputLog,
    /// `<session dir>/jobs/<id>`: `.out`, `.err`, `.pid`, `.spool` beside it.
    prefix: PathBuf,
    inner: Mutex<Inner>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(linger_proto::duration::millis_i64)
        .unwrap_or(0)
}

impl Job {
    /// Makes the job's FIFOs and starts reading them; the launch command run afterwards
    /// opens their writing ends. `on_change` runs whenever the job's output or state moves.
    pub fn prepare(
        id: Uuid,
        command: String,
        jobs_dir: &Path,
        session_log: &OutputLog,
        nonce: &str,
        on_change: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Arc<Job>> {
        std::fs::create_dir_all(jobs_dir)?;
        let prefix = jobs_dir.join(id.simple().to_string());
        let out_path = prefix.with_extension("out");
        let err_path = prefix.with_extension("err");
        for p in [&out_path, &err_path] {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(std::io::Error::from)?;
        }
        // Opened read-write: we then hold a writer ourselves, so the reader never sees EOF
        // before the job opens its end, nor between its processes. The end markers (or the
        // job's death) say when it is over.
        let open = |p: &Path| pipe::OpenOptions::new().read_write(true).open_receiver(p);
        let out = open(&out_path)?;
        let err = open(&err_path)?;
        let job = Arc::new(Job {
            id,
            command,
            started_at_ms: now_ms(),
            // A job runs to its end with nobody reading (seed 002): its log spools,
            // whatever the session's own mode, and takes none of the session's memory.
            log: session_log.unattended_like(prefix.with_extension("spool")),
            prefix,
            inner: Mutex::new(Inner {
                state: JobState::Running,
                status: None,
                ended_at_ms: None,
                stdout_end: None,
                stderr_end: false,
                pid: None,
                stopping: false,
            }),
        });
        tokio::spawn(read(
            job.clone(),
            out,
            StreamKind::Stdout,
            MarkerScanner::stdout(nonce),
            on_change.clone(),
        ));
        tokio::spawn(read(
            job.clone(),
            err,
            StreamKind::Stderr,
            MarkerScanner::stderr(nonce),
            on_change.clone(),
        ));
        tokio::spawn(watch_liveness(job.clone(), on_change));
        Ok(job)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The launch record's first argument: where the FIFOs are.
    pub fn prefix(&self) -> String {
        self.prefix.display().to_string()
    }

    pub fn is_running(&self) -> bool {
        self.lock().state == JobState::Running
    }

    pub fn status(&self) -> JobStatus {
        let g = self.lock();
        JobStatus {
            job_id: self.id,
            kind: JobKind::Background,
            command: self.command.clone(),
            state: g.state,
            status: g.status,
            // PowerShell's HasMoreData: more may come while it runs, or some is kept.
            has_more_data: g.state == JobState::Running || !self.log.is_empty(),
            pending_output_bytes: self.log.pending_bytes(),
            started_at_ms: self.started_at_ms,
            ended_at_ms: g.ended_at_ms,
        }
    }

    /// The background subshell's pid, from the file the launch wrote.
    fn pid(&self) -> Option<i32> {
        let mut g = self.lock();
        if g.pid.is_none() {
            g.pid = std::fs::read_to_string(self.prefix.with_extension("pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
        g.pid
    }

    /// Records the end (once) and puts it into the job's log.
    fn end(&self, state: JobState, status: i32) {
        let mut g = self.lock();
        if g.state != JobState::Running {
            return;
        }
        g.state = if g.stopping { JobState::Stopped } else { state };
        g.status = Some(status);
        g.ended_at_ms = Some(now_ms());
        self.log.push_finished(self.id, status);
    }

    fn end_marker(&self, stream: StreamKind, status: Option<i32>) {
        let ended = {
            let mut g = self.lock();
            match stream {
                StreamKind::Stdout => g.stdout_end = Some(status.unwrap_or(1)),
                StreamKind::Stderr => g.stderr_end = true,
            }
            match (g.stdout_end, g.stderr_end) {
                (Some(st), true) => Some(st),
                _ => None,
            }
        };
        if let Some(st) = ended {
            let state = if st == 0 {
                JobState::Completed
            } else {
                JobState::Failed
            };
            self.end(state, st);
        }
    }

    /// Stops the job: SIGTERM to it and everything it started, SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        self.lock().stopping = true;
        // The launch writes the pid right after starting the job; a stop that races it
        // waits for it rather than signal nobody.
        let deadline = tokio::time::Instant::now() + grace;
        while self.pid().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(pid) = self.pid() {
            let mut victims: Vec<i32> = procs::descendants(pid)
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            victims.push(pid);
            procs::signal_all(&victims, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline && victims.iter().any(|&p| procs::alive(p))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            procs::signal_all(&victims, Signal::SIGKILL);
        }
        self.end(JobState::Stopped, 128 + Signal::SIGTERM as i32);
    }

    /// Removes the job's files.
    pub fn forget(&self) {
        for ext in ["out", "err", "pid", "spool"] {
            let _ = std::fs::remove_file(self.prefix.with_extension(ext));
        }
    }
}

async fn read(
    job: Arc<Job>,
    mut pipe: pipe::Receiver,
    stream: StreamKind,
    mut scanner: MarkerScanner,
    on_change: Arc<dyn Fn() + Send + Sync>,
) {
    let mut pieces = Vec::new();
    let mut reader = PipeReader::default();
    loop {
        let read = tokio::select! {
            r = reader.read(&mut pipe) => r,
            // A stopped or dead job writes no more markers: stop reading.
            _ = wait_ended(&job) => break,
        };
        let chunk = match read {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(job = %job.id, ?stream, "reading a job's output failed: {e}");
                break;
            }
        };
        scanner.feed(chunk, &mut pieces);
        for piece in pieces.drain(..) {
            match piece {
                Piece::Data(data) => job.log.push_output(job.id, stream, data).await,
                Piece::End(status) => job.end_marker(stream, status),
            }
            on_change();
        }
        if matches!(
            (stream, &*job.lock()),
            (
                StreamKind::Stdout,
                Inner {
                    stdout_end: Some(_),
                    ..
                }
            ) | (
                StreamKind::Stderr,
                Inner {
                    stderr_end: true,
                    ..
                }
            )
        ) {
            // This stream's end marker came: what follows would belong to nobody.
            break;
        }
    }
    on_change();
}

/// Completes once the job has ended (by its markers, a stop, or its death).
async fn wait_ended(job: &Job) {
    while job.is_running() {
        tokio::time::sleep(LIVENESS_EVERY).await;
    }
}

/// A job whose subshell died without writing its end markers (killed from outside) is
/// ended as Failed, so that nobody waits for it forever.
async fn watch_liveness(job: Arc<Job>, on_change: Arc<dyn Fn() + Send + Sync>) {
    while job.is_running() {
        tokio::time::sleep(LIVENESS_EVERY).await;
        let Some(pid) = job.pid() else { continue };
        if !procs::alive(pid) && job.is_running() {
            // Its markers may still be in the FIFOs: give the readers a moment.
            tokio::time::sleep(LIVENESS_EVERY).await;
            if job.is_running() {
                tracing::warn!(job = %job.id, "a background job died without ending");
                job.end(JobState::Failed, 128 + Signal::SIGKILL as i32);
                on_change();
            }
        }
    }
}

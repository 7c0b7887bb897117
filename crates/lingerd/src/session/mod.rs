//! A session as the daemon sees it: the link to its host process, the client it is attached
//! to, the one-command-at-a-time rule, and the relay of its output to the one request (an
//! invoke or a receive) that currently subscribes to it.
//!
//! The daemon never buffers output: the host keeps every entry until a client acknowledges
//! it, and the daemon only relays. Entries arriving while nobody subscribes are dropped here
//! and replayed by the host to the next subscriber. The host also keeps the session's
//! changeable settings (attachment, idle timeout, buffering), so a restarted daemon finds
//! them where it left them.
//!
//! Architecture invariant: a new command starts only when none runs and nobody subscribes,
//! so a command's requester never has its output taken by the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linger_proto::client::InvokeKind;
use linger_proto::frame::{FrameReader, FrameWriter};
use linger_proto::host::{
    Channel, DaemonToHost, HostMeta, HostStatus, HostToDaemon, RunKind, SessionSettings,
};
use linger_proto::server::{ReceiveSummary, Reply, ServerMsg};
use linger_proto::types::{
    Attachment, BufferingMode, ErrorBody, ErrorKind, JobInfo, JobKind, JobState, SessionInfo,
};
use linger_proto::HOST_PROTOCOL_VERSION;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

mod attach;
mod channel;
mod copies;
mod input;
mod invoke;
mod receive;
mod relay;
mod watchers;

use channel::{ChannelState, Eviction, HostEntry, Subscriber};

impl Inner {
    fn chan(&mut self, channel: Channel) -> &mut ChannelState {
        match channel {
            None => &mut self.fg,
            Some(id) => self.jobs.entry(id).or_default(),
        }
    }
}

struct Inner {
    settings: SessionSettings,
    /// Why the daemon asked the host to end, once it has.
    terminating: Option<String>,
    /// The host connection is gone: nothing more will come from it.
    host_gone: bool,
    closed: Option<String>,
    status: HostStatus,
    /// The command running, from the host's `Started` until a status without it.
    running: Option<Uuid>,
    /// A `Run` was sent and its answer has not come back.
    starting: bool,
    /// Jobs started whose host status does not list them yet.
    starting_jobs: Vec<JobInfo>,
    /// The foreground commands' output.
    fg: ChannelState,
    /// Each background job's output.
    jobs: HashMap<Uuid, ChannelState>,
    /// The connection and request that entered the session (`linger enter`).
    entered: Option<(u64, u64)>,
    /// The forwarded input of the latest command that reads some.
    input: Option<input::InputRelay>,
    pending_runs: HashMap<Uuid, oneshot::Sender<Result<(), String>>>,
    /// Read-only watchers (`linger watch`).
    watchers: Vec<watchers::Watcher>,
    /// Copies in progress, by the daemon's id for them.
    copies: HashMap<Uuid, copies::CopyRoute>,
}

pub struct Session {
    pub meta: HostMeta,
    /// What to clear up if the host dies.
    pub remains: crate::remains::Remains,
    inner: Mutex<Inner>,
    to_host: mpsc::UnboundedSender<DaemonToHost>,
    /// Bumped on every change a request may be waiting for.
    changed: watch::Sender<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("cannot reach the session host: {}", linger_host::io_error_text(.0))]
    Io(#[from] std::io::Error),
    #[error("the session host did not introduce itself: {0}")]
    Handshake(String),
}

pub struct InvokeRequest {
    pub conn: u64,
    pub rid: u64,
    pub client: Uuid,
    pub script: String,
    pub args: Vec<String>,
    pub wait: Duration,
    /// Start, then detach at once: nobody receives the output now.
    pub disconnected: bool,
    pub kind: InvokeKind,
    /// The requester forwards its standard input.
    pub stdin: bool,
    /// Run it on a terminal of its own (`invoke --tty`).
    pub terminal: Option<linger_proto::types::TerminalSpec>,
    pub tx: mpsc::Sender<ServerMsg>,
    /// Turns true when the requester's connection has gone: a command still waiting for
    /// the session then never starts.
    pub gone: watch::Receiver<bool>,
    /// Turns true when the requester cancels: the same, for a command still waiting.
    pub withdrawn: watch::Receiver<bool>,
}

pub struct ReceiveRequest {
    pub conn: u64,
    pub rid: u64,
    pub client: Uuid,
    pub keep: bool,
    /// Follow the output to the end (else stop once what is kept now is taken).
    pub follow: bool,
    pub buffering: Option<BufferingMode>,
    /// Enter the running terminal command from a window this size: its screen first.
    pub terminal: Option<linger_proto::types::TerminalSpec>,
    pub tx: mpsc::Sender<ServerMsg>,
}

impl ReceiveRequest {
    fn end(&self) -> channel::ReceiveEnd {
        match (self.keep, self.follow) {
            (true, _) => channel::ReceiveEnd::Kept,
            (false, false) => channel::ReceiveEnd::Taken,
            (false, true) => channel::ReceiveEnd::Followed,
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(linger_proto::duration::millis_i64)
        .unwrap_or(0)
}

fn human_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

impl Session {
    /// Connects to a host's socket and starts relaying. `on_close` hears the session's id
    /// once it has ended.
    /// Takes over the host on `socket`. `may_claim` says whether a host running as a uid
    /// may hold the session its meta describes.
    pub async fn adopt(
        socket: &std::path::Path,
        session_dir: std::path::PathBuf,
        on_close: mpsc::UnboundedSender<Arc<Session>>,
        may_claim: &(dyn Fn(&HostMeta, u32) -> bool + Sync),
    ) -> Result<Arc<Session>, AdoptError> {
        let stream = UnixStream::connect(socket).await?;
        // A host running as another user lives in a directory that user controls: it must
        // be that user's process, and may only claim that user's sessions (checked below).
        let cred = stream.peer_cred()?;
        let host_uid = cred.uid();
        let (r, w) = stream.into_split();
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        let hello = tokio::time::timeout(Duration::from_secs(10), reader.read::<HostToDaemon>())
            .await
            .map_err(|_| AdoptError::Handshake("timed out".into()))?
            .map_err(|e| AdoptError::Handshake(e.to_string()))?;
        let (meta, status, settings) = match hello {
            Some(HostToDaemon::Hello {
                protocol_version,
                meta,
                status,
                settings,
            }) if protocol_version == HOST_PROTOCOL_VERSION => (meta, status, settings),
            Some(HostToDaemon::Hello {
                protocol_version, ..
            }) => {
                return Err(AdoptError::Handshake(format!(
                "it speaks host protocol {protocol_version}, this daemon {HOST_PROTOCOL_VERSION}"
            )))
            }
            _ => return Err(AdoptError::Handshake("unexpected first message".into())),
        };
        if !may_claim(&meta, host_uid) {
            return Err(AdoptError::Handshake(format!(
                "it runs as uid {host_uid} but claims session '{}' of '{}'",
                meta.name, meta.owner
            )));
        }
        writer
            .write(&DaemonToHost::Hello {
                protocol_version: HOST_PROTOCOL_VERSION,
            })
            .await
            .map_err(|e| AdoptError::Handshake(e.to_string()))?;

        let (to_host, mut from_daemon) = mpsc::unbounded_channel::<DaemonToHost>();
        let remains = crate::remains::Remains::note(
            meta.instance_id,
            cred.pid(),
            meta.shell_pid,
            session_dir,
            socket.to_path_buf(),
        );
        let session = Arc::new(Session {
            meta: *meta,
            remains,
            inner: Mutex::new(Inner {
                settings,
                terminating: None,
                host_gone: false,
                closed: status.shell_exited.clone(),
                running: status.running.as_ref().map(|(id, _)| *id),
                fg: ChannelState::holding(status.last_seq),
                jobs: HashMap::new(),
                entered: None,
                input: None,
                status,
                starting: false,
                starting_jobs: Vec::new(),
                pending_runs: HashMap::new(),
                watchers: Vec::new(),
                copies: HashMap::new(),
            }),
            to_host,
            changed: watch::channel(0).0,
        });

        tokio::spawn(async move {
            while let Some(msg) = from_daemon.recv().await {
                if let Err(e) = writer.write(&msg).await {
                    tracing::warn!("writing to a session host failed: {e}");
                    break;
                }
            }
        });
        let me = session.clone();
        tokio::spawn(async move {
            let why = me.relay(&mut reader).await;
            let why = {
                let mut g = me.lock();
                g.host_gone = true;
                g.terminating.clone().unwrap_or(why)
            };
            me.close(why);
            let _ = on_close.send(me);
        });
        Ok(session)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn send(&self, msg: DaemonToHost) {
        // If the host is gone its reader notices and closes the session.
        let _ = self.to_host.send(msg);
    }

    pub fn id(&self) -> Uuid {
        self.meta.instance_id
    }

    /// Whether the session has ended (without copying why).
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    pub fn closed_reason(&self) -> Option<String> {
        self.lock().closed.clone()
    }

    fn close(&self, why: String) {
        let mut g = self.lock();
        if g.closed.is_none() {
            tracing::info!(session = %self.meta.instance_id, name = %self.meta.name, "session closed: {why}");
            g.closed = Some(why);
        }
        g.running = None;
        g.starting = false;
        let why = g.closed.clone().unwrap_or_default();
        self.end_watches(&mut g, &why);
        self.end_copies(&mut g, &why);
        for (_, run) in g.pending_runs.drain() {
            let _ = run.send(Err("the session has ended".into()));
        }
        drop(g);
        self.bump();
    }

    pub fn interrupt(&self, command_id: Uuid, escalate_after: Duration) {
        self.send(DaemonToHost::Interrupt {
            command_id,
            escalate_after_ms: linger_proto::duration::millis(escalate_after),
        });
    }

    /// The window of the client attached here changed: the terminal of `command_id` follows
    /// (the host ignores a command that is not running on one).
    pub fn resize(&self, client: Uuid, command_id: Uuid, rows: u16, cols: u16) {
        if self.lock().settings.attached_to != Some(client) {
            return;
        }
        self.send(DaemonToHost::Resize {
            command_id,
            rows,
            cols,
        });
    }

    pub fn terminate(&self, reason: &str) {
        self.lock()
            .terminating
            .get_or_insert_with(|| reason.to_string());
        self.send(DaemonToHost::Terminate {
            reason: reason.to_string(),
        });
        self.bump();
    }

    /// Waits until the host has gone (after `terminate`), at most `limit`.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let done = tokio::time::timeout(limit, async {
            loop {
                if self.lock().host_gone {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        done.is_ok()
    }

    fn busy_error(&self) -> ErrorBody {
        let g = self.lock();
        let what = match (&g.status.running, &g.fg.subscriber) {
            (Some((_, cmd)), _) => format!("is still running `{cmd}`"),
            (None, Some(_)) => "is still delivering output to another request".to_string(),
            (None, None) => "is starting another command".to_string(),
        };
        ErrorBody::new(
            ErrorKind::Busy,
            format!("session busy: {} {what}", self.meta.name),
        )
        .with_hint(
            "wait for it to finish, raise --wait, or press Ctrl-C in the invoke that runs it",
        )
    }

    fn closed_error(&self) -> ErrorBody {
        let why = self.closed_reason().unwrap_or_else(|| "it ended".into());
        ErrorBody::closed(&self.meta.name, &why)
    }

    pub fn info(&self, asking: Uuid) -> SessionInfo {
        let g = self.lock();
        let s = &g.settings;
        let unattached = s.attached_to.is_none() && g.closed.is_none();
        SessionInfo {
            instance_id: self.meta.instance_id,
            name: self.meta.name.clone(),
            configuration_name: self.meta.configuration_name.clone(),
            owner: self.meta.owner.clone(),
            created_at_ms: self.meta.created_at_ms,
            attachment: match s.attached_to {
                Some(c) if c == asking => Attachment::You,
                Some(_) => Attachment::Other,
                None => Attachment::None,
            },
            closed_reason: g.closed.clone().or_else(|| g.terminating.clone()),
            running_command: g.status.running.as_ref().map(|(_, s)| s.clone()),
            idle_timeout_ms: s.idle_timeout_ms,
            output_buffering_mode: s.buffering,
            disconnected_at_ms: s.disconnected_at_ms.filter(|_| unattached),
            expires_at_ms: s
                .disconnected_at_ms
                .filter(|_| unattached)
                .map(|t| t.saturating_add(linger_proto::duration::ms_i64(s.idle_timeout_ms))),
            pending_output_bytes: g.status.pending_output_bytes,
            dropped_output_bytes: g.status.dropped_output_bytes,
            jobs: (g.status.jobs.len() + g.starting_jobs.len()) as u32,
            blocked: g.status.blocked && g.status.running.is_some(),
        }
    }
}

/// "session NAME" or "job ID of session NAME", for messages.
fn what_of(name: &str, channel: Channel) -> String {
    match channel {
        None => format!("session {name}"),
        Some(id) => format!("job {id} of session {name}"),
    }
}

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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
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

/// Why a subscriber was taken away, for the request it served.
type Eviction = Arc<OnceLock<ErrorBody>>;

/// Where one request wants the session's output to go.
struct Subscriber {
    conn: u64,
    rid: u64,
    tx: mpsc::Sender<ServerMsg>,
    /// Highest entry relayed to it: it cannot acknowledge more.
    relayed: u64,
    /// The host's dropped-bytes counter as far as this subscriber has been told.
    dropped_seen_to: u64,
    dropped_reported: u64,
    /// Seq of each command end relayed to it.
    finished: HashMap<Uuid, u64>,
    /// The command an invoke subscribes for.
    command: Option<Uuid>,
    evicted: Eviction,
}

impl Subscriber {
    fn is(&self, conn: u64, rid: u64) -> bool {
        self.conn == conn && self.rid == rid
    }
}

/// The relay's state for one output log of the host (see [`Channel`]).
#[derive(Default)]
struct ChannelState {
    subscriber: Option<Subscriber>,
    /// The last subscriber taken away by a detach: (conn, rid, relayed). It still receives
    /// what was relayed before its error, and may acknowledge that much until someone else
    /// subscribes, so the next receiver does not get it twice.
    evicted: Option<(u64, u64, u64)>,
    /// `Replay`s sent whose `Replaying` has not come back: entries until then are stale.
    replays_pending: u32,
    /// Where the last replay started.
    replay_from: u64,
    /// Highest entry acknowledged by a client (or known to be gone from the host).
    acked: u64,
    /// Highest entry known to exist in the host's log.
    known_last: u64,
}

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
    pending_runs: HashMap<Uuid, oneshot::Sender<Result<(), String>>>,
}

pub struct Session {
    pub meta: HostMeta,
    inner: Mutex<Inner>,
    to_host: mpsc::UnboundedSender<DaemonToHost>,
    /// Bumped on every change a request may be waiting for.
    changed: watch::Sender<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("cannot reach the session host: {0}")]
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
    pub tx: mpsc::Sender<ServerMsg>,
    /// Turns true when the requester's connection has gone: a command still waiting for
    /// the session then never starts.
    pub gone: watch::Receiver<bool>,
}

pub struct ReceiveRequest {
    pub conn: u64,
    pub rid: u64,
    pub client: Uuid,
    pub keep: bool,
    pub buffering: Option<BufferingMode>,
    pub tx: mpsc::Sender<ServerMsg>,
}

/// An entry from the host, to relay.
enum Relayed {
    Output(ServerMsgMaker),
    Finished(Uuid, ServerMsgMaker),
    Dropped { from_total: u64, to_total: u64 },
}

type ServerMsgMaker = Box<dyn FnOnce(u64) -> ServerMsg + Send>;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn human_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

impl Session {
    /// Connects to a host's socket and starts relaying. `on_close` hears the session's id
    /// once it has ended.
    pub async fn adopt(
        socket: &std::path::Path,
        on_close: mpsc::UnboundedSender<Uuid>,
    ) -> Result<Arc<Session>, AdoptError> {
        let stream = UnixStream::connect(socket).await?;
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
        writer
            .write(&DaemonToHost::Hello {
                protocol_version: HOST_PROTOCOL_VERSION,
            })
            .await
            .map_err(|e| AdoptError::Handshake(e.to_string()))?;

        let (to_host, mut from_daemon) = mpsc::unbounded_channel::<DaemonToHost>();
        let session = Arc::new(Session {
            meta,
            inner: Mutex::new(Inner {
                settings,
                terminating: None,
                host_gone: false,
                closed: status.shell_exited.clone(),
                running: status.running.as_ref().map(|(id, _)| *id),
                fg: ChannelState {
                    known_last: status.last_seq,
                    ..ChannelState::default()
                },
                jobs: HashMap::new(),
                entered: None,
                status,
                starting: false,
                starting_jobs: Vec::new(),
                pending_runs: HashMap::new(),
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
            let _ = on_close.send(me.meta.instance_id);
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
        for (_, run) in g.pending_runs.drain() {
            let _ = run.send(Err("the session has ended".into()));
        }
        drop(g);
        self.bump();
    }

    /// Reads the host until it goes away; returns why the session ended.
    async fn relay(&self, reader: &mut FrameReader<tokio::net::unix::OwnedReadHalf>) -> String {
        loop {
            let msg = match reader.read::<HostToDaemon>().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(session = %self.meta.instance_id, "bad message from session host: {e}");
                    break;
                }
            };
            match msg {
                HostToDaemon::Output {
                    channel,
                    seq,
                    command_id,
                    stream,
                    data,
                } => {
                    let make = Box::new(move |rid| ServerMsg::Output {
                        rid,
                        seq,
                        command_id,
                        stream,
                        data,
                    });
                    self.forward(channel, seq, Relayed::Output(make)).await
                }
                HostToDaemon::Finished {
                    channel,
                    seq,
                    command_id,
                    status,
                } => {
                    let make = Box::new(move |rid| ServerMsg::Finished {
                        rid,
                        seq,
                        command_id,
                        status,
                    });
                    self.forward(channel, seq, Relayed::Finished(command_id, make))
                        .await
                }
                HostToDaemon::Dropped {
                    channel,
                    seq,
                    from_total,
                    to_total,
                } => {
                    self.forward(
                        channel,
                        seq,
                        Relayed::Dropped {
                            from_total,
                            to_total,
                        },
                    )
                    .await
                }
                HostToDaemon::Replaying {
                    channel,
                    from,
                    last,
                } => {
                    let mut g = self.lock();
                    let c = g.chan(channel);
                    c.replays_pending = c.replays_pending.saturating_sub(1);
                    c.replay_from = from;
                    // Whatever precedes `from` is gone from the host: acknowledged by a
                    // client this daemon never saw (before a restart), or never written.
                    c.acked = c.acked.max(from.saturating_sub(1));
                    c.known_last = c.known_last.max(last);
                    drop(g);
                    self.bump();
                }
                HostToDaemon::Status(status) => {
                    let mut g = self.lock();
                    g.starting_jobs
                        .retain(|j| !status.jobs.iter().any(|s| s.job_id == j.job_id));
                    g.fg.known_last = g.fg.known_last.max(status.last_seq);
                    if let Some(id) = g.running {
                        if status.running.as_ref().map(|(r, _)| *r) != Some(id) {
                            g.running = None;
                        }
                    }
                    g.status = status;
                    drop(g);
                    self.bump();
                }
                HostToDaemon::Started { command_id } => {
                    let mut g = self.lock();
                    g.running = Some(command_id);
                    g.starting = false;
                    if let Some(tx) = g.pending_runs.remove(&command_id) {
                        let _ = tx.send(Ok(()));
                    }
                    drop(g);
                    self.bump();
                }
                HostToDaemon::RunRefused { command_id, reason } => {
                    let mut g = self.lock();
                    g.starting = false;
                    if let Some(tx) = g.pending_runs.remove(&command_id) {
                        let _ = tx.send(Err(reason));
                    }
                    drop(g);
                    self.bump();
                }
                HostToDaemon::ShellExited { reason } => {
                    {
                        let mut g = self.lock();
                        if g.fg.subscriber.is_none() {
                            // Nobody is reading. The host stays while it holds output (it
                            // exits by itself once that is delivered), so a `receive` can
                            // still fetch it; the idle clock starts now and reclaims it
                            // otherwise.
                            self.detach(&mut g, "its shell exited");
                        }
                    }
                    self.close(reason);
                }
                HostToDaemon::Hello { .. } => {
                    tracing::warn!(session = %self.meta.instance_id, "unexpected Hello from host");
                }
            }
        }
        "its session host exited unexpectedly".to_string()
    }

    async fn forward(&self, channel: Channel, seq: u64, entry: Relayed) {
        let (tx, msg) = {
            let mut g = self.lock();
            let c = g.chan(channel);
            c.known_last = c.known_last.max(seq);
            if c.replays_pending > 0 {
                return;
            }
            let Some(s) = c.subscriber.as_mut() else {
                return;
            };
            // Recorded before sending: the requester's acknowledgement may come back
            // before this task runs again.
            s.relayed = seq;
            let rid = s.rid;
            let msg = match entry {
                Relayed::Output(make) => make(rid),
                Relayed::Finished(cmd, make) => {
                    s.finished.insert(cmd, seq);
                    make(rid)
                }
                Relayed::Dropped {
                    from_total,
                    to_total,
                } => {
                    let bytes = to_total.saturating_sub(from_total.max(s.dropped_seen_to));
                    s.dropped_seen_to = s.dropped_seen_to.max(to_total);
                    s.dropped_reported += bytes;
                    ServerMsg::Dropped { rid, seq, bytes }
                }
            };
            (s.tx.clone(), msg)
        };
        let finished = matches!(msg, ServerMsg::Finished { .. });
        if tx.send(msg).await.is_err() {
            let mut g = self.lock();
            let c = g.chan(channel);
            if c.subscriber
                .as_ref()
                .is_some_and(|s| s.tx.same_channel(&tx))
            {
                c.subscriber = None;
            }
        } else if !finished {
            // Plain output changes nothing a request waits for: no wake-up.
            return;
        }
        self.bump();
    }

    /// Request `rid` of connection `conn` has received everything up to `seq`. Only the
    /// current subscriber may acknowledge, and only what was relayed to it: anything else
    /// would make the host forget output nobody has seen.
    pub fn ack(&self, conn: u64, rid: u64, seq: u64) {
        let channel = {
            let mut g = self.lock();
            let g = &mut *g;
            let chans = std::iter::once((None, &mut g.fg))
                .chain(g.jobs.iter_mut().map(|(id, c)| (Some(*id), c)));
            let mut found = None;
            for (channel, c) in chans {
                let relayed = match (&c.subscriber, c.evicted) {
                    (Some(s), _) if s.is(conn, rid) => s.relayed,
                    (None, Some((cn, r, relayed))) if cn == conn && r == rid => relayed,
                    _ => continue,
                };
                let seq = seq.min(relayed);
                if seq > c.acked {
                    c.acked = seq;
                    found = Some((channel, seq));
                }
                break;
            }
            found
        };
        if let Some((channel, seq)) = channel {
            self.send(DaemonToHost::Ack { channel, seq });
            self.bump();
        }
    }

    fn push_settings(&self, g: &Inner) {
        self.send(DaemonToHost::Settings(g.settings.clone()));
    }

    fn attach(&self, g: &mut Inner, client: Uuid) {
        if g.settings.attached_to != Some(client) {
            tracing::info!(session = %self.meta.instance_id, name = %self.meta.name, %client, "session attached");
            g.settings.attached_to = Some(client);
            g.settings.disconnected_at_ms = None;
            self.push_settings(g);
        }
    }

    /// Detaches the session; whoever was receiving its output is told why. The idle-timeout
    /// clock starts now.
    fn detach(&self, g: &mut Inner, why: &str) {
        if let Some(client) = g.settings.attached_to.take() {
            tracing::info!(session = %self.meta.instance_id, name = %self.meta.name, %client, "session disconnected: {why}");
            g.settings.disconnected_at_ms = Some(now_ms());
        } else if g.settings.disconnected_at_ms.is_none() {
            g.settings.disconnected_at_ms = Some(now_ms());
        }
        let name = &self.meta.name;
        let chans = std::iter::once(&mut g.fg).chain(g.jobs.values_mut());
        for c in chans {
            if let Some(s) = c.subscriber.take() {
                c.evicted = Some((s.conn, s.rid, s.relayed));
                let _ = s.evicted.set(
                    ErrorBody::new(
                        ErrorKind::Detached,
                        format!("session {name} was disconnected: {why}"),
                    )
                    .with_hint(format!(
                        "its commands keep running; `linger receive {name}` gets their output"
                    )),
                );
            }
        }
        self.push_settings(g);
    }

    fn set_buffering(&self, g: &mut Inner, mode: Option<BufferingMode>) {
        if let Some(mode) = mode {
            if g.settings.buffering != mode {
                g.settings.buffering = mode;
                self.push_settings(g);
            }
        }
    }

    fn attached_elsewhere(&self, g: &Inner, client: Uuid) -> Option<ErrorBody> {
        match g.settings.attached_to {
            Some(other) if other != client => Some(
                ErrorBody::new(
                    ErrorKind::Busy,
                    format!("session {} is attached to another client", self.meta.name),
                )
                .with_hint("disconnect it there first (`linger disconnect`), or wait until that client has been silent for the heartbeat timeout"),
            ),
            _ => None,
        }
    }

    /// Refuses a session that has ended or is ending.
    fn check_open(&self, g: &Inner) -> Result<(), ErrorBody> {
        if g.closed.is_some() || g.terminating.is_some() {
            let why = g
                .closed
                .clone()
                .or_else(|| g.terminating.clone())
                .unwrap_or_else(|| "it ended".into());
            return Err(closed_error(&self.meta.name, &why));
        }
        Ok(())
    }

    /// `connect`: attaches the session to `client`.
    pub fn connect(&self, client: Uuid, buffering: Option<BufferingMode>) -> Result<(), ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        if let Some(e) = self.attached_elsewhere(&g, client) {
            return Err(e);
        }
        self.attach(&mut g, client);
        self.set_buffering(&mut g, buffering);
        drop(g);
        self.bump();
        Ok(())
    }

    /// `enter`: attaches the session and marks it entered by request `rid` of `conn`.
    pub fn begin_enter(&self, conn: u64, rid: u64, client: Uuid) -> Result<(), ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        if let Some(e) = self.attached_elsewhere(&g, client) {
            return Err(e);
        }
        if g.entered.is_some_and(|(c, _)| c != conn) {
            return Err(ErrorBody::new(
                ErrorKind::Busy,
                format!("session {} is already being entered", self.meta.name),
            )
            .with_hint("leave that interactive session first"));
        }
        self.attach(&mut g, client);
        g.entered = Some((conn, rid));
        Ok(())
    }

    /// The interactive session of `conn` (request `rid`, or any when `None`) has ended.
    pub fn end_enter(&self, conn: u64, rid: Option<u64>) {
        let mut g = self.lock();
        if g.entered
            .is_some_and(|(c, r)| c == conn && rid.is_none_or(|rid| rid == r))
        {
            g.entered = None;
        }
    }

    /// `disconnect`: detaches the session from `client`, with new settings.
    pub fn disconnect(
        &self,
        conn: u64,
        client: Uuid,
        idle_timeout: Option<Duration>,
        buffering: Option<BufferingMode>,
    ) -> Result<(), ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        if let Some(e) = self.attached_elsewhere(&g, client) {
            return Err(e);
        }
        if g.entered.is_some_and(|(c, _)| c != conn) {
            // The seeds: an interactive session cannot be disconnected from elsewhere.
            return Err(ErrorBody::new(
                ErrorKind::Busy,
                format!(
                    "session {} is being used interactively (`linger enter`)",
                    self.meta.name
                ),
            )
            .with_hint("leave it there with `exit`, or detach it there with ~."));
        }
        g.entered = None;
        if let Some(t) = idle_timeout {
            g.settings.idle_timeout_ms = t.as_millis() as u64;
        }
        g.settings.buffering = buffering.unwrap_or(g.settings.buffering);
        self.detach(&mut g, "its client asked for it");
        drop(g);
        self.bump();
        Ok(())
    }

    /// The attached client has shown no sign of life for too long.
    pub fn client_lapsed(&self, client: Uuid, why: &str) {
        let mut g = self.lock();
        if g.settings.attached_to == Some(client) && g.closed.is_none() {
            self.detach(&mut g, why);
            drop(g);
            self.bump();
        }
    }

    pub fn attached_to(&self) -> Option<Uuid> {
        self.lock().settings.attached_to
    }

    /// A client connection went away. If it was receiving this session's output, its
    /// client died during a command: the command keeps running and the session is left
    /// Disconnected for anyone to reconnect.
    pub fn connection_closed(&self, conn: u64) {
        let mut g = self.lock();
        if g.entered.is_some_and(|(c, _)| c == conn) {
            g.entered = None;
        }
        if let Some(s) = g.fg.subscriber.as_ref().filter(|s| s.conn == conn) {
            // An invoke whose end was acknowledged just before its client left (the CLI
            // exits right after acknowledging) got everything: nothing to disconnect.
            let acked = g.fg.acked;
            let delivered = s
                .command
                .and_then(|c| s.finished.get(&c))
                .is_some_and(|&seq| acked >= seq);
            g.fg.subscriber = None;
            if g.closed.is_none() && !delivered {
                self.detach(&mut g, "its client went away while receiving output");
            }
        }
        let mut job_reader_gone = false;
        for c in g.jobs.values_mut() {
            if c.subscriber.as_ref().is_some_and(|s| s.conn == conn) {
                c.subscriber = None;
                job_reader_gone = true;
            }
        }
        if job_reader_gone && g.closed.is_none() {
            self.detach(
                &mut g,
                "its client went away while receiving a job's output",
            );
        }
        drop(g);
        self.bump();
    }

    /// Ends the session if it has been unattached for longer than its idle timeout.
    /// Returns true when it did.
    pub fn expire_if_idle(&self, now_ms: i64) -> bool {
        let g = self.lock();
        if g.terminating.is_some() || g.settings.attached_to.is_some() {
            return false;
        }
        let Some(since) = g.settings.disconnected_at_ms else {
            return false;
        };
        if now_ms < since.saturating_add(g.settings.idle_timeout_ms as i64) {
            return false;
        }
        let idle = human_ms(g.settings.idle_timeout_ms);
        let pending = g.status.pending_output_bytes;
        drop(g);
        tracing::info!(
            session = %self.meta.instance_id,
            name = %self.meta.name,
            owner = %self.meta.owner,
            discarded_output_bytes = pending,
            "idle timeout of {idle} expired: removing the session, ending its processes and discarding its buffered output"
        );
        self.terminate(&format!("its idle timeout of {idle} expired"));
        true
    }

    pub fn interrupt(&self, command_id: Uuid, escalate_after: Duration) {
        self.send(DaemonToHost::Interrupt {
            command_id,
            escalate_after_ms: escalate_after.as_millis() as u64,
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

    /// Makes `req` the subscriber and asks the host to replay what is kept.
    fn subscribe(
        &self,
        g: &mut Inner,
        channel: Channel,
        conn: u64,
        rid: u64,
        command: Option<Uuid>,
        tx: &mpsc::Sender<ServerMsg>,
    ) -> Eviction {
        let evicted: Eviction = Arc::new(OnceLock::new());
        let c = g.chan(channel);
        c.evicted = None;
        c.subscriber = Some(Subscriber {
            conn,
            rid,
            tx: tx.clone(),
            relayed: 0,
            dropped_seen_to: 0,
            dropped_reported: 0,
            finished: HashMap::new(),
            command,
            evicted: evicted.clone(),
        });
        c.replays_pending += 1;
        self.send(DaemonToHost::Replay { channel });
        evicted
    }

    /// Runs one command for a client request and relays its output until it has finished
    /// and been acknowledged (or the requester went away). Sends the command's id through
    /// `started` once the host has it.
    pub async fn invoke(
        self: &Arc<Self>,
        req: InvokeRequest,
        started: oneshot::Sender<Uuid>,
    ) -> Result<(), ErrorBody> {
        let command_id = Uuid::new_v4();
        let (run_tx, run_rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut changed = self.changed.subscribe();
        let mut queued = false;
        let evicted = loop {
            {
                let mut g = self.lock();
                self.check_open(&g)?;
                if let Some(e) = self.attached_elsewhere(&g, req.client) {
                    return Err(e);
                }
                if g.running.is_none() && !g.starting && g.fg.subscriber.is_none() {
                    g.starting = true;
                    g.pending_runs.insert(command_id, run_tx);
                    let evicted = if req.disconnected {
                        self.detach(&mut g, "started in a disconnected session");
                        None
                    } else if req.kind == InvokeKind::Job {
                        // Its output waits on the server for a job receive.
                        self.attach(&mut g, req.client);
                        None
                    } else {
                        self.attach(&mut g, req.client);
                        Some(self.subscribe(
                            &mut g,
                            None,
                            req.conn,
                            req.rid,
                            Some(command_id),
                            &req.tx,
                        ))
                    };
                    break evicted;
                }
            }
            if !queued {
                queued = true;
                tracing::info!(session = %self.meta.instance_id, client = %req.client, "command queued: the session is busy");
            }
            let mut gone = req.gone.clone();
            tokio::select! {
                r = changed.changed() => if r.is_err() { return Err(self.closed_error()) },
                _ = tokio::time::sleep_until(deadline) => return Err(self.busy_error()),
                _ = gone.wait_for(|g| *g) => {
                    tracing::info!(session = %self.meta.instance_id, "a waiting command was withdrawn: its client went away");
                    return Err(ErrorBody::new(ErrorKind::Internal, "the client went away"));
                }
            }
        };
        // Started goes out before anything the replay or the command produce.
        let (kind, job_id) = match req.kind {
            InvokeKind::Plain => (RunKind::Plain, None),
            InvokeKind::Job => (RunKind::Job, Some(command_id)),
            InvokeKind::BackgroundJob => {
                let job_id = Uuid::new_v4();
                (RunKind::LaunchJob { job_id }, Some(job_id))
            }
        };
        if let Some(job_id) = job_id {
            // Listed before anyone hears of it (the host's next status confirms it, or a
            // refusal takes it back), so that a job request right after `Started` finds it.
            let mut g = self.lock();
            if !g.status.jobs.iter().any(|j| j.job_id == job_id) {
                g.starting_jobs.push(JobInfo {
                    job_id,
                    kind: if req.kind == InvokeKind::Job {
                        JobKind::Remote
                    } else {
                        JobKind::Background
                    },
                    command: req.script.trim().chars().take(200).collect(),
                    state: JobState::Running,
                    status: None,
                    has_more_data: false,
                    pending_output_bytes: 0,
                    started_at_ms: now_ms(),
                    ended_at_ms: None,
                });
            }
        }
        let _ = req
            .tx
            .send(ServerMsg::Reply {
                rid: req.rid,
                reply: Reply::Started { command_id, job_id },
            })
            .await;
        let _ = started.send(command_id);
        self.send(DaemonToHost::Run {
            command_id,
            script: req.script,
            args: req.args,
            kind,
        });
        tracing::info!(session = %self.meta.instance_id, command = %command_id, client = %req.client, "command started");
        match run_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                self.unsubscribe(req.conn, req.rid);
                if let Some(job_id) = job_id {
                    self.lock().starting_jobs.retain(|j| j.job_id != job_id);
                }
                return Err(ErrorBody::new(
                    ErrorKind::Busy,
                    format!("session {} refused the command: {reason}", self.meta.name),
                ));
            }
            Err(_) => return Err(self.closed_error()),
        }
        let Some(evicted) = evicted else {
            return Ok(());
        };

        loop {
            {
                let mut g = self.lock();
                let Some(s) = g.fg.subscriber.as_ref().filter(|s| s.is(req.conn, req.rid)) else {
                    return match evicted.get() {
                        Some(e) => Err(e.clone()),
                        // Its connection is gone: nobody to answer.
                        None => Ok(()),
                    };
                };
                let delivered = s
                    .finished
                    .get(&command_id)
                    .is_some_and(|&seq| g.fg.acked >= seq);
                if delivered {
                    g.fg.subscriber = None;
                    let shell_gone = g.closed.is_some() && !g.host_gone;
                    drop(g);
                    self.bump();
                    if shell_gone {
                        // The shell exited during this command and its requester has the
                        // end: let the host go.
                        self.terminate("its shell exited");
                    }
                    return Ok(());
                }
                if g.host_gone {
                    let why = g.closed.clone().unwrap_or_else(|| "it ended".into());
                    g.fg.subscriber = None;
                    return Err(ErrorBody::new(
                        ErrorKind::Closed,
                        format!(
                            "session {} ended while the command ran: {why}",
                            self.meta.name
                        ),
                    ));
                }
            }
            if changed.changed().await.is_err() {
                return Err(self.closed_error());
            }
        }
    }

    fn unsubscribe(&self, conn: u64, rid: u64) {
        let mut g = self.lock();
        if g.fg.subscriber.as_ref().is_some_and(|s| s.is(conn, rid)) {
            g.fg.subscriber = None;
        }
        drop(g);
        self.bump();
    }

    /// `receive`: attaches if needed, delivers what the host kept, then follows the running
    /// command to its end (unless `keep`, which delivers a snapshot and acknowledges
    /// nothing).
    pub async fn receive(
        self: &Arc<Self>,
        req: ReceiveRequest,
        channel: Channel,
    ) -> Result<ReceiveSummary, ErrorBody> {
        let mut changed = self.changed.subscribe();
        let evicted = {
            let mut g = self.lock();
            // A session whose shell exited may still hold output to deliver.
            if g.terminating.is_some() || g.host_gone {
                self.check_open(&g)?;
            }
            if let Some(e) = self.attached_elsewhere(&g, req.client) {
                return Err(e);
            }
            if g.chan(channel).subscriber.is_some() {
                return Err(ErrorBody::new(
                    ErrorKind::Busy,
                    format!(
                        "{}'s output is being delivered to another request",
                        what_of(&self.meta.name, channel)
                    ),
                )
                .with_hint("wait for that invoke or receive to finish, or stop it"));
            }
            self.attach(&mut g, req.client);
            self.set_buffering(&mut g, req.buffering);
            self.subscribe(&mut g, channel, req.conn, req.rid, None, &req.tx)
        };
        let mut until: Option<u64> = None;
        loop {
            {
                let mut g = self.lock();
                // Whether output may still come, and what is kept, for this channel.
                let (running, pending, running_command) = match channel {
                    None => (
                        g.running.is_some() || g.starting,
                        g.status.pending_output_bytes,
                        g.status.running.as_ref().map(|(_, c)| c.clone()),
                    ),
                    Some(id) => match g
                        .status
                        .jobs
                        .iter()
                        .chain(&g.starting_jobs)
                        .find(|j| j.job_id == id)
                    {
                        Some(j) => (
                            j.state == JobState::Running,
                            j.pending_output_bytes,
                            (j.state == JobState::Running).then(|| j.command.clone()),
                        ),
                        None => (false, 0, None),
                    },
                };
                let host_gone = g.host_gone;
                let c = g.chan(channel);
                let Some(s) = c.subscriber.as_ref().filter(|s| s.is(req.conn, req.rid)) else {
                    return match evicted.get() {
                        Some(e) => Err(e.clone()),
                        None => Err(ErrorBody::new(
                            ErrorKind::Internal,
                            "the receive was abandoned",
                        )),
                    };
                };
                if c.replays_pending == 0 {
                    let until = *until.get_or_insert(c.known_last);
                    let done = if req.keep {
                        until < c.replay_from || s.relayed >= until || host_gone
                    } else {
                        // The host reports an empty log right after the last ack, so the
                        // counts are current when the receive ends.
                        let drained = c.acked >= c.known_last && pending == 0;
                        (!running && drained) || host_gone
                    };
                    if done {
                        let summary = ReceiveSummary {
                            commands_finished: s.finished.len() as u32,
                            dropped_output_bytes: s.dropped_reported,
                            running_command,
                        };
                        c.subscriber = None;
                        drop(g);
                        self.bump();
                        return Ok(summary);
                    }
                }
            }
            if changed.changed().await.is_err() {
                return Err(self.closed_error());
            }
        }
    }

    /// The session's jobs: commands run as jobs and background jobs.
    pub fn jobs(&self) -> Vec<JobInfo> {
        let g = self.lock();
        let mut jobs = g.status.jobs.clone();
        jobs.extend(g.starting_jobs.iter().cloned());
        jobs
    }

    pub fn job(&self, id: Uuid) -> Result<JobInfo, ErrorBody> {
        self.jobs()
            .into_iter()
            .find(|j| j.job_id == id)
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorKind::NotFound,
                    format!("no job {id} in session {}", self.meta.name),
                )
                .with_hint("`linger job list SEL` lists the session's jobs")
            })
    }

    /// `job receive`: a job's output. A command run as a job is the session's foreground
    /// output; a background job has a channel of its own.
    pub async fn receive_job(
        self: &Arc<Self>,
        req: ReceiveRequest,
        job_id: Uuid,
    ) -> Result<ReceiveSummary, ErrorBody> {
        // The session's own id names "whatever its foreground produced" (`receive
        // --out-target job`).
        if job_id == self.id() {
            return self.receive(req, None).await;
        }
        match self.job(job_id)?.kind {
            JobKind::Remote => self.receive(req, None).await,
            JobKind::Background => self.receive(req, Some(job_id)).await,
        }
    }

    /// `job stop`.
    pub fn stop_job(
        &self,
        client: Uuid,
        job_id: Uuid,
        escalate_after: Duration,
    ) -> Result<Option<JobInfo>, ErrorBody> {
        if job_id == self.id() {
            // The job standing for the session's output: stop its running command.
            let running = {
                let g = self.lock();
                self.check_open(&g)?;
                if let Some(e) = self.attached_elsewhere(&g, client) {
                    return Err(e);
                }
                g.running
            };
            if let Some(cmd) = running {
                self.interrupt(cmd, escalate_after);
            }
            return Ok(None);
        }
        let job = self.job(job_id)?;
        {
            let g = self.lock();
            self.check_open(&g)?;
            if let Some(e) = self.attached_elsewhere(&g, client) {
                return Err(e);
            }
        }
        if job.state == JobState::Running {
            self.send(DaemonToHost::StopJob { job_id });
        }
        Ok(Some(job))
    }

    /// `job remove`: forgets an ended job and its kept output.
    pub fn remove_job(&self, client: Uuid, job_id: Uuid) -> Result<(), ErrorBody> {
        let job = self.job(job_id)?;
        let mut g = self.lock();
        if let Some(e) = self.attached_elsewhere(&g, client) {
            return Err(e);
        }
        if job.state == JobState::Running {
            return Err(
                ErrorBody::new(ErrorKind::Busy, format!("job {job_id} is still running"))
                    .with_hint("stop it first with `linger job stop`"),
            );
        }
        g.status.jobs.retain(|j| j.job_id != job_id);
        g.jobs.remove(&job_id);
        drop(g);
        self.send(DaemonToHost::ForgetJob { job_id });
        Ok(())
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
        closed_error(&self.meta.name, &why)
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
                .map(|t| t.saturating_add(s.idle_timeout_ms as i64)),
            pending_output_bytes: g.status.pending_output_bytes,
            dropped_output_bytes: g.status.dropped_output_bytes,
            jobs: (g.status.jobs.len() + g.starting_jobs.len()) as u32,
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

fn closed_error(name: &str, why: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::Closed,
        format!("session {name} is closed: {why}"),
    )
    .with_hint("create a new one with `linger new`")
}

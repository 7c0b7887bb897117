//! One connection to one daemon, multiplexing requests by id: a writer task owns the
//! socket's writing half, a reader task dispatches incoming messages to the request they
//! answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use linger_proto::client::{
    ClientMsg, Connect, Disconnect, Hello, Invoke, InvokeKind, ListSessions, NewSession, Receive,
    Request,
};
use linger_proto::frame::{FrameReader, FrameWriter};
use linger_proto::server::{ReceiveSummary, Reply, ServerMsg, Welcome};
use linger_proto::types::{BufferingMode, JobInfo, SessionInfo, StreamKind};
use linger_proto::PROTOCOL_VERSION;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::input::Input;

/// After a broken connection, how long between attempts to dial again.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn humantime_short(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Acknowledge output at least every this many bytes.
const ACK_EVERY: usize = 128 * 1024;

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<ServerMsg>>>>;
/// Forwarded inputs by the request that feeds them: `StdinAck`s go straight there, so a
/// writer waiting for room never depends on someone reading the output.
type Inputs = Arc<Mutex<HashMap<u64, Input>>>;

/// A message for the writer task; `flushed` hears once it is on the wire.
pub(crate) struct Outgoing {
    pub(crate) msg: ClientMsg,
    flushed: Option<oneshot::Sender<()>>,
}

impl From<ClientMsg> for Outgoing {
    fn from(msg: ClientMsg) -> Self {
        Outgoing { msg, flushed: None }
    }
}

struct Shared {
    computer: String,
    out: mpsc::UnboundedSender<Outgoing>,
    routes: Routes,
    inputs: Inputs,
    next_rid: AtomicU64,
    /// Why the connection ended, once it has.
    ended: Arc<Mutex<Option<Error>>>,
    /// What carries the connection and must live as long as it (an ssh process).
    /// The transport's process (ssh), if any. It is not killed when the connection is
    /// dropped: it sees the end of its input and exits once it has passed on everything
    /// written before (the last acknowledgement included). Only a connection cut for
    /// silence kills it.
    process: Mutex<Option<tokio::process::Child>>,
    /// How long a request may wait for its answer, in ms (0: for ever).
    operation_timeout_ms: AtomicU64,
}

/// A connection to one daemon. Cheap to clone; requests may run concurrently.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    pub welcome: Welcome,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    /// Handshakes over an established byte stream whose transport authenticated us (the
    /// local socket, ssh).
    pub async fn handshake<R, W>(computer: &str, r: R, w: W, client_id: Uuid) -> Result<Connection>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Connection::handshake_with_login(computer, r, w, client_id, None).await
    }

    /// Handshakes, answering the server's `Challenge` with `login` (the TLS transport).
    pub(crate) async fn handshake_with_login<R, W>(
        computer: &str,
        r: R,
        w: W,
        client_id: Uuid,
        login: Option<Login>,
    ) -> Result<Connection>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        let lost = || Error::ConnectionLost {
            computer: computer.to_string(),
        };
        writer
            .write(&ClientMsg::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_id,
                client_name: format!("linger {}", env!("CARGO_PKG_VERSION")),
            }))
            .await
            .map_err(|_| lost())?;
        let mut first = read_handshake(&mut reader, computer).await?;
        if let ServerMsg::Challenge { nonce } = &first {
            let Some(login) = &login else {
                return Err(Error::Protocol {
                    computer: computer.to_string(),
                    reason: "it asked for authentication on a transport that does not carry it"
                        .into(),
                });
            };
            first = login
                .authenticate(computer, nonce, &mut reader, &mut writer)
                .await?;
        }
        let welcome = match first {
            ServerMsg::Welcome(w) => w,
            _ => {
                return Err(Error::Protocol {
                    computer: computer.to_string(),
                    reason: "unexpected answer to Hello".into(),
                })
            }
        };
        if welcome.protocol_version != PROTOCOL_VERSION {
            return Err(Error::Protocol {
                computer: computer.to_string(),
                reason: format!(
                    "it answered with protocol version {}, this client speaks {PROTOCOL_VERSION}",
                    welcome.protocol_version
                ),
            });
        }
        let (out, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            computer: computer.to_string(),
            out,
            routes: Arc::new(Mutex::new(HashMap::new())),
            inputs: Arc::new(Mutex::new(HashMap::new())),
            next_rid: AtomicU64::new(1),
            ended: Arc::new(Mutex::new(None)),
            process: Mutex::new(None),
            operation_timeout_ms: AtomicU64::new(0),
        });
        tokio::spawn(write_loop(writer, rx));
        let life = Arc::new(Life {
            heard: Mutex::new(tokio::time::Instant::now()),
            cut: tokio::sync::Notify::new(),
        });
        tokio::spawn(heartbeat(
            Arc::downgrade(&shared),
            life.clone(),
            std::time::Duration::from_millis(welcome.heartbeat_interval_ms.max(100)),
            std::time::Duration::from_millis(welcome.heartbeat_timeout_ms.max(200)),
        ));
        tokio::spawn(read_loop(
            reader,
            shared.routes.clone(),
            shared.inputs.clone(),
            shared.ended.clone(),
            computer.to_string(),
            life,
        ));
        Ok(Connection { shared, welcome })
    }

    /// Whether the connection has ended (a new one is needed).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.ended).is_some() || self.shared.out.is_closed()
    }

    /// Keeps the transport's process (ssh) with the connection.
    pub fn hold_process(&self, child: tokio::process::Child) {
        *lock(&self.shared.process) = Some(child);
    }

    pub fn computer(&self) -> &str {
        &self.shared.computer
    }

    pub(crate) fn lost(&self) -> Error {
        match lock(&self.shared.ended).as_ref() {
            Some(Error::Protocol { computer, reason }) => Error::Protocol {
                computer: computer.clone(),
                reason: reason.clone(),
            },
            _ => Error::ConnectionLost {
                computer: self.shared.computer.clone(),
            },
        }
    }

    /// Sends a request and returns the receiver of everything answering it.
    pub(crate) fn start(
        &self,
        request: Request,
    ) -> Result<(u64, mpsc::UnboundedReceiver<ServerMsg>)> {
        self.start_feeding(request, None)
    }

    /// Like [`Connection::start`], with `input` fed by the request from now on.
    fn start_feeding(
        &self,
        request: Request,
        input: Option<&Input>,
    ) -> Result<(u64, mpsc::UnboundedReceiver<ServerMsg>)> {
        let rid = self.shared.next_rid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.routes).insert(rid, tx);
        if let Some(input) = input {
            // Before the request goes out: its first acknowledgement may follow at once.
            input.route(self.shared.out.clone(), rid);
            lock(&self.shared.inputs).insert(rid, input.clone());
        }
        if self
            .shared
            .out
            .send(ClientMsg::Request { rid, request }.into())
            .is_err()
        {
            self.forget(rid);
            return Err(self.lost());
        }
        Ok((rid, rx))
    }

    /// Queues a message for the server; false once the connection has ended.
    pub(crate) fn send(&self, msg: ClientMsg) -> bool {
        self.shared.out.send(msg.into()).is_ok()
    }

    /// Nothing more is routed to request `rid`.
    pub(crate) fn forget(&self, rid: u64) {
        lock(&self.shared.routes).remove(&rid);
        lock(&self.shared.inputs).remove(&rid);
    }

    /// Limits how long a request may wait for its answer (option `operation_timeout`);
    /// streams of output are not limited.
    pub fn set_operation_timeout(&self, limit: std::time::Duration) {
        self.shared
            .operation_timeout_ms
            .store(linger_proto::duration::millis(limit), Ordering::Relaxed);
    }

    async fn call(&self, request: Request) -> Result<Reply> {
        let (rid, mut rx) = self.start(request)?;
        let limit = self.shared.operation_timeout_ms.load(Ordering::Relaxed);
        let answer = if limit == 0 {
            rx.recv().await
        } else {
            let limit = std::time::Duration::from_millis(limit);
            match tokio::time::timeout(limit, rx.recv()).await {
                Ok(a) => a,
                Err(_) => {
                    lock(&self.shared.routes).remove(&rid);
                    return Err(Error::TimedOut {
                        what: format!("waiting for {} to answer", self.shared.computer),
                        option: "operation_timeout",
                        limit: humantime::format_duration(limit).to_string(),
                    });
                }
            }
        };
        lock(&self.shared.routes).remove(&rid);
        match answer {
            Some(ServerMsg::Reply { reply, .. }) => Ok(reply),
            Some(ServerMsg::Error { error, .. }) => Err(Error::Server(error)),
            Some(_) => Err(Error::Protocol {
                computer: self.shared.computer.clone(),
                reason: "unexpected answer".into(),
            }),
            None => Err(self.lost()),
        }
    }

    fn unexpected(&self) -> Error {
        Error::Protocol {
            computer: self.shared.computer.clone(),
            reason: "unexpected reply type".into(),
        }
    }

    pub async fn new_session(&self, req: NewSession) -> Result<SessionInfo> {
        match self.call(Request::NewSession(req)).await? {
            Reply::Session(s) => Ok(s),
            _ => Err(self.unexpected()),
        }
    }

    /// The caller's sessions on this server (all of them when `ids` is empty).
    pub async fn list_sessions(&self, ids: Vec<Uuid>) -> Result<Vec<SessionInfo>> {
        match self
            .call(Request::ListSessions(ListSessions { instance_ids: ids }))
            .await?
        {
            Reply::Sessions(s) => Ok(s),
            _ => Err(self.unexpected()),
        }
    }

    pub async fn remove_session(&self, instance_id: Uuid) -> Result<SessionInfo> {
        match self.call(Request::RemoveSession { instance_id }).await? {
            Reply::Session(s) => Ok(s),
            _ => Err(self.unexpected()),
        }
    }

    /// Attaches a session to this connection's client; with `force`, takes it from the
    /// client holding it.
    pub async fn connect_session(
        &self,
        instance_id: Uuid,
        buffering: Option<BufferingMode>,
        force: bool,
    ) -> Result<SessionInfo> {
        match self
            .call(Request::Connect(Connect {
                instance_id,
                buffering,
                force,
            }))
            .await?
        {
            Reply::Session(s) => Ok(s),
            _ => Err(self.unexpected()),
        }
    }

    /// Marks a session entered by this connection until the returned guard is dropped.
    pub async fn enter(&self, instance_id: Uuid) -> Result<(EnterGuard, SessionInfo)> {
        let (rid, mut rx) = self.start(Request::Enter { instance_id })?;
        let answer = rx.recv().await;
        lock(&self.shared.routes).remove(&rid);
        match answer {
            Some(ServerMsg::Reply {
                reply: Reply::Session(info),
                ..
            }) => Ok((
                EnterGuard {
                    conn: self.clone(),
                    rid,
                },
                info,
            )),
            Some(ServerMsg::Error { error, .. }) => Err(Error::Server(error)),
            Some(_) => Err(self.unexpected()),
            None => Err(self.lost()),
        }
    }

    pub async fn disconnect_session(&self, req: Disconnect) -> Result<SessionInfo> {
        match self.call(Request::Disconnect(req)).await? {
            Reply::Session(s) => Ok(s),
            _ => Err(self.unexpected()),
        }
    }

    /// Starts receiving a session's kept output; it arrives through the returned stream,
    /// which ends with the server's summary.
    pub fn receive(&self, req: Receive) -> Result<CommandStream> {
        self.receive_request(Request::Receive(req))
    }

    /// Watches session `instance_id` read-only until the returned [`Watch`] is dropped.
    pub fn watch(&self, instance_id: Uuid) -> Result<Watch> {
        let (rid, rx) = self.start(Request::Watch { instance_id })?;
        Ok(Watch {
            conn: self.clone(),
            rid,
            rx,
        })
    }

    /// A receive that enters the running terminal command (`req.terminal`): the stream's
    /// [`CommandStream::screen`] comes first, then its input feeds the command, from where
    /// the command's input stands.
    pub fn receive_terminal(&self, req: Receive) -> Result<CommandStream> {
        let instance_id = req.instance_id;
        let input = Input::joining();
        let (rid, rx) = self.start_feeding(Request::Receive(req), Some(&input))?;
        let mut stream = self.stream(rid, rx, Until::Received);
        stream.input = Some(input);
        stream.instance_id = Some(instance_id);
        Ok(stream)
    }

    /// Like [`Connection::receive`], for one job's output.
    /// Like [`Connection::receive`], for one job's output: with `follow` to the job's end,
    /// else what it has kept (so far, if it runs).
    pub fn receive_job(
        &self,
        instance_id: Uuid,
        job_id: Uuid,
        keep: bool,
        follow: bool,
    ) -> Result<CommandStream> {
        self.receive_request(Request::ReceiveJob {
            instance_id,
            job_id,
            keep,
            follow,
        })
    }

    pub async fn list_configurations(&self) -> Result<Vec<linger_proto::types::ConfigurationInfo>> {
        match self.call(Request::ListConfigurations).await? {
            Reply::Configurations(c) => Ok(c),
            _ => Err(self.unexpected()),
        }
    }

    pub async fn list_jobs(&self, instance_id: Uuid) -> Result<Vec<JobInfo>> {
        match self.call(Request::ListJobs { instance_id }).await? {
            Reply::Jobs(j) => Ok(j),
            _ => Err(self.unexpected()),
        }
    }

    pub async fn stop_job(&self, instance_id: Uuid, job_id: Uuid) -> Result<Vec<JobInfo>> {
        match self
            .call(Request::StopJob {
                instance_id,
                job_id,
            })
            .await?
        {
            Reply::Jobs(j) => Ok(j),
            _ => Err(self.unexpected()),
        }
    }

    pub async fn remove_job(&self, instance_id: Uuid, job_id: Uuid) -> Result<()> {
        match self
            .call(Request::RemoveJob {
                instance_id,
                job_id,
            })
            .await?
        {
            Reply::Jobs(_) => Ok(()),
            _ => Err(self.unexpected()),
        }
    }

    fn receive_request(&self, request: Request) -> Result<CommandStream> {
        let (rid, rx) = self.start(request)?;
        Ok(self.stream(rid, rx, Until::Received))
    }

    /// A stream of request `rid`'s answers, acknowledging them as they are taken (a `--keep`
    /// receive too: the daemon then only moves the window, PROTOCOL.md §7.2).
    fn stream(
        &self,
        rid: u64,
        rx: mpsc::UnboundedReceiver<ServerMsg>,
        until: Until,
    ) -> CommandStream {
        CommandStream {
            job_id: None,
            input: None,
            conn: self.clone(),
            rid,
            rx,
            until,
            summary: None,
            unacked_bytes: 0,
            ack_sent: None,
            last_seq: 0,
            done: false,
            resume: None,
            resumed: false,
            pending_finish: None,
            closing: None,
            on_notice: None,
            cancel: Arc::new(Mutex::new(CancelTarget::Request {
                conn: self.clone(),
                rid,
            })),
            output_limit: None,
            received_bytes: 0,
            instance_id: None,
            unread_input: bytes::Bytes::new(),
            terminal_command: None,
            screen_through: 0,
            put_back: None,
        }
    }

    /// Starts a command; its output arrives through the returned stream, and with
    /// `req.stdin` its input goes through [`CommandStream::input`].
    pub async fn invoke(&self, mut req: Invoke, withdrawer: &Withdrawer) -> Result<CommandStream> {
        // Nothing more comes for these: the output waits on the server.
        let detached = req.disconnected || req.kind == InvokeKind::Job;
        req.stdin &= !req.disconnected && req.kind == InvokeKind::Plain;
        let input = req.stdin.then(Input::new);
        let instance_id = req.instance_id;
        let (rid, mut rx) = self.start_feeding(Request::Invoke(req), input.as_ref())?;
        // Given up while the session is busy (the caller dropped this future): the server
        // withdraws the command instead of running it later.
        let mut withdraw = Withdraw {
            conn: self,
            rid,
            armed: true,
        };
        *lock(&withdrawer.0) = Some((self.clone(), rid));
        let first = rx.recv().await;
        withdraw.armed = false;
        *lock(&withdrawer.0) = None;
        let (command_id, job_id) = match first {
            Some(ServerMsg::Reply {
                reply: Reply::Started { command_id, job_id },
                ..
            }) => (command_id, job_id),
            Some(ServerMsg::Error { error, .. }) => {
                self.forget(rid);
                return Err(Error::Server(error));
            }
            Some(_) => {
                self.forget(rid);
                return Err(self.unexpected());
            }
            None => {
                self.forget(rid);
                return Err(self.lost());
            }
        };
        if detached {
            // Nothing more comes for it: the output waits on the server for a receive.
            self.forget(rid);
        }
        let mut stream = self.stream(rid, rx, Until::Finished(command_id));
        stream.done = detached;
        stream.job_id = job_id;
        stream.input = input;
        stream.instance_id = Some(instance_id);
        Ok(stream)
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next {
            if writer.feed(&out.msg).await.is_err() {
                return;
            }
            waiting.extend(out.flushed);
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// When the server was last heard from, and how a silent connection is cut.
struct Life {
    heard: Mutex<tokio::time::Instant>,
    cut: tokio::sync::Notify,
}

/// Shows a sign of life at the pace the server asked for, so that an open connection
/// (a long, quiet command) keeps its attachments; and notices a server silent for longer
/// than its heartbeat timeout (a connection that went dead without closing), which is then
/// cut so that the streams on it can reconnect.
async fn heartbeat(
    shared: std::sync::Weak<Shared>,
    life: Arc<Life>,
    every: std::time::Duration,
    timeout: std::time::Duration,
) {
    let mut nonce = 0u64;
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let silent = lock(&life.heard).elapsed();
        if silent > timeout {
            *lock(&shared.ended) = Some(Error::ConnectionLost {
                computer: shared.computer.clone(),
            });
            tracing::warn!(
                "{} has been silent for {} ms; cutting the connection",
                shared.computer,
                silent.as_millis()
            );
            life.cut.notify_one();
            // End the transport too (an ssh that hangs).
            if let Some(mut child) = lock(&shared.process).take() {
                let _ = child.start_kill();
            }
            return;
        }
        nonce += 1;
        if shared.out.send(ClientMsg::Ping { nonce }.into()).is_err() {
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    routes: Routes,
    inputs: Inputs,
    ended: Arc<Mutex<Option<Error>>>,
    computer: String,
    life: Arc<Life>,
) {
    loop {
        let read = tokio::select! {
            r = reader.read::<ServerMsg>() => r,
            _ = life.cut.notified() => break,
        };
        *lock(&life.heard) = tokio::time::Instant::now();
        let msg = match read {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("connection to {computer} failed: {e}");
                break;
            }
        };
        let rid = match &msg {
            ServerMsg::Error { rid, .. }
            | ServerMsg::Output { rid, .. }
            | ServerMsg::Dropped { rid, .. }
            | ServerMsg::Finished { rid, .. }
            | ServerMsg::Screen { rid, .. }
            | ServerMsg::Watched { rid, .. }
            | ServerMsg::CopyTotal { rid, .. }
            | ServerMsg::CopyItem { rid, .. }
            | ServerMsg::CopyData { rid, .. }
            | ServerMsg::CopyProgress { rid, .. } => *rid,
            ServerMsg::Goodbye { error } => {
                *lock(&ended) = Some(Error::Protocol {
                    computer: computer.clone(),
                    reason: error.message.clone(),
                });
                break;
            }
            ServerMsg::StdinAck {
                rid,
                command_id,
                written,
                closed,
            } => {
                let input = lock(&inputs).get(rid).cloned();
                if let Some(input) = input {
                    input.acked(*command_id, *written, *closed);
                }
                continue;
            }
            ServerMsg::Reply {
                rid,
                reply: Reply::Started { command_id, .. },
            } => {
                // Here rather than where the reply is read: the command's first
                // acknowledgement follows at once.
                if let Some(input) = lock(&inputs).get(rid) {
                    input.feeds(*command_id);
                }
                *rid
            }
            ServerMsg::Reply { rid, .. } => *rid,
            ServerMsg::Welcome(_)
            | ServerMsg::Pong { .. }
            | ServerMsg::Challenge { .. }
            | ServerMsg::AuthFailed { .. } => continue,
        };
        let route = lock(&routes).get(&rid).cloned();
        if let Some(tx) = route {
            let _ = tx.send(msg);
        }
    }
    // Every request still waiting sees its channel close: the connection is gone.
    lock(&ended).get_or_insert(Error::ConnectionLost { computer });
    lock(&routes).clear();
    lock(&inputs).clear();
}

/// What a running command produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Output {
        stream: StreamKind,
        data: bytes::Bytes,
        /// The command that wrote it (an earlier command's late output can arrive too).
        command_id: Uuid,
    },
    /// A command ended with this status.
    Finished { command_id: Uuid, status: i32 },
    /// Under `drop`, this many bytes of output were discarded here while nobody read.
    Dropped { bytes: u64 },
}

/// When a stream is complete.
enum Until {
    /// An invoke: at its own command's end.
    Finished(Uuid),
    /// A receive: at the server's summary.
    Received,
}

/// Output from a session, in order: one command's (an invoke) or whatever the session kept
/// and still produces (a receive). Dropping it before the end leaves the command running on
/// the server.
pub struct CommandStream {
    conn: Connection,
    rid: u64,
    rx: mpsc::UnboundedReceiver<ServerMsg>,
    until: Until,
    /// The job the request started (`invoke --as-job`, `job start`).
    job_id: Option<Uuid>,
    /// The command's forwarded input (an invoke with `stdin`).
    input: Option<Input>,
    summary: Option<ReceiveSummary>,
    unacked_bytes: usize,
    /// The latest acknowledgement sent, until it is on the wire.
    ack_sent: Option<oneshot::Receiver<()>>,
    last_seq: u64,
    done: bool,
    /// How to pick up again after the connection broke (None: give up at once).
    resume: Option<Resume>,
    /// The stream now runs on a `Receive` made after a reconnect: entries up to `last_seq`
    /// come again and are skipped, and the command's end is returned once the receive has
    /// ended too (so the session stays attached here).
    resumed: bool,
    pending_finish: Option<Event>,
    /// The stream's last answer, returned once its acknowledgement is on the wire. Kept
    /// here across that wait so that a caller who drops `next()` meanwhile (a `select!`)
    /// gets it from the next call rather than losing it.
    closing: Option<Closing>,
    on_notice: Option<Notice>,
    /// What Ctrl-C stops, shared with this stream's `Canceller`s (it moves on a resume).
    cancel: Arc<Mutex<CancelTarget>>,
    /// Option `max_received_data_per_command`, and the session to leave Disconnected when
    /// the output passes it.
    output_limit: Option<(u64, Uuid)>,
    received_bytes: u64,
    /// The session an invoke runs in (for `Resizer`s).
    instance_id: Option<Uuid>,
    /// What was typed at a terminal command and never read, from its end.
    unread_input: bytes::Bytes,
    /// A terminal receive: the command entered, and the last entry its screen holds.
    terminal_command: Option<Uuid>,
    screen_through: u64,
    /// A message read ahead by [`CommandStream::screen`] that was not the screen.
    put_back: Option<ServerMsg>,
}

/// What a `Canceller` acts on.
#[derive(Clone)]
enum CancelTarget {
    /// The request itself: `Cancel {rid}` (an invoke stops its command; a receive ignores it).
    Request { conn: Connection, rid: u64 },
    /// A resumed invoke: its request died with the old connection and the stream now follows
    /// the command through a `Receive`, so Ctrl-C stops the session's running command (as
    /// `job stop` of the session's own id does).
    Session { conn: Connection, instance_id: Uuid },
}

impl CancelTarget {
    /// The connection the stream runs on now.
    fn conn(&self) -> Connection {
        match self {
            CancelTarget::Request { conn, .. } | CancelTarget::Session { conn, .. } => conn.clone(),
        }
    }
}

/// Where a stream says that its connection broke and came back.
type Notice = Box<dyn Fn(&str) + Send>;

/// Whether a stream acknowledges before it waits for its next message (the reference
/// client's policy, PROTOCOL.md §12): when anything is unacknowledged and it has caught up
/// (the server may be waiting for it, and the output window needs it), or no
/// acknowledgement is in flight, or `ACK_EVERY` bytes wait.
fn should_ack(unacked_bytes: usize, ack_in_flight: bool, caught_up: bool) -> bool {
    unacked_bytes > 0 && (caught_up || !ack_in_flight || unacked_bytes >= ACK_EVERY)
}

/// Whether entry `seq` is one a resumed stream already returned: after a reconnect, the
/// `Receive` that resumes it starts again from the last acknowledged entry, so entries up to
/// the last one returned come twice.
fn already_had(resumed: bool, last_returned: u64, seq: u64) -> bool {
    resumed && seq <= last_returned
}

/// How a stream picks up again after its connection broke (SPEC §6, robust sessions): dial
/// again once a second for up to `window`, then receive from the last entry acknowledged.
#[derive(Clone)]
pub struct Resume {
    pub dialer: crate::client::Dialer,
    pub instance_id: Uuid,
    /// A job's output instead of the session's.
    pub job: Option<Uuid>,
    /// Follow the job to its end (else take what it kept).
    pub follow: bool,
    pub window: std::time::Duration,
}

impl CommandStream {
    /// Stops receiving once more than `limit` bytes of output would have been delivered:
    /// the stream then leaves session `instance_id` Disconnected, with the command running
    /// and the rest of its output kept there, and ends with [`Error::OutputLimit`].
    pub fn limit_output(&mut self, limit: Option<u64>, instance_id: Uuid) {
        self.output_limit = limit.map(|l| (l, instance_id));
    }

    /// Makes the stream pick up again after a broken connection.
    pub fn resume_with(&mut self, resume: Resume) {
        self.resume = Some(resume);
    }

    /// Where to say that the connection broke and is being re-established (default: the
    /// log).
    pub fn on_notice(&mut self, f: impl Fn(&str) + Send + 'static) {
        self.on_notice = Some(Box::new(f));
    }

    fn notice(&self, text: &str) {
        match &self.on_notice {
            Some(f) => f(text),
            None => tracing::warn!("{text}"),
        }
    }

    /// Dials again and continues with a `Receive` from the last acknowledged entry.
    async fn reconnect(&mut self, r: &Resume) -> Result<()> {
        let lost = self.conn.lost();
        let computer = r.dialer.computer();
        self.notice(&format!(
            "{lost}; reconnecting (for up to {})",
            humantime_short(r.window)
        ));
        let deadline = tokio::time::Instant::now() + r.window;
        loop {
            match self.try_resume(r).await {
                Ok(()) => {
                    self.notice(&format!(
                        "reconnected to {computer}; resuming from the last output received"
                    ));
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() + RETRY_EVERY > deadline => {
                    self.done = true;
                    return Err(Error::GaveUp {
                        computer,
                        reason: e.to_string(),
                    });
                }
                Err(_) => tokio::time::sleep(RETRY_EVERY).await,
            }
        }
    }

    async fn try_resume(&mut self, r: &Resume) -> Result<()> {
        let conn = r.dialer.dial().await?;
        let request = match r.job {
            None => Request::Receive(Receive {
                instance_id: r.instance_id,
                keep: false,
                buffering: None,
                terminal: None,
            }),
            Some(job_id) => Request::ReceiveJob {
                instance_id: r.instance_id,
                job_id,
                keep: false,
                follow: r.follow,
            },
        };
        let (rid, rx) = conn.start_feeding(request, self.input.as_ref())?;
        self.conn.forget(self.rid);
        *lock(&self.cancel) = match (&self.until, r.job) {
            (Until::Finished(_), None) => CancelTarget::Session {
                conn: conn.clone(),
                instance_id: r.instance_id,
            },
            _ => CancelTarget::Request {
                conn: conn.clone(),
                rid,
            },
        };
        self.conn = conn;
        self.rid = rid;
        self.rx = rx;
        self.resumed = true;
        self.unacked_bytes = 0;
        Ok(())
    }

    /// An entry a resumed stream already had: acknowledged again (so the receive can end),
    /// not returned.
    fn seen_before(&mut self, seq: u64) -> bool {
        if !already_had(self.resumed, self.last_seq, seq) && seq > self.screen_through {
            return false;
        }
        self.last_seq = self.last_seq.max(seq);
        self.unacked_bytes += 1;
        if self.rx.is_empty() {
            let _ = self.ack();
        }
        true
    }
    /// The invoked command's id (nil for a receive).
    pub fn command_id(&self) -> Uuid {
        match self.until {
            Until::Finished(id) => id,
            Until::Received => Uuid::nil(),
        }
    }

    /// The job this invoke started, if it was run as one (or launched one).
    pub fn job_id(&self) -> Option<Uuid> {
        self.job_id
    }

    /// Where the command's standard input goes, if the invoke forwards it. Feed it from
    /// another task while this stream is read: it follows the stream across reconnections.
    pub fn input(&self) -> Option<Input> {
        self.input.clone()
    }

    /// The server's summary, once a receive has ended.
    pub fn summary(&self) -> Option<&ReceiveSummary> {
        self.summary.as_ref()
    }

    /// Asks the server to stop the command (as Ctrl-C does); output continues to arrive
    /// until it has ended.
    pub fn cancel(&self) -> Result<()> {
        self.canceller().cancel()
    }

    /// Adds keys typed after those the command's end reported (read by the caller and
    /// never sent) to the unread input.
    pub fn add_unread_input(&mut self, more: &[u8]) {
        if !more.is_empty() {
            let mut all = self.unread_input.to_vec();
            all.extend_from_slice(more);
            self.unread_input = bytes::Bytes::from(all);
        }
    }

    /// What was typed at the command's terminal and never read by it (known once it has
    /// finished): the type-ahead for whatever reads the keyboard next.
    pub fn take_unread_input(&mut self) -> bytes::Bytes {
        std::mem::take(&mut self.unread_input)
    }

    /// A handle that passes window sizes to the command's terminal (an invoke with a
    /// terminal, or a terminal receive once its screen came; for anything else the server
    /// ignores them).
    pub fn resizer(&self) -> Resizer {
        Resizer {
            target: self.cancel.clone(),
            instance_id: self.instance_id.unwrap_or_else(Uuid::nil),
            command_id: self.terminal_command.unwrap_or_else(|| self.command_id()),
        }
    }

    /// A terminal receive's first answer: the running terminal command's screen, to draw
    /// before anything else; `None` when the session runs no command on a terminal (the
    /// stream then goes on as a plain receive).
    pub async fn screen(&mut self) -> Result<Option<bytes::Bytes>> {
        let Some(msg) = self.rx.recv().await else {
            self.done = true;
            return Err(self.conn.lost());
        };
        match msg {
            ServerMsg::Screen {
                command_id: Some(command_id),
                seq,
                data,
                ..
            } => {
                self.terminal_command = Some(command_id);
                self.screen_through = seq;
                if let Some(input) = &self.input {
                    input.feeds(command_id);
                }
                Ok(Some(data))
            }
            ServerMsg::Screen {
                command_id: None, ..
            } => Ok(None),
            other => {
                self.put_back = Some(other);
                Ok(None)
            }
        }
    }

    /// A receive's way to stop the command it follows (Ctrl-C while following a command
    /// entered again): the session's running command, whoever started it.
    pub fn stopper(&self, instance_id: Uuid) -> Canceller {
        let conn = lock(&self.cancel).conn();
        Canceller {
            target: Arc::new(Mutex::new(CancelTarget::Session { conn, instance_id })),
        }
    }

    /// A handle that can cancel the command from another task.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            target: self.cancel.clone(),
        }
    }

    /// Acknowledges what was received; the returned receiver hears when the
    /// acknowledgement is on the wire.
    fn ack(&mut self) -> Option<oneshot::Receiver<()>> {
        self.unacked_bytes = 0;
        if self.last_seq == 0 {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let msg = ClientMsg::Ack {
            rid: self.rid,
            seq: self.last_seq,
        };
        self.conn
            .shared
            .out
            .send(Outgoing {
                msg,
                flushed: Some(tx),
            })
            .ok()
            .map(|_| rx)
    }

    fn end(&mut self) {
        self.done = true;
        self.conn.forget(self.rid);
        if let Some(input) = &self.input {
            input.close();
        }
    }

    /// The output passed `max_received_data_per_command`: what was delivered is
    /// acknowledged, the chunk that crossed the limit is not (it waits on the server with
    /// the rest), and the session is detached so that its command keeps running.
    async fn stop_at_limit(&mut self, limit: u64, instance_id: Uuid) -> Error {
        if let Some(sent) = self.ack() {
            let _ = sent.await;
        }
        self.end();
        let detached = self
            .conn
            .disconnect_session(Disconnect {
                instance_id,
                idle_timeout_ms: None,
                buffering: None,
            })
            .await;
        if let Err(e) = detached {
            tracing::warn!("cannot leave the session Disconnected: {e}");
        }
        Error::OutputLimit { limit }
    }

    /// The next event; `None` at the end. A caller may drop the future (in a `select!`)
    /// while it waits for messages or for the last acknowledgement to go out: nothing read
    /// is lost, the next call returns it.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        if self.closing.is_some() {
            return self.close_with_ack().await;
        }
        if self.done {
            return Ok(None);
        }
        // The caller asks for the next event once it has put the previous ones where they
        // go (written to stdout, say): acknowledge them now, so that a client killed later
        // leaves unacknowledged only what it had not written. One acknowledgement is in
        // flight at a time while more is queued (the next one covers everything since),
        // unless ACK_EVERY bytes wait, so that the server always makes progress.
        let in_flight = self.ack_sent.as_mut().is_some_and(|sent| {
            matches!(sent.try_recv(), Err(oneshot::error::TryRecvError::Empty))
        });
        if should_ack(self.unacked_bytes, in_flight, self.rx.is_empty()) {
            self.ack_sent = self.ack();
        }
        loop {
            let next = match self.put_back.take() {
                Some(msg) => Some(msg),
                None => self.rx.recv().await,
            };
            let Some(msg) = next else {
                match self.resume.clone() {
                    Some(r) => {
                        self.reconnect(&r).await?;
                        continue;
                    }
                    None => {
                        self.done = true;
                        return Err(self.conn.lost());
                    }
                }
            };
            match msg {
                ServerMsg::Output { seq, .. }
                | ServerMsg::Dropped { seq, .. }
                | ServerMsg::Finished { seq, .. }
                    if self.seen_before(seq) => {}
                ServerMsg::Output {
                    seq,
                    command_id,
                    stream,
                    data,
                    ..
                } => {
                    if let Some((limit, instance_id)) = self.output_limit {
                        if self.received_bytes + data.len() as u64 > limit {
                            return Err(self.stop_at_limit(limit, instance_id).await);
                        }
                        self.received_bytes += data.len() as u64;
                    }
                    self.last_seq = seq;
                    self.unacked_bytes += data.len().max(1);
                    return Ok(Some(Event::Output {
                        stream,
                        data,
                        command_id,
                    }));
                }
                ServerMsg::Dropped { seq, bytes, .. } => {
                    self.last_seq = seq;
                    self.unacked_bytes += 1;
                    return Ok(Some(Event::Dropped { bytes }));
                }
                ServerMsg::Finished {
                    seq,
                    command_id,
                    status,
                    unread_input,
                    input_offset,
                    ..
                } => {
                    self.last_seq = seq;
                    self.unacked_bytes += 1;
                    // What we sent that never reached the command is type-ahead too.
                    let after = match (input_offset, &self.input) {
                        (Some(offset), Some(input)) => input.sent_from(offset),
                        _ => Vec::new(),
                    };
                    if !unread_input.is_empty() {
                        self.unread_input = unread_input;
                    }
                    self.add_unread_input(&after);
                    match self.until {
                        Until::Finished(mine) if mine == command_id => {
                            let finished = Event::Finished { command_id, status };
                            if self.resumed {
                                // The receive that resumed us ends once it has delivered
                                // this: wait for that, or the session would be left
                                // Disconnected when this connection closes.
                                if let Some(sent) = self.ack() {
                                    self.ack_sent = Some(sent);
                                }
                                self.pending_finish = Some(finished);
                                continue;
                            }
                            // The server holds the session for us until it has this
                            // acknowledgement, and a CLI may exit right after: make sure
                            // it is sent.
                            self.closing = Some(Closing {
                                ack: self.ack(),
                                answer: Ok(Some(finished)),
                            });
                            return self.close_with_ack().await;
                        }
                        Until::Finished(_) => {}
                        Until::Received => {
                            return Ok(Some(Event::Finished { command_id, status }));
                        }
                    }
                }
                ServerMsg::Reply {
                    reply: Reply::Received(summary),
                    ..
                } => {
                    self.summary = Some(summary);
                    self.end();
                    return Ok(self.pending_finish.take());
                }
                ServerMsg::Error { error, .. } => {
                    // Detached: everything before this error reached us; say so, so the
                    // next receiver does not get it again.
                    let ack = if error.kind == linger_proto::types::ErrorKind::Detached {
                        self.ack()
                    } else {
                        None
                    };
                    self.closing = Some(Closing {
                        ack,
                        answer: Err(Error::Server(error)),
                    });
                    return self.close_with_ack().await;
                }
                _ => {}
            }
        }
    }
}

/// See [`CommandStream::closing`].
struct Closing {
    ack: Option<oneshot::Receiver<()>>,
    answer: Result<Option<Event>>,
}

impl CommandStream {
    async fn close_with_ack(&mut self) -> Result<Option<Event>> {
        if let Some(sent) = self.closing.as_mut().and_then(|c| c.ack.as_mut()) {
            let _ = sent.await;
        }
        self.end();
        match self.closing.take() {
            Some(c) => c.answer,
            None => Ok(None),
        }
    }
}

impl Drop for CommandStream {
    fn drop(&mut self) {
        self.end();
    }
}

/// Holds a session entered (`linger enter`); dropping it ends the mark on the server.
pub struct EnterGuard {
    conn: Connection,
    rid: u64,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let _ = self
            .conn
            .shared
            .out
            .send(ClientMsg::Cancel { rid: self.rid }.into());
    }
}

/// Resizes one command's terminal from anywhere, following its stream across
/// reconnections.
#[derive(Clone)]
pub struct Resizer {
    target: Arc<Mutex<CancelTarget>>,
    instance_id: Uuid,
    command_id: Uuid,
}

impl Resizer {
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let conn = lock(&self.target).conn();
        conn.shared
            .out
            .send(
                ClientMsg::Resize {
                    instance_id: self.instance_id,
                    command_id: self.command_id,
                    rows,
                    cols,
                }
                .into(),
            )
            .map_err(|_| conn.lost())
    }
}

/// Withdraws a command that waits for a busy session, leaving it running if it has started
/// (a detach wants that; dropping the waiting invoke instead is Ctrl-C, which also stops a
/// command that started meanwhile). The invoke then answers: `Started`, or `Error busy`.
#[derive(Clone, Default)]
pub struct Withdrawer(Arc<Mutex<Option<(Connection, u64)>>>);

impl Withdrawer {
    /// Whether there was a waiting invoke to withdraw.
    pub fn withdraw(&self) -> bool {
        let Some((conn, rid)) = lock(&self.0).clone() else {
            return false;
        };
        conn.shared
            .out
            .send(ClientMsg::Withdraw { rid }.into())
            .is_ok()
    }
}

impl std::fmt::Debug for Withdrawer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = lock(&self.0).as_ref().map(|(_, rid)| *rid);
        f.debug_struct("Withdrawer")
            .field("waiting", &waiting)
            .finish()
    }
}

/// Withdraws an invoke whose caller stopped waiting for it to start.
struct Withdraw<'a> {
    conn: &'a Connection,
    rid: u64,
    armed: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self
                .conn
                .shared
                .out
                .send(ClientMsg::Cancel { rid: self.rid }.into());
            self.conn.forget(self.rid);
        }
    }
}

/// What a watcher sees (SPEC §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A terminal command's screen as it is: draw it first.
    Screen(bytes::Bytes),
    Output {
        command_id: Uuid,
        stream: StreamKind,
        data: bytes::Bytes,
    },
    /// This many bytes went by unseen: the watcher fell behind (the command never waits).
    Missed(u64),
}

/// A read-only view of a session's output as it is produced. It consumes nothing and
/// acknowledges nothing; dropping it ends the watch.
pub struct Watch {
    conn: Connection,
    rid: u64,
    rx: mpsc::UnboundedReceiver<ServerMsg>,
}

impl Watch {
    /// The next events (a chunk may come with what was missed before it); `Err` when the
    /// session ends or the connection breaks.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        loop {
            let Some(msg) = self.rx.recv().await else {
                return Err(self.conn.lost());
            };
            match msg {
                ServerMsg::Screen {
                    command_id: Some(_),
                    data,
                    ..
                } => return Ok(vec![WatchEvent::Screen(data)]),
                ServerMsg::Watched {
                    command_id,
                    stream,
                    data,
                    missed,
                    ..
                } => {
                    let mut out = Vec::new();
                    if missed > 0 {
                        out.push(WatchEvent::Missed(missed));
                    }
                    out.push(WatchEvent::Output {
                        command_id,
                        stream,
                        data,
                    });
                    return Ok(out);
                }
                ServerMsg::Error { error, .. } => return Err(Error::Server(error)),
                _ => {}
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self
            .conn
            .shared
            .out
            .send(ClientMsg::Cancel { rid: self.rid }.into());
        self.conn.forget(self.rid);
    }
}

/// Cancels one command from anywhere, following its stream across reconnections.
#[derive(Clone)]
pub struct Canceller {
    target: Arc<Mutex<CancelTarget>>,
}

impl Canceller {
    pub fn cancel(&self) -> Result<()> {
        let target = lock(&self.target).clone();
        match target {
            CancelTarget::Request { conn, rid } => conn
                .shared
                .out
                .send(ClientMsg::Cancel { rid }.into())
                .map_err(|_| conn.lost()),
            CancelTarget::Session { conn, instance_id } => {
                let (rid, mut rx) = conn.start(Request::StopJob {
                    instance_id,
                    job_id: instance_id,
                })?;
                let routes = conn.shared.routes.clone();
                tokio::spawn(async move {
                    let _ = rx.recv().await;
                    lock(&routes).remove(&rid);
                });
                Ok(())
            }
        }
    }
}

/// One message of the handshake; `Goodbye` and a closed stream become errors.
async fn read_handshake<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    computer: &str,
) -> Result<ServerMsg> {
    match reader.read::<ServerMsg>().await {
        Ok(Some(ServerMsg::Goodbye { error })) => Err(match error.kind {
            linger_proto::types::ErrorKind::Auth => Error::Server(error),
            _ => Error::Protocol {
                computer: computer.to_string(),
                reason: error.message,
            },
        }),
        Ok(Some(m)) => Ok(m),
        Err(e) if e.is_malformed() => Err(Error::Protocol {
            computer: computer.to_string(),
            reason: format!("its answer to Hello is malformed: {e}"),
        }),
        // Closed or reset before answering (a daemon refusing at its limit, or dying).
        Ok(None) | Err(_) => Err(Error::ConnectionLost {
            computer: computer.to_string(),
        }),
    }
}

/// What a TLS connection's login signs, and with which keys.
pub(crate) struct Login {
    pub user: String,
    pub channel_binding: [u8; linger_proto::auth::BINDING_LEN],
    pub certificate_sha256: [u8; linger_proto::auth::BINDING_LEN],
    pub identity_file: Option<std::path::PathBuf>,
}

impl Login {
    /// Offers the user's keys one by one until the server welcomes one. Returns the
    /// server's answer to the accepted one (its `Welcome`).
    async fn authenticate<R, W>(
        &self,
        computer: &str,
        nonce: &[u8],
        reader: &mut FrameReader<R>,
        writer: &mut FrameWriter<W>,
    ) -> Result<ServerMsg>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        use linger_proto::auth::{signed_message, SIGNATURE_NAMESPACE};
        let nonce: [u8; linger_proto::auth::BINDING_LEN] =
            nonce.try_into().map_err(|_| Error::Protocol {
                computer: computer.to_string(),
                reason: "its authentication challenge has the wrong length".into(),
            })?;
        let identity_file = self.identity_file.clone();
        let signers = Arc::new(
            tokio::task::spawn_blocking(move || crate::keys::signers(identity_file.as_deref()))
                .await
                .map_err(|e| Error::State(format!("cannot load keys: {e}")))??,
        );
        let message = Arc::new(signed_message(
            &nonce,
            &self.channel_binding,
            &self.certificate_sha256,
            &self.user,
        ));
        let mut offered = Vec::new();
        for i in 0..signers.len() {
            let (signers2, message2) = (signers.clone(), message.clone());
            let signature = tokio::task::spawn_blocking(move || {
                signers2[i].sign(SIGNATURE_NAMESPACE, &message2)
            })
            .await
            .map_err(|e| Error::State(format!("cannot sign: {e}")))?;
            let signer = &signers[i];
            let signature = match signature {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("skipping {}: {e}", signer.describe());
                    continue;
                }
            };
            offered.push(signer.describe());
            let public_key = signer
                .public_key()
                .to_openssh()
                .map_err(|e| Error::State(format!("cannot encode a public key: {e}")))?;
            let attempt = ClientMsg::Authenticate(linger_proto::client::Authenticate {
                user: self.user.clone(),
                public_key,
                signature,
            });
            writer
                .write(&attempt)
                .await
                .map_err(|_| Error::ConnectionLost {
                    computer: computer.to_string(),
                })?;
            match read_handshake(reader, computer).await {
                Ok(ServerMsg::AuthFailed { tries_left, .. }) if tries_left > 0 => continue,
                Ok(ServerMsg::AuthFailed { .. }) | Err(Error::Server(_)) => break,
                other => return other,
            }
        }
        Err(Error::AuthRejected {
            computer: computer.to_string(),
            offered: if offered.is_empty() {
                "none could sign".into()
            } else {
                offered.join(", ")
            },
        })
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn a_stream_acknowledges_when_caught_up_or_nothing_is_in_flight_or_enough_waits() {
        assert!(!should_ack(0, false, true), "nothing to acknowledge");
        assert!(should_ack(1, true, true), "caught up: always");
        assert!(should_ack(1, false, false), "none in flight");
        assert!(
            !should_ack(1, true, false),
            "one in flight and more queued: wait"
        );
        assert!(should_ack(ACK_EVERY, true, false), "enough waits");
    }

    #[test]
    fn a_resumed_stream_skips_only_what_it_returned_before() {
        assert!(
            !already_had(false, 10, 3),
            "not resumed: nothing is a repeat"
        );
        assert!(already_had(true, 10, 10));
        assert!(already_had(true, 10, 3));
        assert!(!already_had(true, 10, 11), "new output");
    }
}

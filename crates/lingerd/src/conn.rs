//! One client connection: handshake, then requests, acknowledgements and cancels in any
//! order. Anything malformed closes this connection only, with the reason logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linger_proto::client::{
    ClientMsg, Connect, Disconnect, Hello, Invoke, NewSession, Receive, Request,
};
use linger_proto::frame::{FrameReader, FrameWriter};
use linger_proto::host::DaemonToHost;
use linger_proto::server::{Reply, ServerMsg, Welcome};
use linger_proto::types::{ErrorBody, ErrorKind, SessionInfo};
use linger_proto::PROTOCOL_VERSION;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::session::{InvokeRequest, ReceiveRequest, Session};
use crate::Daemon;

/// An unauthenticated connection must introduce itself within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// After `Hello`, a TLS client must have authenticated within this time (sshd's
/// LoginGraceTime); failed attempts' delays count against it.
const LOGIN_GRACE: Duration = Duration::from_secs(30);
/// Messages queued for one connection's writer.
const OUTBOX: usize = 64;
/// After `job stop` of a session's running command, how long until what it started is
/// killed.
const STOP_ESCALATE: Duration = Duration::from_secs(2);
/// How long `remove` waits for a host to end its processes.
const REMOVE_WAIT: Duration = Duration::from_secs(10);

/// Who is on the other end, as the transport established it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub principal: String,
    /// For logs: where the connection comes from.
    pub from: String,
    /// The key's options deny commands a terminal (`no-pty`, `restrict`).
    pub no_pty: bool,
}

/// A request receiving output (an invoke or a receive): its session, and for an invoke its
/// command once started and its cancel timeout.
struct InFlight {
    session: Arc<Session>,
    command: Option<Uuid>,
    cancel_timeout: Duration,
    /// A cancel that arrived before the command was recorded as started.
    cancel_early: bool,
    /// Set by a cancel: a command still waiting for its session is withdrawn (one that the
    /// session has taken already is interrupted through `cancel_early`).
    withdraw: Option<watch::Sender<bool>>,
}

struct Ctx {
    daemon: Arc<Daemon>,
    peer: Peer,
    conn: u64,
    client: Uuid,
    tx: mpsc::Sender<ServerMsg>,
    /// Invokes in flight: their session and, once started, their command.
    invokes: Mutex<HashMap<u64, InFlight>>,
    /// Sessions this connection entered, by the request that did.
    enters: Mutex<HashMap<u64, Arc<Session>>>,
    /// Watch requests in force, by rid.
    watches: Mutex<HashMap<u64, Arc<Session>>>,
    /// Copies in progress, by rid: their session and the daemon's id for the copy.
    copies: Mutex<HashMap<u64, (Arc<Session>, Uuid)>>,
    /// Set once the client's side of the connection has ended.
    gone: tokio::sync::watch::Sender<bool>,
    /// Requests of this connection in flight.
    requests: Arc<tokio::sync::Semaphore>,
}

/// How a transport vouches for a connection's peer.
pub enum Admission {
    /// The transport authenticated it (the local socket's SO_PEERCRED).
    Trusted(Peer),
    /// A TLS client: it must authenticate with an SSH key after `Hello` (`auth.rs`).
    Challenge(crate::auth::TlsPeer),
}

/// Serves one connection. `handshaking` is held until the client has introduced itself
/// (and, on TLS, authenticated).
pub async fn serve<R, W>(
    daemon: Arc<Daemon>,
    r: R,
    w: W,
    admission: Admission,
    handshaking: crate::budget::Slot<crate::budget::Source>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = FrameReader::new(r);
    // Until Welcome the peer may be anyone: it cannot make us hold a large frame.
    reader.set_max_frame_len(linger_proto::auth::MAX_LOGIN_FRAME_LEN);
    let mut writer = FrameWriter::new(w);
    let from = match &admission {
        Admission::Trusted(p) => p.from.clone(),
        Admission::Challenge(t) => format!("{} port {}", t.addr.ip(), t.addr.port()),
    };
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.read::<ClientMsg>()).await {
        Ok(Ok(Some(ClientMsg::Hello(h)))) => h,
        Ok(Ok(None)) => return,
        Ok(Ok(Some(_))) => {
            return refuse(&mut writer, &from, "the first message must be Hello").await;
        }
        Ok(Err(e)) => {
            let why = format!("bad handshake: {}", crate::untrusted::shown(&e.to_string()));
            return refuse(&mut writer, &from, &why).await;
        }
        Err(_) => return refuse(&mut writer, &from, "no Hello in time").await,
    };
    if let Err(why) = check_hello(&hello) {
        return refuse(&mut writer, &from, &why).await;
    }
    let peer = match admission {
        Admission::Trusted(peer) => peer,
        Admission::Challenge(tls) => {
            let login = crate::auth::authenticate(&daemon, &mut reader, &mut writer, &tls);
            match tokio::time::timeout(LOGIN_GRACE, login).await {
                Ok(Some(peer)) => peer,
                Ok(None) => return,
                Err(_) => {
                    // Say why, as a login failure: a client whose attempts were slowed down
                    // (other failures from its address) must not read it as a protocol bug.
                    let why = format!(
                        "no successful login within {} s (failed logins from this address are answered ever more slowly)",
                        LOGIN_GRACE.as_secs()
                    );
                    tracing::warn!(%from, "refusing connection: {why}");
                    let _ = writer
                        .write(&ServerMsg::Goodbye {
                            error: ErrorBody::new(ErrorKind::Auth, why),
                        })
                        .await;
                    return;
                }
            }
        }
    };
    let config = daemon.config();
    let welcome = ServerMsg::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        computer_name: daemon.computer_name.clone(),
        principal: peer.principal.clone(),
        heartbeat_interval_ms: linger_proto::duration::millis(config.server.heartbeat_interval),
        heartbeat_timeout_ms: linger_proto::duration::millis(config.server.heartbeat_timeout),
    });
    if writer.write(&welcome).await.is_err() {
        return;
    }
    reader.set_max_frame_len(linger_proto::MAX_FRAME_LEN);
    reader.set_budget(daemon.frame_budget.clone());
    drop(handshaking);
    let conn = daemon.next_conn();
    daemon.saw(hello.client_id);
    daemon.introduce(
        hello.client_id,
        format!(
            "{} from {}",
            crate::untrusted::shown(&hello.client_name),
            peer.from
        ),
    );
    tracing::debug!(conn, principal = %peer.principal, from = %peer.from, client = %hello.client_id, program = %crate::untrusted::shown(&hello.client_name), "client connected");

    let (tx, rx) = mpsc::channel(OUTBOX);
    let writer_task = tokio::spawn(write_loop(writer, rx));
    let ctx = Arc::new(Ctx {
        daemon,
        peer,
        conn,
        client: hello.client_id,
        tx,
        invokes: Mutex::new(HashMap::new()),
        enters: Mutex::new(HashMap::new()),
        watches: Mutex::new(HashMap::new()),
        copies: Mutex::new(HashMap::new()),
        gone: tokio::sync::watch::channel(false).0,
        requests: Arc::new(tokio::sync::Semaphore::new(
            crate::MAX_REQUESTS_PER_CONNECTION,
        )),
    });
    loop {
        let msg = match reader.read::<ClientMsg>().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                let why = crate::untrusted::shown(&e.to_string());
                tracing::warn!(conn, from = %ctx.peer.from, "closing connection: {why}");
                let _ = ctx
                    .tx
                    .send(ServerMsg::Goodbye {
                        error: ErrorBody::new(ErrorKind::Protocol, why),
                    })
                    .await;
                break;
            }
        };
        ctx.daemon.saw(ctx.client);
        match msg {
            ClientMsg::Hello(_) => {
                tracing::warn!(conn, "second Hello ignored");
            }
            ClientMsg::Authenticate(_) => {
                tracing::warn!(conn, "Authenticate after the handshake ignored");
            }
            ClientMsg::Request { rid, request } => {
                // Each request is a task until answered: a client pipelining without bound
                // gets `limit` answers instead of tasks.
                let permits = ctx.requests.clone().try_acquire_owned().and_then(|mine| {
                    let all = ctx.daemon.requests.clone().try_acquire_owned()?;
                    Ok((mine, all))
                });
                let Ok(permits) = permits else {
                    let error = ErrorBody::new(
                        ErrorKind::Limit,
                        format!(
                            "too many requests in flight (at most {} per connection, {} in all)",
                            crate::MAX_REQUESTS_PER_CONNECTION,
                            crate::MAX_REQUESTS
                        ),
                    )
                    .with_hint("wait for answers before sending more requests");
                    let _ = ctx.tx.send(ServerMsg::Error { rid, error }).await;
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    ctx.handle(rid, request).await;
                    drop(permits);
                });
            }
            ClientMsg::Ack { rid, seq } => {
                let session = ctx.invokes_lock().get(&rid).map(|f| f.session.clone());
                match session {
                    Some(s) => s.ack(conn, rid, seq),
                    // A request that ended (one detached mid-stream) may still acknowledge
                    // what reached it; each session checks whether it is the one.
                    None => {
                        for s in ctx.daemon.registry.owned_by(&ctx.peer.principal) {
                            s.ack(conn, rid, seq);
                        }
                    }
                }
            }
            ClientMsg::Stdin {
                rid,
                command_id,
                offset,
                data,
                eof,
            } => {
                let session = ctx.invokes_lock().get(&rid).map(|f| f.session.clone());
                // Input for a request no longer in flight has nowhere to go.
                if let Some(s) = session {
                    s.input(conn, rid, command_id, offset, data, eof);
                }
            }
            ClientMsg::CopyItem { rid, item } => {
                if let Some((s, copy_id)) = ctx.copy_of(rid) {
                    s.copy_part(copy_id, DaemonToHost::CopyItem { copy_id, item });
                }
            }
            ClientMsg::CopyData { rid, offset, data } => {
                if let Some((s, copy_id)) = ctx.copy_of(rid) {
                    s.copy_part(
                        copy_id,
                        DaemonToHost::CopyData {
                            copy_id,
                            offset,
                            data,
                        },
                    );
                }
            }
            ClientMsg::CopyEnd { rid } => {
                if let Some((s, copy_id)) = ctx.copy_of(rid) {
                    s.copy_part(copy_id, DaemonToHost::CopyEnd { copy_id });
                }
            }
            ClientMsg::CopyProgress { rid, done } => {
                if let Some((s, copy_id)) = ctx.copy_of(rid) {
                    s.copy_part(copy_id, DaemonToHost::CopyProgress { copy_id, done });
                }
            }
            ClientMsg::Cancel { rid } if ctx.copies_lock().contains_key(&rid) => {
                if let Some((s, copy_id)) = ctx.copy_of(rid) {
                    s.copy_abort(copy_id, "the copy was cancelled");
                }
            }
            ClientMsg::Cancel { rid } if ctx.watches_lock().contains_key(&rid) => {
                if let Some(s) = ctx.watches_lock().remove(&rid) {
                    s.unwatch(conn, Some(rid));
                }
            }
            ClientMsg::Cancel { rid } if ctx.enters_lock().contains_key(&rid) => {
                if let Some(s) = ctx.enters_lock().remove(&rid) {
                    s.end_enter(conn, Some(rid));
                }
            }
            ClientMsg::Cancel { rid } => {
                let target = ctx.invokes_lock().get_mut(&rid).and_then(|f| {
                    // Not started yet: withdrawn if it still waits for the session, else
                    // interrupted as soon as it is recorded as started.
                    f.cancel_early = f.command.is_none();
                    if let Some(w) = f.withdraw.as_ref().filter(|_| f.command.is_none()) {
                        w.send_replace(true);
                    }
                    Some((f.session.clone(), f.command?, f.cancel_timeout))
                });
                if let Some((s, cmd, cancel_timeout)) = target {
                    tracing::info!(rid, session = %s.id(), command = %cmd, principal = %ctx.peer.principal, "command cancelled");
                    s.interrupt(cmd, cancel_timeout);
                }
            }
            ClientMsg::Withdraw { rid } => {
                if let Some(f) = ctx.invokes_lock().get(&rid) {
                    // Past its wait, setting it changes nothing: the command runs on.
                    if let Some(w) = f.withdraw.as_ref().filter(|_| f.command.is_none()) {
                        w.send_replace(true);
                    }
                }
            }
            ClientMsg::Resize {
                instance_id,
                command_id,
                rows,
                cols,
            } => {
                if let Some(s) = ctx.daemon.registry.get(&ctx.peer.principal, instance_id) {
                    s.resize(ctx.client, command_id, rows, cols);
                }
            }
            ClientMsg::Ping { nonce } => {
                let _ = ctx.tx.send(ServerMsg::Pong { nonce }).await;
            }
        }
    }
    ctx.gone.send_replace(true);
    // Requests still receiving output lose their reader: their sessions are left
    // Disconnected, their commands running.
    let sessions: Vec<Arc<Session>> = ctx
        .invokes_lock()
        .values()
        .map(|f| f.session.clone())
        .collect();
    let entered: Vec<Arc<Session>> = ctx.enters_lock().drain().map(|(_, s)| s).collect();
    for (_, s) in ctx.watches_lock().drain() {
        s.unwatch(conn, None);
    }
    for (_, (s, copy_id)) in ctx.copies_lock().drain() {
        s.copy_abort(copy_id, "the client's connection closed");
    }
    for s in sessions.into_iter().chain(entered) {
        s.connection_closed(conn);
    }
    drop(ctx);
    let _ = writer_task.await;
    tracing::debug!(conn, "client disconnected");
}

fn check_hello(h: &Hello) -> Result<(), String> {
    if h.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported (this server speaks {PROTOCOL_VERSION})",
            h.protocol_version
        ));
    }
    Ok(())
}

async fn refuse<W: AsyncWrite + Unpin>(writer: &mut FrameWriter<W>, from: &str, why: &str) {
    tracing::warn!(%from, "refusing connection: {why}");
    let _ = writer
        .write(&ServerMsg::Goodbye {
            error: ErrorBody::new(ErrorKind::Protocol, why),
        })
        .await;
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::Receiver<ServerMsg>,
) {
    while let Some(msg) = rx.recv().await {
        if writer.feed(&msg).await.is_err() {
            return;
        }
        // Batch whatever is already queued into one flush.
        while let Ok(more) = rx.try_recv() {
            if writer.feed(&more).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

impl Ctx {
    fn invokes_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InFlight>> {
        self.invokes.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn handle(self: Arc<Self>, rid: u64, request: Request) {
        let result = match request {
            Request::NewSession(req) => self.new_session(req).await.map(Reply::Session),
            Request::ListSessions(req) => Ok(Reply::Sessions(self.list(&req.instance_ids))),
            Request::RemoveSession { instance_id } => {
                self.remove(instance_id).await.map(Reply::Session)
            }
            Request::Invoke(req) => match self.clone().invoke(rid, req).await {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Request::Connect(req) => self.connect(req).map(Reply::Session),
            Request::Disconnect(req) => self.disconnect(req).map(Reply::Session),
            Request::Receive(req) => self.receive(rid, req, None).await.map(Reply::Received),
            Request::ReceiveJob {
                instance_id,
                job_id,
                keep,
                follow,
            } => {
                let req = Receive {
                    instance_id,
                    keep,
                    buffering: None,
                    terminal: None,
                };
                self.receive(rid, req, Some((job_id, follow)))
                    .await
                    .map(Reply::Received)
            }
            Request::ListJobs { instance_id } => self.session(instance_id).map(|s| Reply::Jobs(s.jobs())),
            Request::Watch { instance_id } => self.watch(rid, instance_id),
            Request::ListConfigurations => Ok(Reply::Configurations(
                self.daemon
                    .config()
                    .configurations
                    .values()
                    .filter(|c| self.daemon.may_use(c, &self.peer.principal))
                    .map(crate::config::Configuration::info)
                    .collect(),
            )),
            Request::StopJob {
                instance_id,
                job_id,
            } => self.session(instance_id).and_then(|s| {
                tracing::info!(session = %instance_id, job = %job_id, principal = %self.peer.principal, from = %self.peer.from, "job stopped");
                self.audit(&s, "job_stop", serde_json::json!({ "job": job_id }));
                s.stop_job(self.client, job_id, STOP_ESCALATE)
                    .map(|j| Reply::Jobs(j.into_iter().collect()))
            }),
            Request::RemoveJob {
                instance_id,
                job_id,
            } => self.session(instance_id).and_then(|s| {
                s.remove_job(self.client, job_id)?;
                tracing::info!(session = %instance_id, job = %job_id, principal = %self.peer.principal, "job removed");
                self.audit(&s, "job_remove", serde_json::json!({ "job": job_id }));
                Ok(Reply::Jobs(Vec::new()))
            }),
            Request::Enter { instance_id } => self.enter(rid, instance_id).map(Reply::Session),
            Request::PutFiles(req) => {
                let detail = serde_json::json!({
                    "destination": String::from_utf8_lossy(&req.destination),
                    "preserve": req.preserve,
                });
                let begin = |copy_id| DaemonToHost::CopyIn {
                    copy_id,
                    destination: req.destination,
                    several: req.several,
                    preserve: req.preserve,
                };
                match self.copy(rid, req.instance_id, begin, "copy_in", detail).await {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            Request::GetFiles(req) => {
                let detail = serde_json::json!({
                    "sources": req.sources.iter().map(|s| String::from_utf8_lossy(s)).collect::<Vec<_>>(),
                    "recursive": req.recursive,
                });
                let begin = |copy_id| DaemonToHost::CopyOut {
                    copy_id,
                    sources: req.sources,
                    recursive: req.recursive,
                };
                match self.copy(rid, req.instance_id, begin, "copy_out", detail).await {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
        };
        let msg = match result {
            Ok(reply) => ServerMsg::Reply { rid, reply },
            Err(error) => ServerMsg::Error { rid, error },
        };
        let _ = self.tx.send(msg).await;
    }

    fn not_found(&self, id: Uuid) -> ErrorBody {
        ErrorBody::new(
            ErrorKind::NotFound,
            format!("no session {id} on {}", self.daemon.computer_name),
        )
        .with_hint("`linger get --computer HOST` lists the sessions there")
    }

    /// The caller's live session `id`, or why it cannot be had.
    fn session(&self, id: Uuid) -> Result<Arc<Session>, ErrorBody> {
        let reg = &self.daemon.registry;
        match reg.get(&self.peer.principal, id) {
            Some(s) => Ok(s),
            None => Err(match reg.ended(&self.peer.principal, id) {
                Some(info) => ErrorBody::closed(
                    &info.name,
                    info.closed_reason.as_deref().unwrap_or("it ended"),
                ),
                None => self.not_found(id),
            }),
        }
    }

    fn connect(&self, req: Connect) -> Result<SessionInfo, ErrorBody> {
        let session = self.session(req.instance_id)?;
        let taken_from = session
            .connect(self.client, req.buffering, req.force)
            .map_err(|e| match (e.kind, session.attached_to()) {
                // Say who holds it, and until when, so the user can choose to wait or force.
                (ErrorKind::Busy, Some(holder)) if holder != self.client => {
                    self.daemon.held_elsewhere(&session.meta.name, holder)
                }
                _ => e,
            })?;
        if let Some(holder) = taken_from {
            tracing::info!(session = %session.id(), name = %session.meta.name, from_client = %holder, client = %self.client, "session taken over");
            self.audit(
                &session,
                "disconnect",
                serde_json::json!({ "reason": "taken over by another client", "client": holder, "by": self.client }),
            );
        }
        tracing::info!(session = %session.id(), name = %session.meta.name, principal = %self.peer.principal, from = %self.peer.from, client = %self.client, "session connected");
        self.audit(
            &session,
            "connect",
            serde_json::json!({ "client": self.client }),
        );
        Ok(session.info(self.client))
    }

    fn enter(&self, rid: u64, id: Uuid) -> Result<SessionInfo, ErrorBody> {
        let session = self.session(id)?;
        session.begin_enter(self.conn, rid, self.client)?;
        self.enters_lock().insert(rid, session.clone());
        tracing::info!(session = %session.id(), name = %session.meta.name, principal = %self.peer.principal, from = %self.peer.from, "session entered");
        self.audit(
            &session,
            "enter",
            serde_json::json!({ "client": self.client }),
        );
        Ok(session.info(self.client))
    }

    fn audit(&self, session: &Session, action: &str, detail: serde_json::Value) {
        self.daemon
            .audit
            .record(&self.peer, action, session.id(), &session.meta.name, detail);
    }

    fn copies_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<Session>, Uuid)>> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn copy_of(&self, rid: u64) -> Option<(Arc<Session>, Uuid)> {
        self.copies_lock().get(&rid).cloned()
    }

    /// Runs a copy (`PutFiles`, `GetFiles`) through the session's host until its last
    /// answer is on its way; the host sends every answer, this only routes.
    async fn copy(
        &self,
        rid: u64,
        instance_id: Uuid,
        begin: impl FnOnce(Uuid) -> DaemonToHost,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<(), ErrorBody> {
        let session = self.session(instance_id)?;
        if session.meta.restricted.is_some() {
            return Err(ErrorBody::new(
                ErrorKind::Auth,
                format!(
                    "session {} is restricted: its configuration copies no files",
                    session.meta.name
                ),
            )
            .with_hint("copy through a session of an unrestricted configuration"));
        }
        let copy_id = Uuid::new_v4();
        // Routed before the host hears of it: the client sends once the host answers.
        self.copies_lock().insert(rid, (session.clone(), copy_id));
        let ended = match session.copy_begin(copy_id, rid, self.tx.clone(), begin(copy_id)) {
            Ok(ended) => ended,
            Err(e) => {
                self.copies_lock().remove(&rid);
                return Err(e);
            }
        };
        tracing::info!(session = %session.id(), copy = %copy_id, principal = %self.peer.principal, from = %self.peer.from, "{action}");
        self.audit(&session, action, detail);
        let _ = ended.await;
        self.copies_lock().remove(&rid);
        Ok(())
    }

    fn watches_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enters_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.enters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn disconnect(&self, req: Disconnect) -> Result<SessionInfo, ErrorBody> {
        let session = self.session(req.instance_id)?;
        let idle_timeout = req.idle_timeout_ms.map(Duration::from_millis);
        if let Some(t) = idle_timeout {
            self.daemon.check_idle_timeout(
                &session.meta.configuration_name,
                self.daemon.max_idle_timeout_of(&session.meta),
                t,
            )?;
        }
        session.disconnect(self.conn, self.client, idle_timeout, req.buffering)?;
        tracing::info!(session = %session.id(), name = %session.meta.name, principal = %self.peer.principal, from = %self.peer.from, client = %self.client, "session disconnected");
        self.audit(
            &session,
            "disconnect",
            serde_json::json!({ "client": self.client, "idle_timeout_ms": req.idle_timeout_ms }),
        );
        Ok(session.info(self.client))
    }

    fn watch(&self, rid: u64, instance_id: Uuid) -> Result<Reply, ErrorBody> {
        let session = self.session(instance_id)?;
        session.watch(self.conn, rid, self.tx.clone())?;
        self.watches_lock().insert(rid, session.clone());
        tracing::debug!(session = %session.id(), principal = %self.peer.principal, from = %self.peer.from, "watch");
        self.audit(
            &session,
            "watch",
            serde_json::json!({ "client": self.client }),
        );
        Ok(Reply::Watching)
    }

    async fn receive(
        &self,
        rid: u64,
        req: Receive,
        job: Option<(Uuid, bool)>,
    ) -> Result<linger_proto::server::ReceiveSummary, ErrorBody> {
        let follow = job.is_none_or(|(_, follow)| follow);
        let job = job.map(|(id, _)| id);
        let session = self.session(req.instance_id)?;
        if req.terminal.is_some() && (req.keep || job.is_some()) {
            return Err(ErrorBody::new(
                ErrorKind::InvalidRequest,
                "a terminal is entered by a receive that takes the output: not with keep or a job",
            ));
        }
        if req.terminal.is_some() && self.peer.no_pty {
            return Err(ErrorBody::new(
                ErrorKind::Auth,
                "this key may not use a terminal (its authorized_keys line says no-pty or restrict)",
            ));
        }
        self.invokes_lock().insert(
            rid,
            InFlight {
                session: session.clone(),
                command: None,
                cancel_timeout: Duration::ZERO,
                cancel_early: false,
                withdraw: None,
            },
        );
        tracing::debug!(session = %session.id(), name = %session.meta.name, principal = %self.peer.principal, from = %self.peer.from, keep = req.keep, "receive");
        self.audit(
            &session,
            "receive",
            serde_json::json!({ "client": self.client, "keep": req.keep, "job": job }),
        );
        let request = ReceiveRequest {
            conn: self.conn,
            rid,
            client: self.client,
            keep: req.keep,
            follow,
            buffering: req.buffering,
            terminal: req.terminal,
            tx: self.tx.clone(),
        };
        let result = match job {
            None => session.receive(request, None).await,
            Some(job_id) => session.receive_job(request, job_id).await,
        };
        self.invokes_lock().remove(&rid);
        result
    }

    async fn new_session(&self, req: NewSession) -> Result<SessionInfo, ErrorBody> {
        let session = self
            .daemon
            .create_session(&self.peer, self.client, req)
            .await?;
        Ok(session.info(self.client))
    }

    fn list(&self, ids: &[Uuid]) -> Vec<SessionInfo> {
        let reg = &self.daemon.registry;
        if ids.is_empty() {
            return reg
                .owned_by(&self.peer.principal)
                .iter()
                .map(|s| s.info(self.client))
                .collect();
        }
        ids.iter()
            .filter_map(|&id| match reg.get(&self.peer.principal, id) {
                Some(s) => Some(s.info(self.client)),
                None => reg.ended(&self.peer.principal, id),
            })
            .collect()
    }

    async fn remove(&self, id: Uuid) -> Result<SessionInfo, ErrorBody> {
        let reg = &self.daemon.registry;
        let Some(session) = reg.get(&self.peer.principal, id) else {
            return reg
                .ended(&self.peer.principal, id)
                .ok_or_else(|| self.not_found(id));
        };
        tracing::info!(session = %id, name = %session.meta.name, principal = %self.peer.principal, from = %self.peer.from, "session removed");
        self.audit(&session, "remove", serde_json::json!({}));
        session.terminate("it was removed");
        if !session.wait_closed(REMOVE_WAIT).await {
            tracing::warn!(session = %id, "host did not exit after terminate");
        }
        reg.retire(id);
        Ok(reg
            .ended(&self.peer.principal, id)
            .unwrap_or_else(|| session.info(self.client)))
    }

    async fn invoke(self: Arc<Self>, rid: u64, mut req: Invoke) -> Result<(), ErrorBody> {
        let session = self.session(req.instance_id)?;
        if req.script.contains('\0') || req.args.iter().any(|a| a.contains('\0')) {
            return Err(ErrorBody::new(
                ErrorKind::InvalidRequest,
                "the script or an argument contains a NUL byte, which a shell cannot hold",
            ));
        }
        if req.terminal.is_some() && self.peer.no_pty {
            return Err(ErrorBody::new(
                ErrorKind::Auth,
                "this key may not run commands on a terminal (its authorized_keys line says no-pty or restrict)",
            )
            .with_hint("run the command without --tty, or ask for a key line that allows a pty"));
        }
        if let Some(allowed) = &session.meta.restricted {
            let patterns = &session.meta.restricted_arguments;
            match crate::restricted::command(&req.script, &req.args, allowed, patterns) {
                Ok(command) => {
                    req.script = command;
                    req.args.clear();
                }
                Err(refusal) => {
                    let message = refusal.message(&session.meta.configuration_name, allowed);
                    tracing::warn!(session = %session.id(), principal = %self.peer.principal, from = %self.peer.from, "{message}");
                    self.audit(
                        &session,
                        "command_refused",
                        serde_json::json!({ "script": req.script, "reason": message }),
                    );
                    return Err(ErrorBody::new(ErrorKind::InvalidRequest, message));
                }
            }
        }
        let cancel_timeout = Duration::from_millis(req.cancel_timeout_ms);
        let (withdraw, withdrawn) = watch::channel(false);
        self.invokes_lock().insert(
            rid,
            InFlight {
                session: session.clone(),
                command: None,
                cancel_timeout,
                cancel_early: false,
                withdraw: Some(withdraw),
            },
        );
        let (started_tx, started_rx) = oneshot::channel();
        let me = self.clone();
        let audited = serde_json::json!({
            "script": req.script,
            "args": req.args,
            "kind": format!("{:?}", req.kind),
            "disconnected": req.disconnected,
        });
        let audit_session = session.clone();
        let note_started = async move {
            if let Ok(cmd) = started_rx.await {
                let early = me.invokes_lock().get_mut(&rid).and_then(|entry| {
                    entry.command = Some(cmd);
                    entry
                        .cancel_early
                        .then(|| (entry.session.clone(), entry.cancel_timeout))
                });
                if let Some((session, cancel_timeout)) = early {
                    session.interrupt(cmd, cancel_timeout);
                }
                tracing::debug!(session = %req.instance_id, command = %cmd, principal = %me.peer.principal, from = %me.peer.from, "command");
                let mut detail = audited;
                detail["command"] = serde_json::json!(cmd);
                me.audit(&audit_session, "command", detail);
            }
        };
        let run = session.invoke(
            InvokeRequest {
                conn: self.conn,
                rid,
                client: self.client,
                script: req.script,
                args: req.args,
                // A job never waits for a busy session (the seeds: it fails at once).
                wait: if req.kind == linger_proto::client::InvokeKind::Job {
                    Duration::ZERO
                } else {
                    // Bounded: a deadline this far off must not overflow the clock.
                    Duration::from_millis(req.wait_ms).min(linger_proto::text::MAX_DURATION)
                },
                disconnected: req.disconnected,
                kind: req.kind,
                stdin: req.stdin,
                terminal: req.terminal,
                tx: self.tx.clone(),
                gone: self.gone.subscribe(),
                withdrawn,
            },
            started_tx,
        );
        let (result, ()) = tokio::join!(run, note_started);
        self.invokes_lock().remove(&rid);
        result
    }
}

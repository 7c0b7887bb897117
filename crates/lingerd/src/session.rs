//! A session as the daemon sees it: the link to its host process, who it is attached to,
//! the one-command-at-a-time slot, and the relay of its output to whichever client request
//! currently subscribes to it.
//!
//! The daemon never buffers output: the host keeps every entry until a client acknowledges
//! it, and the daemon only relays. Entries arriving while nobody subscribes are dropped
//! here and replayed by the host to the next subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use linger_proto::frame::{FrameReader, FrameWriter};
use linger_proto::host::{DaemonToHost, HostMeta, HostStatus, HostToDaemon};
use linger_proto::server::{Reply, ServerMsg};
use linger_proto::types::{Attachment, ErrorBody, ErrorKind, SessionInfo};
use linger_proto::HOST_PROTOCOL_VERSION;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use uuid::Uuid;

/// Where one request wants the session's output to go.
struct Subscriber {
    conn: u64,
    rid: u64,
    tx: mpsc::Sender<ServerMsg>,
    /// Highest entry relayed to it: it cannot acknowledge more.
    relayed: u64,
}

struct Inner {
    attached_to: Option<Uuid>,
    /// Why the daemon asked the host to end, once it has.
    terminating: Option<String>,
    /// The host connection is gone: nothing more will come from it.
    host_gone: bool,
    closed: Option<String>,
    status: HostStatus,
    subscriber: Option<Subscriber>,
    /// `Replay`s sent whose `Replaying` has not come back: entries until then are stale.
    replays_pending: u32,
    /// Highest entry acknowledged by a client.
    acked: u64,
    /// Seq of each command's `Finished` entry, once relayed.
    finished: HashMap<Uuid, u64>,
    pending_runs: HashMap<Uuid, oneshot::Sender<Result<(), String>>>,
}

pub struct Session {
    pub meta: HostMeta,
    inner: Mutex<Inner>,
    to_host: mpsc::UnboundedSender<DaemonToHost>,
    slot: Arc<Semaphore>,
    /// Bumped on every change an `invoke` may be waiting for.
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
    pub tx: mpsc::Sender<ServerMsg>,
}

impl Session {
    /// Connects to a host's socket and starts relaying. `on_close` hears the session's id
    /// once it has ended.
    pub async fn adopt(
        socket: &std::path::Path,
        attached_to: Option<Uuid>,
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
        let (meta, status) = match hello {
            Some(HostToDaemon::Hello {
                protocol_version,
                meta,
                status,
            }) if protocol_version == HOST_PROTOCOL_VERSION => (meta, status),
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
        let slot = Arc::new(Semaphore::new(1));
        let session = Arc::new(Session {
            meta,
            inner: Mutex::new(Inner {
                attached_to,
                terminating: None,
                host_gone: false,
                closed: status.shell_exited.clone(),
                status,
                subscriber: None,
                replays_pending: 0,
                acked: 0,
                finished: HashMap::new(),
                pending_runs: HashMap::new(),
            }),
            to_host,
            slot,
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
        for (_, run) in g.pending_runs.drain() {
            let _ = run.send(Err("the session has ended".into()));
        }
        drop(g);
        self.bump();
    }

    /// Reads the host until it goes away; returns why the session ended.
    async fn relay(&self, reader: &mut FrameReader<tokio::net::unix::OwnedReadHalf>) -> String {
        self.send(DaemonToHost::Replay);
        self.lock().replays_pending += 1;
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
                    seq,
                    command_id,
                    stream,
                    data,
                } => {
                    self.forward(seq, None, |rid| ServerMsg::Output {
                        rid,
                        seq,
                        command_id,
                        stream,
                        data,
                    })
                    .await
                }
                HostToDaemon::Finished {
                    seq,
                    command_id,
                    status,
                } => {
                    self.forward(seq, Some(command_id), |rid| ServerMsg::Finished {
                        rid,
                        seq,
                        command_id,
                        status,
                    })
                    .await
                }
                HostToDaemon::Replaying { .. } => {
                    let mut g = self.lock();
                    g.replays_pending = g.replays_pending.saturating_sub(1);
                }
                HostToDaemon::Status(status) => {
                    self.lock().status = status;
                    self.bump();
                }
                HostToDaemon::Started { command_id } => {
                    if let Some(tx) = self.lock().pending_runs.remove(&command_id) {
                        let _ = tx.send(Ok(()));
                    }
                }
                HostToDaemon::RunRefused { command_id, reason } => {
                    if let Some(tx) = self.lock().pending_runs.remove(&command_id) {
                        let _ = tx.send(Err(reason));
                    }
                }
                HostToDaemon::ShellExited { reason } => {
                    let orphaned = self.lock().subscriber.is_none();
                    self.close(reason.clone());
                    if orphaned {
                        // Nobody will read what is left: let the host go.
                        self.send(DaemonToHost::Terminate { reason });
                    }
                }
                HostToDaemon::Hello { .. } => {
                    tracing::warn!(session = %self.meta.instance_id, "unexpected Hello from host");
                }
            }
        }
        "its session host exited unexpectedly".to_string()
    }

    async fn forward(&self, seq: u64, finished: Option<Uuid>, make: impl FnOnce(u64) -> ServerMsg) {
        let (tx, rid) = {
            let mut g = self.lock();
            if g.replays_pending > 0 {
                return;
            }
            let Some(s) = g.subscriber.as_mut() else {
                return;
            };
            // Recorded before sending: the requester's acknowledgement may come back
            // before this task runs again.
            s.relayed = seq;
            let out = (s.tx.clone(), s.rid);
            if let Some(cmd) = finished {
                g.finished.insert(cmd, seq);
            }
            out
        };
        if tx.send(make(rid)).await.is_err() {
            let mut g = self.lock();
            if g.subscriber
                .as_ref()
                .is_some_and(|s| s.rid == rid && s.tx.same_channel(&tx))
            {
                g.subscriber = None;
            }
        } else if finished.is_none() {
            // Plain output changes nothing an invoke waits for: no wake-up.
            return;
        }
        self.bump();
    }

    /// Request `rid` of connection `conn` has received everything up to `seq`. Only the
    /// current subscriber may acknowledge, and only what was relayed to it: anything else
    /// would make the host forget output nobody has seen.
    pub fn ack(&self, conn: u64, rid: u64, seq: u64) {
        {
            let mut g = self.lock();
            let relayed = match &g.subscriber {
                Some(s) if s.conn == conn && s.rid == rid => s.relayed,
                _ => return,
            };
            let seq = seq.min(relayed);
            if seq <= g.acked {
                return;
            }
            g.acked = seq;
        }
        self.send(DaemonToHost::Ack { seq });
        self.bump();
    }

    /// A client connection went away: its requests no longer receive output.
    pub fn unsubscribe(&self, conn: u64) {
        let mut g = self.lock();
        if g.subscriber.as_ref().is_some_and(|s| s.conn == conn) {
            g.subscriber = None;
        }
        drop(g);
        self.bump();
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
    }

    /// Waits until the host has gone (after `terminate`), at most `limit`.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let done = tokio::time::timeout(limit, async {
            loop {
                if self.lock().closed.is_some() {
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

    /// Runs one command for a client request and relays its output until it has finished
    /// and been acknowledged (or the requester went away). Returns the command's id once
    /// started via `started`.
    pub async fn invoke(
        self: &Arc<Self>,
        req: InvokeRequest,
        started: oneshot::Sender<Uuid>,
    ) -> Result<(), ErrorBody> {
        self.check_usable(req.client)?;
        let permit = match tokio::time::timeout(req.wait, self.slot.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(self.closed_error()),
            Err(_) => {
                let what = match &self.lock().status.running {
                    Some((_, cmd)) => format!("is still running `{cmd}`"),
                    // The command ended but its requester has not received all of it yet.
                    None => "is still delivering the previous command's output".to_string(),
                };
                return Err(ErrorBody::new(
                    ErrorKind::Busy,
                    format!("session busy: {} {what}", self.meta.name),
                )
                .with_hint("wait for it to finish, raise --wait, or press Ctrl-C in the invoke that runs it"));
            }
        };
        self.check_usable(req.client)?;
        let command_id = Uuid::new_v4();
        let (run_tx, run_rx) = oneshot::channel();
        {
            let mut g = self.lock();
            g.attached_to = Some(req.client);
            g.subscriber = Some(Subscriber {
                conn: req.conn,
                rid: req.rid,
                tx: req.tx.clone(),
                relayed: 0,
            });
            g.replays_pending += 1;
            g.pending_runs.insert(command_id, run_tx);
        }
        // Started goes out before anything the replay or the command produce.
        let _ = req
            .tx
            .send(ServerMsg::Reply {
                rid: req.rid,
                reply: Reply::Started { command_id },
            })
            .await;
        let _ = started.send(command_id);
        self.send(DaemonToHost::Replay);
        self.send(DaemonToHost::Run {
            command_id,
            script: req.script,
            args: req.args,
        });
        tracing::info!(session = %self.meta.instance_id, command = %command_id, client = %req.client, "command started");
        match run_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                return Err(ErrorBody::new(
                    ErrorKind::Busy,
                    format!("session {} refused the command: {reason}", self.meta.name),
                ))
            }
            Err(_) => return Err(self.closed_error()),
        }

        // Hold the slot until the command ended and its requester has it all (or is gone),
        // so the next command's requester never takes over this one's output.
        let mut changed = self.changed.subscribe();
        loop {
            {
                let g = self.lock();
                let running = g
                    .status
                    .running
                    .as_ref()
                    .is_some_and(|(id, _)| *id == command_id);
                let subscribed = g
                    .subscriber
                    .as_ref()
                    .is_some_and(|s| s.rid == req.rid && s.conn == req.conn);
                let delivered = g
                    .finished
                    .get(&command_id)
                    .is_some_and(|&seq| g.acked >= seq);
                if let Some(why) = &g.closed {
                    if !delivered {
                        return Err(ErrorBody::new(
                            ErrorKind::Closed,
                            format!(
                                "session {} ended while the command ran: {why}",
                                self.meta.name
                            ),
                        ));
                    }
                    break;
                }
                if !running && (delivered || !subscribed) {
                    break;
                }
            }
            if changed.changed().await.is_err() {
                break;
            }
        }
        let mut g = self.lock();
        // Only one command runs at a time, so no other requester needs these.
        g.finished.clear();
        let shell_gone = g.closed.is_some() && !g.host_gone;
        if g.subscriber
            .as_ref()
            .is_some_and(|s| s.rid == req.rid && s.conn == req.conn)
        {
            g.subscriber = None;
        }
        drop(g);
        if shell_gone {
            // The shell exited during this command and its requester has the end: let
            // the host go.
            self.terminate("its shell exited");
        }
        drop(permit);
        Ok(())
    }

    fn check_usable(&self, client: Uuid) -> Result<(), ErrorBody> {
        let g = self.lock();
        if g.closed.is_some() {
            drop(g);
            return Err(self.closed_error());
        }
        match g.attached_to {
            Some(other) if other != client => Err(ErrorBody::new(
                ErrorKind::Busy,
                format!("session {} is attached to another client", self.meta.name),
            )
            .with_hint("disconnect it there first")),
            _ => Ok(()),
        }
    }

    fn closed_error(&self) -> ErrorBody {
        let why = self.closed_reason().unwrap_or_else(|| "it ended".into());
        ErrorBody::new(
            ErrorKind::Closed,
            format!("session {} is closed: {why}", self.meta.name),
        )
        .with_hint("create a new one with `linger new`")
    }

    pub fn info(&self, asking: Uuid) -> SessionInfo {
        let g = self.lock();
        SessionInfo {
            instance_id: self.meta.instance_id,
            name: self.meta.name.clone(),
            configuration_name: self.meta.configuration_name.clone(),
            owner: self.meta.owner.clone(),
            created_at_ms: self.meta.created_at_ms,
            attachment: match g.attached_to {
                Some(c) if c == asking => Attachment::You,
                Some(_) => Attachment::Other,
                None => Attachment::None,
            },
            closed_reason: g.closed.clone(),
            running_command: g.status.running.as_ref().map(|(_, s)| s.clone()),
            idle_timeout_ms: self.meta.idle_timeout_ms,
            output_buffering_mode: self.meta.buffering,
            disconnected_at_ms: None,
            expires_at_ms: None,
            pending_output_bytes: g.status.pending_output_bytes,
            dropped_output_bytes: g.status.dropped_output_bytes,
            jobs: 0,
        }
    }
}

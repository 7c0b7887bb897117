//! Copies (`linger copy`) through this session's host: the daemon only routes. Each copy's
//! messages to its client go through a queue of their own and a task that drains it, so a
//! slow client never holds up the host's other traffic; the copy's window bounds what
//! the queue can hold. The daemon holds its clients to the window of an upload itself (the
//! host does too): what it passes to the host waits in memory here if the host is slow.

use linger_proto::copy::{COPY_ITEM_COST, COPY_SEND_LIMIT};

use super::*;

pub(super) struct CopyRoute {
    rid: u64,
    queue: mpsc::UnboundedSender<ServerMsg>,
    /// An upload's stream bytes passed to the host, and the progress the host reported.
    sent: u64,
    written: u64,
}

impl Session {
    /// Begins copy `copy_id` for request `rid`, whose answers go to `tx`: the host hears
    /// `begin`. The receiver fires once the copy's last message (its `Copied` reply or its
    /// error) is on its way to the client.
    pub fn copy_begin(
        &self,
        copy_id: Uuid,
        rid: u64,
        tx: mpsc::Sender<ServerMsg>,
        begin: DaemonToHost,
    ) -> Result<oneshot::Receiver<()>, ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        let (queue, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
        let (ended, ended_rx) = oneshot::channel();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let last = matches!(msg, ServerMsg::Reply { .. } | ServerMsg::Error { .. });
                if tx.send(msg).await.is_err() || last {
                    break;
                }
            }
            let _ = ended.send(());
        });
        g.copies.insert(
            copy_id,
            CopyRoute {
                rid,
                queue,
                sent: 0,
                written: 0,
            },
        );
        drop(g);
        self.send(begin);
        Ok(ended_rx)
    }

    /// Passes a client's copy message on to the host, unless the client has gone beyond
    /// the copy's window: then the copy fails.
    pub fn copy_part(&self, copy_id: Uuid, msg: DaemonToHost) {
        let cost = match &msg {
            DaemonToHost::CopyItem { .. } => COPY_ITEM_COST,
            DaemonToHost::CopyData { data, .. } => data.len() as u64,
            _ => 0,
        };
        let over = {
            let mut g = self.lock();
            let Some(route) = g.copies.get_mut(&copy_id) else {
                // Ended or given up: what was in flight for it has nowhere to go.
                return;
            };
            route.sent += cost;
            route.sent > route.written + COPY_SEND_LIMIT
        };
        if over {
            self.copy_abort(copy_id, "the client went beyond the copy's window");
            return;
        }
        self.send(msg);
    }

    /// The client gave the copy up (a cancel, a closed connection): the host removes what
    /// it had begun.
    pub fn copy_abort(&self, copy_id: Uuid, why: &str) {
        let route = self.lock().copies.remove(&copy_id);
        if let Some(route) = route {
            let error = ErrorBody::new(ErrorKind::File, why);
            let _ = route.queue.send(ServerMsg::Error {
                rid: route.rid,
                error,
            });
            self.send(DaemonToHost::CopyAbort { copy_id });
        }
    }

    /// A host message about a copy, for its client.
    pub(super) fn relay_copy(&self, msg: HostToDaemon) {
        let mut g = self.lock();
        let (copy_id, ends) = match &msg {
            HostToDaemon::CopyTotal { copy_id, .. }
            | HostToDaemon::CopyItem { copy_id, .. }
            | HostToDaemon::CopyData { copy_id, .. }
            | HostToDaemon::CopyProgress { copy_id, .. } => (*copy_id, false),
            HostToDaemon::CopyDone { copy_id, .. } | HostToDaemon::CopyFailed { copy_id, .. } => {
                (*copy_id, true)
            }
            _ => return,
        };
        if let (HostToDaemon::CopyProgress { done, .. }, Some(route)) =
            (&msg, g.copies.get_mut(&copy_id))
        {
            route.written = route.written.max(*done);
        }
        let route = if ends {
            g.copies.remove(&copy_id).map(|r| (r.rid, r.queue))
        } else {
            g.copies.get(&copy_id).map(|r| (r.rid, r.queue.clone()))
        };
        drop(g);
        // A copy the client gave up: what was in flight for it has nowhere to go.
        let Some((rid, queue)) = route else {
            return;
        };
        let out = match msg {
            HostToDaemon::CopyTotal { bytes, files, .. } => {
                ServerMsg::CopyTotal { rid, bytes, files }
            }
            HostToDaemon::CopyItem { item, .. } => ServerMsg::CopyItem { rid, item },
            HostToDaemon::CopyData { offset, data, .. } => {
                ServerMsg::CopyData { rid, offset, data }
            }
            HostToDaemon::CopyProgress { done, .. } => ServerMsg::CopyProgress { rid, done },
            HostToDaemon::CopyDone { summary, .. } => ServerMsg::Reply {
                rid,
                reply: Reply::Copied(summary),
            },
            HostToDaemon::CopyFailed { error, .. } => ServerMsg::Error {
                rid,
                error: ErrorBody::new(ErrorKind::File, crate::untrusted::shown(&error)),
            },
            _ => return,
        };
        let _ = queue.send(out);
    }

    /// The session ended: its copies fail.
    pub(super) fn end_copies(&self, g: &mut Inner, why: &str) {
        for (_, route) in g.copies.drain() {
            let error = ErrorBody::new(
                ErrorKind::Closed,
                format!("session {} ended during the copy: {why}", self.meta.name),
            )
            .with_closed_reason(why);
            let _ = route.queue.send(ServerMsg::Error {
                rid: route.rid,
                error,
            });
        }
    }
}

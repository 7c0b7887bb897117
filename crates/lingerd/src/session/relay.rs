//! The relay: host entries to the subscribing request, per channel; acknowledgements back.

use super::*;

/// An entry from the host, to relay.
pub(super) enum Relayed {
    Output(ServerMsgMaker),
    Finished(Uuid, ServerMsgMaker),
    Dropped { from_total: u64, to_total: u64 },
}

type ServerMsgMaker = Box<dyn FnOnce(u64) -> ServerMsg + Send>;

impl Session {
    /// Reads the host until it goes away; returns why the session ended.
    pub(super) async fn relay(
        &self,
        reader: &mut FrameReader<tokio::net::unix::OwnedReadHalf>,
    ) -> String {
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
                HostToDaemon::StdinAck {
                    command_id,
                    written,
                    closed,
                } => self.input_acked(command_id, written, closed).await,
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

    pub(super) async fn forward(&self, channel: Channel, seq: u64, entry: Relayed) {
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
    /// would make the host forget output nobody has seen. A `--keep` receive's
    /// acknowledgement becomes a `Credit`: the host sends more, and forgets nothing.
    pub fn ack(&self, conn: u64, rid: u64, seq: u64) {
        let message = {
            let mut g = self.lock();
            let g = &mut *g;
            let chans = std::iter::once((None, &mut g.fg))
                .chain(g.jobs.iter_mut().map(|(id, c)| (Some(*id), c)));
            let mut found = None;
            for (channel, c) in chans {
                let (relayed, keep) = match (&c.subscriber, c.evicted) {
                    (Some(s), _) if s.is(conn, rid) => (s.relayed, s.keep),
                    (None, Some((cn, r, relayed))) if cn == conn && r == rid => (relayed, false),
                    _ => continue,
                };
                let seq = seq.min(relayed);
                if keep {
                    found = Some(DaemonToHost::Credit { channel, seq });
                } else if seq > c.acked {
                    c.acked = seq;
                    found = Some(DaemonToHost::Ack { channel, seq });
                }
                break;
            }
            found
        };
        match message {
            Some(m @ DaemonToHost::Ack { .. }) => {
                self.send(m);
                self.bump();
            }
            Some(m) => self.send(m),
            None => {}
        }
    }

    /// Makes `req` the subscriber and asks the host to replay what is kept.
    pub(super) fn subscribe(
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
            keep: false,
            evicted: evicted.clone(),
        });
        c.replays_pending += 1;
        self.send(DaemonToHost::Replay { channel });
        evicted
    }

    pub(super) fn unsubscribe(&self, conn: u64, rid: u64) {
        let mut g = self.lock();
        if g.fg.subscriber.as_ref().is_some_and(|s| s.is(conn, rid)) {
            g.fg.subscriber = None;
        }
        drop(g);
        self.bump();
    }
}

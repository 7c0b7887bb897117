//! The relay: host entries to the subscribing request, per channel; acknowledgements back.

use super::*;

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
                    let entry = HostEntry::Output {
                        command_id,
                        stream,
                        data,
                    };
                    self.forward(channel, seq, entry).await
                }
                HostToDaemon::Finished {
                    channel,
                    seq,
                    command_id,
                    status,
                    unread_input,
                    input_offset,
                } => {
                    let entry = HostEntry::Finished {
                        command_id,
                        status,
                        unread_input,
                        input_offset,
                    };
                    self.forward(channel, seq, entry).await
                }
                HostToDaemon::Dropped {
                    channel,
                    seq,
                    from_total,
                    to_total,
                } => {
                    let entry = HostEntry::Dropped {
                        from_total,
                        to_total,
                    };
                    self.forward(channel, seq, entry).await
                }
                HostToDaemon::Replaying {
                    channel,
                    from,
                    last,
                } => {
                    self.lock().chan(channel).on_replaying(from, last);
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
                HostToDaemon::Tap {
                    command_id,
                    stream,
                    data,
                    missed,
                } => self.tapped(command_id, stream, data, missed),
                HostToDaemon::Screen {
                    command_id,
                    seq,
                    data,
                    watcher: Some(id),
                } => self.screen_for_watcher(id, command_id, seq, data),
                HostToDaemon::Screen {
                    command_id,
                    seq,
                    data,
                    watcher: None,
                } => {
                    let to = self
                        .lock()
                        .fg
                        .subscriber
                        .as_ref()
                        .map(|s| (s.tx.clone(), s.rid));
                    if let Some((tx, rid)) = to {
                        let _ = tx
                            .send(ServerMsg::Screen {
                                rid,
                                command_id,
                                seq,
                                data,
                            })
                            .await;
                    }
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
                copy @ (HostToDaemon::CopyTotal { .. }
                | HostToDaemon::CopyItem { .. }
                | HostToDaemon::CopyData { .. }
                | HostToDaemon::CopyProgress { .. }
                | HostToDaemon::CopyDone { .. }
                | HostToDaemon::CopyFailed { .. }) => self.relay_copy(copy),
            }
        }
        "its session host exited unexpectedly".to_string()
    }

    /// Relays entry `seq` of `channel` to its subscriber, if the rules say so.
    pub(super) async fn forward(&self, channel: Channel, seq: u64, entry: HostEntry) {
        let Some((tx, msg)) = self.lock().chan(channel).on_entry(seq, entry) else {
            return;
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
            std::iter::once((None, &mut g.fg))
                .chain(g.jobs.iter_mut().map(|(id, c)| (Some(*id), c)))
                .find(|(_, c)| c.acknowledges(conn, rid))
                .and_then(|(channel, c)| c.on_ack(channel, conn, rid, seq))
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

    /// Makes `sub` the channel's subscriber and asks the host to replay what is kept.
    pub(super) fn subscribe(&self, g: &mut Inner, channel: Channel, sub: Subscriber) -> Eviction {
        let evicted = g.chan(channel).subscribe(sub);
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

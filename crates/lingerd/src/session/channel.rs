//! One output channel's relay rules, without I/O: who subscribes, which host entries reach
//! whom, which acknowledgements count and what the host is told of them. The session's tasks
//! feed it what happened (an entry from the host, a replay answered, a client's ack, a
//! subscription, an eviction) and carry out what it answers; the rules are unit-tested here.
//!
//! Architecture invariants kept here: nothing is acknowledged to the host beyond what was
//! relayed to the acknowledging request (so nothing leaves the host's log unseen); entries
//! between a `Replay` and its `Replaying` are never relayed (they are stale copies); a
//! `--keep` receive never makes the host forget anything; dropped bytes are reported to a
//! subscriber once each.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use linger_proto::host::{Channel, DaemonToHost};
use linger_proto::server::ServerMsg;
use linger_proto::types::{ErrorBody, StreamKind};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Why a subscriber was taken away, for the request it served.
pub(super) type Eviction = Arc<OnceLock<ErrorBody>>;

/// Where one request wants a channel's output to go.
pub(super) struct Subscriber {
    pub conn: u64,
    pub rid: u64,
    pub tx: mpsc::Sender<ServerMsg>,
    /// Highest entry relayed to it: it cannot acknowledge more.
    pub relayed: u64,
    /// The host's dropped-bytes counter as far as this subscriber has been told.
    dropped_seen_to: u64,
    pub dropped_reported: u64,
    /// Seq of each command end relayed to it.
    pub finished: HashMap<Uuid, u64>,
    /// The command an invoke subscribes for.
    pub command: Option<Uuid>,
    /// A `--keep` receive: its acknowledgements only move the host's window (`Credit`),
    /// they forget nothing.
    pub keep: bool,
    pub evicted: Eviction,
}

impl Subscriber {
    pub fn new(
        conn: u64,
        rid: u64,
        tx: mpsc::Sender<ServerMsg>,
        command: Option<Uuid>,
        keep: bool,
    ) -> Subscriber {
        Subscriber {
            conn,
            rid,
            tx,
            relayed: 0,
            dropped_seen_to: 0,
            dropped_reported: 0,
            finished: HashMap::new(),
            command,
            keep,
            evicted: Arc::new(OnceLock::new()),
        }
    }

    pub fn is(&self, conn: u64, rid: u64) -> bool {
        self.conn == conn && self.rid == rid
    }
}

/// An entry of the host's log, as it arrived.
pub(super) enum HostEntry {
    Output {
        command_id: Uuid,
        stream: StreamKind,
        data: Bytes,
    },
    Finished {
        command_id: Uuid,
        status: i32,
        unread_input: Bytes,
        input_offset: Option<u64>,
    },
    Dropped {
        from_total: u64,
        to_total: u64,
    },
}

/// The relay's state for one output log of the host (see [`Channel`]).
#[derive(Default)]
pub(super) struct ChannelState {
    pub subscriber: Option<Subscriber>,
    /// The last subscriber taken away by a detach: (conn, rid, relayed). It still receives
    /// what was relayed before its error, and may acknowledge that much until someone else
    /// subscribes, so the next receiver does not get it twice.
    evicted: Option<(u64, u64, u64)>,
    /// `Replay`s sent whose `Replaying` has not come back: entries until then are stale.
    pub replays_pending: u32,
    /// Where the last replay started.
    pub replay_from: u64,
    /// Highest entry acknowledged by a client (or known to be gone from the host).
    pub acked: u64,
    /// Highest entry known to exist in the host's log.
    pub known_last: u64,
}

impl ChannelState {
    /// A channel whose host holds entries up to `last` (a host being adopted).
    pub fn holding(last: u64) -> ChannelState {
        ChannelState {
            known_last: last,
            ..ChannelState::default()
        }
    }

    /// `sub` becomes the only subscriber; the caller sends the `Replay` this asks for.
    pub fn subscribe(&mut self, sub: Subscriber) -> Eviction {
        let evicted = sub.evicted.clone();
        self.evicted = None;
        self.subscriber = Some(sub);
        self.replays_pending += 1;
        evicted
    }

    /// Takes the subscriber away, telling it `why`. It may still acknowledge what reached it,
    /// unless it was a `--keep` receive (which only ever credited).
    pub fn evict(&mut self, why: ErrorBody) -> bool {
        let Some(s) = self.subscriber.take() else {
            return false;
        };
        self.evicted = (!s.keep).then_some((s.conn, s.rid, s.relayed));
        let _ = s.evicted.set(why);
        true
    }

    /// The host answered a `Replay`: entries from `from` on are current again, and whatever
    /// precedes `from` is gone from it (acknowledged by a client this daemon never saw, before
    /// a restart, or never written).
    pub fn on_replaying(&mut self, from: u64, last: u64) {
        self.replays_pending = self.replays_pending.saturating_sub(1);
        self.replay_from = from;
        self.acked = self.acked.max(from.saturating_sub(1));
        self.known_last = self.known_last.max(last);
    }

    /// An entry `seq` from the host: the message for the subscriber and where it goes, or
    /// None (stale, or nobody subscribes; the host keeps it for the next one).
    pub fn on_entry(
        &mut self,
        seq: u64,
        entry: HostEntry,
    ) -> Option<(mpsc::Sender<ServerMsg>, ServerMsg)> {
        self.known_last = self.known_last.max(seq);
        if self.replays_pending > 0 {
            return None;
        }
        let s = self.subscriber.as_mut()?;
        // Recorded before sending: the requester's acknowledgement may come back before the
        // relay runs again.
        s.relayed = seq;
        let rid = s.rid;
        let msg = match entry {
            HostEntry::Output {
                command_id,
                stream,
                data,
            } => ServerMsg::Output {
                rid,
                seq,
                command_id,
                stream,
                data,
            },
            HostEntry::Finished {
                command_id,
                status,
                unread_input,
                input_offset,
            } => {
                s.finished.insert(command_id, seq);
                ServerMsg::Finished {
                    rid,
                    seq,
                    command_id,
                    status,
                    unread_input,
                    input_offset,
                }
            }
            HostEntry::Dropped {
                from_total,
                to_total,
            } => {
                // A range may widen an earlier one (merged in the host): only new bytes count.
                let bytes = to_total.saturating_sub(from_total.max(s.dropped_seen_to));
                s.dropped_seen_to = s.dropped_seen_to.max(to_total);
                s.dropped_reported += bytes;
                ServerMsg::Dropped { rid, seq, bytes }
            }
        };
        Some((s.tx.clone(), msg))
    }

    /// Whether request `rid` of `conn` may acknowledge this channel: as its subscriber, or as
    /// the one just evicted.
    pub fn acknowledges(&self, conn: u64, rid: u64) -> bool {
        self.acker(conn, rid).is_some()
    }

    /// For the request that may acknowledge this channel: what was relayed to it, and
    /// whether it is a `--keep` receive.
    fn acker(&self, conn: u64, rid: u64) -> Option<(u64, bool)> {
        match (&self.subscriber, self.evicted) {
            (Some(s), _) if s.is(conn, rid) => Some((s.relayed, s.keep)),
            (None, Some((c, r, relayed))) if c == conn && r == rid => Some((relayed, false)),
            _ => None,
        }
    }

    /// Request `rid` of `conn` acknowledged everything up to `seq`: what the host is to be
    /// told, if anything. Lowered to what was relayed to that request; an `Ack` only when it
    /// moves past every earlier one; a `Credit` for a `--keep` receive.
    pub fn on_ack(
        &mut self,
        channel: Channel,
        conn: u64,
        rid: u64,
        seq: u64,
    ) -> Option<DaemonToHost> {
        let (relayed, keep) = self.acker(conn, rid)?;
        let seq = seq.min(relayed);
        if keep {
            return Some(DaemonToHost::Credit { channel, seq });
        }
        if seq <= self.acked {
            return None;
        }
        self.acked = seq;
        Some(DaemonToHost::Ack { channel, seq })
    }

    /// Whether the subscriber has acknowledged the end of `command` (an invoke's is then
    /// complete).
    pub fn delivered(&self, command: Uuid) -> bool {
        self.subscriber
            .as_ref()
            .and_then(|s| s.finished.get(&command))
            .is_some_and(|&seq| self.acked >= seq)
    }

    /// Whether a receive by the current subscriber is complete. `until`: the newest entry
    /// the host held at its replay (the snapshot of a receive that does not follow);
    /// `running`: output may still come; `pending`: bytes the host reports it keeps.
    pub fn receive_complete(
        &self,
        end: ReceiveEnd,
        until: u64,
        running: bool,
        pending: u64,
        host_gone: bool,
    ) -> bool {
        let Some(s) = &self.subscriber else {
            return false;
        };
        if host_gone {
            return true;
        }
        match end {
            ReceiveEnd::Kept => until < self.replay_from || s.relayed >= until,
            ReceiveEnd::Taken => until < self.replay_from || self.acked >= until,
            // The host reports an empty log right after the last ack, so the counts are
            // current when the receive ends.
            ReceiveEnd::Followed => !running && self.acked >= self.known_last && pending == 0,
        }
    }
}

/// Where a receive ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveEnd {
    /// What was kept at its start has been relayed; nothing is acknowledged (`keep`).
    Kept,
    /// What was kept at its start has been acknowledged (a job receive without `--wait`:
    /// PowerShell's Receive-Job, partial output of a running job included).
    Taken,
    /// Nothing runs and everything is acknowledged (a receive that follows to the end).
    Followed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use linger_proto::types::ErrorKind;

    fn sub(conn: u64, rid: u64, keep: bool) -> (Subscriber, mpsc::Receiver<ServerMsg>) {
        let (tx, rx) = mpsc::channel(8);
        (Subscriber::new(conn, rid, tx, None, keep), rx)
    }

    fn output() -> HostEntry {
        HostEntry::Output {
            command_id: Uuid::nil(),
            stream: StreamKind::Stdout,
            data: Bytes::from_static(b"x"),
        }
    }

    fn why() -> ErrorBody {
        ErrorBody::new(ErrorKind::Detached, "detached")
    }

    fn subscribed(keep: bool) -> ChannelState {
        let mut c = ChannelState::default();
        c.subscribe(sub(1, 7, keep).0);
        c.on_replaying(1, 0);
        c
    }

    #[test]
    fn entries_before_the_replay_is_answered_are_stale() {
        let mut c = ChannelState::default();
        assert!(c.on_entry(1, output()).is_none(), "nobody subscribes");
        c.subscribe(sub(1, 7, false).0);
        assert!(c.on_entry(2, output()).is_none(), "a stale copy");
        assert_eq!(c.known_last, 2);
        c.on_replaying(1, 2);
        let (_, msg) = c.on_entry(1, output()).expect("relayed");
        assert!(matches!(msg, ServerMsg::Output { rid: 7, seq: 1, .. }));
    }

    #[test]
    fn acknowledgements_never_pass_what_was_relayed_and_only_move_forward() {
        let mut c = subscribed(false);
        for seq in 1..=3 {
            c.on_entry(seq, output());
        }
        assert!(matches!(
            c.on_ack(None, 1, 7, 99),
            Some(DaemonToHost::Ack { seq: 3, .. })
        ));
        assert!(
            c.on_ack(None, 1, 7, 2).is_none(),
            "an older ack says nothing new"
        );
        assert!(
            c.on_ack(None, 1, 8, 3).is_none(),
            "another request of the connection"
        );
        assert!(c.on_ack(None, 2, 7, 3).is_none(), "another connection");
        assert_eq!(c.acked, 3);
    }

    #[test]
    fn an_evicted_request_may_acknowledge_what_reached_it_until_another_subscribes() {
        let mut c = subscribed(false);
        c.on_entry(1, output());
        c.on_entry(2, output());
        let told = c
            .subscriber
            .as_ref()
            .map(|s| s.evicted.clone())
            .expect("a subscriber");
        assert!(c.evict(why()));
        assert!(told.get().is_some(), "the request is told why");
        assert!(c.on_entry(3, output()).is_none(), "nothing more reaches it");
        assert!(c.acknowledges(1, 7));
        assert!(matches!(
            c.on_ack(None, 1, 7, 5),
            Some(DaemonToHost::Ack { seq: 2, .. })
        ));
        c.subscribe(sub(2, 9, false).0);
        assert!(!c.acknowledges(1, 7));
        assert!(c.on_ack(None, 1, 7, 5).is_none(), "someone else reads now");
    }

    #[test]
    fn a_keep_receive_credits_and_forgets_nothing_even_once_evicted() {
        let mut c = subscribed(true);
        c.on_entry(1, output());
        c.on_entry(2, output());
        assert!(matches!(
            c.on_ack(Some(Uuid::nil()), 1, 7, 9),
            Some(DaemonToHost::Credit { seq: 2, .. })
        ));
        assert_eq!(c.acked, 0, "nothing acknowledged");
        c.evict(why());
        assert!(!c.acknowledges(1, 7));
        assert!(c.on_ack(None, 1, 7, 2).is_none());
    }

    #[test]
    fn dropped_bytes_are_reported_once_each() {
        let mut c = subscribed(false);
        let dropped = |c: &mut ChannelState, seq, from_total, to_total| match c.on_entry(
            seq,
            HostEntry::Dropped {
                from_total,
                to_total,
            },
        ) {
            Some((_, ServerMsg::Dropped { bytes, .. })) => bytes,
            _ => panic!("not relayed"),
        };
        assert_eq!(dropped(&mut c, 1, 0, 10), 10);
        // The host widened that range (merged): only the new part is news.
        assert_eq!(dropped(&mut c, 2, 0, 25), 15);
        assert_eq!(dropped(&mut c, 3, 25, 30), 5);
        assert_eq!(c.subscriber.as_ref().map(|s| s.dropped_reported), Some(30));
    }

    #[test]
    fn a_command_is_delivered_once_its_end_is_acknowledged() {
        let mut c = subscribed(false);
        let cmd = Uuid::from_u128(5);
        c.on_entry(1, output());
        c.on_entry(
            2,
            HostEntry::Finished {
                command_id: cmd,
                status: 0,
                unread_input: Bytes::new(),
                input_offset: None,
            },
        );
        assert!(!c.delivered(cmd));
        c.on_ack(None, 1, 7, 1);
        assert!(!c.delivered(cmd));
        c.on_ack(None, 1, 7, 2);
        assert!(c.delivered(cmd));
    }

    #[test]
    fn a_replay_counts_what_the_host_no_longer_holds_as_acknowledged() {
        let mut c = ChannelState::default();
        c.subscribe(sub(1, 7, false).0);
        c.on_replaying(40, 45);
        assert_eq!((c.acked, c.known_last, c.replay_from), (39, 45, 40));
    }

    #[test]
    fn a_receive_ends_when_drained_or_for_keep_at_its_snapshot() {
        let mut c = subscribed(false);
        c.on_replaying(1, 2);
        c.on_entry(1, output());
        c.on_entry(2, output());
        assert!(
            !c.receive_complete(ReceiveEnd::Followed, 2, false, 2, false),
            "not acknowledged"
        );
        c.on_ack(None, 1, 7, 2);
        assert!(
            !c.receive_complete(ReceiveEnd::Followed, 2, true, 0, false),
            "a command runs"
        );
        assert!(
            !c.receive_complete(ReceiveEnd::Followed, 2, false, 10, false),
            "the host still holds some"
        );
        assert!(c.receive_complete(ReceiveEnd::Followed, 2, false, 0, false));
        assert!(
            c.receive_complete(ReceiveEnd::Followed, 2, true, 5, true),
            "the host is gone"
        );

        let mut k = subscribed(true);
        k.on_replaying(1, 2);
        assert!(!k.receive_complete(ReceiveEnd::Kept, 2, true, 0, false));
        k.on_entry(1, output());
        k.on_entry(2, output());
        assert!(
            k.receive_complete(ReceiveEnd::Kept, 2, true, 0, false),
            "the snapshot is relayed"
        );
        let empty = subscribed(true);
        assert!(
            empty.receive_complete(ReceiveEnd::Kept, 0, true, 0, false),
            "nothing was kept"
        );

        // Taking what is there: done once the snapshot is acknowledged, while it runs on.
        let mut t = subscribed(false);
        t.on_replaying(1, 2);
        t.on_entry(1, output());
        t.on_entry(2, output());
        assert!(
            !t.receive_complete(ReceiveEnd::Taken, 2, true, 0, false),
            "not acknowledged"
        );
        t.on_ack(None, 1, 7, 2);
        assert!(t.receive_complete(ReceiveEnd::Taken, 2, true, 0, false));
    }
}

//! Standard input forwarded to one running command (docs/PROTOCOL.md §12.1). The bytes
//! the host has not yet acknowledged stay here, at most `STDIN_WINDOW` of them, so that a
//! stream resumed on a new connection can send them again: the host keeps each byte
//! once, whatever is repeated. A writer waits while the window is full, which carries a
//! slow command's backpressure back to whoever feeds the input.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use linger_proto::client::ClientMsg;
use linger_proto::input::{STDIN_CHUNK, STDIN_WINDOW};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::connection::Outgoing;

/// A handle on one command's forwarded input. Cheap to clone; all clones feed the same
/// stream.
#[derive(Clone)]
pub struct Input {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken when the window opens or the input closes.
    room: Notify,
}

/// Where input goes: a connection's writer and the request that follows the command.
struct Route {
    out: mpsc::UnboundedSender<Outgoing>,
    rid: u64,
}

#[derive(Default)]
struct State {
    route: Option<Route>,
    /// The command fed, from its request's `Started`: acknowledgements of any other (the
    /// session's previous command) are not for us.
    command_id: Option<Uuid>,
    /// Offset of the first byte not acknowledged.
    acked: u64,
    /// Sent on the current route, not yet acknowledged (from `acked` on).
    unacked: VecDeque<Bytes>,
    /// Bytes in `unacked`.
    unacked_len: u64,
    /// Not sent yet on the current route (after `unacked`).
    unsent: VecDeque<Bytes>,
    /// Bytes in both queues: what the window counts.
    held: u64,
    /// The writer said the input ends.
    eof: bool,
    eof_sent: bool,
    /// The current route has heard the host's position: sending may start there.
    synced: bool,
    /// The host closed the input, or the command ended: nothing more is wanted.
    closed: bool,
    /// What was held when the input closed, from offset `acked`: a terminal command's end
    /// may say some of it never reached the command (see [`Input::sent_from`]).
    left: Vec<Bytes>,
    /// Input for a command that someone else fed before (a terminal command entered
    /// again): it starts where the host's first acknowledgement says the input stands.
    joining: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Input {
    pub(crate) fn new() -> Input {
        Input {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                room: Notify::new(),
            }),
        }
    }

    /// Input that joins a running command's at the host's position (entering a terminal
    /// command that another client typed into before).
    pub(crate) fn joining() -> Input {
        let input = Input::new();
        lock(&input.shared.state).joining = true;
        input
    }

    /// Sends the input on request `rid` from now on. Nothing goes out until the host says
    /// where it stands (the first `StdinAck` on this route); then everything not yet
    /// acknowledged goes again.
    pub(crate) fn route(&self, out: mpsc::UnboundedSender<Outgoing>, rid: u64) {
        let mut s = lock(&self.shared.state);
        s.route = Some(Route { out, rid });
        s.synced = false;
    }

    /// Adds `data` to the input, waiting while the window is full. Input written after the
    /// command stopped reading (or ended) is discarded, as ssh does.
    pub async fn write(&self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut s = lock(&self.shared.state);
                if s.closed {
                    // Nobody wants it; a terminal command's end may still hand it back as
                    // type-ahead, so the window's worth is kept.
                    let kept: u64 = s.left.iter().map(|b| b.len() as u64).sum();
                    if kept < STDIN_WINDOW {
                        s.left.push(data);
                    }
                    return;
                }
                if s.eof {
                    return;
                }
                if s.held < STDIN_WINDOW {
                    s.held += data.len() as u64;
                    s.unsent.push_back(data);
                    s.pump();
                    return;
                }
            }
            room.await;
        }
    }

    /// The input ends here (EOF reaches the command once everything before is written).
    pub fn finish(&self) {
        let mut s = lock(&self.shared.state);
        s.eof = true;
        s.pump();
    }

    /// Whether the command wants no more input (it closed it, or ended).
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }

    /// Bytes held for the command and not yet acknowledged (at most `STDIN_WINDOW` plus
    /// one write).
    pub fn held(&self) -> u64 {
        lock(&self.shared.state).held
    }

    /// The command this input feeds, once its request has started it.
    pub(crate) fn feeds(&self, command_id: Uuid) {
        lock(&self.shared.state).command_id = Some(command_id);
    }

    /// The host's acknowledgement, as relayed on this input's route.
    pub(crate) fn acked(&self, command_id: Uuid, written: u64, closed: bool) {
        let mut s = lock(&self.shared.state);
        if s.joining && s.command_id.is_none() {
            // The relay may bring the host's position before the stream has read which
            // command it entered: only the running command's input is acknowledged here.
            s.command_id = Some(command_id);
        }
        if s.command_id != Some(command_id) {
            return;
        }
        if std::mem::take(&mut s.joining) {
            // Nothing of ours was sent yet: what the host has is someone else's.
            s.acked = s.acked.max(written);
        }
        s.forget_through(written);
        if !s.synced {
            // A new route: resend from what the host has.
            s.synced = true;
            let again: Vec<Bytes> = s.unacked.drain(..).collect();
            for b in again.into_iter().rev() {
                s.unsent.push_front(b);
            }
            s.unacked_len = 0;
            s.eof_sent = false;
        }
        if closed {
            s.close();
        }
        s.pump();
        drop(s);
        self.shared.room.notify_waiters();
    }

    /// What this side gave the input from stream offset `offset` on, as far as it still
    /// holds it (everything the host has not acknowledged): a terminal command's end says
    /// from where its input never reached the command.
    pub(crate) fn sent_from(&self, offset: u64) -> Vec<u8> {
        let s = lock(&self.shared.state);
        let held: Vec<&Bytes> = if s.closed {
            s.left.iter().collect()
        } else {
            s.unacked.iter().chain(s.unsent.iter()).collect()
        };
        let mut skip = offset.saturating_sub(s.acked);
        let mut out = Vec::new();
        for b in held {
            let n = skip.min(b.len() as u64) as usize;
            skip -= n as u64;
            out.extend_from_slice(&b[n..]);
        }
        out
    }

    /// The command ended, or its stream was dropped: writers stop waiting.
    pub(crate) fn close(&self) {
        lock(&self.shared.state).close();
        self.shared.room.notify_waiters();
    }
}

impl State {
    fn close(&mut self) {
        if !self.closed {
            self.left = self
                .unacked
                .drain(..)
                .chain(self.unsent.drain(..))
                .collect();
        }
        self.closed = true;
        self.unacked.clear();
        self.unsent.clear();
        self.unacked_len = 0;
        self.held = 0;
    }

    /// Drops what the host has written, up to offset `written`.
    fn forget_through(&mut self, written: u64) {
        while self.acked < written {
            let from_unacked = !self.unacked.is_empty();
            let queue = if from_unacked {
                &mut self.unacked
            } else {
                &mut self.unsent
            };
            let Some(front) = queue.front_mut() else {
                break;
            };
            let n = (written - self.acked).min(front.len() as u64) as usize;
            if n == front.len() {
                queue.pop_front();
            } else {
                *front = front.slice(n..);
            }
            if from_unacked {
                self.unacked_len -= n as u64;
            }
            self.acked += n as u64;
            self.held -= n as u64;
        }
    }

    /// Sends what is waiting, if the route is ready.
    fn pump(&mut self) {
        if !self.synced || self.closed {
            return;
        }
        let (Some(route), Some(command_id)) = (&self.route, self.command_id) else {
            return;
        };
        let mut offset = self.acked + self.unacked_len;
        // Never past the window: receivers would cut what lies beyond it, and this side
        // would not know to send it again. The rest waits for acknowledgements.
        let limit = self.acked + STDIN_WINDOW;
        while offset < limit {
            let Some(mut chunk) = self.unsent.pop_front() else {
                break;
            };
            let room = ((limit - offset) as usize).min(STDIN_CHUNK);
            if chunk.len() > room {
                self.unsent.push_front(chunk.split_off(room));
            }
            let len = chunk.len() as u64;
            let _ = route.out.send(
                ClientMsg::Stdin {
                    rid: route.rid,
                    command_id,
                    offset,
                    data: chunk.clone(),
                    eof: false,
                }
                .into(),
            );
            offset += len;
            self.unacked_len += len;
            self.unacked.push_back(chunk);
        }
        if self.eof && !self.eof_sent && self.unsent.is_empty() {
            self.eof_sent = true;
            let _ = route.out.send(
                ClientMsg::Stdin {
                    rid: route.rid,
                    command_id,
                    offset,
                    data: Bytes::new(),
                    eof: true,
                }
                .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Stdin` messages sent so far on a route: (rid, offset, data, eof).
    fn sent(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<(u64, u64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        while let Ok(o) = rx.try_recv() {
            if let ClientMsg::Stdin {
                rid,
                offset,
                data,
                eof,
                ..
            } = o.msg
            {
                out.push((rid, offset, data.to_vec(), eof));
            }
        }
        out
    }

    fn routed(rid: u64) -> (Input, mpsc::UnboundedReceiver<Outgoing>, Uuid) {
        let input = Input::new();
        let (tx, rx) = mpsc::unbounded_channel();
        input.route(tx, rid);
        let id = Uuid::new_v4();
        input.feeds(id);
        (input, rx, id)
    }

    /// Entering a terminal command someone else typed into: what is typed here goes on
    /// from the host's position, whichever arrives first, the acknowledgement or the
    /// screen that names the command.
    #[tokio::test]
    async fn a_joining_input_starts_where_the_host_stands() {
        let input = Input::joining();
        let (tx, mut rx) = mpsc::unbounded_channel();
        input.route(tx, 4);
        input.write(Bytes::from_static(b"q")).await;
        assert!(sent(&mut rx).is_empty());
        let id = Uuid::new_v4();
        input.acked(id, 1234, false);
        input.feeds(id);
        assert_eq!(sent(&mut rx), vec![(4, 1234, b"q".to_vec(), false)]);
        // Another command's acknowledgement later is not for it.
        input.acked(Uuid::new_v4(), 0, true);
        assert!(!input.is_closed());
    }

    /// A terminal command's end says where its input stood: what was sent from there on,
    /// and what was typed after the input closed, comes back as type-ahead.
    #[tokio::test]
    async fn what_never_reached_an_ended_command_is_given_back_from_its_offset() {
        let (input, mut rx, id) = routed(1);
        input.acked(id, 0, false);
        input.write(Bytes::from_static(b"read ")).await;
        input.write(Bytes::from_static(b"unread")).await;
        assert_eq!(sent(&mut rx).len(), 2);
        input.acked(id, 3, false);
        assert_eq!(input.sent_from(5), b"unread");
        // The host closes the input as the command ends; keys typed after still count.
        input.acked(id, 5, true);
        input.write(Bytes::from_static(b" late\r")).await;
        assert!(sent(&mut rx).is_empty());
        assert_eq!(input.sent_from(5), b"unread late\r");
        assert_eq!(input.sent_from(8), b"ead late\r");
        assert_eq!(input.held(), 0);
    }

    #[tokio::test]
    async fn nothing_goes_out_before_the_host_says_where_it_stands() {
        let (input, mut rx, id) = routed(1);
        input.write(Bytes::from_static(b"abc")).await;
        assert!(sent(&mut rx).is_empty());
        // Another command's acknowledgement (the session's previous one) changes nothing.
        input.acked(Uuid::new_v4(), 0, true);
        assert!(sent(&mut rx).is_empty());
        assert!(!input.is_closed());
        input.acked(id, 0, false);
        assert_eq!(sent(&mut rx), vec![(1, 0, b"abc".to_vec(), false)]);
        input.write(Bytes::from_static(b"de")).await;
        input.finish();
        assert_eq!(
            sent(&mut rx),
            vec![(1, 3, b"de".to_vec(), false), (1, 5, vec![], true)]
        );
    }

    #[tokio::test]
    async fn a_new_route_resends_everything_not_acknowledged() {
        let (input, mut rx, id) = routed(1);
        input.acked(id, 0, false);
        input.write(Bytes::from_static(b"hello ")).await;
        input.write(Bytes::from_static(b"world")).await;
        input.finish();
        assert_eq!(sent(&mut rx).len(), 3);
        input.acked(id, 3, false);
        assert_eq!(input.held(), 8);
        // The connection broke; a receive on a new one follows the command.
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        input.route(tx2, 7);
        // Input after the end is not input.
        input.write(Bytes::from_static(b"!")).await;
        assert!(sent(&mut rx2).is_empty(), "waits for the host's position");
        // The host had written more than this client heard of.
        input.acked(id, 4, false);
        assert_eq!(
            sent(&mut rx2),
            vec![
                (7, 4, b"o ".to_vec(), false),
                (7, 6, b"world".to_vec(), false),
                (7, 11, vec![], true)
            ]
        );
        assert_eq!(input.held(), 7);
        input.acked(id, 11, true);
        assert_eq!(input.held(), 0);
        assert!(input.is_closed());
    }

    #[tokio::test]
    async fn nothing_is_sent_past_the_window_until_acknowledged() {
        let (input, mut rx, id) = routed(1);
        input.acked(id, 0, false);
        input
            .write(Bytes::from(vec![1u8; STDIN_WINDOW as usize - 1]))
            .await;
        // Room is left, so this write is taken, but only its first byte may go out.
        input.write(Bytes::from_static(b"abcdef")).await;
        input.finish();
        let msgs = sent(&mut rx);
        let last = msgs.last().expect("sent");
        assert_eq!(
            (last.1, last.2.as_slice(), last.3),
            (STDIN_WINDOW - 1, &b"a"[..], false)
        );
        let end: u64 = msgs.iter().map(|m| m.2.len() as u64).sum();
        assert_eq!(end, STDIN_WINDOW);
        // Acknowledgements open the window as far as they go: then the rest, then the end.
        input.acked(id, 3, false);
        assert_eq!(
            sent(&mut rx),
            vec![(1, STDIN_WINDOW, b"bcd".to_vec(), false)]
        );
        input.acked(id, 10, false);
        assert_eq!(
            sent(&mut rx),
            vec![
                (1, STDIN_WINDOW + 3, b"ef".to_vec(), false),
                (1, STDIN_WINDOW + 5, vec![], true)
            ]
        );
    }

    #[tokio::test]
    async fn a_full_window_holds_the_writer_until_acknowledged_or_closed() {
        let (input, mut rx, id) = routed(1);
        input.acked(id, 0, false);
        let big = Bytes::from(vec![1u8; STDIN_WINDOW as usize]);
        input.write(big).await;
        // Sent in chunks no larger than STDIN_CHUNK.
        let msgs = sent(&mut rx);
        assert_eq!(msgs.len(), STDIN_WINDOW as usize / STDIN_CHUNK);
        assert!(msgs.iter().all(|m| m.2.len() == STDIN_CHUNK));
        let writer = {
            let input = input.clone();
            tokio::spawn(async move { input.write(Bytes::from_static(b"more")).await })
        };
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "the window is full");
        input.acked(id, 4, false);
        writer.await.expect("writer");
        assert_eq!(
            sent(&mut rx),
            vec![(1, STDIN_WINDOW, b"more".to_vec(), false)]
        );
        // Full again; the command ending releases a waiting writer, and later input is
        // discarded.
        let writer = {
            let input = input.clone();
            tokio::spawn(async move { input.write(Bytes::from_static(b"x")).await })
        };
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        input.close();
        writer.await.expect("writer");
        input.write(Bytes::from_static(b"late")).await;
        assert!(sent(&mut rx).is_empty());
        assert_eq!(input.held(), 0);
    }
}

//! Forwarded standard input on its way to the host: only from the request that follows
//! the command, only what is new (a resumed client repeats what it is unsure of), and only
//! within the window the host's last acknowledgement opened, so the daemon never holds
//! more than `STDIN_WINDOW` bytes of a session's input whatever a client sends.

use bytes::Bytes;
use linger_proto::input::{fresh_part, STDIN_WINDOW};

use super::*;

/// The input of one command, as far as the daemon has seen it go by.
pub(super) struct InputRelay {
    command_id: Uuid,
    /// What the host last said it has written.
    written: u64,
    /// Bytes passed on to the host so far.
    forwarded: u64,
    /// The end of input was passed on, or the host closed the input.
    done: bool,
}

impl Session {
    /// A client's chunk of input for `command_id`, from request `rid` of `conn`.
    pub fn input(
        &self,
        conn: u64,
        rid: u64,
        command_id: Uuid,
        offset: u64,
        data: Bytes,
        eof: bool,
    ) {
        let mut g = self.lock();
        let follows = g.fg.subscriber.as_ref().is_some_and(|s| s.is(conn, rid));
        let Some(relay) = g
            .input
            .as_mut()
            .filter(|r| follows && r.command_id == command_id && !r.done)
        else {
            return;
        };
        let Some(fresh) = fresh_part(
            relay.forwarded,
            relay.written + STDIN_WINDOW,
            offset,
            data.len(),
        ) else {
            return;
        };
        let eof = eof && fresh.is_complete;
        if fresh.range.is_empty() && !eof {
            return;
        }
        let from = relay.forwarded;
        relay.forwarded += fresh.range.len() as u64;
        relay.done = eof;
        drop(g);
        self.send(DaemonToHost::Stdin {
            command_id,
            offset: from,
            data: data.slice(fresh.range),
            eof,
        });
    }

    /// The host reports how far `command_id`'s input has got; the request following the
    /// command hears it (and may send more).
    pub(super) async fn input_acked(&self, command_id: Uuid, written: u64, closed: bool) {
        let tx = {
            let mut g = self.lock();
            match g.input.as_mut().filter(|r| r.command_id == command_id) {
                Some(r) => {
                    r.written = r.written.max(written);
                    r.forwarded = r.forwarded.max(written);
                    r.done |= closed;
                }
                None => {
                    g.input = Some(InputRelay {
                        command_id,
                        written,
                        forwarded: written,
                        done: closed,
                    })
                }
            }
            // An invoke hears only of its own command (a Replay can bring the previous
            // one's); a receive follows whatever runs.
            g.fg.subscriber
                .as_ref()
                .filter(|s| s.command.is_none_or(|c| c == command_id))
                .map(|s| (s.tx.clone(), s.rid))
        };
        if let Some((tx, rid)) = tx {
            let _ = tx
                .send(ServerMsg::StdinAck {
                    rid,
                    command_id,
                    written,
                    closed,
                })
                .await;
        }
    }
}

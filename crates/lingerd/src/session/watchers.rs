//! Read-only watchers of a session (SPEC §14): any number, from any client of the owner.
//! They get a copy of output as the host reads it (the host's tap), never the log: they
//! consume, acknowledge and replay nothing, and a slow one is told how many bytes it missed
//! instead of slowing anyone. A terminal command's screen is drawn for each at the start.

use bytes::Bytes;
use linger_proto::types::StreamKind;

use super::*;

pub(super) struct Watcher {
    /// The daemon's number for it, which a `Screen` for it names.
    id: u64,
    conn: u64,
    rid: u64,
    tx: mpsc::Sender<ServerMsg>,
    /// Bytes it was not shown since the last chunk it was.
    missed: u64,
}

static NEXT_WATCHER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Session {
    /// Registers request `rid` of `conn` as a watcher.
    pub fn watch(&self, conn: u64, rid: u64, tx: mpsc::Sender<ServerMsg>) -> Result<(), ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        let id = NEXT_WATCHER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = g.watchers.is_empty();
        g.watchers.push(Watcher {
            id,
            conn,
            rid,
            tx,
            missed: 0,
        });
        drop(g);
        if first {
            self.send(DaemonToHost::Watch { on: true });
        }
        self.send(DaemonToHost::Redraw {
            rows: 0,
            cols: 0,
            watcher: Some(id),
        });
        Ok(())
    }

    /// Request `rid` of `conn` (every request of it, with `None`) watches no more.
    pub fn unwatch(&self, conn: u64, rid: Option<u64>) {
        let mut g = self.lock();
        let before = g.watchers.len();
        g.watchers
            .retain(|w| w.conn != conn || rid.is_some_and(|r| r != w.rid));
        let off = before > 0 && g.watchers.is_empty();
        drop(g);
        if off {
            self.send(DaemonToHost::Watch { on: false });
        }
    }

    /// The host's copy of new output: to every watcher that keeps up.
    pub(super) fn tapped(&self, command_id: Uuid, stream: StreamKind, data: Bytes, missed: u64) {
        let mut g = self.lock();
        let before = g.watchers.len();
        g.watchers.retain_mut(|w| {
            let msg = ServerMsg::Watched {
                rid: w.rid,
                command_id,
                stream,
                data: data.clone(),
                missed: w.missed + missed,
            };
            match w.tx.try_send(msg) {
                Ok(()) => {
                    w.missed = 0;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.missed += missed + data.len() as u64;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        let off = before > 0 && g.watchers.is_empty();
        drop(g);
        if off {
            self.send(DaemonToHost::Watch { on: false });
        }
    }

    /// A screen the host drew for watcher `id`.
    pub(super) fn screen_for_watcher(
        &self,
        id: u64,
        command_id: Option<Uuid>,
        seq: u64,
        data: Bytes,
    ) {
        let g = self.lock();
        if let Some(w) = g.watchers.iter().find(|w| w.id == id) {
            let _ = w.tx.try_send(ServerMsg::Screen {
                rid: w.rid,
                command_id,
                seq,
                data,
            });
        }
    }

    /// The session ended: each watcher is told, and watches no more.
    pub(super) fn end_watches(&self, g: &mut Inner, why: &str) {
        for w in g.watchers.drain(..) {
            let _ = w.tx.try_send(ServerMsg::Error {
                rid: w.rid,
                error: ErrorBody::new(
                    ErrorKind::Closed,
                    format!("session {} has ended: {why}", self.meta.name),
                )
                .with_closed_reason(why),
            });
        }
    }
}

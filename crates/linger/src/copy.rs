//! Copying files into and out of a session over a connection (docs/PROTOCOL.md §17). The
//! session's host does the far side's file I/O; here the local side reads with
//! linger-files' [`Plan`] or writes with its [`TreeWriter`], both on threads of their own,
//! paced by the copy's window so neither side holds more than it in memory.

use std::sync::mpsc as std_mpsc;

use linger_files::{CopyError, Part, Plan, TreeWriter};
use linger_proto::client::{ClientMsg, GetFiles, PutFiles, Request};
use linger_proto::copy::{CopyItem, CopySummary, COPY_ITEM_COST, COPY_PROGRESS_EVERY, COPY_WINDOW};
use linger_proto::server::{Reply, ServerMsg};
use tokio::sync::mpsc;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// Hears how a copy moves: for a progress bar.
pub trait CopyProgress: Send + Sync {
    /// The bytes of file content the copy will move, once known.
    fn total(&self, _bytes: u64) {}
    /// Bytes of file content moved so far.
    fn moved(&self, _bytes: u64) {}
}

/// A copy nobody watches.
pub struct NoProgress;

impl CopyProgress for NoProgress {}

/// Gives the copy up on the server unless it ended there.
struct CopyGuard {
    conn: Connection,
    rid: u64,
    ended: bool,
}

impl Drop for CopyGuard {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.send(ClientMsg::Cancel { rid: self.rid });
        }
        self.conn.forget(self.rid);
    }
}

impl Connection {
    /// Uploads `plan` as `req` says; the session's host renames each file into place when
    /// it is complete.
    pub async fn put_files(
        &self,
        req: PutFiles,
        plan: Plan,
        progress: &dyn CopyProgress,
    ) -> Result<CopySummary> {
        let (rid, mut rx) = self.start(Request::PutFiles(req))?;
        let mut guard = CopyGuard {
            conn: self.clone(),
            rid,
            ended: false,
        };
        // The host reports progress 0 once its destination is open: nothing is read here
        // before a bad destination has had its say.
        let mut done = loop {
            match rx.recv().await {
                Some(ServerMsg::CopyProgress { done, .. }) => break done,
                Some(ServerMsg::Error { error, .. }) => {
                    guard.ended = true;
                    return Err(Error::Server(error));
                }
                Some(_) => {}
                None => return Err(self.lost()),
            }
        };
        progress.total(plan.bytes);
        let (parts_tx, mut parts) = mpsc::channel::<Result<Part, CopyError>>(16);
        std::thread::Builder::new()
            .name("copy-read".into())
            .spawn(move || {
                for part in plan.parts() {
                    let failed = part.is_err();
                    if parts_tx.blocking_send(part).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io("starting the copy's reader", e))?;
        let (mut sent, mut offset, mut all_sent) = (0u64, 0u64, false);
        loop {
            let room = !all_sent && sent < done.saturating_add(COPY_WINDOW);
            tokio::select! {
                part = parts.recv(), if room => match part {
                    Some(Ok(Part::Item(item))) => {
                        sent += COPY_ITEM_COST;
                        self.send(ClientMsg::CopyItem { rid, item });
                    }
                    Some(Ok(Part::Data(data))) => {
                        let n = data.len() as u64;
                        sent += n;
                        self.send(ClientMsg::CopyData { rid, offset, data });
                        offset += n;
                        progress.moved(offset);
                    }
                    // The guard gives the copy up: the host removes what it had begun.
                    Some(Err(e)) => return Err(Error::Copy(e)),
                    None => {
                        all_sent = true;
                        self.send(ClientMsg::CopyEnd { rid });
                    }
                },
                msg = rx.recv() => match msg {
                    Some(ServerMsg::CopyProgress { done: d, .. }) => done = done.max(d),
                    Some(ServerMsg::Reply { reply: Reply::Copied(summary), .. }) => {
                        guard.ended = true;
                        return Ok(summary);
                    }
                    Some(ServerMsg::Error { error, .. }) => {
                        guard.ended = true;
                        return Err(Error::Server(error));
                    }
                    Some(_) => {}
                    None => return Err(self.lost()),
                },
            }
        }
    }

    /// Downloads what `req` names into `writer`.
    pub async fn get_files(
        &self,
        req: GetFiles,
        writer: TreeWriter,
        progress: &dyn CopyProgress,
    ) -> Result<CopySummary> {
        let (rid, mut rx) = self.start(Request::GetFiles(req))?;
        let mut guard = CopyGuard {
            conn: self.clone(),
            rid,
            ended: false,
        };
        let local = LocalWriter::start(writer, self.clone(), rid)?;
        let mut moved = 0u64;
        loop {
            let msg = rx.recv().await;
            let fed = match msg {
                Some(ServerMsg::CopyTotal { bytes, .. }) => {
                    progress.total(bytes);
                    true
                }
                Some(ServerMsg::CopyItem { item, .. }) => local.feed(WritePart::Item(item)),
                Some(ServerMsg::CopyData { data, .. }) => {
                    moved += data.len() as u64;
                    progress.moved(moved);
                    local.feed(WritePart::Data(data))
                }
                Some(ServerMsg::Reply {
                    reply: Reply::Copied(_),
                    ..
                }) => {
                    guard.ended = true;
                    return local.finish();
                }
                Some(ServerMsg::Error { error, .. }) => {
                    guard.ended = true;
                    return Err(Error::Server(error));
                }
                Some(_) => true,
                None => return Err(self.lost()),
            };
            if !fed {
                // The local side failed (a full disk, say): its error is the copy's.
                return Err(local.failure());
            }
        }
    }
}

enum WritePart {
    Item(CopyItem),
    Data(bytes::Bytes),
    End,
}

/// A download's writer, on a thread of its own: it reports progress to the server as it
/// writes, and when dropped unfinished it is joined, so its temporary files are gone by
/// the time the copy returns.
struct LocalWriter {
    tx: Option<std_mpsc::Sender<WritePart>>,
    thread: Option<std::thread::JoinHandle<std::result::Result<CopySummary, CopyError>>>,
}

impl LocalWriter {
    fn start(writer: TreeWriter, conn: Connection, rid: u64) -> Result<LocalWriter> {
        let (tx, rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("copy-write".into())
            .spawn(move || write_parts(writer, &rx, &conn, rid))
            .map_err(|e| Error::io("starting the copy's writer", e))?;
        Ok(LocalWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// False once the writer has stopped (it failed).
    fn feed(&self, part: WritePart) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(part).is_ok())
    }

    fn join(&mut self) -> Option<std::result::Result<CopySummary, CopyError>> {
        self.tx = None;
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(r) => Some(r),
            Err(_) => Some(Err(CopyError::Stream("the copy's writer panicked".into()))),
        }
    }

    fn finish(mut self) -> Result<CopySummary> {
        self.feed(WritePart::End);
        match self.join() {
            Some(r) => r.map_err(Error::Copy),
            None => Err(Error::State("the copy's writer is gone".into())),
        }
    }

    fn failure(mut self) -> Error {
        match self.join() {
            Some(Err(e)) => Error::Copy(e),
            _ => Error::State("the copy's writer stopped early".into()),
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

fn write_parts(
    mut writer: TreeWriter,
    rx: &std_mpsc::Receiver<WritePart>,
    conn: &Connection,
    rid: u64,
) -> std::result::Result<CopySummary, CopyError> {
    let (mut taken, mut reported) = (0u64, 0u64);
    loop {
        // A closed channel before End: the copy was given up, and dropping the writer
        // removes what it began.
        let part = rx
            .recv()
            .map_err(|_| CopyError::Stream("the copy was given up".into()))?;
        match part {
            WritePart::Item(item) => {
                writer.item(item)?;
                taken += COPY_ITEM_COST;
            }
            WritePart::Data(data) => {
                writer.data(&data)?;
                taken += data.len() as u64;
            }
            WritePart::End => return writer.finish(),
        }
        if taken - reported >= COPY_PROGRESS_EVERY {
            reported = taken;
            conn.send(ClientMsg::CopyProgress { rid, done: taken });
        }
    }
}

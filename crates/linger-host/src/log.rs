//! The session's output log: every chunk of output and every command end, numbered, kept
//! until the daemon acknowledges it. Its byte size is bounded by the session's output buffer
//! size; what happens at the bound is the buffering mode's business (`block` makes the pipe
//! readers wait, which in turn makes the command's writes block).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use linger_proto::types::StreamKind;
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub enum EntryKind {
    Output {
        command_id: Uuid,
        stream: StreamKind,
        data: Bytes,
    },
    Finished {
        command_id: Uuid,
        status: i32,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
}

impl Entry {
    fn len(&self) -> u64 {
        match &self.kind {
            EntryKind::Output { data, .. } => data.len() as u64,
            EntryKind::Finished { .. } => 0,
        }
    }
}

struct Inner {
    entries: VecDeque<Entry>,
    /// Sequence number the next entry gets; entries are numbered from 1.
    next_seq: u64,
    bytes: u64,
    cap: u64,
    dropped: u64,
}

#[derive(Clone)]
pub struct OutputLog {
    inner: Arc<Mutex<Inner>>,
    /// Signalled when entries are appended.
    appended: Arc<Notify>,
    /// Signalled when entries are acknowledged (space freed).
    freed: Arc<Notify>,
}

impl OutputLog {
    pub fn new(cap: u64) -> Self {
        OutputLog {
            inner: Arc::new(Mutex::new(Inner {
                entries: VecDeque::new(),
                next_seq: 1,
                bytes: 0,
                cap: cap.max(1),
                dropped: 0,
            })),
            appended: Arc::new(Notify::new()),
            freed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic elsewhere already; the data is still consistent
        // because every critical section below is panic-free.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends output, waiting while the log is full (block mode).
    pub async fn push_output(&self, command_id: Uuid, stream: StreamKind, data: Bytes) {
        loop {
            let freed = self.freed.notified();
            {
                let mut g = self.lock();
                if g.bytes < g.cap {
                    let seq = g.next_seq;
                    g.next_seq += 1;
                    g.bytes += data.len() as u64;
                    g.entries.push_back(Entry {
                        seq,
                        kind: EntryKind::Output {
                            command_id,
                            stream,
                            data,
                        },
                    });
                    break;
                }
            }
            freed.await;
        }
        self.appended.notify_waiters();
    }

    /// Appends a command end; never waits, so a full log cannot hide an ended command.
    pub fn push_finished(&self, command_id: Uuid, status: i32) {
        {
            let mut g = self.lock();
            let seq = g.next_seq;
            g.next_seq += 1;
            g.entries.push_back(Entry {
                seq,
                kind: EntryKind::Finished { command_id, status },
            });
        }
        self.appended.notify_waiters();
    }

    /// Forgets every entry up to and including `seq`.
    pub fn ack(&self, seq: u64) {
        {
            let mut g = self.lock();
            while g.entries.front().is_some_and(|e| e.seq <= seq) {
                if let Some(e) = g.entries.pop_front() {
                    g.bytes -= e.len();
                }
            }
        }
        self.freed.notify_waiters();
    }

    /// Sequence number of the oldest entry still kept (or the next one, if none is).
    pub fn first_unacked(&self) -> u64 {
        let g = self.lock();
        g.entries.front().map_or(g.next_seq, |e| e.seq)
    }

    /// Entries from `from` on, at most `max_bytes` of output (at least one entry).
    pub fn read_from(&self, from: u64, max_bytes: u64) -> Vec<Entry> {
        let g = self.lock();
        let start = match g.entries.front() {
            Some(first) if from > first.seq => (from - first.seq) as usize,
            _ => 0,
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in g.entries.iter().skip(start) {
            if !out.is_empty() && bytes + e.len() > max_bytes {
                break;
            }
            bytes += e.len();
            out.push(e.clone());
        }
        out
    }

    /// A future that completes after the next append; create it before checking for new
    /// entries so that no append is missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    pub fn pending_bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.lock().dropped
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn numbered_in_order_and_trimmed_by_ack() {
        let log = OutputLog::new(1 << 20);
        let id = Uuid::new_v4();
        log.push_output(id, StreamKind::Stdout, Bytes::from_static(b"a"))
            .await;
        log.push_output(id, StreamKind::Stderr, Bytes::from_static(b"bc"))
            .await;
        log.push_finished(id, 3);
        let all = log.read_from(1, u64::MAX);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(log.pending_bytes(), 3);
        log.ack(2);
        assert_eq!(log.first_unacked(), 3);
        assert_eq!(log.pending_bytes(), 0);
        assert_eq!(log.read_from(1, u64::MAX).len(), 1);
    }

    #[tokio::test]
    async fn full_log_blocks_until_acked() {
        let log = OutputLog::new(4);
        let id = Uuid::new_v4();
        log.push_output(id, StreamKind::Stdout, Bytes::from_static(b"12345"))
            .await;
        let log2 = log.clone();
        let writer = tokio::spawn(async move {
            log2.push_output(id, StreamKind::Stdout, Bytes::from_static(b"6"))
                .await;
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        log.ack(1);
        writer.await.expect("writer task");
        assert_eq!(log.pending_bytes(), 1);
    }
}

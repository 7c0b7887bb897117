//! The session's output log: every chunk of output and every command end, numbered, kept
//! until the daemon acknowledges it. What happens when output arrives faster than the daemon
//! takes it is the buffering mode's business:
//!
//! - `block`: once memory holds the session's output buffer size, the pipe readers wait,
//!   which in turn makes the command's writes block.
//! - `drop`: the oldest unacknowledged output is discarded to make room; a `Dropped` entry
//!   takes its place, so the reader learns, in position, that (and how much) output is missing.
//! - `spool`: output that does not fit in memory goes to a file in the session directory,
//!   up to the spool limit; beyond that, it blocks.
//!
//! Command ends (`Finished`) are never dropped and never wait: a full log must not hide that a
//! command ended.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use linger_proto::types::{BufferingMode, StreamKind};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::spool::Spool;

/// How a session's log is bounded, from its settings and limits.
pub struct LogSettings {
    pub mode: BufferingMode,
    /// The session's output memory (`output_buffer_size` over all its logs together).
    pub memory: Arc<MemoryQuota>,
    /// File used by spool mode (created on first use, in the session's state directory).
    pub spool_path: PathBuf,
    /// The session's spool space (`spool_limit` over all its logs together).
    pub spool_quota: std::sync::Arc<crate::spool::SpoolQuota>,
}

/// The output memory all of a session's logs share (`output_buffer_size`): each log counts
/// what it holds here, and a writer waiting for room in one log is woken when any log frees
/// some.
pub struct MemoryQuota {
    cap: u64,
    held: AtomicU64,
    freed: Arc<Notify>,
}

impl MemoryQuota {
    pub fn new(cap: u64) -> Arc<MemoryQuota> {
        Arc::new(MemoryQuota {
            cap: cap.max(1),
            held: AtomicU64::new(0),
            freed: Arc::new(Notify::new()),
        })
    }

    /// Output bytes the session's logs hold in memory now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

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
        /// What was typed at a terminal command and never read by it.
        unread_input: Bytes,
        /// Where its forwarded input stood at its end.
        input_offset: Option<u64>,
    },
    /// Stands, in position, for output discarded under `drop`. The log keeps a cumulative
    /// counter of dropped bytes; this entry covers the counter's range (from_total, to_total].
    Dropped { from_total: u64, to_total: u64 },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
}

/// Where an output entry's bytes are.
enum Data {
    Memory(Chunk),
    /// In the spool file, at `offset`.
    Spooled {
        offset: u64,
        len: u64,
    },
}

/// Output held in memory. The newest entry grows in place while no reader has been handed
/// it and more output of its command and stream arrives (up to `COALESCE_MAX`, 16 KiB), so that a
/// command writing a few bytes at a time costs a few entries, not one per write.
enum Chunk {
    Frozen(Bytes),
    Growing(BytesMut),
}

/// Largest entry that coalescing makes. Small, because a client killed while writing an
/// entry leaves it to be delivered again, whole: coalescing must not widen that window much.
const COALESCE_MAX: usize = 16 * 1024;

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Frozen(b) => b.len(),
            Chunk::Growing(b) => b.len(),
        }
    }

    fn extend(&mut self, more: &[u8]) {
        match self {
            Chunk::Growing(b) => b.extend_from_slice(more),
            Chunk::Frozen(b) => {
                // Copied out of the block it was read into, which it then no longer pins.
                let want = (b.len() + more.len()).max(2 * b.len()).min(COALESCE_MAX);
                let mut grown = BytesMut::with_capacity(want);
                grown.extend_from_slice(b);
                grown.extend_from_slice(more);
                *self = Chunk::Growing(grown);
            }
        }
    }

    /// Stops growing; the bytes.
    fn freeze(&mut self) -> Bytes {
        let frozen = match self {
            Chunk::Frozen(b) => return b.clone(),
            Chunk::Growing(b) => {
                let b = std::mem::take(b);
                // Without the growth slack, so kept output costs its length.
                if b.capacity() > b.len() + b.len() / 4 {
                    Bytes::copy_from_slice(&b)
                } else {
                    b.freeze()
                }
            }
        };
        *self = Chunk::Frozen(frozen.clone());
        frozen
    }

    /// The bytes of a frozen chunk (a growing one is copied; `read_from` freezes first).
    fn bytes(&self) -> Bytes {
        match self {
            Chunk::Frozen(b) => b.clone(),
            Chunk::Growing(b) => Bytes::copy_from_slice(b),
        }
    }
}

/// Flow control: output bytes the host may have sent to the daemon beyond what the channel's
/// reader has taken (acknowledged, or credited by a `--keep` receive). A reader that stops
/// taking stops the host after this much, whatever the log holds (a spool of gigabytes), so
/// no hop after it holds more.
pub const OUTPUT_WINDOW: u64 = 4 << 20;

/// How often a writer blocked by an unwritable spool tries it again.
const SPOOL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// An entry as the log keeps it: an [`EntryKind`] whose output may be in the spool file.
enum Kept {
    Output {
        command_id: Uuid,
        stream: StreamKind,
        data: Data,
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

struct Record {
    seq: u64,
    kept: Kept,
}

impl Record {
    /// Bytes of output, wherever they are; markers count 0.
    fn len(&self) -> u64 {
        match &self.kept {
            Kept::Output {
                data: Data::Memory(b),
                ..
            } => b.len() as u64,
            Kept::Output {
                data: Data::Spooled { len, .. },
                ..
            } => *len,
            Kept::Finished { .. } | Kept::Dropped { .. } => 0,
        }
    }

    /// Bytes of output held in memory (what `drop` may discard to make room).
    fn memory_len(&self) -> Option<u64> {
        match &self.kept {
            Kept::Output {
                data: Data::Memory(b),
                ..
            } => Some(b.len() as u64),
            _ => None,
        }
    }
}

struct Inner {
    mode: BufferingMode,
    /// Seqs strictly increase along the queue but have gaps where `Dropped` entries merged.
    entries: VecDeque<Record>,
    /// Sequence number the next entry gets; entries are numbered from 1.
    next_seq: u64,
    /// Output bytes this log holds in memory (counted in `quota` too).
    memory: u64,
    quota: Arc<MemoryQuota>,
    spool: Spool,
    /// Output bytes discarded since the session started: the counter `Dropped` ranges refer to.
    dropped: u64,
    /// Highest seq sent to the daemon's current reader. A `Dropped` entry at or below it
    /// may have reached a receiver already, so later drops never merge into it: that
    /// receiver would count the earlier bytes twice.
    sent_through: u64,
    /// The reader has taken every entry up to this seq (flow control: `credit`).
    credited: u64,
    /// Output bytes of entries sent (seq <= `sent_through`) but not taken (seq > `credited`).
    in_flight: u64,
    /// Highest seq ever handed to a reader: entries up to it never change (coalescing only
    /// grows entries after it).
    read_through: u64,
    /// No entry before this index holds output in memory. Dropping starts its search for the
    /// oldest such entry here, so it stays cheap behind a long run of `Finished` or spooled
    /// entries. Entries before it never change back into droppable ones.
    drop_from: usize,
    /// A job's log, which may go unread for as long as the job is kept: it holds none of
    /// the session's shared memory while its spool has room, so output nobody reads never
    /// stalls the foreground (under `block`) or costs it its buffer (under `drop`).
    unattended: bool,
}

impl Drop for Inner {
    /// A forgotten log (a removed job's) gives its memory back to the session.
    fn drop(&mut self) {
        self.quota.held.fetch_sub(self.memory, Ordering::AcqRel);
        self.quota.freed.notify_waiters();
    }
}

impl Inner {
    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn append(&mut self, kept: Kept) {
        if let Some(Record {
            kept:
                Kept::Output {
                    data: Data::Memory(chunk),
                    ..
                },
            ..
        }) = self.entries.back_mut()
        {
            // No longer the newest entry: it grows no more.
            chunk.freeze();
        }
        let seq = self.take_seq();
        self.entries.push_back(Record { seq, kept });
    }

    fn hold(&mut self, n: u64) {
        self.memory += n;
        self.quota.held.fetch_add(n, Ordering::AcqRel);
    }

    fn release_memory(&mut self, n: u64) {
        self.memory -= n;
        self.quota.held.fetch_sub(n, Ordering::AcqRel);
        // A writer of another log (in another mode) may now have room.
        self.quota.freed.notify_waiters();
    }

    /// The newest entry's bytes, if more output of `command_id` on `stream` may still join
    /// it: no reader has been handed it yet.
    fn growable_tail(&mut self, command_id: Uuid, stream: StreamKind) -> Option<&mut Data> {
        let read_through = self.read_through;
        match self.entries.back_mut() {
            Some(Record {
                seq,
                kept:
                    Kept::Output {
                        command_id: c,
                        stream: s,
                        data,
                    },
            }) if *seq > read_through && (*c, *s) == (command_id, stream) => Some(data),
            _ => None,
        }
    }

    fn append_in_memory(&mut self, command_id: Uuid, stream: StreamKind, data: Bytes) {
        self.hold(data.len() as u64);
        if let Some(Data::Memory(chunk)) = self.growable_tail(command_id, stream) {
            if chunk.len() + data.len() <= COALESCE_MAX {
                chunk.extend(&data);
                return;
            }
        }
        self.append(Kept::Output {
            command_id,
            stream,
            data: Data::Memory(Chunk::Frozen(data)),
        });
    }

    /// Appends output if the mode lets it in now; `false` means wait for space and retry.
    fn try_push(&mut self, command_id: Uuid, stream: StreamKind, data: &Bytes) -> bool {
        match self.mode {
            BufferingMode::Block => self.push_blocking(command_id, stream, data),
            BufferingMode::Drop => {
                self.push_dropping(command_id, stream, data.clone());
                true
            }
            BufferingMode::Spool => self.push_spooling(command_id, stream, data),
        }
    }

    /// `block`: admits a chunk while the session's memory is below the cap, so memory may
    /// exceed it by at most one chunk per log, and a chunk larger than the cap still gets
    /// through.
    fn push_blocking(&mut self, command_id: Uuid, stream: StreamKind, data: &Bytes) -> bool {
        if self.quota.held() >= self.quota.cap {
            return false;
        }
        self.append_in_memory(command_id, stream, data.clone());
        true
    }

    /// `drop`: discards this log's oldest output in memory until the chunk fits, so the
    /// session's memory never exceeds the cap. What still does not fit (a chunk larger than
    /// the cap, or room the session's other logs hold) is the chunk's head, discarded too.
    /// Output spooled before a switch from `spool` stays: it costs no memory, and its room in
    /// the file was granted already.
    fn push_dropping(&mut self, command_id: Uuid, stream: StreamKind, mut data: Bytes) {
        let cap = self.quota.cap;
        let len = data.len() as u64;
        while self.quota.held() + len.min(cap) > cap {
            if !self.drop_oldest() {
                break;
            }
        }
        let excess = len.saturating_sub(cap.saturating_sub(self.quota.held()));
        if excess > 0 {
            // Only the chunk's tail can be kept. Copied, because a slice would keep the whole
            // chunk's allocation alive and memory would exceed the cap after all.
            data = Bytes::copy_from_slice(&data[excess as usize..]);
            // Counted after the older output, so that ranges grow along the log.
            self.append_dropped(excess);
        }
        if !data.is_empty() {
            self.append_in_memory(command_id, stream, data);
        }
    }

    /// Replaces the oldest output held in memory, in place, by a `Dropped` entry, merged into
    /// an immediately preceding `Dropped` one so that endless dropping keeps the log short.
    /// `false` if memory holds no output.
    fn drop_oldest(&mut self) -> bool {
        let Some((i, len)) = (self.drop_from..self.entries.len())
            .find_map(|i| self.entries[i].memory_len().map(|len| (i, len)))
        else {
            return false;
        };
        self.release_memory(len);
        if self.in_flight_seq(self.entries[i].seq) {
            self.in_flight -= len;
        }
        let mut from_total = self.dropped;
        self.dropped += len;
        let mut at = i;
        let sent_through = self.sent_through;
        let previous = i.checked_sub(1).and_then(|p| match self.entries[p] {
            Record {
                seq,
                kept: Kept::Dropped { from_total, .. },
            } if seq > sent_through => Some(from_total),
            _ => None,
        });
        if let Some(previous_from) = previous {
            // The previous range ends where this one starts (drops happen oldest first), so
            // the merged entry covers exactly both. It keeps this entry's (later) seq: a reader
            // that already passed the earlier one must still see the wider range.
            from_total = previous_from;
            self.entries.remove(i - 1);
            at = i - 1;
        }
        self.entries[at].kept = Kept::Dropped {
            from_total,
            to_total: self.dropped,
        };
        self.drop_from = at + 1;
        true
    }

    /// Appends a `Dropped` entry for `len` bytes discarded now, merged into the last entry if
    /// that is a `Dropped` one (which then takes the new, later seq).
    fn append_dropped(&mut self, len: u64) {
        let from_total = self.dropped;
        self.dropped += len;
        let to_total = self.dropped;
        let seq = self.take_seq();
        let sent_through = self.sent_through;
        match self.entries.back_mut() {
            Some(Record {
                seq: last_seq,
                kept: Kept::Dropped { to_total: t, .. },
            }) if *last_seq > sent_through => {
                *last_seq = seq;
                *t = to_total;
            }
            _ => self.entries.push_back(Record {
                seq,
                kept: Kept::Dropped {
                    from_total,
                    to_total,
                },
            }),
        }
    }

    /// `spool`: memory while the chunk fits there, then the spool file while it fits there,
    /// then as `block` (which is also the way out when the file cannot be written).
    fn push_spooling(&mut self, command_id: Uuid, stream: StreamKind, data: &Bytes) -> bool {
        let len = data.len() as u64;
        if !self.unattended && self.quota.held() + len <= self.quota.cap {
            self.append_in_memory(command_id, stream, data.clone());
            return true;
        }
        if self.spool.has_room(len) {
            if let Some(offset) = self.spool.append(data) {
                // As in memory: a command writing a little at a time costs few entries.
                if let Some(Data::Spooled {
                    offset: at,
                    len: held,
                }) = self.growable_tail(command_id, stream)
                {
                    if *at + *held == offset && *held + len <= COALESCE_MAX as u64 {
                        *held += len;
                        return true;
                    }
                }
                self.append(Kept::Output {
                    command_id,
                    stream,
                    data: Data::Spooled { offset, len },
                });
                return true;
            }
        }
        self.push_blocking(command_id, stream, data)
    }

    fn in_flight_seq(&self, seq: u64) -> bool {
        seq > self.credited && seq <= self.sent_through
    }

    /// Output bytes of the entries with seq in (`after`, `upto`].
    fn bytes_between(&self, after: u64, upto: u64) -> u64 {
        let start = self.entries.partition_point(|e| e.seq <= after);
        self.entries
            .range(start..)
            .take_while(|e| e.seq <= upto)
            .map(Record::len)
            .sum()
    }

    /// The daemon's reader has been sent every entry up to `seq`.
    fn mark_sent(&mut self, seq: u64) {
        if seq <= self.sent_through {
            return;
        }
        let from = self.sent_through.max(self.credited);
        self.in_flight += self.bytes_between(from, seq);
        self.sent_through = seq;
    }

    /// The reader has taken every entry up to `seq`: the window moves on.
    fn credit(&mut self, seq: u64) {
        if seq <= self.credited {
            return;
        }
        let upto = seq.min(self.sent_through);
        if upto > self.credited {
            self.in_flight = self
                .in_flight
                .saturating_sub(self.bytes_between(self.credited, upto));
        }
        self.credited = seq;
    }

    fn ack(&mut self, seq: u64) {
        // What is acknowledged was taken.
        self.credit(seq);
        let mut popped = 0;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            popped += 1;
            match &e.kept {
                Kept::Output {
                    data: Data::Memory(b),
                    ..
                } => self.release_memory(b.len() as u64),
                Kept::Output {
                    data: Data::Spooled { len, .. },
                    ..
                } => self.spool.release(*len),
                Kept::Finished { .. } | Kept::Dropped { .. } => {}
            }
        }
        self.drop_from = self.drop_from.saturating_sub(popped);
        self.spool.reclaim();
    }

    fn read_from(&mut self, from: u64, max_bytes: u64) -> std::io::Result<Vec<Entry>> {
        // Seqs have gaps after merges: search, never subtract.
        let start = self.entries.partition_point(|e| e.seq < from);
        let mut end = start;
        let mut bytes = 0u64;
        while let Some(e) = self.entries.get(end) {
            let len = e.len();
            if end > start && bytes.saturating_add(len) > max_bytes {
                break;
            }
            bytes += len;
            end += 1;
        }
        // Handed out: these never change again.
        for e in self.entries.range_mut(start..end) {
            if let Kept::Output {
                data: Data::Memory(chunk),
                ..
            } = &mut e.kept
            {
                chunk.freeze();
            }
            self.read_through = self.read_through.max(e.seq);
        }
        let picked = self.entries.range(start..end);

        // The spooled entries among them are adjacent in the file (appended in entry order,
        // removed only from the front), so one read fetches them all.
        let mut spooled = picked.clone().filter_map(|e| match e.kept {
            Kept::Output {
                data: Data::Spooled { offset, len },
                ..
            } => Some((offset, len)),
            _ => None,
        });
        let (span_start, span) = match spooled.next() {
            Some((first, len)) => {
                let end = spooled.last().map_or(first + len, |(o, l)| o + l);
                (first, Bytes::from(self.spool.read(first, end - first)?))
            }
            None => (0, Bytes::new()),
        };

        Ok(picked
            .map(|e| Entry {
                seq: e.seq,
                kind: match &e.kept {
                    Kept::Output {
                        command_id,
                        stream,
                        data,
                    } => EntryKind::Output {
                        command_id: *command_id,
                        stream: *stream,
                        data: match data {
                            Data::Memory(b) => b.bytes(),
                            Data::Spooled { offset, len } => {
                                let at = (offset - span_start) as usize;
                                span.slice(at..at + *len as usize)
                            }
                        },
                    },
                    Kept::Finished {
                        command_id,
                        status,
                        unread_input,
                        input_offset,
                    } => EntryKind::Finished {
                        command_id: *command_id,
                        status: *status,
                        unread_input: unread_input.clone(),
                        input_offset: *input_offset,
                    },
                    Kept::Dropped {
                        from_total,
                        to_total,
                    } => EntryKind::Dropped {
                        from_total: *from_total,
                        to_total: *to_total,
                    },
                },
            })
            .collect())
    }
}

#[derive(Clone)]
pub struct OutputLog {
    inner: Arc<Mutex<Inner>>,
    /// Signalled when entries are appended.
    appended: Arc<Notify>,
    /// Signalled when writers may be able to go on: space freed in any of the session's logs
    /// (it is the session's `MemoryQuota`'s), or the mode changed.
    freed: Arc<Notify>,
    /// Writers waiting for room (a reader to take output, or a spool that can be written):
    /// the command is suspended in its next write.
    waiting_writers: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a writer as waiting while it lives (a cancelled write stops counting too).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl OutputLog {
    /// Whether a writer is suspended waiting for room in this log.
    pub fn writer_waiting(&self) -> bool {
        self.waiting_writers
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    /// Whether `other` is this same log (a clone of it).
    pub fn same(&self, other: &OutputLog) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn new(settings: LogSettings) -> Self {
        OutputLog {
            inner: Arc::new(Mutex::new(Inner {
                mode: settings.mode,
                entries: VecDeque::new(),
                next_seq: 1,
                memory: 0,
                quota: settings.memory.clone(),
                spool: Spool::new(settings.spool_path, settings.spool_quota),
                dropped: 0,
                drop_from: 0,
                sent_through: 0,
                credited: 0,
                in_flight: 0,
                read_through: 0,
                unattended: false,
            })),
            appended: Arc::new(Notify::new()),
            freed: settings.memory.freed.clone(),
            waiting_writers: Arc::default(),
        }
    }

    /// A job's log, sharing this log's session limits: it spools whatever the session's
    /// mode and holds memory only when its spool is full or cannot be written.
    pub fn unattended_like(&self, spool_path: PathBuf) -> Self {
        let log = OutputLog::new(LogSettings {
            mode: BufferingMode::Spool,
            ..self.settings_like(spool_path)
        });
        log.lock().unattended = true;
        log
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic elsewhere already; the data is still consistent
        // because every critical section below is panic-free.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the policy for future output; wakes writers blocked under the old policy if
    /// the new one lets them go on.
    pub fn set_mode(&self, mode: BufferingMode) {
        self.lock().mode = mode;
        // Blocked writers re-check under the new mode and wait again if it still says so.
        self.freed.notify_waiters();
    }

    pub fn mode(&self) -> BufferingMode {
        self.lock().mode
    }

    /// Appends output, waiting if the mode says so (see the module documentation).
    pub async fn push_output(&self, command_id: Uuid, stream: StreamKind, data: Bytes) {
        self.push_output_observed(command_id, stream, data, |_| {})
            .await
    }

    /// As [`OutputLog::push_output`], and `observe` sees the chunk at the moment it joins
    /// the log (under the log's lock), so that what it keeps of the output (a terminal's
    /// screen) matches an entry boundary [`OutputLog::at_boundary`] can name.
    pub async fn push_output_observed(
        &self,
        command_id: Uuid,
        stream: StreamKind,
        data: Bytes,
        observe: impl Fn(&Bytes),
    ) {
        loop {
            // Created before checking, so that an ack in between is not missed.
            let freed = self.freed.notified();
            let disk_full = {
                let mut g = self.lock();
                if g.try_push(command_id, stream, &data) {
                    observe(&data);
                    break;
                }
                g.mode == BufferingMode::Spool && g.spool.failing()
            };
            let _waiting = Waiting::new(&self.waiting_writers);
            // Whoever reports the session's state hears that its command is now suspended.
            self.appended.notify_waiters();
            if disk_full {
                // Blocked because the spool cannot be written (a full disk): try it again
                // now and then, as space may come back with nobody acknowledging anything.
                let _ = tokio::time::timeout(SPOOL_RETRY, freed).await;
                continue;
            }
            freed.await;
        }
        self.appended.notify_waiters();
    }

    /// Appends a command end; never waits, so a full log cannot hide an ended command.
    pub fn push_finished(&self, command_id: Uuid, status: i32) {
        self.push_finished_with(command_id, status, Bytes::new(), None);
    }

    /// A terminal command's end, with what was typed at it and never read, and where its
    /// input stood.
    pub fn push_finished_with(
        &self,
        command_id: Uuid,
        status: i32,
        unread_input: Bytes,
        input_offset: Option<u64>,
    ) {
        self.lock().append(Kept::Finished {
            command_id,
            status,
            unread_input,
            input_offset,
        });
        self.appended.notify_waiters();
    }

    /// Calls `f` with the newest entry's seq, under the log's lock and after sealing that
    /// entry (it grows no more), so that everything pushed later has a higher seq.
    pub fn at_boundary<T>(&self, f: impl FnOnce(u64) -> T) -> T {
        let mut g = self.lock();
        let newest = g.next_seq - 1;
        g.read_through = g.read_through.max(newest);
        f(newest)
    }

    /// The daemon's reader has been sent every entry up to `seq`.
    pub fn sent_through(&self, seq: u64) {
        self.lock().mark_sent(seq);
    }

    /// A new reader starts from the oldest unacknowledged entry: nothing is in flight to it.
    /// Returns (the first seq it gets, the newest seq now).
    pub fn restart(&self) -> (u64, u64) {
        let mut g = self.lock();
        let from = g.entries.front().map_or(g.next_seq, |e| e.seq);
        g.sent_through = from - 1;
        g.credited = from - 1;
        g.in_flight = 0;
        (from, g.next_seq - 1)
    }

    /// The reader has taken every entry up to `seq` without acknowledging it (a `--keep`
    /// receive): the window moves on, nothing is forgotten.
    pub fn credit(&self, seq: u64) {
        self.lock().credit(seq);
    }

    /// Output bytes that may be sent now (flow control, `OUTPUT_WINDOW`).
    pub fn room(&self) -> u64 {
        OUTPUT_WINDOW.saturating_sub(self.lock().in_flight)
    }

    pub fn ack(&self, seq: u64) {
        self.lock().ack(seq);
        self.freed.notify_waiters();
    }

    /// Sequence number of the oldest entry still kept (or the next one, if none is).
    pub fn first_unacked(&self) -> u64 {
        let g = self.lock();
        g.entries.front().map_or(g.next_seq, |e| e.seq)
    }

    /// Sequence number of the newest entry ever appended (0 if none). Seqs have gaps where
    /// `Dropped` entries merged: positions cannot be computed from them.
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Entries with seq >= `from`, at most `max_bytes` of output (but at least one entry, if
    /// any). Fails only if spooled output cannot be read back; nothing is lost then, and the
    /// read can be retried.
    pub fn read_from(&self, from: u64, max_bytes: u64) -> std::io::Result<Vec<Entry>> {
        self.lock().read_from(from, max_bytes)
    }

    /// A future that completes after the next append; create it before checking for new
    /// entries so that no append is missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Output bytes kept, in memory and in the spool file.
    pub fn pending_bytes(&self) -> u64 {
        let g = self.lock();
        g.memory + g.spool.held()
    }

    /// Output bytes discarded since the session started.
    pub fn dropped_bytes(&self) -> u64 {
        self.lock().dropped
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Whether anything of command `id` (its output or its end) is still kept.
    pub fn holds(&self, id: Uuid) -> bool {
        self.lock().entries.iter().any(|r| match &r.kept {
            Kept::Output { command_id, .. } | Kept::Finished { command_id, .. } => {
                *command_id == id
            }
            Kept::Dropped { .. } => false,
        })
    }

    /// A copy of the settings this log was made with, for another log alike.
    pub fn settings_like(&self, spool_path: PathBuf) -> LogSettings {
        let g = self.lock();
        LogSettings {
            mode: g.mode,
            memory: g.quota.clone(),
            spool_path,
            spool_quota: g.spool.quota(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::Path;
    use std::pin::pin;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    fn settings(mode: BufferingMode, memory_cap: u64, dir: &Path) -> LogSettings {
        LogSettings {
            mode,
            memory: MemoryQuota::new(memory_cap),
            spool_path: dir.join("spool"),
            spool_quota: crate::spool::SpoolQuota::new(100 << 20),
        }
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temporary directory")
    }

    /// Runs a future that must not wait: polls it once and fails the test if it is pending.
    fn ready<F: Future>(f: F) -> F::Output {
        struct Noop;
        impl Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = Waker::from(Arc::new(Noop));
        match pin!(f).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the push waited"),
        }
    }

    fn push(log: &OutputLog, data: &[u8]) {
        ready(log.push_output(
            Uuid::nil(),
            StreamKind::Stdout,
            Bytes::copy_from_slice(data),
        ));
    }

    /// `push` as output of a command of its own, so that it stays an entry of its own.
    fn push_apart(log: &OutputLog, data: &[u8]) {
        ready(log.push_output(
            Uuid::new_v4(),
            StreamKind::Stdout,
            Bytes::copy_from_slice(data),
        ));
    }

    /// Deterministic pseudo-random numbers (xorshift64), to vary chunk sizes and contents.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Between 1 and `max` random bytes.
        fn chunk(&mut self, max: u64) -> Vec<u8> {
            let len = 1 + self.next() % max;
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn all(log: &OutputLog) -> Vec<Entry> {
        log.read_from(0, u64::MAX).expect("read")
    }

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn output(e: &Entry) -> &[u8] {
        match &e.kind {
            EntryKind::Output { data, .. } => data,
            other => panic!("expected output, got {other:?}"),
        }
    }

    /// Reads every entry from `from` on in batches, as the connection does.
    fn read_all_output(log: &OutputLog, mut from: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let batch = log.read_from(from, 1 << 20).expect("read");
            let Some(last) = batch.last() else {
                return out;
            };
            from = last.seq + 1;
            for e in &batch {
                out.extend_from_slice(output(e));
            }
        }
    }

    fn spool_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("spool"))
            .expect("spool file")
            .len()
    }

    #[tokio::test]
    async fn numbered_in_order_and_trimmed_by_ack() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Block, 1 << 20, dir.path()));
        let id = Uuid::new_v4();
        assert_eq!((log.first_unacked(), log.last_seq()), (1, 0));
        log.push_output(id, StreamKind::Stdout, Bytes::from_static(b"a"))
            .await;
        log.push_output(id, StreamKind::Stderr, Bytes::from_static(b"bc"))
            .await;
        log.push_finished(id, 3);
        assert_eq!(seqs(&all(&log)), vec![1, 2, 3]);
        assert_eq!(log.last_seq(), 3);
        assert_eq!(log.pending_bytes(), 3);
        log.ack(2);
        assert_eq!(log.first_unacked(), 3);
        assert_eq!(log.pending_bytes(), 0);
        assert_eq!(all(&log).len(), 1);
        log.ack(3);
        assert!(log.is_empty());
        assert_eq!(log.first_unacked(), 4);
    }

    /// `output_buffer_size` holds for all of a session's logs together: what one holds, the
    /// others cannot take, under every mode; a writer waiting in one log goes on when another
    /// frees room, and a forgotten log gives its memory back.
    #[tokio::test]
    async fn the_session_memory_is_shared_by_its_logs() {
        let dir = tempdir();
        let fg = OutputLog::new(settings(BufferingMode::Block, 8, dir.path()));
        let like = |mode: BufferingMode, name: &str| {
            let log = OutputLog::new(fg.settings_like(dir.path().join(name)));
            log.set_mode(mode);
            log
        };
        push_apart(&fg, b"12345678");
        let quota = fg.lock().quota.clone();
        assert_eq!(quota.held(), 8);

        let dropping = like(BufferingMode::Drop, "d.spool");
        push_apart(&dropping, b"abcd");
        let entries = all(&dropping);
        assert!(
            matches!(
                entries[..],
                [Entry {
                    kind: EntryKind::Dropped {
                        from_total: 0,
                        to_total: 4
                    },
                    ..
                }]
            ),
            "no room anywhere: the chunk is dropped ({entries:?})"
        );
        assert_eq!(quota.held(), 8);

        let spooling = like(BufferingMode::Spool, "s.spool");
        push_apart(&spooling, b"efgh");
        assert_eq!(quota.held(), 8, "it went to the spool file");
        assert_eq!(spooling.pending_bytes(), 4);

        let blocking = like(BufferingMode::Block, "b.spool");
        let writer = {
            let blocking = blocking.clone();
            tokio::spawn(async move {
                blocking
                    .push_output(
                        Uuid::new_v4(),
                        StreamKind::Stdout,
                        Bytes::from_static(b"ij"),
                    )
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "the session's memory is full");
        fg.ack(fg.last_seq());
        writer.await.expect("writer task");
        assert_eq!(quota.held(), 2);
        drop(blocking);
        assert_eq!(quota.held(), 0, "a forgotten log gives its memory back");
    }

    #[tokio::test]
    async fn full_log_blocks_until_acked() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Block, 4, dir.path()));
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

    /// Half a million two-byte writes nobody reads yet cost a few entries, each holding its
    /// bytes exactly once; an entry handed to a reader never changes afterwards.
    /// What a terminal's screen saw up to a boundary is exactly the entries up to its seq:
    /// the entry there grows no more, and the observer sees each chunk as it joins.
    #[test]
    fn a_boundary_seals_the_newest_entry_and_observers_see_what_joins() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Block, 4 << 20, dir.path()));
        let seen = std::sync::Mutex::new(Vec::new());
        let observe = |d: &Bytes| seen.lock().unwrap().extend_from_slice(d);
        ready(log.push_output_observed(
            Uuid::nil(),
            StreamKind::Stdout,
            Bytes::from_static(b"ab"),
            observe,
        ));
        let (at, saw) = log.at_boundary(|seq| (seq, seen.lock().unwrap().clone()));
        assert_eq!((at, saw.as_slice()), (1, &b"ab"[..]));
        ready(log.push_output_observed(
            Uuid::nil(),
            StreamKind::Stdout,
            Bytes::from_static(b"cd"),
            observe,
        ));
        assert_eq!(log.last_seq(), 2, "the sealed entry did not grow");
        assert_eq!(output(&all(&log).pop().expect("an entry")), b"cd");
        assert_eq!(seen.lock().unwrap().as_slice(), b"abcd");
    }

    #[test]
    fn small_writes_coalesce_until_a_reader_is_handed_them() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Block, 4 << 20, dir.path()));
        for _ in 0..500_000 {
            push(&log, b"x\n");
        }
        let entries = log.lock().entries.len();
        assert!(entries <= 1_000_000 / COALESCE_MAX + 1, "{entries} entries");
        assert_eq!(log.pending_bytes(), 1_000_000);
        let seen = all(&log);
        let total: usize = seen.iter().map(|e| output(e).len()).sum();
        assert_eq!(total, 1_000_000);
        let last = log.last_seq();
        push(&log, b"y\n");
        assert_eq!(
            log.last_seq(),
            last + 1,
            "what was handed out grows no more"
        );
        assert_eq!(output(&all(&log).pop().expect("an entry")), b"y\n");
        // Another stream, or another command, is another entry.
        ready(log.push_output(Uuid::nil(), StreamKind::Stderr, Bytes::from_static(b"e")));
        push(&log, b"z");
        assert_eq!(log.last_seq(), last + 3);
        let held: usize = log
            .lock()
            .entries
            .iter()
            .map(|r| match &r.kept {
                Kept::Output {
                    data: Data::Memory(c),
                    ..
                } => match c {
                    Chunk::Frozen(b) => b.len(),
                    Chunk::Growing(b) => b.capacity(),
                },
                _ => 0,
            })
            .sum();
        assert!(
            held <= 1_000_000 + 2 * COALESCE_MAX,
            "{held} bytes allocated"
        );
    }

    /// The window: what was sent and not yet taken counts against `OUTPUT_WINDOW`; an ack or
    /// a credit gives it back, a replay starts it over, and a drop of an entry in flight
    /// gives its bytes back too.
    #[test]
    fn the_window_counts_what_was_sent_and_not_yet_taken() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Spool, 1 << 10, dir.path()));
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..6 {
            push_apart(&log, &chunk);
        }
        assert_eq!(log.room(), OUTPUT_WINDOW);
        let (from, last) = log.restart();
        assert_eq!((from, last), (1, 6));
        log.sent_through(4);
        assert_eq!(log.room(), 0, "four MiB in flight");
        log.credit(1);
        assert_eq!(log.room(), 1 << 20, "a credit moves the window");
        assert_eq!(log.first_unacked(), 1, "and forgets nothing");
        log.ack(2);
        assert_eq!(log.room(), 2 << 20);
        assert_eq!(log.first_unacked(), 3);
        log.credit(2);
        assert_eq!(log.room(), 2 << 20, "an old credit changes nothing");
        log.sent_through(6);
        assert_eq!(log.room(), 0);
        let (from, _) = log.restart();
        assert_eq!(from, 3);
        assert_eq!(log.room(), OUTPUT_WINDOW, "a replay starts over");
        // A credit past what was sent: later sends of those entries do not count.
        log.credit(4);
        log.sent_through(5);
        assert_eq!(log.room(), OUTPUT_WINDOW - (1 << 20));

        let dropping = OutputLog::new(settings(BufferingMode::Drop, 4, dir.path()));
        push_apart(&dropping, b"abcd");
        dropping.restart();
        dropping.sent_through(1);
        assert_eq!(dropping.room(), OUTPUT_WINDOW - 4);
        push_apart(&dropping, b"efgh"); // drops the entry in flight
        assert_eq!(dropping.room(), OUTPUT_WINDOW);
    }

    #[test]
    fn read_from_honours_max_bytes_but_returns_at_least_one_entry() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Block, 1 << 20, dir.path()));
        push_apart(&log, b"aaaa");
        push_apart(&log, b"bbbb");
        push_apart(&log, b"cccc");
        assert_eq!(seqs(&log.read_from(1, 0).expect("read")), vec![1]);
        assert_eq!(seqs(&log.read_from(1, 8).expect("read")), vec![1, 2]);
        assert_eq!(seqs(&log.read_from(2, 9).expect("read")), vec![2, 3]);
        assert!(log.read_from(4, 100).expect("read").is_empty());
    }

    #[test]
    fn drop_bounds_memory_and_accounts_for_every_byte() {
        let dir = tempdir();
        let cap = 4096;
        let log = OutputLog::new(settings(BufferingMode::Drop, cap, dir.path()));
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut pushed = Vec::new();
        let mut ends = 0;
        for i in 0..2000 {
            let chunk = rng.chunk(3000);
            push(&log, &chunk);
            pushed.extend_from_slice(&chunk);
            assert!(log.pending_bytes() <= cap, "memory over the cap");
            if i % 50 == 49 {
                log.push_finished(Uuid::nil(), ends);
                ends += 1;
            }
        }
        assert!(log.dropped_bytes() > 0);
        assert_eq!(
            log.pending_bytes() + log.dropped_bytes(),
            pushed.len() as u64
        );

        // Walking the log in order replays the pushed stream: dropped ranges skip exactly the
        // discarded bytes, follow one another without gaps, and every command end is there.
        let entries = all(&log);
        assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
        let (mut at, mut dropped, mut finished) = (0usize, 0u64, 0);
        for e in &entries {
            match &e.kind {
                EntryKind::Output { data, .. } => {
                    assert_eq!(&pushed[at..at + data.len()], &data[..]);
                    at += data.len();
                }
                EntryKind::Dropped {
                    from_total,
                    to_total,
                } => {
                    assert_eq!(*from_total, dropped);
                    assert!(to_total > from_total);
                    at += (to_total - from_total) as usize;
                    dropped = *to_total;
                }
                EntryKind::Finished { status, .. } => {
                    assert_eq!(*status, finished);
                    finished += 1;
                }
            }
        }
        assert_eq!(at, pushed.len());
        assert_eq!(dropped, log.dropped_bytes());
        assert_eq!(finished, ends);
    }

    #[test]
    fn drop_merging_keeps_the_log_short() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Drop, 1024, dir.path()));
        let mut longest = 0;
        for _ in 0..100_000 {
            push_apart(&log, b"0123456789");
            longest = longest.max(log.lock().entries.len());
        }
        // At most 102 chunks fit in memory, plus one merged `Dropped` entry before them.
        assert!(longest <= 103, "the log grew to {longest} entries");
        assert_eq!(log.dropped_bytes() + log.pending_bytes(), 1_000_000);
        let entries = all(&log);
        assert!(matches!(
            entries[0].kind,
            EntryKind::Dropped { from_total: 0, to_total } if to_total == log.dropped_bytes()
        ));
        assert_eq!(log.last_seq(), 100_000);
    }

    #[test]
    fn drop_keeps_the_tail_of_a_chunk_larger_than_memory() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Drop, 4, dir.path()));
        push(&log, b"ab");
        push(&log, b"0123456789");
        let entries = all(&log);
        // "ab" (seq 1) and the chunk's first 6 bytes (seq 2) merged into one entry, seq 2.
        assert_eq!(seqs(&entries), vec![2, 3]);
        assert!(matches!(
            entries[0].kind,
            EntryKind::Dropped {
                from_total: 0,
                to_total: 8
            }
        ));
        assert_eq!(output(&entries[1]), b"6789");
        assert_eq!((log.pending_bytes(), log.dropped_bytes()), (4, 8));
    }

    #[test]
    fn drops_never_merge_into_an_entry_already_sent() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Drop, 4, dir.path()));
        push(&log, b"ab"); // 1
        push(&log, b"cdef"); // drops 1 in place: Dropped(0, 2) at seq 1; "cdef" is 2
        log.sent_through(1);
        push(&log, b"gh"); // drops 2: a new Dropped(2, 6), not merged into the sent one
        let entries = all(&log);
        assert_eq!(seqs(&entries), vec![1, 2, 3]);
        assert!(matches!(
            entries[0].kind,
            EntryKind::Dropped {
                from_total: 0,
                to_total: 2
            }
        ));
        assert!(matches!(
            entries[1].kind,
            EntryKind::Dropped {
                from_total: 2,
                to_total: 6
            }
        ));
        assert_eq!(output(&entries[2]), b"gh");
    }

    #[test]
    fn read_from_finds_entries_across_seq_gaps() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Drop, 4, dir.path()));
        log.push_finished(Uuid::nil(), 0); // 1
        push_apart(&log, b"ab"); // 2
        push_apart(&log, b"cd"); // 3
        push_apart(&log, b"0123456789"); // drops 2, 3 and 6 bytes (merged as 4); "6789" is 5
        log.push_finished(Uuid::nil(), 1); // 6
        push_apart(&log, b"xy"); // drops 5, merged with 4 and keeping seq 5; "xy" is 7
        let entries = all(&log);
        assert_eq!(seqs(&entries), vec![1, 5, 6, 7]);
        assert!(matches!(
            entries[1].kind,
            EntryKind::Dropped {
                from_total: 0,
                to_total: 14
            }
        ));
        assert_eq!(log.last_seq(), 7);
        for (from, expected) in [
            (2, vec![5, 6, 7]),
            (5, vec![5, 6, 7]),
            (6, vec![6, 7]),
            (7, vec![7]),
            (8, vec![]),
        ] {
            assert_eq!(
                seqs(&log.read_from(from, u64::MAX).expect("read")),
                expected
            );
        }
        // From 5 with no room for output: the marker alone, then the command end (0 bytes).
        assert_eq!(seqs(&log.read_from(5, 0).expect("read")), vec![5, 6]);
        log.ack(4);
        assert_eq!(log.first_unacked(), 5);
        log.ack(5);
        assert_eq!(log.first_unacked(), 6);
        assert_eq!(log.pending_bytes(), 2);
    }

    #[test]
    fn spool_takes_everything_and_reads_it_back_in_order() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Spool, 64 << 10, dir.path()));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut pushed = Vec::new();
        while pushed.len() < 10 << 20 {
            let chunk = rng.chunk(65536);
            push(&log, &chunk); // never waits: the spool has room
            pushed.extend_from_slice(&chunk);
            assert!(log.lock().memory <= 64 << 10);
        }
        assert_eq!(log.pending_bytes(), pushed.len() as u64);
        assert_eq!(log.dropped_bytes(), 0);
        assert!(spool_len(dir.path()) > 9 << 20);
        assert!(read_all_output(&log, 1) == pushed, "spooled output differs");

        log.ack(log.last_seq());
        assert_eq!(log.pending_bytes(), 0);
        assert!(log.is_empty());
        assert_eq!(spool_len(dir.path()), 0);
    }

    #[test]
    fn spool_keeps_the_rest_readable_after_a_partial_ack() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Spool, 64 << 10, dir.path()));
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut pushed = Vec::new();
        let mut ends = Vec::new(); // (seq, stream offset after it)
        for _ in 0..2 {
            while pushed.len() < 4 << 20 {
                let chunk = rng.chunk(20000);
                // Each an entry of its own, so that every seq ends where a chunk does.
                push_apart(&log, &chunk);
                pushed.extend_from_slice(&chunk);
                ends.push((log.last_seq(), pushed.len()));
            }
            // Acknowledge about half (this punches holes in the file), then push more: memory
            // entries now come after spooled ones.
            let (seq, upto) = ends[ends.len() / 2];
            log.ack(seq);
            pushed.drain(..upto);
            ends = ends
                .into_iter()
                .filter(|(s, _)| *s > seq)
                .map(|(s, e)| (s, e - upto))
                .collect();
            assert_eq!(log.pending_bytes(), pushed.len() as u64);
            assert!(read_all_output(&log, 1) == pushed, "spooled output differs");
            if log.lock().spool.can_punch {
                // The acknowledged half went back to the filesystem (give or take a few blocks
                // of alignment and metadata).
                let meta = std::fs::metadata(dir.path().join("spool")).expect("spool file");
                let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
                assert!(meta.len() > 3 << 20);
                assert!(
                    allocated <= log.pending_bytes() + (256 << 10),
                    "{allocated} bytes allocated for {} pending",
                    log.pending_bytes()
                );
            }
        }
        log.ack(log.last_seq());
        assert_eq!(spool_len(dir.path()), 0);
    }

    #[tokio::test]
    async fn spool_at_its_limit_blocks_until_acked() {
        let dir = tempdir();
        let log = OutputLog::new(LogSettings {
            spool_quota: crate::spool::SpoolQuota::new(8),
            ..settings(BufferingMode::Spool, 4, dir.path())
        });
        push(&log, b"abcdefgh"); // too big for memory: spooled, and the spool is full
        push(&log, b"ijkl"); // memory, now full too
        let log2 = log.clone();
        let writer = tokio::spawn(async move {
            log2.push_output(Uuid::nil(), StreamKind::Stdout, Bytes::from_static(b"m"))
                .await;
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        log.ack(1); // frees the spool (memory stays full): the file is emptied and reused
        writer.await.expect("writer task");
        let entries = all(&log);
        assert_eq!(seqs(&entries), vec![2, 3]);
        assert_eq!(output(&entries[1]), b"m");
        assert_eq!(spool_len(dir.path()), 1);
    }

    /// A job's log spools everything, whatever the session's mode, so output nobody reads
    /// never holds the memory a blocking foreground needs; its small writes still make few
    /// entries, and what it spooled reads back in order.
    #[test]
    fn a_job_log_takes_none_of_the_session_memory() {
        let dir = tempdir();
        let fg = OutputLog::new(settings(BufferingMode::Block, 8, dir.path()));
        let job = fg.unattended_like(dir.path().join("job.spool"));
        let quota = fg.lock().quota.clone();
        for _ in 0..100 {
            push(&job, b"abc");
        }
        assert_eq!(quota.held(), 0);
        assert_eq!(job.pending_bytes(), 300);
        assert_eq!(all(&job).len(), 1, "contiguous spooled writes coalesce");
        // The foreground still has all of the session's memory.
        push_apart(&fg, b"12345678");
        assert_eq!(quota.held(), 8);
        assert_eq!(read_all_output(&job, 0), b"abc".repeat(100));
        fg.set_mode(BufferingMode::Drop);
        assert_eq!(
            job.mode(),
            BufferingMode::Spool,
            "the session's mode is not the job's"
        );
    }

    #[tokio::test]
    async fn the_logs_of_a_session_share_one_spool_limit() {
        let dir = tempdir();
        let fg = OutputLog::new(LogSettings {
            spool_quota: crate::spool::SpoolQuota::new(8),
            ..settings(BufferingMode::Spool, 4, dir.path())
        });
        // A background job's log, made like the foreground one, with a file of its own.
        let job = OutputLog::new(fg.settings_like(dir.path().join("job.spool")));
        push(&fg, b"abcdef"); // spooled: 6 of the session's 8 bytes
        push(&job, b"ijkl"); // fits the job's memory
        let job2 = job.clone();
        let writer = tokio::spawn(async move {
            // Too big for the job's memory, and only 2 bytes of spool are left.
            job2.push_output(Uuid::nil(), StreamKind::Stdout, Bytes::from_static(b"mnop"))
                .await;
        });
        tokio::task::yield_now().await;
        assert!(
            !writer.is_finished(),
            "the job may not spool past the session's limit"
        );
        let held = fg.lock().spool.quota().used();
        assert_eq!(held, 6);
        job.ack(job.last_seq()); // the job's own receiver frees its memory
        writer.await.expect("writer task");
        // A log that goes away gives its spool space back.
        drop(job);
        fg.ack(fg.last_seq());
        assert_eq!(fg.lock().spool.quota().used(), 0);
    }

    #[tokio::test]
    async fn unwritable_spool_behaves_as_block() {
        let dir = tempdir();
        let log = OutputLog::new(LogSettings {
            spool_path: dir.path().join("missing").join("spool"),
            ..settings(BufferingMode::Spool, 4, dir.path())
        });
        push(&log, b"abcdef"); // the spool fails; memory is below the cap, so it goes there
        let log2 = log.clone();
        let writer = tokio::spawn(async move {
            log2.push_output(Uuid::nil(), StreamKind::Stdout, Bytes::from_static(b"g"))
                .await;
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        log.ack(1);
        writer.await.expect("writer task");
        assert_eq!(output(&all(&log)[0]), b"g");
    }

    #[tokio::test]
    async fn switching_from_block_to_drop_releases_a_blocked_writer() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Block, 4, dir.path()));
        push(&log, b"12345");
        let log2 = log.clone();
        let writer = tokio::spawn(async move {
            log2.push_output(Uuid::nil(), StreamKind::Stdout, Bytes::from_static(b"6"))
                .await;
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        log.set_mode(BufferingMode::Drop);
        assert_eq!(log.mode(), BufferingMode::Drop);
        writer.await.expect("writer task");
        let entries = all(&log);
        assert_eq!(seqs(&entries), vec![1, 2]);
        assert!(matches!(
            entries[0].kind,
            EntryKind::Dropped {
                from_total: 0,
                to_total: 5
            }
        ));
        assert_eq!(output(&entries[1]), b"6");
        assert_eq!((log.pending_bytes(), log.dropped_bytes()), (1, 5));
    }

    #[test]
    fn drop_after_spool_discards_memory_only() {
        let dir = tempdir();
        let log = OutputLog::new(settings(BufferingMode::Spool, 4, dir.path()));
        push(&log, b"abcd"); // memory
        push(&log, b"efgh"); // spool
        log.set_mode(BufferingMode::Drop);
        push(&log, b"ij"); // drops "abcd", not the spooled output
        let entries = all(&log);
        assert_eq!(seqs(&entries), vec![1, 2, 3]);
        assert!(matches!(entries[0].kind, EntryKind::Dropped { .. }));
        assert_eq!(output(&entries[1]), b"efgh");
        assert_eq!(output(&entries[2]), b"ij");
        assert_eq!((log.pending_bytes(), log.dropped_bytes()), (6, 4));
    }
}

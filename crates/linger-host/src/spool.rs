//! The spool file behind the `spool` buffering mode: output that does not fit in memory is
//! appended here and read back by offset when the daemon wants it.
//!
//! Spooled chunks are only ever appended, and acknowledgements only ever remove the oldest
//! entries, so the unacknowledged spooled data is always one contiguous region at the end of
//! the file: `[end - held, end)`. Everything before it is dead and is given back to the
//! filesystem, by truncating the file when the region is empty and by punching holes
//! otherwise.
//!
//! The I/O is plain synchronous system calls, made while the log's mutex is held. That is
//! deliberate: the host runs a current_thread runtime that has nothing better to do meanwhile,
//! the writes and reads hit the page cache (microseconds, no fsync: the spool does not have to
//! survive the host), and doing them under the lock keeps file offsets and log entries
//! consistent without any await in between. `tokio::fs` would only move the same calls to a
//! blocking thread and copy the data once more.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};

/// Holes are punched from this alignment on. A punch frees only the filesystem blocks it
/// covers entirely (it merely zeroes the others), so starting each punch at the previous
/// one's end would never free the blocks straddling the boundaries. Starting a little earlier
/// re-punches some hole, which costs nothing; this is a multiple of every common block size.
const PUNCH_ALIGN: u64 = 64 * 1024;

/// The spool space of one session, shared by all its logs (the foreground one and each
/// background job's): `spool_limit` bounds what they occupy together.
pub struct SpoolQuota {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
}

impl SpoolQuota {
    pub fn new(limit: u64) -> std::sync::Arc<SpoolQuota> {
        std::sync::Arc::new(SpoolQuota {
            limit,
            used: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Bytes the session's spool files occupy now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub(crate) struct Spool {
    path: PathBuf,
    /// The session's spool space, which this file takes part of.
    quota: std::sync::Arc<SpoolQuota>,
    /// What this file occupies as far as the quota knows.
    counted: u64,
    /// Opened (and emptied) on first use: most sessions never spool.
    file: Option<File>,
    /// Offset where the next chunk goes.
    end: u64,
    /// Bytes of unacknowledged spooled data, i.e. the region `[end - held, end)`.
    held: u64,
    /// Everything before this offset has been given back to the filesystem; the file
    /// occupies `end - reclaimed` bytes, which is what the limit bounds.
    reclaimed: u64,
    /// Cleared when the filesystem cannot punch holes: the space then comes back only when
    /// the spool empties.
    pub(crate) can_punch: bool,
    /// Set after a failed write, so a full disk is reported once rather than per chunk.
    failing: bool,
    /// Set after a failed hole punch, for the same reason.
    punch_warned: bool,
}

impl Spool {
    pub(crate) fn quota(&self) -> std::sync::Arc<SpoolQuota> {
        self.quota.clone()
    }

    pub(crate) fn new(path: PathBuf, quota: std::sync::Arc<SpoolQuota>) -> Self {
        Spool {
            path,
            quota,
            counted: 0,
            file: None,
            end: 0,
            held: 0,
            reclaimed: 0,
            can_punch: true,
            failing: false,
            punch_warned: false,
        }
    }

    /// Whether the last write failed (a full disk): the log blocks meanwhile.
    pub(crate) fn failing(&self) -> bool {
        self.failing
    }

    /// Bytes of unacknowledged data in the file.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Whether `len` more bytes stay within the limit. Acknowledged space not given back yet
    /// counts, as the disk still holds it.
    pub(crate) fn has_room(&self, len: u64) -> bool {
        self.quota.used().saturating_add(len) <= self.quota.limit
    }

    /// Tells the quota what the file occupies now (after it grew or gave space back).
    fn count(&mut self) {
        use std::sync::atomic::Ordering;
        let now = self.end - self.reclaimed;
        if now >= self.counted {
            self.quota
                .used
                .fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            self.quota
                .used
                .fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }

    /// Appends `data`, answering the offset it was written at; `None` if it could not be
    /// written, in which case the caller falls back to blocking (logged once per failure spell).
    pub(crate) fn append(&mut self, data: &[u8]) -> Option<u64> {
        match self.write(data) {
            Ok(offset) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!(path = %self.path.display(), "the spool file is writable again");
                }
                Some(offset)
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        path = %self.path.display(),
                        "cannot write the spool file, blocking output until the daemon catches up: {e}"
                    );
                }
                None
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<u64> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    // A leftover from an earlier host holds nothing this log refers to.
                    .truncate(true)
                    .mode(0o600)
                    .open(&self.path)?,
            ),
        };
        let offset = self.end;
        // A partial write leaves garbage past `end`, which the next write overwrites.
        file.write_all_at(data, offset)?;
        self.end += data.len() as u64;
        self.count();
        self.held += data.len() as u64;
        Ok(offset)
    }

    /// Reads `len` bytes written at `offset`.
    pub(crate) fn read(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("the spool file was never written"))?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Forgets the oldest `len` bytes of spooled data (acknowledged). Call
    /// [`Spool::reclaim`] once a whole acknowledgement has been applied.
    pub(crate) fn release(&mut self, len: u64) {
        debug_assert!(len <= self.held, "releasing more than the spool holds");
        self.held -= len.min(self.held);
    }

    /// Gives the space of released data back to the filesystem.
    pub(crate) fn reclaim(&mut self) {
        let Some(file) = &self.file else { return };
        if self.held == 0 {
            if self.end == 0 {
                return;
            }
            if let Err(e) = file.set_len(0) {
                tracing::warn!(path = %self.path.display(), "cannot truncate the spool file: {e}");
            }
            // Even if truncating failed, nothing in the file is needed any more: start over
            // at 0 and overwrite rather than grow.
            self.end = 0;
            self.reclaimed = 0;
            self.count();
            return;
        }
        let live = self.end - self.held;
        if !self.can_punch || live == self.reclaimed {
            return;
        }
        let start = self.reclaimed - self.reclaimed % PUNCH_ALIGN;
        let (Ok(offset), Ok(len)) = (i64::try_from(start), i64::try_from(live - start)) else {
            return;
        };
        // KEEP_SIZE: the offsets of the live data must not move. A block only partly inside
        // the range is zeroed there rather than freed, and the range holds dead data only.
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate(file, flags, offset, len) {
            Ok(()) => {
                self.reclaimed = live;
                self.count();
            }
            Err(Errno::EOPNOTSUPP) => {
                tracing::debug!("the spool's filesystem cannot punch holes; space comes back when the spool empties");
                self.can_punch = false;
            }
            // Retried at the next acknowledgement; until then the space counts as used.
            Err(e) => {
                if !self.punch_warned {
                    self.punch_warned = true;
                    tracing::warn!(path = %self.path.display(), "cannot free space in the spool file: {e}");
                }
            }
        }
    }
}

impl Drop for Spool {
    /// The log is gone (a forgotten job, the session's end): its file no longer counts.
    fn drop(&mut self) {
        self.end = 0;
        self.reclaimed = 0;
        self.count();
    }
}

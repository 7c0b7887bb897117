//! The file trees of `linger copy`, on disk: [`plan`] walks the sources into copy items
//! and [`Plan::parts`] reads them as a stream of items and bytes; a [`TreeWriter`] writes
//! such a stream into a destination. The client uses the reader for uploads and the writer
//! for downloads; the session host the other way round. Neither side's network is here.
//!
//! The writer's invariant: nothing new appears under its destination name until it is
//! complete. Each new file, link and directory is built under a temporary name beside its
//! destination and renamed into place when its last byte (or last entry) has arrived; on
//! an error, or when the writer is dropped unfinished, the temporary entries are removed.

use std::io;
use std::path::{Path, PathBuf};

mod read;
mod write;

pub use read::{plan, Part, Parts, Plan};
pub use write::{TreeWriter, WriteOptions};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    // `err`, not `source`: the message says it already, and a chain would say it twice.
    #[error("{}: {}", .path.display(), io_text(.err))]
    Io { path: PathBuf, err: io::Error },
    #[error("{} is a directory (copy directories with -r)", .0.display())]
    IsDirectory(PathBuf),
    #[error("{} is not a directory, and copying several sources needs one", .0.display())]
    NotDirectory(PathBuf),
    #[error("{} is not a regular file, directory or symbolic link", .0.display())]
    Special(PathBuf),
    #[error("{} changed size while it was being copied", .0.display())]
    Changed(PathBuf),
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectoryInTheWay(PathBuf),
    #[error("{} is a directory, which a file cannot replace", .0.display())]
    DirectoryInTheWay(PathBuf),
    #[error("{} names no file to copy", .0.display())]
    NoName(PathBuf),
    #[error("the copy's stream is malformed: {0}")]
    Stream(String),
    #[error("the copy sent {0:?}, which is not one of the names asked for")]
    Unasked(String),
}

impl CopyError {
    fn io(path: &Path, err: io::Error) -> CopyError {
        CopyError::Io {
            path: path.to_path_buf(),
            err,
        }
    }
}

/// An I/O error's text without Rust's " (os error N)" suffix: "Permission denied".
fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Nanoseconds since the epoch of a file time, saturating.
fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn system_time(ns: i64) -> std::time::SystemTime {
    let epoch = std::time::UNIX_EPOCH;
    if ns >= 0 {
        epoch + std::time::Duration::from_nanos(ns as u64)
    } else {
        epoch - std::time::Duration::from_nanos(ns.unsigned_abs())
    }
}

/// The process's file-creation mask (read from /proc, since umask(2) can only be read by
/// setting it, which would race with other threads creating files).
pub fn umask_of(pid: Option<u32>) -> u32 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

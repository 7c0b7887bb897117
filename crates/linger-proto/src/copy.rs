//! `linger copy`'s file trees on the wire (docs/PROTOCOL.md §17): an item per file,
//! directory or symbolic link, depth first, each file's bytes following its item as data
//! frames. The rules an item stream must keep are here, free of I/O, so the side that
//! writes a tree (the session host for an upload, the client for a download) refuses the
//! same malformed or hostile streams.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Stream bytes a sender may have sent beyond what the receiver has reported taken
/// (`CopyProgress`). A stream's bytes are its file content plus [`COPY_ITEM_COST`] per item,
/// so a tree of empty files is paced as well as one big file.
pub const COPY_WINDOW: u64 = 8 * 1024 * 1024;

/// What an item counts for in the window.
pub const COPY_ITEM_COST: u64 = 512;

/// How far past the last progress it reported a receiver lets a sender go before it fails
/// the copy: the window, and the chunk a sender may begin while there is room.
pub const COPY_SEND_LIMIT: u64 = COPY_WINDOW + COPY_CHUNK as u64;

/// Most bytes of one `CopyData`.
pub const COPY_CHUNK: usize = 256 * 1024;

/// How often, in bytes taken, a receiver reports its progress (and so opens the window).
pub const COPY_PROGRESS_EVERY: u64 = COPY_WINDOW / 4;

/// One entry of a copied tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyItem {
    /// Where the entry goes, relative to the copy's destination: names joined by `/`, as
    /// bytes (Linux names need not be UTF-8). One name for a top-level entry; a longer path
    /// names an entry inside the directory item sent before it.
    pub path: Bytes,
    pub kind: CopyKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification and access times, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub atime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyKind {
    /// A regular file: exactly `size` bytes of `CopyData` follow.
    File {
        size: u64,
    },
    Directory,
    /// A symbolic link, copied as a link (never followed inside a tree).
    Symlink {
        target: Bytes,
    },
}

/// What a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySummary {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// The names of an item's path, or why it is not one: each name non-empty, not `.` or
/// `..`, without NUL; at most 4096 bytes in all (PATH_MAX).
pub fn item_names(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.is_empty() || path.len() > 4096 {
        return Err(format!(
            "an item path of {} bytes (1 to 4096 allowed)",
            path.len()
        ));
    }
    let names: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    for name in &names {
        if !is_plain_name(name) {
            return Err(format!(
                "item path {:?} has a name that is empty, `.`, `..` or holds NUL",
                String::from_utf8_lossy(path)
            ));
        }
    }
    Ok(names)
}

/// A name that stays where it is put: not empty, `.` or `..`, no `/` or NUL, at most 255
/// bytes.
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// Checks the order of an item stream: each item's parent is the directory item open at
/// that point (depth first), each file's bytes arrive in full before the next item, and a
/// destination taken `As` a new name gets one top-level item. I/O-free; the writer acts on
/// what it answers.
#[derive(Debug, Default)]
pub struct StreamRules {
    /// Paths of the directories open, outermost first.
    open: Vec<Vec<u8>>,
    /// Bytes still due for the current file.
    due: u64,
    tops: u64,
    one_top: bool,
}

/// What an accepted item means for the tree being written.
#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    /// Directories that end before this item, innermost first (each is complete).
    pub closed: usize,
    /// Whether the item is a top-level one.
    pub top: bool,
}

impl StreamRules {
    /// Rules for a stream whose destination takes exactly one top-level item (a new name).
    pub fn single() -> StreamRules {
        StreamRules {
            one_top: true,
            ..StreamRules::default()
        }
    }

    pub fn item(&mut self, item: &CopyItem) -> Result<Placement, String> {
        if self.due > 0 {
            return Err(format!(
                "an item came {} bytes before the end of the file before it",
                self.due
            ));
        }
        let names = item_names(&item.path)?;
        let parent = &item.path[..item.path.len() - names[names.len() - 1].len()];
        let parent = parent.strip_suffix(b"/").unwrap_or(parent);
        let mut closed = 0;
        while let Some(last) = self.open.last() {
            if last.as_slice() == parent {
                break;
            }
            self.open.pop();
            closed += 1;
        }
        if self.open.len() != names.len() - 1 {
            return Err(format!(
                "item {:?} does not follow its directory",
                String::from_utf8_lossy(&item.path)
            ));
        }
        let top = names.len() == 1;
        if top {
            self.tops += 1;
            if self.one_top && self.tops > 1 {
                return Err("a second top-level item for a destination that takes one".into());
            }
        }
        match &item.kind {
            CopyKind::File { size } => self.due = *size,
            CopyKind::Directory => self.open.push(item.path.to_vec()),
            CopyKind::Symlink { target } => {
                if target.is_empty() || target.contains(&0) {
                    return Err("a symbolic link with an empty target or one holding NUL".into());
                }
            }
        }
        Ok(Placement { closed, top })
    }

    /// `len` bytes of the current file arrived.
    pub fn data(&mut self, len: u64) -> Result<(), String> {
        if len > self.due {
            return Err(format!("{len} bytes of data where {} were due", self.due));
        }
        self.due -= len;
        Ok(())
    }

    /// Whether the current file has all its bytes.
    pub fn file_complete(&self) -> bool {
        self.due == 0
    }

    /// The stream ended: how many directories that closes, or why it may not end here.
    pub fn end(&mut self) -> Result<usize, String> {
        if self.due > 0 {
            return Err(format!(
                "the copy ended {} bytes short of a file's end",
                self.due
            ));
        }
        let closed = self.open.len();
        self.open.clear();
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(path: &str, kind: CopyKind) -> CopyItem {
        CopyItem {
            path: Bytes::copy_from_slice(path.as_bytes()),
            kind,
            mode: 0o644,
            mtime_ns: 0,
            atime_ns: 0,
        }
    }

    fn dir(path: &str) -> CopyItem {
        item(path, CopyKind::Directory)
    }

    fn file(path: &str, size: u64) -> CopyItem {
        item(path, CopyKind::File { size })
    }

    #[test]
    fn names_that_could_leave_the_destination_are_refused() {
        for bad in [
            "", "/etc", "a//b", "a/", "..", "a/../b", ".", "a/./b", "a\0b",
        ] {
            assert!(item_names(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(item_names(b"a/b c/d").unwrap(), [&b"a"[..], b"b c", b"d"]);
        assert!(item_names(&[b'x'; 4097]).is_err());
        assert!(!is_plain_name(&[b'x'; 256]));
    }

    #[test]
    fn a_depth_first_stream_is_taken_and_directories_close_in_order() {
        let mut r = StreamRules::default();
        assert_eq!(
            r.item(&dir("d")).unwrap(),
            Placement {
                closed: 0,
                top: true
            }
        );
        assert_eq!(
            r.item(&dir("d/e")).unwrap(),
            Placement {
                closed: 0,
                top: false
            }
        );
        r.item(&file("d/e/f", 3)).unwrap();
        r.data(2).unwrap();
        assert!(!r.file_complete());
        r.data(1).unwrap();
        assert!(r.file_complete());
        // Back up to d: e closes.
        assert_eq!(
            r.item(&file("d/g", 0)).unwrap(),
            Placement {
                closed: 1,
                top: false
            }
        );
        // A new top-level item closes d.
        assert_eq!(
            r.item(&file("h", 0)).unwrap(),
            Placement {
                closed: 1,
                top: true
            }
        );
        assert_eq!(r.end().unwrap(), 0);
    }

    #[test]
    fn out_of_order_and_short_streams_are_refused() {
        let mut r = StreamRules::default();
        assert!(r.item(&file("d/f", 1)).is_err(), "no directory d is open");
        let mut r = StreamRules::default();
        r.item(&file("f", 4)).unwrap();
        r.data(1).unwrap();
        assert!(r.item(&file("g", 1)).is_err(), "f is 3 bytes short");
        assert!(r.data(4).is_err(), "more than f holds");
        assert!(r.end().is_err());
        let mut r = StreamRules::default();
        r.item(&file("f", 0)).unwrap();
        assert!(
            r.item(&file("f/x", 0)).is_err(),
            "a file is not a directory"
        );
        let mut r = StreamRules::single();
        r.item(&file("a", 0)).unwrap();
        assert!(r.item(&file("b", 0)).is_err(), "one top-level item only");
        let mut r = StreamRules::default();
        let link = item(
            "l",
            CopyKind::Symlink {
                target: Bytes::new(),
            },
        );
        assert!(r.item(&link).is_err());
    }
}

//! Reading sources into a copy's item stream.

use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use linger_proto::copy::{CopyItem, CopyKind, COPY_CHUNK};

use crate::{nanos, CopyError};

/// What a copy will send, walked before anything is sent: its total is known up front
/// (for a progress bar), and a source that cannot be copied fails the copy before any
/// byte moves.
#[derive(Debug)]
pub struct Plan {
    entries: Vec<(PathBuf, CopyItem)>,
    /// Bytes of file content.
    pub bytes: u64,
    pub files: u64,
}

/// Walks `sources`. A source that is a symbolic link is followed (it was named); links
/// inside a directory are copied as links. Directories need `recursive`.
pub fn plan(sources: &[PathBuf], recursive: bool) -> Result<Plan, CopyError> {
    let mut plan = Plan {
        entries: Vec::new(),
        bytes: 0,
        files: 0,
    };
    for source in sources {
        let meta = fs::metadata(source).map_err(|e| CopyError::io(source, e))?;
        let name = top_name(source)?;
        if meta.is_dir() && !recursive {
            return Err(CopyError::IsDirectory(source.clone()));
        }
        plan.add(source, name, &meta)?;
    }
    Ok(plan)
}

/// The name a source gets at its destination: its last component (`.` and `..` resolved).
fn top_name(source: &Path) -> Result<Vec<u8>, CopyError> {
    if let Some(name) = source.file_name() {
        return Ok(name.as_bytes().to_vec());
    }
    let real = fs::canonicalize(source).map_err(|e| CopyError::io(source, e))?;
    real.file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| CopyError::NoName(source.to_path_buf()))
}

impl Plan {
    fn add(&mut self, source: &Path, rel: Vec<u8>, meta: &Metadata) -> Result<(), CopyError> {
        let file_type = meta.file_type();
        let kind = if file_type.is_file() {
            self.bytes = self.bytes.saturating_add(meta.len());
            self.files += 1;
            CopyKind::File { size: meta.len() }
        } else if file_type.is_dir() {
            CopyKind::Directory
        } else if file_type.is_symlink() {
            let target = fs::read_link(source).map_err(|e| CopyError::io(source, e))?;
            CopyKind::Symlink {
                target: Bytes::copy_from_slice(target.as_os_str().as_bytes()),
            }
        } else {
            return Err(CopyError::Special(source.to_path_buf()));
        };
        let is_dir = matches!(kind, CopyKind::Directory);
        self.entries.push((
            source.to_path_buf(),
            CopyItem {
                path: Bytes::from(rel.clone()),
                kind,
                mode: meta.permissions().mode() & 0o7777,
                mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
                atime_ns: nanos(meta.atime(), meta.atime_nsec()),
            },
        ));
        if is_dir {
            let mut children: Vec<_> = fs::read_dir(source)
                .map_err(|e| CopyError::io(source, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| CopyError::io(source, e))?;
            children.sort();
            for child in children {
                let path = source.join(&child);
                let meta = fs::symlink_metadata(&path).map_err(|e| CopyError::io(&path, e))?;
                let mut child_rel = rel.clone();
                child_rel.push(b'/');
                child_rel.extend_from_slice(child.as_bytes());
                self.add(&path, child_rel, &meta)?;
            }
        }
        Ok(())
    }

    /// The stream: each item, each file's item followed by its bytes.
    pub fn parts(self) -> Parts {
        Parts {
            entries: self.entries.into_iter(),
            current: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Item(CopyItem),
    Data(Bytes),
}

/// The item stream of a [`Plan`], reading each file as it comes. A file that became
/// shorter than planned fails the copy; one that grew is sent as planned.
pub struct Parts {
    entries: std::vec::IntoIter<(PathBuf, CopyItem)>,
    /// The file being read: its path and the bytes still due.
    current: Option<(File, PathBuf, u64)>,
}

impl Iterator for Parts {
    type Item = Result<Part, CopyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((file, path, left)) = self.current.as_mut() {
            let mut chunk = vec![0u8; (*left).min(COPY_CHUNK as u64) as usize];
            let result = match file.read(&mut chunk) {
                Ok(0) => Err(CopyError::Changed(path.clone())),
                Ok(n) => {
                    chunk.truncate(n);
                    *left -= n as u64;
                    Ok(Part::Data(Bytes::from(chunk)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return self.next(),
                Err(e) => Err(CopyError::io(path, e)),
            };
            if result.is_err() || *left == 0 {
                self.current = None;
            }
            return Some(result);
        }
        let (path, item) = self.entries.next()?;
        if let CopyKind::File { size } = item.kind {
            match File::open(&path) {
                Ok(file) if size > 0 => self.current = Some((file, path, size)),
                Ok(_) => {}
                Err(e) => return Some(Err(CopyError::io(&path, e))),
            }
        }
        Some(Ok(Part::Item(item)))
    }
}

//! Writing a copy's item stream into a destination.

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use linger_proto::copy::{CopyItem, CopyKind, CopySummary, StreamRules};

use crate::{system_time, CopyError};

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Keep the items' modes (setuid bits included) and times (`-p`). Otherwise a new
    /// entry's mode is the item's filtered by `umask`, a replaced file keeps its own mode,
    /// and times are the time of writing.
    pub preserve: bool,
    pub umask: u32,
    /// Top-level names the stream may use when the destination is a directory (a download
    /// checks that the server sends what was asked for, not a name of its choosing).
    pub expect_names: Option<Vec<Vec<u8>>>,
}

/// Where the stream's top-level items go.
enum Target {
    /// Into this existing directory, under their own names.
    Into(PathBuf),
    /// The single top-level item becomes this path.
    As(PathBuf),
}

/// A directory of the stream that is open (its entries may still come).
struct OpenDir {
    /// Where its entries are written now.
    at: PathBuf,
    /// Its name once complete, when it is new (built at `at`, a temporary name).
    rename_to: Option<PathBuf>,
    item: CopyItem,
    existed: bool,
}

/// The file whose bytes are arriving, at its temporary name.
struct OpenFile {
    file: File,
    temp: PathBuf,
    to: PathBuf,
    item: CopyItem,
    /// The mode of the file it replaces, kept without `preserve`.
    replaced_mode: Option<u32>,
}

pub struct TreeWriter {
    target: Target,
    options: WriteOptions,
    rules: StreamRules,
    open: Vec<OpenDir>,
    file: Option<OpenFile>,
    summary: CopySummary,
    finished: bool,
}

impl TreeWriter {
    /// A writer into `destination`: an existing directory takes the items under their
    /// names; otherwise (only when not `several`) the one top-level item takes its name.
    pub fn create(
        destination: &Path,
        several: bool,
        options: WriteOptions,
    ) -> Result<TreeWriter, CopyError> {
        let target = match fs::metadata(destination) {
            Ok(m) if m.is_dir() => Target::Into(destination.to_path_buf()),
            Ok(_) if several => return Err(CopyError::NotDirectory(destination.to_path_buf())),
            Err(e) if several => return Err(CopyError::io(destination, e)),
            _ => {
                let parent = parent_of(destination);
                match fs::metadata(&parent) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(CopyError::NotDirectory(parent)),
                    Err(e) => return Err(CopyError::io(&parent, e)),
                }
                Target::As(destination.to_path_buf())
            }
        };
        let rules = match target {
            Target::As(_) => StreamRules::single(),
            Target::Into(_) => StreamRules::default(),
        };
        Ok(TreeWriter {
            target,
            options,
            rules,
            open: Vec::new(),
            file: None,
            summary: CopySummary::default(),
            finished: false,
        })
    }

    pub fn summary(&self) -> &CopySummary {
        &self.summary
    }

    pub fn item(&mut self, item: CopyItem) -> Result<(), CopyError> {
        let placement = self.rules.item(&item).map_err(CopyError::Stream)?;
        for _ in 0..placement.closed {
            self.close_dir()?;
        }
        let name = item
            .path
            .rsplit(|b| *b == b'/')
            .next()
            .unwrap_or(&item.path);
        let to = match (&self.target, self.open.last()) {
            (_, Some(dir)) => dir.at.join(std::ffi::OsStr::from_bytes(name)),
            (Target::As(path), None) => path.clone(),
            (Target::Into(dir), None) => {
                if let Some(expected) = &self.options.expect_names {
                    if !expected.iter().any(|e| e.as_slice() == name) {
                        return Err(CopyError::Unasked(
                            String::from_utf8_lossy(name).into_owned(),
                        ));
                    }
                }
                dir.join(std::ffi::OsStr::from_bytes(name))
            }
        };
        let existing = fs::symlink_metadata(&to).ok();
        match &item.kind {
            CopyKind::Directory => {
                let open = match existing {
                    Some(m) if m.is_dir() => OpenDir {
                        at: to,
                        rename_to: None,
                        item,
                        existed: true,
                    },
                    Some(_) => return Err(CopyError::NotADirectoryInTheWay(to)),
                    None => {
                        let temp = temporary_beside(&to);
                        fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&temp)
                            .map_err(|e| CopyError::io(&to, e))?;
                        OpenDir {
                            at: temp,
                            rename_to: Some(to),
                            item,
                            existed: false,
                        }
                    }
                };
                self.open.push(open);
                self.summary.directories += 1;
            }
            CopyKind::File { .. } => {
                if existing.as_ref().is_some_and(|m| m.is_dir()) {
                    return Err(CopyError::DirectoryInTheWay(to));
                }
                let temp = temporary_beside(&to);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&temp)
                    .map_err(|e| CopyError::io(&to, e))?;
                let replaced_mode = existing
                    .filter(|m| m.is_file())
                    .map(|m| m.permissions().mode() & 0o7777);
                self.file = Some(OpenFile {
                    file,
                    temp,
                    to,
                    item,
                    replaced_mode,
                });
                self.summary.files += 1;
                if self.rules.file_complete() {
                    self.close_file()?;
                }
            }
            CopyKind::Symlink { target } => {
                if existing.as_ref().is_some_and(|m| m.is_dir()) {
                    return Err(CopyError::DirectoryInTheWay(to));
                }
                let temp = temporary_beside(&to);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &temp)
                    .map_err(|e| CopyError::io(&to, e))?;
                if let Err(e) = fs::rename(&temp, &to) {
                    let _ = fs::remove_file(&temp);
                    return Err(CopyError::io(&to, e));
                }
                self.summary.symlinks += 1;
            }
        }
        Ok(())
    }

    /// Bytes of the current file.
    pub fn data(&mut self, data: &[u8]) -> Result<(), CopyError> {
        self.rules
            .data(data.len() as u64)
            .map_err(CopyError::Stream)?;
        let Some(open) = self.file.as_mut() else {
            return Err(CopyError::Stream("data outside a file".into()));
        };
        open.file
            .write_all(data)
            .map_err(|e| CopyError::io(&open.to, e))?;
        self.summary.bytes += data.len() as u64;
        if self.rules.file_complete() {
            self.close_file()?;
        }
        Ok(())
    }

    /// The stream ended: the open directories are complete and take their names.
    pub fn finish(mut self) -> Result<CopySummary, CopyError> {
        let closing = self.rules.end().map_err(CopyError::Stream)?;
        for _ in 0..closing {
            self.close_dir()?;
        }
        self.finished = true;
        Ok(self.summary.clone())
    }

    fn close_file(&mut self) -> Result<(), CopyError> {
        let Some(open) = self.file.take() else {
            return Ok(());
        };
        let result = (|| {
            let mode = if self.options.preserve {
                open.item.mode & 0o7777
            } else {
                open.replaced_mode
                    .unwrap_or(open.item.mode & 0o777 & !self.options.umask)
            };
            open.file.set_permissions(Permissions::from_mode(mode))?;
            if self.options.preserve {
                open.file.set_times(times_of(&open.item))?;
            }
            fs::rename(&open.temp, &open.to)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&open.temp);
            return Err(CopyError::io(&open.to, e));
        }
        Ok(())
    }

    fn close_dir(&mut self) -> Result<(), CopyError> {
        let Some(dir) = self.open.pop() else {
            return Ok(());
        };
        let result = (|| {
            let mode = match (self.options.preserve, dir.existed) {
                (true, _) => Some(dir.item.mode & 0o7777),
                (false, false) => Some(dir.item.mode & 0o777 & !self.options.umask),
                (false, true) => None,
            };
            if let Some(mode) = mode {
                fs::set_permissions(&dir.at, Permissions::from_mode(mode))?;
            }
            if self.options.preserve {
                File::open(&dir.at)?.set_times(times_of(&dir.item))?;
            }
            match &dir.rename_to {
                Some(to) => fs::rename(&dir.at, to),
                None => Ok(()),
            }
        })();
        if let Err(e) = result {
            if dir.rename_to.is_some() {
                let _ = fs::remove_dir_all(&dir.at);
            }
            return Err(CopyError::io(dir.rename_to.as_ref().unwrap_or(&dir.at), e));
        }
        Ok(())
    }
}

impl Drop for TreeWriter {
    /// Unfinished (an error, a cancelled copy): what was begun goes, so no destination
    /// name holds part of a file or tree.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(open) = self.file.take() {
            let _ = fs::remove_file(&open.temp);
        }
        for dir in self.open.drain(..).rev() {
            if dir.rename_to.is_some() {
                let _ = fs::remove_dir_all(&dir.at);
            }
        }
    }
}

fn times_of(item: &CopyItem) -> FileTimes {
    FileTimes::new()
        .set_accessed(system_time(item.atime_ns))
        .set_modified(system_time(item.mtime_ns))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh name in the same directory as `to` (so the rename stays on one file system),
/// hidden and marked as linger's.
fn temporary_beside(to: &Path) -> PathBuf {
    parent_of(to).join(format!(".linger-copy-{}", uuid::Uuid::new_v4().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plan, Part};
    use std::os::unix::fs::MetadataExt;

    fn write_all(
        dest: &Path,
        sources: &[PathBuf],
        options: WriteOptions,
    ) -> Result<CopySummary, CopyError> {
        let plan = plan(sources, true)?;
        let mut w = TreeWriter::create(dest, sources.len() > 1, options)?;
        for part in plan.parts() {
            match part? {
                Part::Item(i) => w.item(i)?,
                Part::Data(d) => w.data(&d)?,
            }
        }
        w.finish()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".linger-copy-") {
                found.push(name);
            }
            if e.file_type().unwrap().is_dir() {
                found.extend(leftovers(&e.path()));
            }
        }
        found
    }

    #[test]
    fn a_tree_arrives_whole_with_modes_times_and_links() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let top = src.path().join("tree");
        fs::create_dir_all(top.join("sub/deeper")).unwrap();
        fs::write(top.join("a.txt"), b"alpha").unwrap();
        fs::write(top.join("sub/deeper/big"), vec![7u8; 600_000]).unwrap();
        fs::write(top.join("empty"), b"").unwrap();
        fs::set_permissions(top.join("a.txt"), Permissions::from_mode(0o751)).unwrap();
        std::os::unix::fs::symlink("a.txt", top.join("link")).unwrap();
        let old = FileTimes::new().set_modified(system_time(1_000_000_000_123_456_789));
        File::options()
            .write(true)
            .open(top.join("a.txt"))
            .unwrap()
            .set_times(old)
            .unwrap();

        let options = WriteOptions {
            preserve: true,
            umask: 0o022,
            expect_names: None,
        };
        let s = write_all(dst.path(), std::slice::from_ref(&top), options).unwrap();
        assert_eq!(
            (s.files, s.directories, s.symlinks, s.bytes),
            (3, 3, 1, 600_005)
        );
        let got = dst.path().join("tree");
        assert_eq!(fs::read(got.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(
            fs::read(got.join("sub/deeper/big")).unwrap(),
            vec![7u8; 600_000]
        );
        assert_eq!(fs::read_link(got.join("link")).unwrap(), Path::new("a.txt"));
        let m = fs::metadata(got.join("a.txt")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o751);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 123_456_789));
        assert!(leftovers(dst.path()).is_empty());
    }

    #[test]
    fn without_preserve_new_modes_follow_the_umask_and_replaced_files_keep_theirs() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let f = src.path().join("f");
        fs::write(&f, b"new").unwrap();
        fs::set_permissions(&f, Permissions::from_mode(0o777)).unwrap();
        let options = WriteOptions {
            preserve: false,
            umask: 0o027,
            expect_names: None,
        };
        write_all(
            &dst.path().join("fresh"),
            std::slice::from_ref(&f),
            options.clone(),
        )
        .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dst.path().join("fresh")), 0o750);
        let kept = dst.path().join("kept");
        fs::write(&kept, b"old").unwrap();
        fs::set_permissions(&kept, Permissions::from_mode(0o600)).unwrap();
        write_all(&kept, &[f], options).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"new");
        assert_eq!(mode(&kept), 0o600);
    }

    #[test]
    fn a_stream_that_stops_early_leaves_nothing_under_any_name() {
        let dst = tempfile::tempdir().unwrap();
        let existing = dst.path().join("f");
        fs::write(&existing, b"precious").unwrap();
        let item = |path: &str, kind| CopyItem {
            path: bytes::Bytes::copy_from_slice(path.as_bytes()),
            kind,
            mode: 0o644,
            mtime_ns: 0,
            atime_ns: 0,
        };
        {
            let mut w = TreeWriter::create(dst.path(), true, WriteOptions::default()).unwrap();
            w.item(item("f", CopyKind::File { size: 10 })).unwrap();
            w.data(b"half").unwrap();
            // Dropped here, as a lost connection drops it.
        }
        assert_eq!(fs::read(&existing).unwrap(), b"precious");
        // A tree whose stream ends inside its last file.
        let mut w = TreeWriter::create(dst.path(), true, WriteOptions::default()).unwrap();
        w.item(item("d", CopyKind::Directory)).unwrap();
        w.item(item("d/x", CopyKind::File { size: 1 })).unwrap();
        w.data(b"x").unwrap();
        w.item(item("d/y", CopyKind::File { size: 2 })).unwrap();
        w.data(b"y").unwrap();
        assert!(matches!(w.finish(), Err(CopyError::Stream(_))));
        assert!(!dst.path().join("d").exists(), "no partial directory");
        assert!(leftovers(dst.path()).is_empty());
    }

    #[test]
    fn hostile_names_and_unasked_names_are_refused() {
        let dst = tempfile::tempdir().unwrap();
        let item = |path: &str| CopyItem {
            path: bytes::Bytes::copy_from_slice(path.as_bytes()),
            kind: CopyKind::File { size: 0 },
            mode: 0o644,
            mtime_ns: 0,
            atime_ns: 0,
        };
        let mut w = TreeWriter::create(dst.path(), true, WriteOptions::default()).unwrap();
        assert!(matches!(
            w.item(item("../escape")),
            Err(CopyError::Stream(_))
        ));
        let options = WriteOptions {
            expect_names: Some(vec![b"asked".to_vec()]),
            ..Default::default()
        };
        let mut w = TreeWriter::create(dst.path(), true, options).unwrap();
        assert!(matches!(
            w.item(item(".bashrc")),
            Err(CopyError::Unasked(_))
        ));
        w.item(item("asked")).unwrap();
        w.finish().unwrap();
        assert!(dst.path().join("asked").exists());
        // A link in the stream is never a way out: nothing may be written below it.
        let mut w = TreeWriter::create(dst.path(), true, WriteOptions::default()).unwrap();
        let link = CopyItem {
            kind: CopyKind::Symlink {
                target: bytes::Bytes::from_static(b"/etc"),
            },
            ..item("l")
        };
        w.item(link).unwrap();
        assert!(w.item(item("l/passwd")).is_err());
    }

    #[test]
    fn a_directory_source_needs_recursive_and_several_sources_need_a_directory() {
        let src = tempfile::tempdir().unwrap();
        assert!(matches!(
            plan(&[src.path().to_path_buf()], false),
            Err(CopyError::IsDirectory(_))
        ));
        let f = src.path().join("f");
        fs::write(&f, b"x").unwrap();
        let r = TreeWriter::create(&f, true, WriteOptions::default());
        assert!(matches!(r, Err(CopyError::NotDirectory(_))));
        let r = TreeWriter::create(&src.path().join("no/such"), false, WriteOptions::default());
        assert!(matches!(r, Err(CopyError::Io { .. })));
    }

    #[test]
    fn a_file_that_shrinks_while_read_fails_the_copy() {
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("f");
        fs::write(&f, vec![1u8; 1000]).unwrap();
        let plan = plan(std::slice::from_ref(&f), false).unwrap();
        fs::write(&f, vec![1u8; 10]).unwrap();
        let parts: Result<Vec<_>, _> = plan.parts().collect();
        assert!(matches!(parts, Err(CopyError::Changed(_))));
    }
}

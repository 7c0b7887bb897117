//! `linger copy [-r] [-p] SRC... DEST` (SPEC §15): files into sessions or out of one. The
//! session's host does its side's file I/O beside the shell, so a busy session takes part;
//! every new file appears under its name only once it is whole.

use std::io::IsTerminal;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use futures_util::StreamExt;
use linger::files::{TreeWriter, WriteOptions};
use linger::{Client, CopyProgress, CopySummary, Entry};

use crate::cli::CopyArgs;
use crate::report::{self, usage_hint};

/// Uploads in flight at once when SEL names several sessions.
const FAN_OUT: usize = 8;

/// A path as typed: in a session (`SEL:PATH`) or here.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Local(PathBuf),
    Remote { sel: String, path: Vec<u8> },
}

/// `SEL:PATH` when a colon comes before any slash, as scp reads it; `./a:b` stays local.
fn place(arg: &Path) -> Place {
    let bytes = arg.as_os_str().as_bytes();
    match bytes.iter().position(|b| *b == b':') {
        Some(colon) if colon > 0 && !bytes[..colon].contains(&b'/') => Place::Remote {
            sel: String::from_utf8_lossy(&bytes[..colon]).into_owned(),
            path: bytes[colon + 1..].to_vec(),
        },
        _ => Place::Local(arg.to_path_buf()),
    }
}

pub async fn run(client: &Client, args: CopyArgs, json: bool) -> Result<i32> {
    let mut places: Vec<Place> = args.paths.iter().map(|p| place(p)).collect();
    let dest = places
        .pop()
        .ok_or_else(|| report::usage("name what to copy and where"))?;
    let remote_sources = places
        .iter()
        .filter(|p| matches!(p, Place::Remote { .. }))
        .count();
    match dest {
        Place::Remote { sel, path } if remote_sources == 0 => {
            let sources: Vec<PathBuf> = places
                .into_iter()
                .filter_map(|p| match p {
                    Place::Local(p) => Some(p),
                    Place::Remote { .. } => None,
                })
                .collect();
            upload(client, &args, &sources, &sel, &path, json).await
        }
        Place::Remote { .. } => Err(usage_hint(
            "copying from one session to another is not supported",
            "copy to a local directory first, then from it",
        )),
        Place::Local(dest) if remote_sources == places.len() => {
            download(client, &args, places, &dest, json).await
        }
        Place::Local(_) if remote_sources == 0 => Err(usage_hint(
            "neither the sources nor the destination name a session",
            "write a path in a session as SEL:PATH, e.g. `linger copy ./app.conf web1:/etc/app/`",
        )),
        Place::Local(_) => Err(usage_hint(
            "the sources mix local paths and paths in a session",
            "copy from a session and from here in two commands",
        )),
    }
}

async fn upload(
    client: &Client,
    args: &CopyArgs,
    sources: &[PathBuf],
    sel: &str,
    dest: &[u8],
    json: bool,
) -> Result<i32> {
    // Walked once here so that a bad source fails before any session is touched.
    let total = linger::files::plan(sources, args.recursive)?.bytes;
    let entries = client.select(&[sel.to_string()])?;
    let bar = Bar::new(total * entries.len() as u64, json);
    let several = entries.len() > 1;
    let results = futures_util::stream::iter(entries.iter().map(|entry| {
        let bar = &bar;
        async move {
            let result = async {
                let plan = linger::files::plan(sources, args.recursive)?;
                let progress = bar.part();
                let copied = client
                    .copy_to(
                        entry,
                        dest,
                        plan,
                        sources.len() > 1,
                        args.preserve,
                        &progress,
                    )
                    .await;
                Ok::<_, anyhow::Error>(copied?)
            }
            .await;
            (entry, result)
        }
    }))
    .buffer_unordered(FAN_OUT)
    .collect::<Vec<_>>();
    let results = interruptible(results).await?;
    bar.finish();
    let mut failures = report::Failures::new(results.len(), "sessions");
    for (entry, result) in results {
        match result {
            Ok(summary) => said(entry, &summary, json),
            Err(e) if several => failures.record(&entry.name, e),
            Err(e) => failures.record(&entry.name, e.context(format!("copy to {}", entry.name))),
        }
    }
    failures.finish()?;
    Ok(0)
}

async fn download(
    client: &Client,
    args: &CopyArgs,
    sources: Vec<Place>,
    dest: &Path,
    json: bool,
) -> Result<i32> {
    let mut sel = None;
    let mut paths = Vec::new();
    for p in sources {
        if let Place::Remote { sel: s, path } = p {
            if sel.as_ref().is_some_and(|known| known != &s) {
                return Err(usage_hint(
                    "the sources name more than one session",
                    "copy from one session at a time",
                ));
            }
            sel = Some(s);
            paths.push(path);
        }
    }
    let sel = sel.ok_or_else(|| report::usage("name what to copy"))?;
    let mut entries = client.select(&[sel])?;
    let entry = match (entries.pop(), entries.is_empty()) {
        (Some(entry), true) => entry,
        _ => {
            return Err(usage_hint(
                "copy from one session at a time",
                "name it by Id or InstanceId",
            ))
        }
    };
    let options = WriteOptions {
        preserve: args.preserve,
        umask: linger::files::umask_of(None),
        expect_names: expected_names(&paths),
    };
    let writer = TreeWriter::create(dest, paths.len() > 1, options)?;
    let bar = Bar::new(0, json);
    let progress = bar.part();
    let copy = client.copy_from(&entry, &paths, args.recursive, writer, &progress);
    let copied = interruptible(copy).await?;
    bar.finish();
    match copied {
        Ok(summary) => {
            said(&entry, &summary, json);
            Ok(0)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("copy from {}", entry.name))),
    }
}

/// The top-level names a download may bring: each source's last name. None when one has
/// none that can be known here (`.`, `~`), and then any plain name is taken.
fn expected_names(paths: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| {
            let path = Path::new(std::ffi::OsStr::from_bytes(p));
            match path.file_name() {
                Some(name) if !p.starts_with(b"~") || p.contains(&b'/') => {
                    Some(name.to_os_string().into_vec())
                }
                _ => None,
            }
        })
        .collect()
}

/// Runs `work` unless Ctrl-C comes first: then it is dropped, which gives the copy up on
/// both sides (nothing partial stays under a destination name), and linger exits 130 as a
/// shell reports an interrupted program.
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::select! {
        done = work => return Ok(done),
        _ = tokio::signal::ctrl_c() => {}
    }
    // `work` is dropped by now: a download's local writer has removed its temporary files,
    // and the server gives up an upload when it sees the request cancelled or the
    // connection close.
    crate::say!("linger: copy interrupted; nothing partial was left under a destination name");
    std::process::exit(130);
}

fn said(entry: &Entry, s: &CopySummary, json: bool) {
    if json {
        report::out(&format!(
            "{}\n",
            serde_json::json!({
                "computer_name": entry.computer_name,
                "name": entry.name,
                "files": s.files,
                "directories": s.directories,
                "symlinks": s.symlinks,
                "bytes": s.bytes,
            })
        ));
    }
}

/// The progress bar on standard error when it is a terminal (none in scripts, pipes and
/// with --json): the bytes of every target together.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(total: u64, json: bool) -> Bar {
        if json || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{bytes:>10}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {eta}",
        );
        if let Ok(style) = style {
            bar.set_style(style);
        }
        Bar(Some(bar))
    }

    fn part(&self) -> BarPart<'_> {
        BarPart {
            bar: self.0.as_ref(),
            moved: AtomicU64::new(0),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// One copy's share of the bar.
struct BarPart<'a> {
    bar: Option<&'a indicatif::ProgressBar>,
    moved: AtomicU64,
}

impl CopyProgress for BarPart<'_> {
    fn total(&self, bytes: u64) {
        // A download learns its total from the server; an upload's is in the bar already.
        if let Some(bar) = self.bar.filter(|b| b.length() == Some(0)) {
            bar.set_length(bytes);
        }
    }

    fn moved(&self, bytes: u64) {
        let before = self.moved.swap(bytes, Ordering::Relaxed);
        if let Some(bar) = self.bar {
            bar.inc(bytes.saturating_sub(before));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colon_before_any_slash_names_a_session() {
        let remote = |sel: &str, path: &str| Place::Remote {
            sel: sel.into(),
            path: path.as_bytes().to_vec(),
        };
        assert_eq!(place(Path::new("web1:/etc/x")), remote("web1", "/etc/x"));
        assert_eq!(place(Path::new("s:")), remote("s", ""));
        assert_eq!(place(Path::new("s:a:b")), remote("s", "a:b"));
        assert_eq!(place(Path::new("./a:b")), Place::Local("./a:b".into()));
        assert_eq!(
            place(Path::new("/tmp/a:b")),
            Place::Local("/tmp/a:b".into())
        );
        assert_eq!(place(Path::new(":x")), Place::Local(":x".into()));
        assert_eq!(place(Path::new("plain")), Place::Local("plain".into()));
    }

    #[test]
    fn a_download_expects_the_names_it_asked_for() {
        let names = expected_names(&[b"logs/app.log".to_vec(), b"/etc/hosts/".to_vec()]);
        assert_eq!(names, Some(vec![b"app.log".to_vec(), b"hosts".to_vec()]));
        assert_eq!(expected_names(&[b".".to_vec()]), None);
        assert_eq!(expected_names(&[b"~".to_vec()]), None);
        assert_eq!(
            expected_names(&[b"~/notes".to_vec()]),
            Some(vec![b"notes".to_vec()])
        );
    }
}

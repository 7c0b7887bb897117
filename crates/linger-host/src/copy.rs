//! `linger copy` on the host's side: each copy is a thread doing the file I/O, as the
//! session's user, beside the shell (never through it, so a busy session copies too).
//! Paths are read as the shell would: relative to its current directory, `~` its home.
//!
//! Copies belong to the daemon connection that began them; when it ends they are abandoned
//! and what they had begun is removed (linger-files' writer invariant).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex};

use bytes::Bytes;
use linger_files::{CopyError, Part, TreeWriter, WriteOptions};
use linger_proto::copy::{
    CopyItem, CopyKind, CopySummary, COPY_ITEM_COST, COPY_PROGRESS_EVERY, COPY_SEND_LIMIT,
    COPY_WINDOW,
};
use linger_proto::host::{DaemonToHost, HostToDaemon};
use tokio::sync::mpsc;
use uuid::Uuid;

enum InPart {
    Item(CopyItem),
    Data(Bytes),
    End,
}

enum Transfer {
    /// An upload: its writer thread's queue, the stream bytes received for it, and the
    /// progress its thread has reported.
    In {
        tx: std_mpsc::Sender<InPart>,
        received: u64,
        reported: Arc<AtomicU64>,
    },
    Out(Arc<Window>),
}

/// A download's window: what the reader has taken, and whether the copy was abandoned.
#[derive(Default)]
struct Window {
    state: Mutex<(u64, bool)>,
    moved: Condvar,
}

impl Window {
    /// Waits until `sent` bytes leave room for more; false once the copy is abandoned.
    fn wait_room(&self, sent: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !s.1 && sent >= s.0 + COPY_WINDOW {
            s = self.moved.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.1
    }

    fn taken(&self, done: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.max(done);
        self.moved.notify_all();
    }

    fn abandon(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.moved.notify_all();
    }
}

/// Where the shell is: what copy paths are relative to.
#[derive(Clone)]
pub struct ShellPlace {
    pub shell_pid: u32,
    pub home: Option<PathBuf>,
    /// A restricted session copies nothing: its configuration limits what may run.
    pub restricted: bool,
}

impl ShellPlace {
    /// `path` as the shell would read it.
    fn resolve(&self, path: &[u8]) -> Result<PathBuf, String> {
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        let home = || {
            self.home
                .clone()
                .ok_or_else(|| "the session has no HOME for `~`".to_string())
        };
        if path.as_os_str() == "~" {
            return home();
        }
        if let Ok(rest) = path.strip_prefix("~") {
            if path.as_os_str().as_bytes().starts_with(b"~/") {
                return Ok(home()?.join(rest));
            }
        }
        if path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.shell_pid))
            .map_err(|e| format!("cannot read the shell's current directory: {e}"))?;
        Ok(cwd.join(path))
    }
}

/// The copies of one daemon connection.
pub struct Copies {
    place: ShellPlace,
    transfers: HashMap<Uuid, Transfer>,
    out_tx: mpsc::UnboundedSender<HostToDaemon>,
    /// What the copies' threads send to the daemon.
    pub out_rx: mpsc::UnboundedReceiver<HostToDaemon>,
}

impl Copies {
    pub fn new(place: ShellPlace) -> Copies {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        Copies {
            place,
            transfers: HashMap::new(),
            out_tx,
            out_rx,
        }
    }

    /// A message a copy's thread sent is on its way: an ended copy is forgotten.
    pub fn sending(&mut self, msg: &HostToDaemon) {
        if let HostToDaemon::CopyDone { copy_id, .. } | HostToDaemon::CopyFailed { copy_id, .. } =
            msg
        {
            self.transfers.remove(copy_id);
        }
    }

    /// Takes a copy message from the daemon; what to answer at once, if anything.
    pub fn handle(&mut self, msg: DaemonToHost) -> Option<HostToDaemon> {
        match msg {
            DaemonToHost::CopyIn {
                copy_id,
                destination,
                several,
                preserve,
            } => self.begin_in(copy_id, &destination, several, preserve),
            DaemonToHost::CopyOut {
                copy_id,
                sources,
                recursive,
            } => self.begin_out(copy_id, &sources, recursive),
            DaemonToHost::CopyItem { copy_id, item } => self.feed(copy_id, InPart::Item(item)),
            DaemonToHost::CopyData { copy_id, data, .. } => self.feed(copy_id, InPart::Data(data)),
            DaemonToHost::CopyEnd { copy_id } => self.feed(copy_id, InPart::End),
            DaemonToHost::CopyProgress { copy_id, done } => {
                if let Some(Transfer::Out(w)) = self.transfers.get(&copy_id) {
                    w.taken(done);
                }
                None
            }
            DaemonToHost::CopyAbort { copy_id } => {
                self.abandon(copy_id);
                None
            }
            _ => None,
        }
    }

    fn abandon(&mut self, copy_id: Uuid) {
        if let Some(Transfer::Out(w)) = self.transfers.remove(&copy_id) {
            w.abandon();
        }
        // An upload's thread sees its queue close and removes what it began.
    }

    fn refused(&self, copy_id: Uuid) -> Option<HostToDaemon> {
        self.place.restricted.then(|| HostToDaemon::CopyFailed {
            copy_id,
            error: "this session's configuration is restricted: it copies no files".into(),
        })
    }

    fn begin_in(
        &mut self,
        copy_id: Uuid,
        destination: &[u8],
        several: bool,
        preserve: bool,
    ) -> Option<HostToDaemon> {
        if let Some(no) = self.refused(copy_id) {
            return Some(no);
        }
        let dest = match self.place.resolve(destination) {
            Ok(d) => d,
            Err(error) => return Some(HostToDaemon::CopyFailed { copy_id, error }),
        };
        let options = WriteOptions {
            preserve,
            umask: linger_files::umask_of(Some(self.place.shell_pid)),
            expect_names: None,
        };
        let (tx, rx) = std_mpsc::channel();
        let reported = Arc::new(AtomicU64::new(0));
        let out = self.out_tx.clone();
        let r = reported.clone();
        let spawned = std::thread::Builder::new()
            .name("copy-in".into())
            .spawn(move || upload(copy_id, &dest, several, options, rx, &r, &out));
        if let Err(e) = spawned {
            return Some(HostToDaemon::CopyFailed {
                copy_id,
                error: format!("cannot start the copy: {e}"),
            });
        }
        self.transfers.insert(
            copy_id,
            Transfer::In {
                tx,
                received: 0,
                reported,
            },
        );
        None
    }

    fn begin_out(
        &mut self,
        copy_id: Uuid,
        sources: &[Bytes],
        recursive: bool,
    ) -> Option<HostToDaemon> {
        if let Some(no) = self.refused(copy_id) {
            return Some(no);
        }
        let sources: Result<Vec<PathBuf>, String> =
            sources.iter().map(|s| self.place.resolve(s)).collect();
        let sources = match sources {
            Ok(s) => s,
            Err(error) => return Some(HostToDaemon::CopyFailed { copy_id, error }),
        };
        let window = Arc::new(Window::default());
        let w = window.clone();
        let out = self.out_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("copy-out".into())
            .spawn(move || download(copy_id, &sources, recursive, &w, &out));
        if let Err(e) = spawned {
            return Some(HostToDaemon::CopyFailed {
                copy_id,
                error: format!("cannot start the copy: {e}"),
            });
        }
        self.transfers.insert(copy_id, Transfer::Out(window));
        None
    }

    fn feed(&mut self, copy_id: Uuid, part: InPart) -> Option<HostToDaemon> {
        let Some(Transfer::In {
            tx,
            received,
            reported,
        }) = self.transfers.get_mut(&copy_id)
        else {
            // An ended or abandoned copy: what was in flight for it has nowhere to go.
            return None;
        };
        // The window also bounds what waits here for the disk.
        *received += stream_cost(&part);
        if *received > reported.load(Ordering::Relaxed) + COPY_SEND_LIMIT {
            self.transfers.remove(&copy_id);
            return Some(HostToDaemon::CopyFailed {
                copy_id,
                error: "the sender went beyond the copy's window".into(),
            });
        }
        // A thread that failed has said so (CopyFailed is on its way); drop the rest.
        let _ = tx.send(part);
        None
    }
}

impl Drop for Copies {
    fn drop(&mut self) {
        for (_, t) in self.transfers.drain() {
            if let Transfer::Out(w) = t {
                w.abandon();
            }
        }
    }
}

/// What a part counts for in the copy's window.
fn stream_cost(part: &InPart) -> u64 {
    match part {
        InPart::Item(_) => COPY_ITEM_COST,
        InPart::Data(d) => d.len() as u64,
        InPart::End => 0,
    }
}

fn upload(
    copy_id: Uuid,
    dest: &Path,
    several: bool,
    options: WriteOptions,
    rx: std_mpsc::Receiver<InPart>,
    reported_to: &AtomicU64,
    out: &mpsc::UnboundedSender<HostToDaemon>,
) {
    let result = (|| -> Result<Option<CopySummary>, CopyError> {
        let mut writer = TreeWriter::create(dest, several, options)?;
        let mut done = 0u64;
        let mut reported = 0u64;
        let _ = out.send(HostToDaemon::CopyProgress { copy_id, done: 0 });
        loop {
            let part = match rx.recv() {
                Ok(part) => part,
                // Abandoned: dropping the writer removes what it began.
                Err(_) => return Ok(None),
            };
            let cost = stream_cost(&part);
            match part {
                InPart::Item(item) => writer.item(item)?,
                InPart::Data(data) => writer.data(&data)?,
                InPart::End => return writer.finish().map(Some),
            }
            done += cost;
            if done - reported >= COPY_PROGRESS_EVERY {
                reported = done;
                reported_to.store(done, Ordering::Relaxed);
                let _ = out.send(HostToDaemon::CopyProgress { copy_id, done });
            }
        }
    })();
    let msg = match result {
        Ok(Some(summary)) => HostToDaemon::CopyDone { copy_id, summary },
        Ok(None) => return,
        Err(e) => HostToDaemon::CopyFailed {
            copy_id,
            error: e.to_string(),
        },
    };
    tracing::info!(copy = %copy_id, destination = %dest.display(), ok = matches!(msg, HostToDaemon::CopyDone { .. }), "upload ended");
    let _ = out.send(msg);
}

fn download(
    copy_id: Uuid,
    sources: &[PathBuf],
    recursive: bool,
    window: &Window,
    out: &mpsc::UnboundedSender<HostToDaemon>,
) {
    let result = (|| -> Result<Option<CopySummary>, CopyError> {
        let plan = linger_files::plan(sources, recursive)?;
        let _ = out.send(HostToDaemon::CopyTotal {
            copy_id,
            bytes: plan.bytes,
            files: plan.files,
        });
        let mut summary = CopySummary::default();
        let mut sent = 0u64;
        for part in plan.parts() {
            let part = part?;
            if !window.wait_room(sent) {
                return Ok(None);
            }
            match part {
                Part::Item(item) => {
                    sent += COPY_ITEM_COST;
                    match item.kind {
                        CopyKind::File { .. } => summary.files += 1,
                        CopyKind::Directory => summary.directories += 1,
                        CopyKind::Symlink { .. } => summary.symlinks += 1,
                    }
                    let _ = out.send(HostToDaemon::CopyItem { copy_id, item });
                }
                Part::Data(data) => {
                    sent += data.len() as u64;
                    let offset = summary.bytes;
                    summary.bytes += data.len() as u64;
                    let _ = out.send(HostToDaemon::CopyData {
                        copy_id,
                        offset,
                        data,
                    });
                }
            }
        }
        Ok(Some(summary))
    })();
    let msg = match result {
        Ok(Some(summary)) => HostToDaemon::CopyDone { copy_id, summary },
        Ok(None) => return,
        Err(e) => HostToDaemon::CopyFailed {
            copy_id,
            error: e.to_string(),
        },
    };
    let _ = out.send(msg);
}

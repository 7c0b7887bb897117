//! The CLI's standard input, forwarded to the commands it invokes (as ssh forwards it).
//! A plain thread reads it (a read of a terminal or pipe cannot be cancelled, and must not
//! hold up the runtime), at most a few chunks ahead of what the command has taken. With
//! several targets every one gets all of it: the input is kept in an unlinked temporary
//! file that each target reads at its own pace, so a target that starts late (under
//! `--throttle`) or reads slowly costs disk, not memory, and never slows the others.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use linger::{Bytes, Input};
use linger_proto::input::STDIN_CHUNK;
use tokio::sync::{mpsc, watch};

/// Chunks read ahead of a single target.
const READ_AHEAD: usize = 4;

/// Standard input for `targets` commands, read once the first of them starts (not before:
/// a prompt on the terminal, such as a new host key's, must get its answer first).
pub struct Source {
    targets: usize,
    reading: Mutex<Option<Arc<Reading>>>,
}

enum Reading {
    /// One target: chunks straight from the reader.
    Single(Mutex<Option<mpsc::Receiver<Bytes>>>),
    /// Several: everything read so far, in a file.
    Shared(Arc<Tee>),
}

pub struct Tee {
    file: std::fs::File,
    /// Bytes in the file, and whether the input has ended.
    len: watch::Receiver<(u64, bool)>,
}

impl Source {
    pub fn new(targets: usize) -> Source {
        Source {
            targets,
            reading: Mutex::new(None),
        }
    }

    /// Feeds one command's input from the start of standard input to its end, then EOF.
    /// Returns early once the command wants no more.
    pub async fn feed(&self, input: Input) {
        let reading = {
            let mut r = self.reading.lock().unwrap_or_else(|p| p.into_inner());
            match &*r {
                Some(reading) => Ok(reading.clone()),
                None => Reading::start(self.targets).map(|reading| {
                    let reading = Arc::new(reading);
                    *r = Some(reading.clone());
                    reading
                }),
            }
        };
        match reading {
            Ok(reading) => reading.feed(&input).await,
            Err(e) => crate::say!("linger: {e}; the command gets no input"),
        }
        input.finish();
    }
}

impl Reading {
    fn start(targets: usize) -> anyhow::Result<Reading> {
        if targets <= 1 {
            let (tx, rx) = mpsc::channel(READ_AHEAD);
            std::thread::spawn(move || {
                read_stdin(|chunk| tx.blocking_send(Bytes::from(chunk)).is_ok());
            });
            return Ok(Reading::Single(Mutex::new(Some(rx))));
        }
        let file = tempfile::tempfile()
            .map_err(|e| anyhow::anyhow!("cannot make a file to hold standard input for several targets: {e} (set TMPDIR to a writable directory)"))?;
        let mut writer = file.try_clone()?;
        let (tx, len) = watch::channel((0, false));
        std::thread::spawn(move || {
            let mut total = 0u64;
            read_stdin(|chunk| {
                if let Err(e) = writer.write_all(&chunk) {
                    crate::say!("linger: cannot keep standard input for the targets: {e}; they see it end here");
                    return false;
                }
                total += chunk.len() as u64;
                tx.send((total, false)).is_ok()
            });
            let _ = tx.send((total, true));
        });
        Ok(Reading::Shared(Arc::new(Tee { file, len })))
    }

    async fn feed(&self, input: &Input) {
        match self {
            Reading::Single(rx) => {
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(mut rx) = rx {
                    while let Some(chunk) = rx.recv().await {
                        input.write(chunk).await;
                        if input.is_closed() {
                            return;
                        }
                    }
                }
            }
            Reading::Shared(tee) => {
                let mut len = tee.len.clone();
                let mut offset = 0u64;
                loop {
                    let (have, ended) = *len.borrow_and_update();
                    if offset < have {
                        let n = (have - offset).min(STDIN_CHUNK as u64) as usize;
                        let chunk = match tee.read_at(offset, n).await {
                            Ok(c) => c,
                            Err(e) => {
                                crate::say!("linger: cannot read back standard input: {e}; the command sees it end here");
                                return;
                            }
                        };
                        offset += chunk.len() as u64;
                        input.write(chunk).await;
                        if input.is_closed() {
                            return;
                        }
                        continue;
                    }
                    if ended || len.changed().await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

impl Tee {
    async fn read_at(self: &Arc<Self>, offset: u64, n: usize) -> std::io::Result<Bytes> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; n];
            me.file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Reads standard input to its end, handing each chunk to `take` until it says stop.
fn read_stdin(mut take: impl FnMut(Vec<u8>) -> bool) {
    let mut stdin = std::io::stdin().lock();
    // One buffer, and each chunk copied out at its size: a short read (a line typed on a
    // terminal) must not keep a whole buffer alive while it waits to be acknowledged.
    let mut buf = vec![0; STDIN_CHUNK];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !take(buf[..n].to_vec()) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // A closed or unreadable stdin is the end of input, said once.
                if e.raw_os_error() != Some(nix::errno::Errno::EBADF as i32) {
                    crate::say!(
                        "linger: cannot read standard input: {e}; the command sees it end here"
                    );
                }
                return;
            }
        }
    }
}

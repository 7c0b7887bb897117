//! Where one target's output goes: raw to stdout/stderr, `[computer] `-prefixed lines, or
//! JSON lines. Shared by `invoke` and `receive`.

use std::sync::Arc;

use anyhow::{Context, Result};
use linger::StreamKind;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One target: bytes pass through untouched.
    Raw,
    /// Several targets: each line prefixed `[computer] `.
    Prefixed,
    /// JSON lines.
    Json,
}

impl Mode {
    pub fn pick(json: bool, targets: usize) -> Mode {
        match (json, targets) {
            (true, _) => Mode::Json,
            (false, 1) => Mode::Raw,
            (false, _) => Mode::Prefixed,
        }
    }
}

/// Where one target's output goes.
pub struct Sink {
    mode: Mode,
    label: String,
    out: Arc<Mutex<tokio::io::Stdout>>,
    err: Arc<Mutex<tokio::io::Stderr>>,
    /// Incomplete last lines, per stream (prefixed mode).
    partial: [Vec<u8>; 2],
}

impl Sink {
    pub fn new(
        mode: Mode,
        label: String,
        out: Arc<Mutex<tokio::io::Stdout>>,
        err: Arc<Mutex<tokio::io::Stderr>>,
    ) -> Sink {
        Sink {
            mode,
            label,
            out,
            err,
            partial: [Vec::new(), Vec::new()],
        }
    }

    async fn emit(&self, stream: StreamKind, bytes: &[u8]) -> Result<()> {
        if crate::progress::is_shown() {
            return self.emit_above_bar(stream, bytes).await;
        }
        match stream {
            StreamKind::Stdout => put(&mut *self.out.lock().await, bytes).await,
            StreamKind::Stderr => put(&mut *self.err.lock().await, bytes).await,
        }
    }

    /// With a progress bar on screen, output is written past it (lifted, then drawn again
    /// below): a synchronous write, under the same lock as every other target's.
    async fn emit_above_bar(&self, stream: StreamKind, bytes: &[u8]) -> Result<()> {
        fn write_all(mut w: impl std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
            w.write_all(bytes).and_then(|()| w.flush())
        }
        // `put` flushes every write, so nothing of the async handles is still buffered.
        let written = match stream {
            StreamKind::Stdout => {
                let _turn = self.out.lock().await;
                crate::progress::above(|| write_all(std::io::stdout().lock(), bytes))
            }
            StreamKind::Stderr => {
                let _turn = self.err.lock().await;
                crate::progress::above(|| write_all(std::io::stderr().lock(), bytes))
            }
        };
        if let Err(e) = &written {
            crate::report::quit_on_closed_stdout(e);
        }
        written.context("cannot write the output")
    }

    pub async fn write(&mut self, stream: StreamKind, data: &[u8]) -> Result<()> {
        match self.mode {
            Mode::Raw => self.emit(stream, data).await,
            Mode::Json => {
                let line = serde_json::json!({
                    "computer_name": self.label,
                    "stream": match stream { StreamKind::Stdout => "stdout", StreamKind::Stderr => "stderr" },
                    "data": String::from_utf8_lossy(data),
                });
                self.emit(StreamKind::Stdout, format!("{line}\n").as_bytes())
                    .await
            }
            Mode::Prefixed => {
                let idx = stream as usize;
                let mut buf = std::mem::take(&mut self.partial[idx]);
                buf.extend_from_slice(data);
                let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
                    self.partial[idx] = buf;
                    return Ok(());
                };
                self.partial[idx] = buf.split_off(last_nl + 1);
                let text = self.prefix_lines(&buf);
                self.emit(stream, &text).await
            }
        }
    }

    fn prefix_lines(&self, buf: &[u8]) -> Vec<u8> {
        let prefix = format!("[{}] ", self.label);
        let mut text = Vec::with_capacity(buf.len() + 32);
        for line in buf.split_inclusive(|&b| b == b'\n') {
            text.extend_from_slice(prefix.as_bytes());
            text.extend_from_slice(line);
        }
        if !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        text
    }

    /// Tells the reader that output was discarded here under `drop`.
    pub async fn dropped(&mut self, bytes: u64) -> Result<()> {
        if self.mode == Mode::Json {
            let line = serde_json::json!({ "computer_name": self.label, "dropped_bytes": bytes });
            return self
                .emit(StreamKind::Stdout, format!("{line}\n").as_bytes())
                .await;
        }
        self.finish().await?;
        let note = format!(
            "linger: warning: [{}] {bytes} bytes of output were dropped here while nobody read them (buffering mode drop)\n",
            self.label
        );
        self.emit(StreamKind::Stderr, note.as_bytes()).await
    }

    /// A watcher fell behind: `bytes` went by unseen (nothing was lost on the server).
    pub async fn missed(&mut self, bytes: u64) -> Result<()> {
        if self.mode == Mode::Json {
            let line = serde_json::json!({ "computer_name": self.label, "missed_bytes": bytes });
            return self
                .emit(StreamKind::Stdout, format!("{line}\n").as_bytes())
                .await;
        }
        self.finish().await?;
        let note = format!(
            "linger: [{}] {bytes} bytes went by unseen here (this watcher fell behind; the session kept them)\n",
            self.label
        );
        self.emit(StreamKind::Stderr, note.as_bytes()).await
    }

    /// Ends the target's output: an incomplete last line gets its newline.
    pub async fn finish(&mut self) -> Result<()> {
        if self.mode == Mode::Prefixed {
            for stream in [StreamKind::Stdout, StreamKind::Stderr] {
                let rest = std::mem::take(&mut self.partial[stream as usize]);
                if !rest.is_empty() {
                    let text = self.prefix_lines(&rest);
                    self.emit(stream, &text).await?;
                }
            }
        }
        Ok(())
    }
}

async fn put<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<()> {
    let written = match w.write_all(bytes).await {
        Ok(()) => w.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &written {
        // Whoever read our output went away (`| head`): end quietly, as SIGPIPE would.
        crate::report::quit_on_closed_stdout(e);
    }
    written.context("cannot write the output")
}

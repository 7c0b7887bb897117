//! A one-line progress display for long fan-outs, on standard error and only when it is a
//! terminal (scripts and pipes see nothing of it).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fan-outs shorter than this show no progress.
const SHOWN_FROM: usize = 8;

pub struct Progress {
    what: &'static str,
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    shown: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            what,
            total,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            shown: total >= SHOWN_FROM && std::io::stderr().is_terminal(),
        }
    }

    /// For a fan-out whose output streams to stdout: shown only when stdout is not the
    /// terminal too (output to a file or a pipe), so the two never interleave on screen.
    pub fn beside_output(what: &'static str, total: usize) -> Progress {
        let mut p = Progress::new(what, total);
        p.shown &= !std::io::stdout().is_terminal();
        p
    }

    /// One target finished.
    pub fn done(&self, ok: bool) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if self.shown {
            let failed = self.failed.load(Ordering::Relaxed);
            let width = 30;
            let filled = done * width / self.total.max(1);
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[2K{} [{}{}] {done}/{}{}",
                self.what,
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.total,
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            );
            let _ = err.flush();
        }
    }

    /// Clears the line before the results are printed.
    pub fn finish(&self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

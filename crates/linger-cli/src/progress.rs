//! The progress bar of a fan-out (several targets at once): on standard error when it is a
//! terminal, and only once the fan-out has lasted a few seconds (a quick one shows
//! nothing). Output and messages printed meanwhile go above it ([`above`]), so the two
//! never mix on screen; scripts and pipes see nothing of it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A fan-out that ends sooner shows no bar.
const SHOWN_AFTER: Duration = Duration::from_secs(2);

/// The bar on screen now, if any: what prints goes above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn shown() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    SHOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `print` (which writes to the terminal) with the bar, if one is shown, lifted out of
/// the way and drawn again below.
pub fn above<R>(print: impl FnOnce() -> R) -> R {
    let bar = shown().clone();
    match bar {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

/// Whether a bar is on screen (then output is written through [`above`]).
pub fn is_shown() -> bool {
    shown().is_some()
}

pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    failed: AtomicUsize,
}

impl Progress {
    /// Counts `total` targets as they end; shown only for a fan-out, on a terminal.
    pub fn new(what: &'static str, total: usize) -> Progress {
        let bar = (total > 1 && std::io::stderr().is_terminal()).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden());
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} {elapsed}")
            {
                bar.set_style(style.progress_chars("#>-"));
            }
            bar.set_message(what);
            let later = bar.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SHOWN_AFTER).await;
                let mut shown = shown();
                if !later.is_finished() && shown.is_none() {
                    later.set_draw_target(ProgressDrawTarget::stderr());
                    later.tick();
                    *shown = Some(later);
                }
            });
            bar
        });
        Progress {
            bar,
            what,
            failed: AtomicUsize::new(0),
        }
    }

    /// One target ended.
    pub fn done(&self, ok: bool) {
        let Some(bar) = &self.bar else {
            return;
        };
        if !ok {
            let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
            bar.set_message(format!("{} ({failed} failed)", self.what));
        }
        bar.inc(1);
    }

    /// Takes the bar off the screen before the results are printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            let mut shown = shown();
            bar.finish_and_clear();
            if shown.as_ref().is_some_and(|s| s.is_finished()) {
                *shown = None;
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

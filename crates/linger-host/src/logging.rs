//! The processes' own logs (the daemon's, each session host's). Logging never takes
//! anything down: tracing writes through a [`Sink`], which swallows a failed write (a full
//! disk, a closed stderr), counts the line as lost, and says how many were lost in the next
//! line that gets through.

use std::io::Write;

/// Log lines lost to failed writes since the last note about them.
static LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What tracing writes to: a writer behind a lock that a panic cannot poison for good, whose
/// writes always succeed as far as tracing knows (tracing would otherwise report a failure
/// on stderr, which panics when stderr fails too).
pub struct Sink<W> {
    inner: std::sync::Mutex<W>,
}

impl<W: Write> Sink<W> {
    pub fn new(writer: W) -> Self {
        Sink {
            inner: std::sync::Mutex::new(writer),
        }
    }
}

pub struct SinkWriter<'a, W>(std::sync::MutexGuard<'a, W>);

impl<'a, W: Write + 'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink<W> {
    type Writer = SinkWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<W: Write> Write for SinkWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let lost = LOST.load(Ordering::Relaxed);
        if lost > 0 {
            let note = format!("{lost} log line(s) lost: the log could not be written\n");
            if self.0.write_all(note.as_bytes()).is_ok() {
                LOST.fetch_sub(lost, Ordering::Relaxed);
            }
        }
        if self.0.write_all(buf).and_then(|()| self.0.flush()).is_err() {
            LOST.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A session host's logging: to its stderr, which the daemon opened on the session's
/// host.log.
pub fn init_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(Sink::new(std::io::stderr()))
        .log_internal_errors(false)
        .with_ansi(false)
        .try_init();
}

/// Output moves through buffers of a few hundred KiB each. glibc gives freed memory at the
/// top of the heap back to the kernel past 128 KiB by default, so every such buffer came
/// back as fresh, zero-filled pages: measured, a third of the host's time on a 100 MB
/// receive went to page faults. Keeping up to 32 MiB of freed memory (and serving large
/// blocks from the heap rather than from fresh mappings; 32 MiB is glibc's ceiling for
/// that) removes the churn. Call before any thread starts.
#[cfg(target_env = "gnu")]
pub fn tune_allocator() {
    const KEEP: libc::c_int = 32 << 20;
    // SAFETY: mallopt only changes glibc allocator parameters; called before any thread.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
    }
}

#[cfg(not(target_env = "gnu"))]
pub fn tune_allocator() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails every write while `full` is set, as a full disk does.
    struct Disk {
        full: std::sync::Arc<std::sync::atomic::AtomicBool>,
        written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_log_loses_lines_counted_and_never_fails_its_writer() {
        use tracing_subscriber::fmt::MakeWriter;
        let full = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Sink::new(Disk {
            full: full.clone(),
            written: written.clone(),
        });
        for _ in 0..3 {
            assert_eq!(sink.make_writer().write(b"dropped\n").unwrap(), 8);
        }
        full.store(false, std::sync::atomic::Ordering::Relaxed);
        sink.make_writer().write_all(b"kept\n").unwrap();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "3 log line(s) lost: the log could not be written\nkept\n"
        );
    }
}

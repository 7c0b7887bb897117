//! Forwarded standard input of the running command: a pipe whose read end goes to the
//! command with its record, and whose write end a task here fills, in order, from chunks
//! stamped with their offset in the stream (docs/PROTOCOL.md §12.1). What was taken but
//! not yet written is at most `STDIN_WINDOW` bytes: chunks beyond it are refused, and the
//! sender waits for acknowledgements instead.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use linger_proto::input::{fresh_part, STDIN_WINDOW};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::terminal::Terminal;

/// A bigger pipe lets a fast command read more per wakeup of the host.
const PIPE_SIZE: i32 = 1 << 20;

/// How far a command's input has got, as the daemon hears it (`StdinAck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub command_id: Uuid,
    /// Bytes written to the command, or discarded after it stopped reading.
    pub written: u64,
    /// Nothing more will be written: the input ended, or nobody reads it.
    pub closed: bool,
}

pub type ProgressTx = Arc<watch::Sender<Option<Progress>>>;

/// The input of one running command.
pub struct Input {
    command_id: Uuid,
    /// Bytes taken into `queue` so far: the next chunk must start at or before this.
    taken: u64,
    /// `None` once the end of input was taken: the writer then closes the pipe when the
    /// queue is empty.
    queue: Option<mpsc::UnboundedSender<Bytes>>,
    writer: JoinHandle<()>,
    progress: ProgressTx,
}

impl Input {
    /// Makes the pipe and starts its writer; returns the read end for the command.
    pub fn open(command_id: Uuid, progress: ProgressTx) -> std::io::Result<(Input, OwnedFd)> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        // Best effort: a smaller pipe only costs wakeups.
        let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        let pipe = pipe::Sender::from_owned_fd(w)?;
        Ok((Input::start(command_id, progress, Writer::Pipe(pipe)), r))
    }

    /// Input typed at a terminal command: written to its terminal. The end of the input
    /// only stops the writing (the terminal stays, as a terminal does when nobody types).
    pub fn to_terminal(command_id: Uuid, progress: ProgressTx, terminal: Arc<Terminal>) -> Input {
        Input::start(command_id, progress, Writer::Terminal(terminal))
    }

    fn start(command_id: Uuid, progress: ProgressTx, writer: Writer) -> Input {
        let (tx, rx) = mpsc::unbounded_channel();
        progress.send_replace(Some(Progress {
            command_id,
            written: 0,
            closed: false,
        }));
        let writer = tokio::spawn(write_all(writer, rx, command_id, progress.clone()));
        Input {
            command_id,
            taken: 0,
            queue: Some(tx),
            writer,
            progress,
        }
    }

    pub fn command_id(&self) -> Uuid {
        self.command_id
    }

    /// Takes what is new in a chunk at `offset` (a repeated part is skipped, a chunk after
    /// a gap or beyond the window is refused: the sender repeats it once acknowledged).
    pub fn offer(&mut self, offset: u64, data: Bytes, eof: bool) {
        let Some(queue) = &self.queue else {
            return;
        };
        let written = match *self.progress.borrow() {
            Some(p) if p.command_id == self.command_id => p.written,
            _ => return,
        };
        let Some(fresh) = fresh_part(self.taken, written + STDIN_WINDOW, offset, data.len()) else {
            tracing::debug!(
                offset,
                taken = self.taken,
                "input chunk after a gap refused"
            );
            return;
        };
        if !fresh.range.is_empty() {
            self.taken += fresh.range.len() as u64;
            // The writer only ends once the queue is closed here, or when aborted (the
            // command ended): then the chunk is not wanted.
            let _ = queue.send(data.slice(fresh.range));
        }
        if eof && fresh.is_complete {
            self.queue = None;
        }
    }

    /// Stops writing at once and says how far the input got: every byte before the offset
    /// returned reached the command (or its terminal), none after it did.
    pub async fn stop(mut self) -> u64 {
        self.writer.abort();
        let _ = (&mut self.writer).await;
        match *self.progress.borrow() {
            Some(p) if p.command_id == self.command_id => p.written,
            _ => 0,
        }
    }
}

impl Drop for Input {
    /// The command ended: whatever it did not read is not wanted, and the pipe closes now
    /// (a process it left in the background sees the end of its input).
    fn drop(&mut self) {
        self.writer.abort();
        let id = self.command_id;
        self.progress.send_modify(|p| {
            if let Some(p) = p.as_mut().filter(|p| p.command_id == id) {
                p.closed = true;
            }
        });
    }
}

/// Where a command's input goes.
enum Writer {
    Pipe(pipe::Sender),
    Terminal(Arc<Terminal>),
}

impl Writer {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Writer::Pipe(pipe) => pipe.write(data).await,
            Writer::Terminal(t) => t.pty.write_some(data).await,
        }
    }
}

/// Writes the queue out, counting each write as it lands: the count stays exact wherever
/// [`Input::stop`] cuts the writer off, so a terminal command's end can say where its input
/// stands.
async fn write_all(
    mut pipe: Writer,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
    command_id: Uuid,
    progress: ProgressTx,
) {
    let count = |n: usize, reading: bool| {
        progress.send_modify(|p| {
            if let Some(p) = p.as_mut().filter(|p| p.command_id == command_id) {
                p.written += n as u64;
                p.closed |= !reading;
            }
        });
    };
    let mut reading = true;
    while let Some(chunk) = queue.recv().await {
        let mut rest = &chunk[..];
        while reading && !rest.is_empty() {
            match pipe.write(rest).await {
                Ok(n) if n > 0 => {
                    rest = &rest[n..];
                    count(n, true);
                }
                Ok(_) => reading = false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EPIPE: the command closed its input or ended. The rest is discarded
                    // (and counted as written), so the sender is never left waiting.
                    tracing::debug!(command = %command_id, "the command stopped reading its input: {e}");
                    reading = false;
                }
            }
        }
        count(rest.len(), reading);
    }
    drop(pipe);
    progress.send_modify(|p| {
        if let Some(p) = p.as_mut().filter(|p| p.command_id == command_id) {
            p.closed = true;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    async fn until(rx: &mut watch::Receiver<Option<Progress>>, f: impl Fn(&Progress) -> bool) {
        let _ = rx.wait_for(|p| p.as_ref().is_some_and(&f)).await;
    }

    #[tokio::test]
    async fn chunks_reach_the_pipe_once_in_order_then_the_end() {
        let progress: ProgressTx = Arc::new(watch::channel(None).0);
        let mut seen = progress.subscribe();
        let id = Uuid::new_v4();
        let (mut input, r) = Input::open(id, progress.clone()).unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::fs::File::from(r).read_to_end(&mut all).unwrap();
            all
        });
        input.offer(0, Bytes::from_static(b"hello "), false);
        // Repeated (after a reconnect), partly new, and after a gap.
        input.offer(0, Bytes::from_static(b"hello wor"), false);
        input.offer(20, Bytes::from_static(b"gap"), false);
        input.offer(9, Bytes::from_static(b"ld"), true);
        input.offer(11, Bytes::from_static(b"late"), false);
        until(&mut seen, |p| p.closed).await;
        assert_eq!(reader.join().unwrap(), b"hello world");
        let p = progress.borrow().unwrap();
        assert_eq!((p.written, p.closed), (11, true));
    }

    /// Stopped while the pipe is full, the writer says exactly how much the command can
    /// still read: nothing is counted that did not land, nothing lands after.
    #[tokio::test]
    async fn stopping_says_exactly_how_much_was_written() {
        let progress: ProgressTx = Arc::new(watch::channel(None).0);
        let mut seen = progress.subscribe();
        let (mut input, r) = Input::open(Uuid::new_v4(), progress.clone()).unwrap();
        let size = fcntl(&r, FcntlArg::F_GETPIPE_SZ).unwrap() as u64;
        input.offer(0, Bytes::from(vec![1u8; (size * 3) as usize]), false);
        until(&mut seen, |p| p.written >= size).await;
        let offset = input.stop().await;
        let mut all = Vec::new();
        std::fs::File::from(r).read_to_end(&mut all).unwrap();
        assert_eq!(all.len() as u64, offset);
        assert!(offset < size * 3);
    }

    #[tokio::test]
    async fn nothing_beyond_the_window_is_taken() {
        let progress: ProgressTx = Arc::new(watch::channel(None).0);
        let (mut input, r) = Input::open(Uuid::new_v4(), progress.clone()).unwrap();
        // Nobody reads: the pipe fills, the writer stalls, and the window caps what waits.
        let big = Bytes::from(vec![7u8; (STDIN_WINDOW as usize) * 2]);
        input.offer(0, big, false);
        assert_eq!(input.taken, STDIN_WINDOW);
        drop(r);
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_closes_the_input_without_stalling_the_sender() {
        let progress: ProgressTx = Arc::new(watch::channel(None).0);
        let mut seen = progress.subscribe();
        let (mut input, r) = Input::open(Uuid::new_v4(), progress.clone()).unwrap();
        drop(r);
        input.offer(0, Bytes::from_static(b"nobody reads this"), false);
        until(&mut seen, |p| p.closed && p.written == 17).await;
    }
}

//! Reading the shell's pipes into one reused buffer. Each read's bytes go on as a slice of
//! it, so output kept in the log costs the bytes it holds (in blocks shared by consecutive
//! reads), not a fresh allocation per read: a command writing two bytes at a time used to
//! pin a 256 KiB buffer per write.

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// The most one read takes, and the size of a block.
pub const BLOCK: usize = 256 * 1024;
/// Below this much room left in the block, the next read starts a new one.
const MIN_ROOM: usize = 4 * 1024;

#[derive(Default)]
pub struct PipeReader {
    buf: BytesMut,
}

impl PipeReader {
    /// The next bytes from `pipe`, or None at its end. Cancel-safe: nothing is read unless
    /// it is returned.
    pub async fn read(&mut self, pipe: &mut pipe::Receiver) -> std::io::Result<Option<Bytes>> {
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            // A block still shared with kept output stays theirs; this takes a new one.
            self.buf.reserve(BLOCK);
        }
        loop {
            match pipe.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(self.buf.split().freeze())),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

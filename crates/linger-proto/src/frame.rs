//! Framing: every message is a big-endian `u32` length followed by that many bytes: of
//! MessagePack (maps with named fields, enums externally tagged), or, with the length's top
//! bit set, of a data frame (`data.rs`: output and forwarded input, a fixed header and the
//! bytes).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, FramedRead};

use crate::data::{DataHeader, Wire, DATA_FLAG, HEADER_LEN};

/// Largest frame either side accepts. A peer announcing more is malformed and the
/// connection is closed; output is chunked far below this.
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("malformed data frame: {0}")]
    Data(String),
}

impl FrameError {
    /// True when the peer sent bytes that are not a valid frame or message (as opposed to
    /// the connection simply failing).
    pub fn is_malformed(&self) -> bool {
        match self {
            FrameError::Decode(_) | FrameError::Data(_) => true,
            FrameError::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            FrameError::Encode(_) => false,
        }
    }
}

/// Bytes of a partial frame a reader holds before they count against its budget.
const FREE_PARTIAL: usize = 256 * 1024;
/// How much room a reader makes at a time for a frame still arriving.
const GROW: usize = 256 * 1024;

/// Bytes that the readers sharing it may hold in frames not yet complete (a peer that
/// announces big frames and sends them slowly, on many connections). Each reader's first
/// `FREE_PARTIAL` bytes are not counted.
pub struct FrameBudget {
    limit: usize,
    held: AtomicUsize,
}

impl FrameBudget {
    pub fn new(limit: usize) -> Arc<FrameBudget> {
        Arc::new(FrameBudget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// Bytes counted now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn charge(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + n <= self.limit).then_some(held + n)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Length-prefixed frames (a big-endian `u32`, then the body), as tokio-util's
/// `LengthDelimitedCodec` reads them, except that room for a frame is made as its bytes
/// arrive, not when its header announces them: a header alone costs nothing, and the
/// partial frames of readers sharing a [`FrameBudget`] are bounded in total.
pub struct FrameCodec {
    max: usize,
    budget: Option<Arc<FrameBudget>>,
    /// Bytes of the current partial frame counted against the budget.
    charged: usize,
}

impl FrameCodec {
    pub fn new() -> FrameCodec {
        FrameCodec {
            max: MAX_FRAME_LEN,
            budget: None,
            charged: 0,
        }
    }

    fn uncharge(&mut self) {
        if let Some(b) = &self.budget {
            b.release(self.charged);
        }
        self.charged = 0;
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl Drop for FrameCodec {
    fn drop(&mut self) {
        self.uncharge();
    }
}

/// A frame's body, and whether it is a data frame.
#[derive(Debug)]
pub struct Frame {
    pub data: bool,
    pub body: BytesMut,
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if src.len() < 4 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let len = (word & !DATA_FLAG) as usize;
        if len > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a frame of {len} bytes is larger than the {} allowed here",
                    self.max
                ),
            ));
        }
        let whole = 4 + len;
        if src.len() < whole {
            // Room for the next chunk of it only.
            let room = (whole - src.len()).min(GROW);
            src.reserve(room);
            if let Some(budget) = &self.budget {
                let counted = src.len().saturating_sub(FREE_PARTIAL);
                if counted > self.charged {
                    if !budget.charge(counted - self.charged) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "too many bytes of unfinished frames are held for all connections",
                        ));
                    }
                    self.charged = counted;
                }
            }
            return Ok(None);
        }
        self.uncharge();
        let mut body = src.split_to(whole);
        body.advance(4);
        Ok(Some(Frame {
            data: word & DATA_FLAG != 0,
            body,
        }))
    }
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    Ok(Bytes::from(rmp_serde::to_vec_named(msg)?))
}

pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    Ok(rmp_serde::from_slice(frame)?)
}

/// The message a frame carries.
pub fn message<T: Wire>(frame: Frame) -> Result<T, FrameError> {
    if frame.data {
        let header = DataHeader::decode(&frame.body).map_err(FrameError::Data)?;
        let payload = frame.body.freeze().slice(HEADER_LEN..);
        return T::from_data(header, payload).map_err(FrameError::Data);
    }
    let msg: T = decode(&frame.body)?;
    if msg.as_data().is_some() {
        return Err(FrameError::Data(
            "output and input travel only as data frames".into(),
        ));
    }
    Ok(msg)
}

/// One whole frame holding `msg`, length word included, as the wire carries it.
pub fn to_wire<T: Wire>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    match msg.as_data() {
        Some((header, payload)) => {
            out.put_u32(DATA_FLAG | (HEADER_LEN + payload.len()) as u32);
            header.encode(&mut out);
            out.extend_from_slice(payload);
        }
        None => {
            let body = rmp_serde::to_vec_named(msg)?;
            out.put_u32(body.len() as u32);
            out.extend_from_slice(&body);
        }
    }
    Ok(out)
}

/// Reading half of a framed connection.
pub struct FrameReader<R> {
    inner: FramedRead<R, FrameCodec>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            inner: FramedRead::with_capacity(r, FrameCodec::new(), 256 * 1024),
        }
    }

    /// Counts this reader's unfinished frames against `budget` from now on; one that would
    /// pass it fails the read (as malformed).
    pub fn set_budget(&mut self, budget: Arc<FrameBudget>) {
        let codec = self.inner.decoder_mut();
        codec.uncharge();
        codec.budget = Some(budget);
    }

    /// Refuses frames longer than `len` from now on (as malformed): a peer not yet
    /// authenticated gets a small limit, so that it cannot make the reader reserve room for
    /// a large frame. At most [`MAX_FRAME_LEN`].
    pub fn set_max_frame_len(&mut self, len: usize) {
        self.inner.decoder_mut().max = len.min(MAX_FRAME_LEN);
    }

    /// Next message, or `None` at a clean end of stream.
    pub async fn read<T: Wire>(&mut self) -> Result<Option<T>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            // TLS reports a peer that closed without close_notify as an unexpected end; at a
            // frame boundary that is just the end of the conversation (no frame was cut).
            Some(Err(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    && self.inner.read_buffer().is_empty() =>
            {
                Ok(None)
            }
            Some(Err(e)) => Err(e.into()),
            Some(Ok(frame)) => Ok(Some(message(frame)?)),
        }
    }
}

/// Writing half of a framed connection. Control messages are encoded straight into one
/// reused buffer (length prefix patched in afterwards); a data frame's header goes there
/// too, and its payload, unless small, is queued as it is and written with the buffer in one
/// vectored write: output crosses a relay without being copied.
pub struct FrameWriter<W> {
    w: W,
    buf: BytesMut,
    /// Written before what `buf` holds now, in order.
    queue: VecDeque<Bytes>,
    queued: usize,
}

/// Above this much queued, `feed` writes to the socket without waiting for `flush`.
const WRITE_BATCH: usize = 1 << 20;
/// Payloads up to this size are copied into the buffer: cheaper than an I/O vector entry.
const COPY_UP_TO: usize = 4 * 1024;
/// I/O vector entries per write.
const MAX_SLICES: usize = 64;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        FrameWriter {
            w,
            buf: BytesMut::with_capacity(64 * 1024),
            queue: VecDeque::new(),
            queued: 0,
        }
    }

    pub async fn write<T: Wire>(&mut self, msg: &T) -> Result<(), FrameError> {
        self.feed(msg).await?;
        self.flush().await
    }

    /// Queues a message without flushing: callers batching several frames call
    /// [`FrameWriter::flush`] once afterwards.
    pub async fn feed<T: Wire>(&mut self, msg: &T) -> Result<(), FrameError> {
        match msg.as_data() {
            Some((header, payload)) => self.put_data(&header, payload)?,
            None => self.put_control(msg)?,
        }
        if self.buf.len() + self.queued >= WRITE_BATCH {
            self.write_out().await?;
        }
        Ok(())
    }

    fn put_data(&mut self, header: &DataHeader, payload: &Bytes) -> Result<(), FrameError> {
        let len = HEADER_LEN + payload.len();
        if len > MAX_FRAME_LEN {
            return Err(too_big(len));
        }
        self.buf.put_u32(DATA_FLAG | len as u32);
        header.encode(&mut self.buf);
        if payload.len() <= COPY_UP_TO {
            self.buf.extend_from_slice(payload);
        } else {
            let before = self.buf.split().freeze();
            self.queued += before.len() + payload.len();
            self.queue.push_back(before);
            self.queue.push_back(payload.clone());
        }
        Ok(())
    }

    fn put_control<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        let start = self.buf.len();
        self.buf.put_u32(0);
        let encoded = rmp_serde::encode::write_named(&mut (&mut self.buf).writer(), msg);
        let len = self.buf.len() - start - 4;
        if let Err(e) = encoded {
            self.buf.truncate(start);
            return Err(e.into());
        }
        if len > MAX_FRAME_LEN {
            self.buf.truncate(start);
            return Err(too_big(len));
        }
        self.buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Writes everything queued and buffered, in order, in vectored writes.
    async fn write_out(&mut self) -> Result<(), FrameError> {
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            self.queued += rest.len();
            self.queue.push_back(rest);
        }
        while !self.queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(MAX_SLICES)
                .map(|b| IoSlice::new(b))
                .collect();
            let mut n = self.w.write_vectored(&slices).await?;
            if n == 0 {
                return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.queued -= n;
            while n > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.write_out().await?;
        self.w.flush().await?;
        Ok(())
    }
}

fn too_big(len: usize) -> FrameError {
    FrameError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("message of {len} bytes exceeds the frame limit of {MAX_FRAME_LEN}"),
    ))
}

/// Both halves of a connection over one socket.
pub struct FramedConn<R, W> {
    pub reader: FrameReader<R>,
    pub writer: FrameWriter<W>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> FramedConn<R, W> {
    pub fn new(r: R, w: W) -> Self {
        FramedConn {
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerMsg;

    #[tokio::test]
    async fn frames_written_in_place_read_back_in_order() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(a);
        let mut reader = FrameReader::new(b);
        let sent: Vec<ServerMsg> = (0..200u64)
            .map(|nonce| ServerMsg::Pong { nonce })
            .chain(std::iter::once(ServerMsg::Output {
                rid: 7,
                seq: 9,
                command_id: uuid::Uuid::nil(),
                stream: crate::types::StreamKind::Stdout,
                data: Bytes::from(vec![0xA5; 3 << 20]),
            }))
            .collect();
        let expected = sent.len();
        let writing = tokio::spawn(async move {
            for m in &sent {
                writer.feed(m).await.expect("feed");
            }
            writer.flush().await.expect("flush");
        });
        for i in 0..expected {
            match reader.read::<ServerMsg>().await.expect("frame") {
                Some(ServerMsg::Pong { nonce }) => assert_eq!(nonce, i as u64),
                Some(ServerMsg::Output { data, seq, .. }) => {
                    assert_eq!((seq, data.len()), (9, 3 << 20));
                    assert!(data.iter().all(|&b| b == 0xA5));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        writing.await.expect("writer task");
    }

    #[test]
    fn a_header_alone_reserves_nothing_and_partial_frames_are_counted() {
        let budget = FrameBudget::new(1 << 20);
        let mut codec = FrameCodec::new();
        codec.budget = Some(budget.clone());
        let mut src = BytesMut::new();
        src.put_u32(MAX_FRAME_LEN as u32);
        assert!(codec.decode(&mut src).expect("a header").is_none());
        assert!(src.capacity() <= 4 + GROW, "{}", src.capacity());
        assert_eq!(budget.held(), 0, "the first bytes are free");
        // The frame's bytes arrive: beyond the free part they count, up to the limit.
        src.extend_from_slice(&vec![0; FREE_PARTIAL + 1000]);
        assert!(codec.decode(&mut src).expect("partial").is_none());
        assert_eq!(budget.held(), 1004);
        src.extend_from_slice(&vec![0; 1 << 20]);
        assert!(codec.decode(&mut src).is_err(), "past the budget");
        // A reader that goes away gives back what it held.
        drop(codec);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_complete_frame_gives_back_what_it_held() {
        let budget = FrameBudget::new(8 << 20);
        let mut codec = FrameCodec::new();
        codec.budget = Some(budget.clone());
        let body = vec![7u8; 2 << 20];
        let mut src = BytesMut::new();
        src.put_u32(body.len() as u32);
        src.extend_from_slice(&body[..1 << 20]);
        assert!(codec.decode(&mut src).expect("partial").is_none());
        assert!(budget.held() > 0);
        src.extend_from_slice(&body[1 << 20..]);
        src.put_u32(1);
        src.put_u8(9);
        let frame = codec.decode(&mut src).expect("frame").expect("complete");
        assert_eq!(frame.body.len(), body.len());
        assert_eq!(budget.held(), 0);
        assert_eq!(
            &codec.decode(&mut src).expect("next").expect("small").body[..],
            [9]
        );
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_and_the_writer_stays_usable() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::new(a);
        let mut reader = FrameReader::new(b);
        let huge = ServerMsg::Output {
            rid: 1,
            seq: 1,
            command_id: uuid::Uuid::nil(),
            stream: crate::types::StreamKind::Stdout,
            data: Bytes::from(vec![0; MAX_FRAME_LEN + 1]),
        };
        assert!(writer.feed(&huge).await.is_err());
        writer
            .write(&ServerMsg::Pong { nonce: 5 })
            .await
            .expect("write");
        assert!(matches!(
            reader.read::<ServerMsg>().await,
            Ok(Some(ServerMsg::Pong { nonce: 5 }))
        ));
    }
}

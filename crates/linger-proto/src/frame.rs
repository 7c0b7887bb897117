//! Framing: every message is a big-endian `u32` length followed by that many bytes of
//! MessagePack (maps with named fields, enums externally tagged).

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

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
}

impl FrameError {
    /// True when the peer sent bytes that are not a valid frame or message (as opposed to
    /// the connection simply failing).
    pub fn is_malformed(&self) -> bool {
        match self {
            FrameError::Decode(_) => true,
            FrameError::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            FrameError::Encode(_) => false,
        }
    }
}

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    Ok(Bytes::from(rmp_serde::to_vec_named(msg)?))
}

pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    Ok(rmp_serde::from_slice(frame)?)
}

/// Reading half of a framed connection.
pub struct FrameReader<R> {
    inner: FramedRead<R, LengthDelimitedCodec>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            inner: FramedRead::with_capacity(r, codec(), 256 * 1024),
        }
    }

    /// Refuses frames longer than `len` from now on (as malformed): a peer not yet
    /// authenticated gets a small limit, so that it cannot make the reader reserve room for
    /// a large frame. At most [`MAX_FRAME_LEN`].
    pub fn set_max_frame_len(&mut self, len: usize) {
        self.inner
            .decoder_mut()
            .set_max_frame_length(len.min(MAX_FRAME_LEN));
    }

    /// Next message, or `None` at a clean end of stream.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
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
            Some(Ok(buf)) => Ok(Some(decode(&buf)?)),
        }
    }
}

/// Writing half of a framed connection. Messages are encoded straight into one reused
/// buffer (length prefix patched in afterwards), so output does not cost an allocation
/// and a copy per frame on its way to the socket.
pub struct FrameWriter<W> {
    w: W,
    buf: BytesMut,
}

/// Above this much queued, `feed` writes to the socket without waiting for `flush`.
const WRITE_BATCH: usize = 1 << 20;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        FrameWriter {
            w,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    pub async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        self.feed(msg).await?;
        self.flush().await
    }

    /// Queues a message without flushing: callers batching several frames call
    /// [`FrameWriter::flush`] once afterwards.
    pub async fn feed<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
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
            return Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("message of {len} bytes exceeds the frame limit of {MAX_FRAME_LEN}"),
            )));
        }
        self.buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        if self.buf.len() >= WRITE_BATCH {
            self.w.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.w.flush().await?;
        Ok(())
    }
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

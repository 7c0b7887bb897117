//! Framing: every message is a big-endian `u32` length followed by that many bytes of
//! MessagePack (maps with named fields, enums externally tagged).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

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

    /// Next message, or `None` at a clean end of stream.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(buf)) => Ok(Some(decode(&buf)?)),
        }
    }
}

/// Writing half of a framed connection.
pub struct FrameWriter<W> {
    inner: FramedWrite<W, LengthDelimitedCodec>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        FrameWriter {
            inner: FramedWrite::new(w, codec()),
        }
    }

    pub async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        self.inner.send(encode(msg)?).await?;
        Ok(())
    }

    /// Queues a message without flushing: callers batching several frames call
    /// [`FrameWriter::flush`] once afterwards.
    pub async fn feed<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        self.inner.feed(encode(msg)?).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), FrameError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await?;
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

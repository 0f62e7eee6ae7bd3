//! Message framing over the raw byte stream, with buffers that survive cancellation.

use bytes::{Buf, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ReplicationError;

/// Tag of CopyBothResponse, which `postgres_protocol` does not decode.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// One decoded server message.
pub(crate) enum Backend {
    Message(Message),
    CopyBothResponse,
}

/// Owns the stream plus both buffers so that a dropped future never loses or tears a message.
pub(crate) struct Framed<S> {
    stream: S,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub(crate) fn new(stream: S) -> Self {
        Framed {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(1024),
        }
    }

    /// Buffer that frontend messages are encoded into; nothing is sent until `flush`.
    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Sends everything queued; bytes already written are consumed, so a retry after cancellation resumes.
    pub(crate) async fn flush(&mut self) -> Result<(), ReplicationError> {
        while self.write_buf.has_remaining() {
            let n = self.stream.write_buf(&mut self.write_buf).await?;
            if n == 0 {
                return Err(ReplicationError::ConnectionClosed);
            }
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Decodes one complete message from the read buffer, if one is there.
    pub(crate) fn try_next(&mut self) -> Result<Option<Backend>, ReplicationError> {
        if self.read_buf.len() >= 5 && self.read_buf[0] == COPY_BOTH_RESPONSE_TAG {
            let len = u32::from_be_bytes([
                self.read_buf[1],
                self.read_buf[2],
                self.read_buf[3],
                self.read_buf[4],
            ]) as usize;
            if len < 4 {
                return Err(ReplicationError::protocol(
                    "invalid CopyBothResponse length",
                ));
            }
            if self.read_buf.len() < len + 1 {
                return Ok(None);
            }
            // The column formats are irrelevant for replication: the payload is always binary CopyData.
            self.read_buf.advance(len + 1);
            return Ok(Some(Backend::CopyBothResponse));
        }
        match Message::parse(&mut self.read_buf) {
            Ok(Some(msg)) => Ok(Some(Backend::Message(msg))),
            Ok(None) => Ok(None),
            Err(e) => Err(ReplicationError::protocol(format!(
                "malformed message from server: {e}"
            ))),
        }
    }

    /// Reads more bytes into the buffer; returns 0 at end of stream. Cancel-safe.
    pub(crate) async fn fill(&mut self) -> Result<usize, ReplicationError> {
        if self.read_buf.capacity() - self.read_buf.len() < 4096 {
            self.read_buf.reserve(64 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.read_buf).await?)
    }

    /// Waits for the next message; end of stream is `ConnectionClosed`.
    pub(crate) async fn next(&mut self) -> Result<Backend, ReplicationError> {
        loop {
            if let Some(msg) = self.try_next()? {
                return Ok(msg);
            }
            if self.fill().await? == 0 {
                return Err(ReplicationError::ConnectionClosed);
            }
        }
    }
}

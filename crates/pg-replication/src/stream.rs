//! Messages exchanged inside the COPY BOTH replication stream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::ReplicationConnection;
use crate::error::ReplicationError;
use crate::framing::Backend;
use crate::lsn::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One message from the server's replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// A chunk of decoded WAL: for pgoutput, exactly one protocol message.
    XLogData {
        /// WAL position of the start of this data.
        wal_start: Lsn,
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// The output plugin's message.
        data: Bytes,
    },
    /// Server heartbeat; a reply is needed promptly when `reply_requested` is set, or the server disconnects.
    Keepalive {
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Whether the server wants a standby status update right away.
        reply_requested: bool,
    },
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ReplicationConnection<S> {
    /// Next message of the stream, or Ok(None) if nothing arrived within `wait`; a partially received message is kept for the next call.
    pub async fn recv(
        &mut self,
        wait: Duration,
    ) -> Result<Option<ReplicationMessage>, ReplicationError> {
        if !self.streaming {
            return Err(ReplicationError::InvalidState(
                "recv requires an active replication stream (call start_logical first)",
            ));
        }
        let deadline = tokio::time::Instant::now().checked_add(wait);
        loop {
            while let Some(msg) = self.framed.try_next()? {
                if let Some(out) = self.stream_message(msg)? {
                    return Ok(Some(out));
                }
            }
            // Only the read is under the timeout: read_buf is cancel-safe, so no bytes are lost when it fires.
            let read = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.framed.fill()).await {
                        Ok(read) => read?,
                        Err(_) => return Ok(None),
                    }
                }
                None => self.framed.fill().await?,
            };
            if read == 0 {
                self.streaming = false;
                return Err(ReplicationError::StreamEnded);
            }
        }
    }

    /// Standby status update: written, flushed and applied positions, the client clock, and whether the server should reply.
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        if !self.streaming {
            return Err(ReplicationError::InvalidState(
                "send_status requires an active replication stream",
            ));
        }
        let payload = status_update(written, flushed, applied, pg_now_micros(), reply_requested);
        frontend::CopyData::new(&payload[..])?.write(self.framed.out());
        self.framed.flush().await
    }

    /// Handles one message while streaming; `None` means it was consumed without producing output.
    fn stream_message(
        &mut self,
        msg: Backend,
    ) -> Result<Option<ReplicationMessage>, ReplicationError> {
        match msg {
            Backend::Message(Message::CopyData(body)) => {
                decode_copy_data(body.into_bytes()).map(Some)
            }
            // A server shutting down ends the stream; some paths skip CopyDone.
            Backend::Message(Message::CopyDone) | Backend::Message(Message::CommandComplete(_)) => {
                self.streaming = false;
                Err(ReplicationError::StreamEnded)
            }
            Backend::Message(Message::ErrorResponse(body)) => {
                self.streaming = false;
                Err(ReplicationError::from_fields(body.fields()))
            }
            Backend::Message(msg) => self.handle_async_message(msg).map(|()| None),
            Backend::CopyBothResponse => Err(ReplicationError::protocol(
                "unexpected CopyBothResponse while streaming",
            )),
        }
    }
}

/// Decodes the payload of a CopyData message from the walsender.
pub(crate) fn decode_copy_data(mut data: Bytes) -> Result<ReplicationMessage, ReplicationError> {
    if data.is_empty() {
        return Err(ReplicationError::protocol(
            "empty CopyData in replication stream",
        ));
    }
    match data.get_u8() {
        b'w' => {
            // wal_start, wal_end, server send time.
            if data.len() < 24 {
                return Err(ReplicationError::protocol("truncated XLogData message"));
            }
            let wal_start = data.get_u64();
            let wal_end = data.get_u64();
            let _send_time = data.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                data,
            })
        }
        b'k' => {
            // wal_end, server send time, reply flag.
            if data.len() < 17 {
                return Err(ReplicationError::protocol(
                    "truncated primary keepalive message",
                ));
            }
            let wal_end = data.get_u64();
            let _send_time = data.get_i64();
            let reply_requested = data.get_u8() != 0;
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
            })
        }
        tag => Err(ReplicationError::protocol(format!(
            "unknown replication message type {:?}",
            char::from(tag)
        ))),
    }
}

/// Encodes a standby status update ('r') payload.
pub(crate) fn status_update(
    written: Lsn,
    flushed: Lsn,
    applied: Lsn,
    client_time_micros: i64,
    reply_requested: bool,
) -> [u8; 34] {
    let mut out = [0u8; 34];
    out[0] = b'r';
    out[1..9].copy_from_slice(&written.to_be_bytes());
    out[9..17].copy_from_slice(&flushed.to_be_bytes());
    out[17..25].copy_from_slice(&applied.to_be_bytes());
    out[25..33].copy_from_slice(&client_time_micros.to_be_bytes());
    out[33] = u8::from(reply_requested);
    out
}

/// Current time as microseconds since 2000-01-01 UTC, the clock the server expects in status updates.
pub(crate) fn pg_now_micros() -> i64 {
    let unix_micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    unix_micros.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::{BufMut, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;
    use crate::framing::Framed;

    fn xlog_payload(start: u64, end: u64, data: &[u8]) -> Vec<u8> {
        let mut p = vec![b'w'];
        p.extend_from_slice(&start.to_be_bytes());
        p.extend_from_slice(&end.to_be_bytes());
        p.extend_from_slice(&0i64.to_be_bytes());
        p.extend_from_slice(data);
        p
    }

    fn keepalive_payload(end: u64, reply: bool) -> Vec<u8> {
        let mut p = vec![b'k'];
        p.extend_from_slice(&end.to_be_bytes());
        p.extend_from_slice(&0i64.to_be_bytes());
        p.push(u8::from(reply));
        p
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = BytesMut::new();
        f.put_u8(tag);
        f.put_u32(u32::try_from(body.len() + 4).unwrap());
        f.put_slice(body);
        f.to_vec()
    }

    fn streaming_conn(stream: DuplexStream) -> ReplicationConnection<DuplexStream> {
        ReplicationConnection {
            framed: Framed::new(stream),
            parameters: HashMap::new(),
            backend_key: None,
            streaming: true,
        }
    }

    #[test]
    fn decodes_xlogdata() {
        let msg = decode_copy_data(Bytes::from(xlog_payload(1, 2, b"Bxyz"))).unwrap();
        assert_eq!(
            msg,
            ReplicationMessage::XLogData {
                wal_start: 1,
                wal_end: 2,
                data: Bytes::from_static(b"Bxyz"),
            }
        );
    }

    #[test]
    fn decodes_keepalive() {
        let msg = decode_copy_data(Bytes::from(keepalive_payload(0x10, true))).unwrap();
        assert_eq!(
            msg,
            ReplicationMessage::Keepalive {
                wal_end: 0x10,
                reply_requested: true,
            }
        );
    }

    #[test]
    fn rejects_truncated_and_unknown_messages() {
        for bad in [
            &b""[..],
            &b"w\0\0"[..],
            &keepalive_payload(1, false)[..10],
            &b"x123"[..],
        ] {
            let err = decode_copy_data(Bytes::copy_from_slice(bad)).unwrap_err();
            assert!(matches!(err, ReplicationError::Protocol(_)), "{bad:?}");
        }
    }

    #[test]
    fn encodes_status_update() {
        let p = status_update(1, 2, 3, 4, true);
        assert_eq!(p[0], b'r');
        assert_eq!(u64::from_be_bytes(p[1..9].try_into().unwrap()), 1);
        assert_eq!(u64::from_be_bytes(p[9..17].try_into().unwrap()), 2);
        assert_eq!(u64::from_be_bytes(p[17..25].try_into().unwrap()), 3);
        assert_eq!(i64::from_be_bytes(p[25..33].try_into().unwrap()), 4);
        assert_eq!(p[33], 1);
        assert_eq!(status_update(0, 0, 0, 0, false)[33], 0);
    }

    #[test]
    fn clock_uses_postgres_epoch() {
        let now = pg_now_micros();
        // Later than 2020-01-01 and earlier than 2100-01-01 in PostgreSQL's epoch.
        assert!(now > 631_152_000_000_000);
        assert!(now < 3_155_760_000_000_000);
    }

    #[tokio::test]
    async fn timeout_keeps_partial_message() {
        let (client, mut server) = duplex(1 << 16);
        let mut conn = streaming_conn(client);
        let full = frame(b'd', &xlog_payload(5, 6, b"Iabc"));

        server.write_all(&full[..10]).await.unwrap();
        assert_eq!(conn.recv(Duration::from_millis(20)).await.unwrap(), None);

        server.write_all(&full[10..]).await.unwrap();
        let mut notice = b"SNOTICE\0Mhello\0".to_vec();
        notice.push(0);
        server.write_all(&frame(b'N', &notice)).await.unwrap();
        server
            .write_all(&frame(b'S', b"application_name\0x\0"))
            .await
            .unwrap();
        server
            .write_all(&frame(b'd', &keepalive_payload(7, false)))
            .await
            .unwrap();

        assert_eq!(
            conn.recv(Duration::from_secs(5)).await.unwrap(),
            Some(ReplicationMessage::XLogData {
                wal_start: 5,
                wal_end: 6,
                data: Bytes::from_static(b"Iabc"),
            })
        );
        assert_eq!(
            conn.recv(Duration::from_secs(5)).await.unwrap(),
            Some(ReplicationMessage::Keepalive {
                wal_end: 7,
                reply_requested: false,
            })
        );
        assert_eq!(conn.parameter("application_name"), Some("x"));

        server.write_all(&frame(b'c', b"")).await.unwrap();
        assert!(matches!(
            conn.recv(Duration::from_secs(5)).await,
            Err(ReplicationError::StreamEnded)
        ));
        assert!(!conn.is_streaming());
    }

    #[tokio::test]
    async fn dropped_recv_future_keeps_partial_message() {
        let (client, mut server) = duplex(1 << 16);
        let mut conn = streaming_conn(client);
        let full = frame(b'd', &xlog_payload(1, 1, b"C"));
        server.write_all(&full[..20]).await.unwrap();
        {
            let fut = conn.recv(Duration::from_secs(60));
            let raced = tokio::time::timeout(Duration::from_millis(20), fut).await;
            assert!(raced.is_err());
        }
        server.write_all(&full[20..]).await.unwrap();
        let got = conn.recv(Duration::from_secs(5)).await.unwrap();
        assert!(matches!(got, Some(ReplicationMessage::XLogData { data, .. }) if data == "C"));
    }

    #[tokio::test]
    async fn closed_socket_ends_stream() {
        let (client, server) = duplex(1024);
        let mut conn = streaming_conn(client);
        drop(server);
        assert!(matches!(
            conn.recv(Duration::from_secs(5)).await,
            Err(ReplicationError::StreamEnded)
        ));
    }

    #[tokio::test]
    async fn error_response_while_streaming_is_db_error() {
        let (client, mut server) = duplex(1024);
        let mut conn = streaming_conn(client);
        server
            .write_all(&frame(b'E', b"SFATAL\0C57P01\0Mterminating\0\0"))
            .await
            .unwrap();
        let err = conn.recv(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.sqlstate(), Some("57P01"));
    }

    #[tokio::test]
    async fn send_status_writes_copy_data() {
        let (client, mut server) = duplex(1024);
        let mut conn = streaming_conn(client);
        conn.send_status(10, 20, 30, true).await.unwrap();
        let mut buf = [0u8; 39];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf[0], b'd');
        assert_eq!(u32::from_be_bytes(buf[1..5].try_into().unwrap()), 38);
        assert_eq!(buf[5], b'r');
        assert_eq!(u64::from_be_bytes(buf[14..22].try_into().unwrap()), 20);
        assert_eq!(buf[38], 1);
    }

    #[tokio::test]
    async fn queries_are_refused_while_streaming() {
        let (client, _server) = duplex(1024);
        let mut conn = streaming_conn(client);
        assert!(matches!(
            conn.simple_query("SELECT 1").await,
            Err(ReplicationError::InvalidState(_))
        ));
    }
}

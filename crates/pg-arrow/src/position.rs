//! Source positions of the PostgreSQL connectors: opaque to the agent, ordered byte-wise.

use thiserror::Error;

/// A point in a PostgreSQL source's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Position {
    /// Inside the initial copy made under the snapshot exported by the slot created at
    /// `generation` (its consistent LSN), so a restarted copy sorts after an abandoned one.
    Snapshot {
        /// Consistent LSN of the slot the snapshot belongs to.
        generation: u64,
        /// Index of the table in the snapshot's table order.
        table: u32,
        /// Chunk number within the table.
        chunk: u64,
    },
    /// Inside the change stream: the transaction committing at `lsn`, up to change `seq`.
    /// `seq == u64::MAX` means the whole transaction (or everything before `lsn`).
    Changes {
        /// Commit LSN of the transaction, or the WAL position of a heartbeat.
        lsn: u64,
        /// Ordinal of the last change included.
        seq: u64,
    },
}

/// A position that does not decode.
#[derive(Debug, Error)]
#[error("position bytes are not a PostgreSQL source position ({len} bytes, tag {tag:?})")]
pub struct PositionError {
    len: usize,
    tag: Option<u8>,
}

impl Position {
    /// Encode so that byte-wise order equals position order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21);
        match *self {
            Position::Snapshot {
                generation,
                table,
                chunk,
            } => {
                out.push(0);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&table.to_be_bytes());
                out.extend_from_slice(&chunk.to_be_bytes());
            }
            Position::Changes { lsn, seq } => {
                out.push(1);
                out.extend_from_slice(&lsn.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        out
    }

    /// Decode bytes written by [`Position::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Position, PositionError> {
        let err = || PositionError {
            len: bytes.len(),
            tag: bytes.first().copied(),
        };
        let u64_at = |at: usize| -> Result<u64, PositionError> {
            let slice = bytes.get(at..at + 8).ok_or_else(err)?;
            Ok(u64::from_be_bytes(slice.try_into().map_err(|_| err())?))
        };
        match (bytes.first(), bytes.len()) {
            (Some(0), 21) => Ok(Position::Snapshot {
                generation: u64_at(1)?,
                table: u32::from_be_bytes(bytes[9..13].try_into().map_err(|_| err())?),
                chunk: u64_at(13)?,
            }),
            (Some(1), 17) => Ok(Position::Changes {
                lsn: u64_at(1)?,
                seq: u64_at(9)?,
            }),
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_matches_position_order() {
        let positions = [
            Position::Snapshot {
                generation: 5,
                table: 0,
                chunk: 0,
            },
            Position::Snapshot {
                generation: 5,
                table: 0,
                chunk: 300,
            },
            Position::Snapshot {
                generation: 5,
                table: 2,
                chunk: 1,
            },
            Position::Snapshot {
                generation: 9,
                table: 0,
                chunk: 0,
            },
            Position::Changes { lsn: 1, seq: 0 },
            Position::Changes {
                lsn: 1,
                seq: u64::MAX,
            },
            Position::Changes {
                lsn: 0x1_0000_0000,
                seq: 3,
            },
        ];
        for pair in positions.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].encode() < pair[1].encode());
        }
        for p in positions {
            assert_eq!(Position::decode(&p.encode()).unwrap(), p);
        }
        assert!(Position::decode(&[7, 1]).is_err());
    }
}

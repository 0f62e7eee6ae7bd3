//! Source positions of the PostgreSQL connectors: opaque to the agent, ordered byte-wise.

use thiserror::Error;

/// Where in its stream a PostgreSQL source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
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

/// Heap page ranges of one table: copied ones during the snapshot, ones still to copy
/// during a backfill. `[start, end)`; `end == u64::MAX` reaches the end of the table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct TableRanges {
    /// Schema name.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Sorted, non-overlapping page ranges.
    pub ranges: Vec<(u64, u64)>,
}

impl TableRanges {
    /// Add `[start, end)`, merging with neighbours.
    pub fn add(&mut self, start: u64, end: u64) {
        self.ranges.push((start, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.ranges = merged;
    }

    /// The ranges of `[0, u64::MAX)` not covered by `self.ranges`.
    pub fn complement(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for &(s, e) in &self.ranges {
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < u64::MAX {
            out.push((at, u64::MAX));
        }
        out
    }

    /// Whether the ranges cover the whole table.
    pub fn complete(&self) -> bool {
        self.ranges == [(0, u64::MAX)]
    }
}

/// A point in a PostgreSQL source's stream, with the progress of copies in flight.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Where the stream is.
    pub stage: Stage,
    /// Snapshot stage: page ranges copied so far. Change stage: page ranges of tables
    /// being backfilled that remain to be copied.
    pub tables: Vec<TableRanges>,
}

/// A position that does not decode.
#[derive(Debug, Error)]
#[error("position bytes are not a PostgreSQL source position ({len} bytes, tag {tag:?})")]
pub struct PositionError {
    len: usize,
    tag: Option<u8>,
}

impl From<Stage> for Position {
    fn from(stage: Stage) -> Position {
        Position {
            stage,
            tables: Vec::new(),
        }
    }
}

impl Stage {
    /// Every transaction that commits before `lsn`, and none that commits at it.
    ///
    /// A WAL end the server reports (a keepalive, a slot's consistent point) is often
    /// exactly where the next commit record lands; `Changes { lsn, MAX }` would count
    /// that transaction as delivered before it is.
    pub fn before(lsn: u64) -> Stage {
        Stage::Changes {
            lsn: lsn.saturating_sub(1),
            seq: u64::MAX,
        }
    }
}

impl Position {
    /// The change-stream position `(lsn, seq)` without progress.
    pub fn changes(lsn: u64, seq: u64) -> Position {
        Stage::Changes { lsn, seq }.into()
    }

    /// The commit LSN of a change-stream position.
    pub fn lsn(&self) -> Option<u64> {
        match self.stage {
            Stage::Changes { lsn, .. } => Some(lsn),
            Stage::Snapshot { .. } => None,
        }
    }

    /// Encode so that byte-wise order equals position order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21);
        match self.stage {
            Stage::Snapshot {
                generation,
                table,
                chunk,
            } => {
                out.push(0);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&table.to_be_bytes());
                out.extend_from_slice(&chunk.to_be_bytes());
            }
            Stage::Changes { lsn, seq } => {
                out.push(1);
                out.extend_from_slice(&lsn.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        if !self.tables.is_empty() {
            out.extend_from_slice(&(self.tables.len() as u32).to_be_bytes());
            for t in &self.tables {
                for s in [&t.namespace, &t.name] {
                    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                out.extend_from_slice(&(t.ranges.len() as u32).to_be_bytes());
                for (s, e) in &t.ranges {
                    out.extend_from_slice(&s.to_be_bytes());
                    out.extend_from_slice(&e.to_be_bytes());
                }
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
        let mut r = Cursor { bytes, at: 1 };
        let stage = match bytes.first() {
            Some(0) => Stage::Snapshot {
                generation: r.u64().ok_or_else(err)?,
                table: r.u32().ok_or_else(err)?,
                chunk: r.u64().ok_or_else(err)?,
            },
            Some(1) => Stage::Changes {
                lsn: r.u64().ok_or_else(err)?,
                seq: r.u64().ok_or_else(err)?,
            },
            _ => return Err(err()),
        };
        let mut tables = Vec::new();
        if r.at < bytes.len() {
            let n = r.u32().ok_or_else(err)?;
            for _ in 0..n {
                let namespace = r.string().ok_or_else(err)?;
                let name = r.string().ok_or_else(err)?;
                let count = r.u32().ok_or_else(err)?;
                let mut ranges = Vec::new();
                for _ in 0..count {
                    ranges.push((r.u64().ok_or_else(err)?, r.u64().ok_or_else(err)?));
                }
                tables.push(TableRanges {
                    namespace,
                    name,
                    ranges,
                });
            }
        }
        if r.at != bytes.len() {
            return Err(err());
        }
        Ok(Position { stage, tables })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn before_sorts_ahead_of_a_transaction_committing_at_that_lsn() {
        let before = Position::from(Stage::before(0x47babc8)).encode();
        for seq in [0, 1, u64::MAX] {
            assert!(before < Position::changes(0x47babc8, seq).encode());
        }
        assert!(before > Position::changes(0x47babc7 - 8, u64::MAX).encode());
        assert_eq!(
            Stage::before(0),
            Stage::Changes {
                lsn: 0,
                seq: u64::MAX
            }
        );
    }

    use super::*;

    #[test]
    fn byte_order_matches_position_order() {
        let positions: Vec<Position> = vec![
            Stage::Snapshot {
                generation: 5,
                table: 0,
                chunk: 0,
            }
            .into(),
            Stage::Snapshot {
                generation: 5,
                table: 0,
                chunk: 300,
            }
            .into(),
            Stage::Snapshot {
                generation: 9,
                table: 0,
                chunk: 0,
            }
            .into(),
            Position::changes(1, 0),
            Position::changes(1, u64::MAX),
            Position {
                stage: Stage::Changes {
                    lsn: 0x1_0000_0000,
                    seq: 3,
                },
                tables: vec![TableRanges {
                    namespace: "public".into(),
                    name: "t".into(),
                    ranges: vec![(0, 10), (20, u64::MAX)],
                }],
            },
            Position::changes(0x1_0000_0001, 0),
        ];
        for pair in positions.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].encode() < pair[1].encode());
        }
        for p in positions {
            assert_eq!(Position::decode(&p.encode()).unwrap(), p);
        }
        assert!(Position::decode(&[7, 1]).is_err());
        let mut bad = Position::changes(1, 1).encode();
        bad.push(0);
        assert!(Position::decode(&bad).is_err());
    }

    #[test]
    fn ranges_merge_and_complement() {
        let mut t = TableRanges::default();
        t.add(16, 32);
        t.add(0, 16);
        t.add(48, u64::MAX);
        assert_eq!(t.ranges, vec![(0, 32), (48, u64::MAX)]);
        assert_eq!(t.complement(), vec![(32, 48)]);
        assert!(!t.complete());
        t.add(32, 48);
        assert!(t.complete());
        assert!(t.complement().is_empty());
        assert_eq!(TableRanges::default().complement(), vec![(0, u64::MAX)]);
    }
}

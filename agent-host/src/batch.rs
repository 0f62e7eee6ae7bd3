//! The agent's own form of a batch, and its durable segment encoding.

use thiserror::Error;

use crate::bindings::{destination, source};

/// What a batch carries (mirrors the WIT `batch-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Snapshot rows.
    Snapshot,
    /// Change rows.
    Changes,
    /// Position only.
    Heartbeat,
}

/// Rows of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    /// Schema name.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// First snapshot chunk of the table.
    pub first_of_table: bool,
    /// Rows in `ipc`.
    pub row_count: u32,
    /// Arrow IPC stream.
    pub ipc: Vec<u8>,
}

/// A batch between source and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Kind.
    pub kind: Kind,
    /// Source position after the batch.
    pub position: Vec<u8>,
    /// Rows per table.
    pub tables: Vec<TableRows>,
    /// Source lag in bytes.
    pub lag_bytes: u64,
    /// The source transaction continues in the next batch.
    pub continues: bool,
}

/// A segment that does not decode.
#[derive(Debug, Error)]
#[error("buffer segment is corrupt: {0}")]
pub struct SegmentError(pub &'static str);

const MAGIC: &[u8; 6] = b"CVSEG2";
/// Segments written before batches carried `continues` (read as `false`).
const MAGIC_V1: &[u8; 6] = b"CVSEG1";

impl Batch {
    /// Rows in the batch.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.row_count as u64).sum()
    }

    /// Arrow bytes in the batch.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.ipc.len() as u64).sum()
    }

    /// Encode for the buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes() as usize + 256);
        out.extend_from_slice(MAGIC);
        out.push(match self.kind {
            Kind::Snapshot => 0,
            Kind::Changes => 1,
            Kind::Heartbeat => 2,
        });
        out.push(self.continues as u8);
        out.extend_from_slice(&self.lag_bytes.to_le_bytes());
        put_bytes(&mut out, &self.position);
        out.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            put_bytes(&mut out, t.namespace.as_bytes());
            put_bytes(&mut out, t.name.as_bytes());
            out.push(t.first_of_table as u8);
            out.extend_from_slice(&t.row_count.to_le_bytes());
            put_bytes(&mut out, &t.ipc);
        }
        out
    }

    /// Decode a buffer segment.
    pub fn decode(bytes: &[u8]) -> Result<Batch, SegmentError> {
        let mut r = Reader { bytes, at: 0 };
        let v1 = match r.take(MAGIC.len())? {
            m if m == MAGIC => false,
            m if m == MAGIC_V1 => true,
            _ => return Err(SegmentError("bad magic")),
        };
        let kind = match r.take(1)?[0] {
            0 => Kind::Snapshot,
            1 => Kind::Changes,
            2 => Kind::Heartbeat,
            _ => return Err(SegmentError("bad kind")),
        };
        let continues = !v1 && r.take(1)?[0] != 0;
        let lag_bytes = r.u64()?;
        let position = r.bytes()?.to_vec();
        let n = r.u32()? as usize;
        let mut tables = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let namespace =
                String::from_utf8(r.bytes()?.to_vec()).map_err(|_| SegmentError("bad name"))?;
            let name =
                String::from_utf8(r.bytes()?.to_vec()).map_err(|_| SegmentError("bad name"))?;
            let first_of_table = r.take(1)?[0] != 0;
            let row_count = r.u32()?;
            let ipc = r.bytes()?.to_vec();
            tables.push(TableRows {
                namespace,
                name,
                first_of_table,
                row_count,
                ipc,
            });
        }
        if r.at != bytes.len() {
            return Err(SegmentError("trailing bytes"));
        }
        Ok(Batch {
            kind,
            position,
            tables,
            lag_bytes,
            continues,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SegmentError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(SegmentError("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, SegmentError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, SegmentError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SegmentError> {
        let n = self.u64()? as usize;
        self.take(n)
    }
}

impl From<source::culvert::connector::types::Batch> for Batch {
    fn from(b: source::culvert::connector::types::Batch) -> Batch {
        use source::culvert::connector::types::BatchKind as K;
        Batch {
            kind: match b.kind {
                K::Snapshot => Kind::Snapshot,
                K::Changes => Kind::Changes,
                K::Heartbeat => Kind::Heartbeat,
            },
            position: b.position,
            lag_bytes: b.lag_bytes,
            continues: b.continues,
            tables: b
                .tables
                .into_iter()
                .map(|t| TableRows {
                    namespace: t.table.namespace,
                    name: t.table.name,
                    first_of_table: t.first_of_table,
                    row_count: t.row_count,
                    ipc: t.ipc,
                })
                .collect(),
        }
    }
}

impl From<Batch> for destination::culvert::connector::types::Batch {
    fn from(b: Batch) -> Self {
        use destination::culvert::connector::types as d;
        d::Batch {
            kind: match b.kind {
                Kind::Snapshot => d::BatchKind::Snapshot,
                Kind::Changes => d::BatchKind::Changes,
                Kind::Heartbeat => d::BatchKind::Heartbeat,
            },
            position: b.position,
            lag_bytes: b.lag_bytes,
            continues: b.continues,
            tables: b
                .tables
                .into_iter()
                .map(|t| d::TableRows {
                    table: d::TableRef {
                        namespace: t.namespace,
                        name: t.name,
                    },
                    first_of_table: t.first_of_table,
                    row_count: t.row_count,
                    ipc: t.ipc,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_reject_damage() {
        let b = Batch {
            kind: Kind::Changes,
            position: vec![1, 2, 3],
            lag_bytes: 42,
            continues: true,
            tables: vec![TableRows {
                namespace: "s".into(),
                name: "t".into(),
                first_of_table: true,
                row_count: 7,
                ipc: vec![9; 100],
            }],
        };
        let bytes = b.encode();
        assert_eq!(Batch::decode(&bytes).unwrap(), b);
        for cut in [0, 5, 20, bytes.len() - 1] {
            assert!(Batch::decode(&bytes[..cut]).is_err());
        }
    }
}

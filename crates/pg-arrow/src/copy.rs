//! PostgreSQL `COPY ... (FORMAT binary)` streams: parsing rows out and writing rows in.

use bytes::{Buf, BytesMut};
use thiserror::Error;

use crate::encode::{ColumnEncoder, EncodeError};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A COPY binary stream that does not parse.
#[derive(Debug, Error)]
pub enum CopyError {
    /// The stream does not start with the COPY binary signature.
    #[error("COPY stream does not start with the binary signature")]
    BadSignature,
    /// A row has a different number of fields than expected.
    #[error("COPY row has {got} fields, expected {expected}")]
    FieldCount {
        /// Fields in the row.
        got: i16,
        /// Fields expected.
        expected: usize,
    },
    /// A field length is negative but not -1.
    #[error("COPY field has invalid length {0}")]
    BadLength(i32),
    /// The stream ended inside a row.
    #[error("COPY stream ended inside a row")]
    Truncated,
}

/// Incremental parser of a COPY binary stream that arrives in arbitrary chunks.
pub struct CopyReader {
    buf: BytesMut,
    header_done: bool,
    finished: bool,
    width: usize,
    offsets: Vec<(usize, i32)>,
}

impl CopyReader {
    /// A parser for rows of `width` fields.
    pub fn new(width: usize) -> CopyReader {
        CopyReader {
            buf: BytesMut::with_capacity(1 << 20),
            header_done: false,
            finished: false,
            width,
            offsets: Vec::with_capacity(width),
        }
    }

    /// Feed the next chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether the trailer has been seen.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Call `row` with the fields of each complete row buffered so far.
    pub fn drain<E: From<CopyError>>(
        &mut self,
        mut row: impl FnMut(&[Option<&[u8]>]) -> Result<(), E>,
    ) -> Result<usize, E> {
        if !self.header_done {
            if self.buf.len() < 19 {
                return Ok(0);
            }
            if &self.buf[..11] != SIGNATURE {
                return Err(CopyError::BadSignature.into());
            }
            let ext = u32::from_be_bytes(self.buf[15..19].try_into().expect("4 bytes")) as usize;
            if self.buf.len() < 19 + ext {
                return Ok(0);
            }
            self.buf.advance(19 + ext);
            self.header_done = true;
        }
        let mut pos = 0;
        let mut rows = 0;
        let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(self.width);
        let data = &self.buf[..];
        loop {
            if data.len() < pos + 2 {
                break;
            }
            let count = i16::from_be_bytes([data[pos], data[pos + 1]]);
            if count == -1 {
                self.finished = true;
                pos += 2;
                break;
            }
            if count as usize != self.width || count < 0 {
                return Err(CopyError::FieldCount {
                    got: count,
                    expected: self.width,
                }
                .into());
            }
            let mut p = pos + 2;
            self.offsets.clear();
            let mut complete = true;
            for _ in 0..count {
                if data.len() < p + 4 {
                    complete = false;
                    break;
                }
                let len = i32::from_be_bytes(data[p..p + 4].try_into().expect("4 bytes"));
                p += 4;
                if len < -1 {
                    return Err(CopyError::BadLength(len).into());
                }
                if len > 0 {
                    if data.len() < p + len as usize {
                        complete = false;
                        break;
                    }
                    self.offsets.push((p, len));
                    p += len as usize;
                } else {
                    self.offsets.push((p, len));
                }
            }
            if !complete {
                break;
            }
            fields.clear();
            fields.extend(self.offsets.iter().map(|&(at, len)| {
                if len < 0 {
                    None
                } else {
                    Some(&data[at..at + len as usize])
                }
            }));
            row(&fields)?;
            rows += 1;
            pos = p;
        }
        self.buf.advance(pos);
        Ok(rows)
    }

    /// Error unless the stream ended cleanly.
    pub fn finish(&self) -> Result<(), CopyError> {
        if self.finished && self.buf.is_empty() {
            Ok(())
        } else {
            Err(CopyError::Truncated)
        }
    }
}

/// Append the COPY binary header.
pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
}

/// Append the COPY binary trailer.
pub fn write_trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Append one row made of row `row` of each column.
pub fn write_row(
    out: &mut Vec<u8>,
    columns: &[ColumnEncoder<'_>],
    row: usize,
) -> Result<(), EncodeError> {
    out.extend_from_slice(&(columns.len() as i16).to_be_bytes());
    for col in columns {
        write_field(out, col, row)?;
    }
    Ok(())
}

/// Append one field: length prefix and value, or -1 for NULL.
pub fn write_field(
    out: &mut Vec<u8>,
    col: &ColumnEncoder<'_>,
    row: usize,
) -> Result<(), EncodeError> {
    if col.is_null(row) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    col.write(row, out)?;
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Append a raw field value (`None` for NULL).
pub fn write_raw_field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&(v.len() as i32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out);
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for v in row {
                write_raw_field(&mut out, *v);
            }
        }
        write_trailer(&mut out);
        out
    }

    #[test]
    fn parses_rows_split_at_every_byte() {
        let rows = vec![
            vec![Some(&b"abc"[..]), None],
            vec![Some(&b""[..]), Some(&b"\x00\x01"[..])],
        ];
        let bytes = stream(&rows);
        for split in 0..bytes.len() {
            let mut reader = CopyReader::new(2);
            let mut seen: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                reader.push(part);
                reader
                    .drain::<CopyError>(|r| {
                        seen.push(r.iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                        Ok(())
                    })
                    .unwrap();
            }
            reader.finish().unwrap();
            assert_eq!(seen.len(), 2, "split at {split}");
            assert_eq!(seen[0][0].as_deref(), Some(&b"abc"[..]));
            assert_eq!(seen[0][1], None);
            assert_eq!(seen[1][0].as_deref(), Some(&b""[..]));
        }
    }

    #[test]
    fn rejects_wrong_width_and_signature() {
        let bytes = stream(&[vec![Some(&b"x"[..])]]);
        let mut reader = CopyReader::new(2);
        reader.push(&bytes);
        assert!(matches!(
            reader.drain::<CopyError>(|_| Ok(())),
            Err(CopyError::FieldCount { .. })
        ));
        let mut reader = CopyReader::new(1);
        reader.push(b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        assert!(matches!(
            reader.drain::<CopyError>(|_| Ok(())),
            Err(CopyError::BadSignature)
        ));
    }
}

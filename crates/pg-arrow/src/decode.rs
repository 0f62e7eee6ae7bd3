//! PostgreSQL binary values into Arrow arrays, one table batch at a time.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, Schema};
use thiserror::Error;

use crate::numeric;
use crate::schema::{change_schema, snapshot_schema};
use crate::types::{PG_EPOCH_DAYS, PG_EPOCH_MICROS, PgKind, TableDesc};

/// A value that does not decode as its column's type.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Wrong length or invalid content for the type.
    #[error("column `{column}` ({type_name}): {reason}")]
    Value {
        /// Column name.
        column: String,
        /// Source type.
        type_name: String,
        /// What is wrong.
        reason: String,
    },
    /// Arrow refused the batch.
    #[error("building Arrow batch: {0}")]
    Arrow(#[from] ArrowError),
}

enum ColBuilder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Utf8(StringBuilder, PgKind),
    Bin(BinaryBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder),
}

impl ColBuilder {
    fn new(kind: PgKind) -> ColBuilder {
        match kind {
            PgKind::Bool => ColBuilder::Bool(BooleanBuilder::new()),
            PgKind::Int2 => ColBuilder::I16(Int16Builder::new()),
            PgKind::Int4 => ColBuilder::I32(Int32Builder::new()),
            PgKind::Int8 => ColBuilder::I64(Int64Builder::new()),
            PgKind::Float4 => ColBuilder::F32(Float32Builder::new()),
            PgKind::Float8 => ColBuilder::F64(Float64Builder::new()),
            PgKind::Text | PgKind::Json | PgKind::Jsonb | PgKind::Enum | PgKind::Numeric => {
                ColBuilder::Utf8(StringBuilder::new(), kind)
            }
            PgKind::Bytea | PgKind::Raw => ColBuilder::Bin(BinaryBuilder::new()),
            PgKind::Uuid => ColBuilder::Uuid(FixedSizeBinaryBuilder::new(16)),
            PgKind::Date => ColBuilder::Date(Date32Builder::new()),
            PgKind::Time => ColBuilder::Time(Time64MicrosecondBuilder::new()),
            PgKind::Timestamp => ColBuilder::Ts(TimestampMicrosecondBuilder::new()),
            PgKind::Timestamptz => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::I16(b) => b.append_null(),
            ColBuilder::I32(b) => b.append_null(),
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::F32(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::Utf8(b, _) => b.append_null(),
            ColBuilder::Bin(b) => b.append_null(),
            ColBuilder::Uuid(b) => b.append_null(),
            ColBuilder::Date(b) => b.append_null(),
            ColBuilder::Time(b) => b.append_null(),
            ColBuilder::Ts(b) => b.append_null(),
        }
    }

    /// Append one value in PostgreSQL binary format; the error string says what is wrong.
    fn append(&mut self, v: &[u8], scratch: &mut String) -> Result<(), String> {
        fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
            v.try_into()
                .map_err(|_| format!("expected {N} bytes, got {}", v.len()))
        }
        match self {
            ColBuilder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            ColBuilder::I16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            ColBuilder::I32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            ColBuilder::I64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            ColBuilder::F32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            ColBuilder::F64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            ColBuilder::Utf8(b, kind) => match kind {
                PgKind::Numeric => {
                    scratch.clear();
                    numeric::numeric_to_text_into(v, scratch).map_err(|e| e.to_string())?;
                    b.append_value(scratch.as_str());
                }
                PgKind::Jsonb => {
                    let (version, text) = v.split_first().ok_or("empty jsonb value")?;
                    if *version != 1 {
                        return Err(format!("unknown jsonb binary version {version}"));
                    }
                    b.append_value(std::str::from_utf8(text).map_err(|e| e.to_string())?);
                }
                _ => b.append_value(std::str::from_utf8(v).map_err(|e| e.to_string())?),
            },
            ColBuilder::Bin(b) => b.append_value(v),
            ColBuilder::Uuid(b) => b.append_value(v).map_err(|e| e.to_string())?,
            ColBuilder::Date(b) => {
                let days = i32::from_be_bytes(fixed(v)?);
                b.append_value(match days {
                    i32::MAX | i32::MIN => days,
                    d => d.checked_add(PG_EPOCH_DAYS).ok_or("date out of range")?,
                });
            }
            ColBuilder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            ColBuilder::Ts(b) => {
                let micros = i64::from_be_bytes(fixed(v)?);
                b.append_value(match micros {
                    i64::MAX | i64::MIN => micros,
                    m => m
                        .checked_add(PG_EPOCH_MICROS)
                        .filter(|u| *u != i64::MAX)
                        .ok_or("timestamp beyond year 294246 cannot be carried in Arrow")?,
                });
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::I16(b) => Arc::new(b.finish()),
            ColBuilder::I32(b) => Arc::new(b.finish()),
            ColBuilder::I64(b) => Arc::new(b.finish()),
            ColBuilder::F32(b) => Arc::new(b.finish()),
            ColBuilder::F64(b) => Arc::new(b.finish()),
            ColBuilder::Utf8(b, _) => Arc::new(b.finish()),
            ColBuilder::Bin(b) => Arc::new(b.finish()),
            ColBuilder::Uuid(b) => Arc::new(b.finish()),
            ColBuilder::Date(b) => Arc::new(b.finish()),
            ColBuilder::Time(b) => Arc::new(b.finish()),
            ColBuilder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

struct ChangeMeta {
    op: StringBuilder,
    lsn: UInt64Builder,
    seq: UInt64Builder,
    unchanged: BinaryBuilder,
}

/// Accumulates rows of one table into an Arrow batch.
pub struct RowsBuilder {
    schema: Arc<Schema>,
    names: Vec<(String, String)>,
    meta: Option<ChangeMeta>,
    cols: Vec<ColBuilder>,
    rows: usize,
    bytes: usize,
    scratch: String,
}

impl RowsBuilder {
    /// Builder for snapshot rows of `table`.
    pub fn snapshot(table: &TableDesc) -> RowsBuilder {
        Self::new(table, snapshot_schema(table), None)
    }

    /// Builder for change rows of `table`.
    pub fn changes(table: &TableDesc) -> RowsBuilder {
        let meta = ChangeMeta {
            op: StringBuilder::new(),
            lsn: UInt64Builder::new(),
            seq: UInt64Builder::new(),
            unchanged: BinaryBuilder::new(),
        };
        Self::new(table, change_schema(table), Some(meta))
    }

    fn new(table: &TableDesc, schema: Arc<Schema>, meta: Option<ChangeMeta>) -> RowsBuilder {
        RowsBuilder {
            schema,
            names: table
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.type_name.clone()))
                .collect(),
            meta,
            cols: table
                .columns
                .iter()
                .map(|c| ColBuilder::new(c.kind))
                .collect(),
            rows: 0,
            bytes: 0,
            scratch: String::new(),
        }
    }

    /// Number of table columns.
    pub fn width(&self) -> usize {
        self.cols.len()
    }

    /// Start a change row; the caller then appends every table column.
    pub fn begin_change(&mut self, op: char, lsn: u64, seq: u64, unchanged: Option<&[u8]>) {
        if let Some(meta) = &mut self.meta {
            let mut buf = [0u8; 4];
            meta.op.append_value(op.encode_utf8(&mut buf));
            meta.lsn.append_value(lsn);
            meta.seq.append_value(seq);
            meta.unchanged.append_option(unchanged);
            self.bytes += 24;
        }
    }

    /// Append a value (PostgreSQL binary format, `None` for NULL) to column `col`.
    pub fn append(&mut self, col: usize, value: Option<&[u8]>) -> Result<(), DecodeError> {
        let builder = &mut self.cols[col];
        match value {
            None => builder.append_null(),
            Some(v) => {
                self.bytes += v.len() + 4;
                builder
                    .append(v, &mut self.scratch)
                    .map_err(|reason| DecodeError::Value {
                        column: self.names[col].0.clone(),
                        type_name: self.names[col].1.clone(),
                        reason,
                    })?;
            }
        }
        Ok(())
    }

    /// Mark the end of a row.
    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    /// Rows appended since the last [`RowsBuilder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate payload bytes appended since the last finish.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Take the rows appended so far as a batch; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, DecodeError> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.cols.len() + 4);
        if let Some(meta) = &mut self.meta {
            arrays.push(Arc::new(meta.op.finish()));
            arrays.push(Arc::new(meta.lsn.finish()));
            arrays.push(Arc::new(meta.seq.finish()));
            arrays.push(Arc::new(meta.unchanged.finish()));
        }
        arrays.extend(self.cols.iter_mut().map(ColBuilder::finish));
        self.rows = 0;
        self.bytes = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

//! Arrow arrays back into PostgreSQL binary values, for COPY and bound parameters.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, FixedSizeBinaryArray, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray,
};
use arrow_schema::DataType;
use thiserror::Error;

use crate::numeric;
use crate::types::{PG_EPOCH_DAYS, PG_EPOCH_MICROS, PgKind};

/// A column whose Arrow data cannot become the PostgreSQL type it claims.
#[derive(Debug, Error)]
#[error("column `{column}`: {reason}")]
pub struct EncodeError {
    /// Column name.
    pub column: String,
    /// What is wrong.
    pub reason: String,
}

enum Typed<'a> {
    Bool(&'a BooleanArray),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Utf8(&'a StringArray, PgKind),
    Bin(&'a BinaryArray, Option<u32>),
    Uuid(&'a FixedSizeBinaryArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Ts(&'a TimestampMicrosecondArray),
}

/// One column of a batch, ready to write values in PostgreSQL binary format.
pub struct ColumnEncoder<'a> {
    name: String,
    array: &'a ArrayRef,
    typed: Typed<'a>,
}

impl<'a> ColumnEncoder<'a> {
    /// Prepare `array` holding values of `kind`. For array-typed `Raw` columns,
    /// `element_oid` is the destination's element type OID, written over the source's.
    pub fn new(
        name: &str,
        array: &'a ArrayRef,
        kind: PgKind,
        element_oid: Option<u32>,
    ) -> Result<ColumnEncoder<'a>, EncodeError> {
        let mismatch = || EncodeError {
            column: name.to_string(),
            reason: format!(
                "Arrow type {} does not carry PostgreSQL kind {}",
                array.data_type(),
                kind.as_str()
            ),
        };
        let typed = match (kind, array.data_type()) {
            (PgKind::Bool, DataType::Boolean) => Typed::Bool(array.as_boolean()),
            (PgKind::Int2, DataType::Int16) => Typed::I16(array.as_primitive::<Int16Type>()),
            (PgKind::Int4, DataType::Int32) => Typed::I32(array.as_primitive::<Int32Type>()),
            (PgKind::Int8, DataType::Int64) => Typed::I64(array.as_primitive::<Int64Type>()),
            (PgKind::Float4, DataType::Float32) => Typed::F32(array.as_primitive::<Float32Type>()),
            (PgKind::Float8, DataType::Float64) => Typed::F64(array.as_primitive::<Float64Type>()),
            (
                PgKind::Text | PgKind::Json | PgKind::Jsonb | PgKind::Enum | PgKind::Numeric,
                DataType::Utf8,
            ) => Typed::Utf8(array.as_string::<i32>(), kind),
            (PgKind::Bytea, DataType::Binary) => Typed::Bin(array.as_binary::<i32>(), None),
            (PgKind::Raw, DataType::Binary) => Typed::Bin(array.as_binary::<i32>(), element_oid),
            (PgKind::Uuid, DataType::FixedSizeBinary(16)) => {
                Typed::Uuid(array.as_fixed_size_binary())
            }
            (PgKind::Date, DataType::Date32) => Typed::Date(array.as_primitive::<Date32Type>()),
            (PgKind::Time, DataType::Time64(_)) => {
                Typed::Time(array.as_primitive::<Time64MicrosecondType>())
            }
            (PgKind::Timestamp | PgKind::Timestamptz, DataType::Timestamp(_, _)) => {
                Typed::Ts(array.as_primitive::<TimestampMicrosecondType>())
            }
            _ => return Err(mismatch()),
        };
        Ok(ColumnEncoder {
            name: name.to_string(),
            array,
            typed,
        })
    }

    /// Whether row `row` is NULL.
    pub fn is_null(&self, row: usize) -> bool {
        self.array.is_null(row)
    }

    /// Append the binary value of row `row` (which must not be NULL) to `out`.
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match &self.typed {
            Typed::Bool(a) => out.push(a.value(row) as u8),
            Typed::I16(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Typed::I32(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Typed::I64(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Typed::F32(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Typed::F64(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Typed::Utf8(a, kind) => {
                let text = a.value(row);
                match kind {
                    PgKind::Numeric => {
                        numeric::text_to_numeric_into(text, out).map_err(|e| self.err(e))?
                    }
                    PgKind::Jsonb => {
                        out.push(1);
                        out.extend_from_slice(text.as_bytes());
                    }
                    _ => out.extend_from_slice(text.as_bytes()),
                }
            }
            Typed::Bin(a, element_oid) => {
                let start = out.len();
                out.extend_from_slice(a.value(row));
                // Array send format: ndim, has-null flag, element OID, then dimensions.
                if let Some(oid) = element_oid
                    && out.len() >= start + 12
                {
                    out[start + 8..start + 12].copy_from_slice(&oid.to_be_bytes());
                }
            }
            Typed::Uuid(a) => out.extend_from_slice(a.value(row)),
            Typed::Date(a) => {
                let days = match a.value(row) {
                    d @ (i32::MAX | i32::MIN) => d,
                    d => d
                        .checked_sub(PG_EPOCH_DAYS)
                        .ok_or_else(|| self.err("date out of range"))?,
                };
                out.extend_from_slice(&days.to_be_bytes());
            }
            Typed::Time(a) => out.extend_from_slice(&a.value(row).to_be_bytes()),
            Typed::Ts(a) => {
                let micros = match a.value(row) {
                    m @ (i64::MAX | i64::MIN) => m,
                    m => m
                        .checked_sub(PG_EPOCH_MICROS)
                        .ok_or_else(|| self.err("timestamp out of range"))?,
                };
                out.extend_from_slice(&micros.to_be_bytes());
            }
        }
        Ok(())
    }

    /// The binary value of row `row`, or `None` for NULL.
    pub fn value(&self, row: usize) -> Result<Option<Vec<u8>>, EncodeError> {
        if self.is_null(row) {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.write(row, &mut out)?;
        Ok(Some(out))
    }

    fn err(&self, reason: impl ToString) -> EncodeError {
        EncodeError {
            column: self.name.clone(),
            reason: reason.to_string(),
        }
    }
}

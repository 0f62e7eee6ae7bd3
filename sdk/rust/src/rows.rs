//! Arrow row data: build a table's rows as IPC stream bytes, and read them back.
//!
//! ```
//! use culvert_connector_sdk::rows::{Column, TableRowsBuilder, TableSchema, Value};
//! use culvert_connector_sdk::TableRef;
//!
//! let schema = TableSchema::new(
//!     TableRef::new("demo", "items"),
//!     vec![Column::bigint("id").primary_key(), Column::text("name"), Column::double("amount")],
//! )?;
//! let mut rows = TableRowsBuilder::new(&schema).first_of_table(true);
//! rows.append_row(&[1i64.into(), "one".into(), 1.5.into()])?;
//! rows.append_row(&[2i64.into(), Value::Null, 2.5.into()])?;
//! let table_rows = rows.finish()?;
//! assert_eq!(table_rows.row_count, 2);
//! assert_eq!(table_rows.record_batches()?[0].num_rows(), 2);
//! # Ok::<(), culvert_connector_sdk::ConnectorError>(())
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, LargeBinaryBuilder,
    LargeStringBuilder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::types::{ColumnInfo, ConnectorError, Result, TableInfo, TableRef, TableRows};

/// Field metadata: the source's type name (used to create the destination column).
pub const META_TYPE: &str = "culvert.type";
/// Schema metadata: JSON array of the primary-key column names.
pub const META_PRIMARY_KEY: &str = "culvert.primary_key";
/// Field metadata: how the value travels, in the first-party PostgreSQL vocabulary
/// (`int8`, `text`, `numeric`, `timestamptz`, …); written when it follows from the type.
pub const META_KIND: &str = "culvert.kind";
/// Field metadata: 1-based position in the primary key.
pub const META_KEY: &str = "culvert.key";
/// Schema metadata: the table's namespace.
pub const META_NAMESPACE: &str = "culvert.namespace";
/// Schema metadata: the table's name.
pub const META_TABLE: &str = "culvert.table";

/// Change column: operation, one of `I`, `U`, `B`, `D`, `T` (utf8).
pub const COL_OP: &str = "__culvert_op";
/// Change column: commit position of the transaction (uint64).
pub const COL_LSN: &str = "__culvert_lsn";
/// Change column: ordinal of the change within its transaction (uint64).
pub const COL_SEQ: &str = "__culvert_seq";
/// Change column: bitmap of table columns not sent (binary, nullable).
pub const COL_UNCHANGED: &str = "__culvert_unchanged";
/// Number of leading change columns.
pub const CHANGE_COLUMNS: usize = 4;

/// A table column: name, Arrow type, source type name, nullability, key membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    name: String,
    data_type: DataType,
    type_name: String,
    nullable: bool,
    primary_key: bool,
    metadata: HashMap<String, String>,
}

impl Column {
    /// A nullable column of `data_type` whose source type is `type_name`
    /// (written as field metadata `culvert.type`).
    pub fn new(
        name: impl Into<String>,
        data_type: DataType,
        type_name: impl Into<String>,
    ) -> Column {
        Column {
            name: name.into(),
            data_type,
            type_name: type_name.into(),
            nullable: true,
            primary_key: false,
            metadata: HashMap::new(),
        }
    }

    /// `bigint` as Int64.
    pub fn bigint(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Int64, "bigint")
    }

    /// `integer` as Int32.
    pub fn integer(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Int32, "integer")
    }

    /// `smallint` as Int16.
    pub fn smallint(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Int16, "smallint")
    }

    /// `double precision` as Float64.
    pub fn double(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Float64, "double precision")
    }

    /// `real` as Float32.
    pub fn real(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Float32, "real")
    }

    /// `boolean` as Boolean.
    pub fn boolean(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Boolean, "boolean")
    }

    /// `text` as Utf8.
    pub fn text(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Utf8, "text")
    }

    /// `jsonb` as Utf8 (JSON text).
    pub fn jsonb(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Utf8, "jsonb")
    }

    /// `numeric` as Utf8 holding the decimal text (exact, any precision).
    pub fn numeric(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Utf8, "numeric")
    }

    /// `bytea` as Binary.
    pub fn bytea(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Binary, "bytea")
    }

    /// `uuid` as FixedSizeBinary(16).
    pub fn uuid(name: impl Into<String>) -> Column {
        Column::new(name, DataType::FixedSizeBinary(16), "uuid")
    }

    /// `date` as Date32 (days since 1970-01-01).
    pub fn date(name: impl Into<String>) -> Column {
        Column::new(name, DataType::Date32, "date")
    }

    /// `timestamp with time zone` as Timestamp(microseconds, UTC).
    pub fn timestamptz(name: impl Into<String>) -> Column {
        Column::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            "timestamp with time zone",
        )
    }

    /// `timestamp without time zone` as Timestamp(microseconds).
    pub fn timestamp(name: impl Into<String>) -> Column {
        Column::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            "timestamp without time zone",
        )
    }

    /// Values are never NULL.
    pub fn not_null(self) -> Column {
        self.nullable(false)
    }

    /// Set whether NULL values are allowed.
    pub fn nullable(mut self, nullable: bool) -> Column {
        self.nullable = nullable;
        self
    }

    /// Part of the primary key (in declaration order); implies NOT NULL.
    pub fn primary_key(mut self) -> Column {
        self.primary_key = true;
        self.nullable = false;
        self
    }

    /// Extra field metadata, for example `culvert.enum`.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Column {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Column name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Arrow type.
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    /// Source type name.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Whether NULL is allowed.
    pub fn is_nullable(&self) -> bool {
        self.nullable
    }

    /// Whether the column is part of the primary key.
    pub fn is_primary_key(&self) -> bool {
        self.primary_key
    }

    /// The first-party kind name implied by the Arrow type and type name, if any.
    fn kind(&self) -> Option<&'static str> {
        let base = self.type_name.to_ascii_lowercase();
        Some(match &self.data_type {
            DataType::Boolean => "bool",
            DataType::Int16 => "int2",
            DataType::Int32 => "int4",
            DataType::Int64 => "int8",
            DataType::Float32 => "float4",
            DataType::Float64 => "float8",
            DataType::Utf8 if base.starts_with("numeric") || base.starts_with("decimal") => {
                "numeric"
            }
            DataType::Utf8 if base == "jsonb" => "jsonb",
            DataType::Utf8 if base == "json" => "json",
            DataType::Utf8 => "text",
            DataType::Binary => "bytea",
            DataType::FixedSizeBinary(16) if base == "uuid" => "uuid",
            DataType::Date32 => "date",
            DataType::Time64(TimeUnit::Microsecond) => "time",
            DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamptz",
            _ => return None,
        })
    }

    fn field(&self, key_ordinal: Option<usize>, nullable: bool) -> Field {
        let mut meta = HashMap::new();
        meta.insert(META_TYPE.to_string(), self.type_name.clone());
        if let Some(kind) = self.kind() {
            meta.insert(META_KIND.to_string(), kind.to_string());
        }
        if let Some(k) = key_ordinal {
            meta.insert(META_KEY.to_string(), k.to_string());
        }
        meta.extend(self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        Field::new(&self.name, self.data_type.clone(), nullable).with_metadata(meta)
    }
}

/// A table's name and columns, from which batch builders and `discover` output are made.
#[derive(Debug, Clone)]
pub struct TableSchema {
    table: TableRef,
    columns: Arc<[Column]>,
    snapshot: SchemaRef,
    changes: SchemaRef,
}

impl TableSchema {
    /// Declare a table. Fails (kind `internal`, a bug in the connector) on duplicate
    /// or reserved column names and on Arrow types the builders cannot fill.
    pub fn new(table: TableRef, columns: Vec<Column>) -> Result<TableSchema> {
        if columns.is_empty() {
            return Err(ConnectorError::internal(format!(
                "table {table} declares no columns"
            )));
        }
        let mut seen = HashSet::new();
        for c in &columns {
            if c.name.starts_with("__culvert_") {
                return Err(ConnectorError::internal(format!(
                    "table {table}: column name `{}` is reserved (the `__culvert_` prefix marks change columns); rename it",
                    c.name
                )));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(ConnectorError::internal(format!(
                    "table {table}: column `{}` is declared twice",
                    c.name
                )));
            }
            if ColumnBuilder::new(&c.data_type, 0).is_none() {
                return Err(ConnectorError::internal(format!(
                    "table {table}, column `{}`: Arrow type {} is not supported by the row builders; use one of Boolean, Int16, Int32, Int64, UInt32, UInt64, Float32, Float64, Utf8, LargeUtf8, Binary, LargeBinary, FixedSizeBinary, Date32, Time64(µs), Timestamp(µs), or build the RecordBatch yourself and use TableRows::from_record_batch",
                    c.name, c.data_type
                )));
            }
        }
        let mut ordinal = 0;
        let keyed: Vec<Option<usize>> = columns
            .iter()
            .map(|c| {
                c.primary_key.then(|| {
                    ordinal += 1;
                    ordinal
                })
            })
            .collect();
        let keys: Vec<&str> = columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.as_str())
            .collect();
        let mut meta = HashMap::new();
        meta.insert(
            META_PRIMARY_KEY.to_string(),
            serde_json::to_string(&keys).expect("names serialize"),
        );
        meta.insert(META_NAMESPACE.to_string(), table.namespace.clone());
        meta.insert(META_TABLE.to_string(), table.name.clone());
        let snapshot_fields: Vec<Field> = columns
            .iter()
            .zip(&keyed)
            .map(|(c, k)| c.field(*k, c.nullable))
            .collect();
        let mut change_fields = vec![
            Field::new(COL_OP, DataType::Utf8, false),
            Field::new(COL_LSN, DataType::UInt64, false),
            Field::new(COL_SEQ, DataType::UInt64, false),
            Field::new(COL_UNCHANGED, DataType::Binary, true),
        ];
        // Deletes carry only the key and truncates nothing, so every table column may be null.
        change_fields.extend(columns.iter().zip(&keyed).map(|(c, k)| c.field(*k, true)));
        Ok(TableSchema {
            snapshot: Arc::new(Schema::new_with_metadata(snapshot_fields, meta.clone())),
            changes: Arc::new(Schema::new_with_metadata(change_fields, meta)),
            table,
            columns: columns.into(),
        })
    }

    /// The table.
    pub fn table(&self) -> &TableRef {
        &self.table
    }

    /// The columns in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Arrow schema of snapshot rows.
    pub fn snapshot_schema(&self) -> SchemaRef {
        self.snapshot.clone()
    }

    /// Arrow schema of change rows: the four `__culvert_` columns, then the table's.
    pub fn changes_schema(&self) -> SchemaRef {
        self.changes.clone()
    }

    /// Names of the primary-key columns in key order.
    pub fn primary_key(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The table as `discover` reports it.
    pub fn table_info(&self, estimated_rows: u64) -> TableInfo {
        let mut ordinal = 0u16;
        TableInfo {
            table: self.table.clone(),
            identifiable: self.columns.iter().any(|c| c.primary_key),
            estimated_rows,
            columns: self
                .columns
                .iter()
                .map(|c| {
                    let info = ColumnInfo::new(&c.name, &c.type_name).nullable(c.nullable);
                    if c.primary_key {
                        ordinal += 1;
                        info.key(ordinal)
                    } else {
                        info
                    }
                })
                .collect(),
        }
    }
}

/// A value to append. Integers fill integer, date (days), time and timestamp
/// (microseconds since 1970-01-01 UTC) columns; `Str` fills text columns; `Bytes`
/// fills binary columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer (also dates, times and timestamps).
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Str(Cow<'a, str>),
    /// Bytes.
    Bytes(Cow<'a, [u8]>),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "boolean {b}"),
            Value::Int(i) => write!(f, "integer {i}"),
            Value::UInt(u) => write!(f, "unsigned integer {u}"),
            Value::Float(x) => write!(f, "float {x}"),
            Value::Str(s) => write!(f, "text {:?}", s.chars().take(40).collect::<String>()),
            Value::Bytes(b) => write!(f, "{} bytes", b.len()),
        }
    }
}

macro_rules! value_from {
    ($variant:ident: $($t:ty),*) => {
        $(impl From<$t> for Value<'_> {
            fn from(v: $t) -> Self {
                Value::$variant(v.into())
            }
        })*
    };
}

value_from!(Bool: bool);
value_from!(Int: i8, i16, i32, i64, u8, u16, u32);
value_from!(UInt: u64);
value_from!(Float: f32, f64);

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Str(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Str(Cow::Owned(v))
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Bytes(Cow::Borrowed(v))
    }
}

impl From<Vec<u8>> for Value<'_> {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(Cow::Owned(v))
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One value checked against its column type.
enum Cell<'v> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'v str),
    Bytes(&'v [u8]),
}

enum ColumnBuilder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Utf8(StringBuilder),
    LargeUtf8(LargeStringBuilder),
    Binary(BinaryBuilder),
    LargeBinary(LargeBinaryBuilder),
    Fixed(FixedSizeBinaryBuilder, i32),
    Date32(Date32Builder),
    Time64(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    fn new(data_type: &DataType, capacity: usize) -> Option<ColumnBuilder> {
        Some(match data_type {
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int16 => ColumnBuilder::I16(Int16Builder::with_capacity(capacity)),
            DataType::Int32 => ColumnBuilder::I32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => ColumnBuilder::I64(Int64Builder::with_capacity(capacity)),
            DataType::UInt32 => ColumnBuilder::U32(UInt32Builder::with_capacity(capacity)),
            DataType::UInt64 => ColumnBuilder::U64(UInt64Builder::with_capacity(capacity)),
            DataType::Float32 => ColumnBuilder::F32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => ColumnBuilder::F64(Float64Builder::with_capacity(capacity)),
            DataType::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(capacity, 0)),
            DataType::LargeUtf8 => {
                ColumnBuilder::LargeUtf8(LargeStringBuilder::with_capacity(capacity, 0))
            }
            DataType::Binary => ColumnBuilder::Binary(BinaryBuilder::with_capacity(capacity, 0)),
            DataType::LargeBinary => {
                ColumnBuilder::LargeBinary(LargeBinaryBuilder::with_capacity(capacity, 0))
            }
            DataType::FixedSizeBinary(n) if *n >= 0 => {
                ColumnBuilder::Fixed(FixedSizeBinaryBuilder::with_capacity(capacity, *n), *n)
            }
            DataType::Date32 => ColumnBuilder::Date32(Date32Builder::with_capacity(capacity)),
            DataType::Time64(TimeUnit::Microsecond) => {
                ColumnBuilder::Time64(Time64MicrosecondBuilder::with_capacity(capacity))
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity)
                    .with_data_type(data_type.clone()),
            ),
            _ => return None,
        })
    }

    /// Check `value` against this column's type; `Err` says what was expected.
    fn cell<'v>(&self, value: &'v Value<'_>) -> std::result::Result<Cell<'v>, &'static str> {
        let int = |v: &Value<'_>| match v {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        };
        Ok(match (self, value) {
            (_, Value::Null) => Cell::Null,
            (ColumnBuilder::Bool(_), Value::Bool(b)) => Cell::Bool(*b),
            (ColumnBuilder::Bool(_), _) => return Err("a boolean"),
            (ColumnBuilder::I16(_), v) => match int(v).filter(|i| i16::try_from(*i).is_ok()) {
                Some(i) => Cell::I64(i),
                None => return Err("an integer within Int16 range"),
            },
            (ColumnBuilder::I32(_) | ColumnBuilder::Date32(_), v) => {
                match int(v).filter(|i| i32::try_from(*i).is_ok()) {
                    Some(i) => Cell::I64(i),
                    None => return Err("an integer within Int32 range"),
                }
            }
            (ColumnBuilder::I64(_) | ColumnBuilder::Time64(_) | ColumnBuilder::Timestamp(_), v) => {
                match int(v) {
                    Some(i) => Cell::I64(i),
                    None => return Err("an integer within Int64 range"),
                }
            }
            (ColumnBuilder::U32(_) | ColumnBuilder::U64(_), v) => {
                let u = match v {
                    Value::UInt(u) => Some(*u),
                    Value::Int(i) => u64::try_from(*i).ok(),
                    _ => None,
                };
                match (self, u) {
                    (ColumnBuilder::U32(_), Some(u)) if u32::try_from(u).is_ok() => Cell::U64(u),
                    (ColumnBuilder::U64(_), Some(u)) => Cell::U64(u),
                    _ => return Err("a non-negative integer within range"),
                }
            }
            (ColumnBuilder::F32(_) | ColumnBuilder::F64(_), Value::Float(x)) => Cell::F64(*x),
            (ColumnBuilder::F32(_) | ColumnBuilder::F64(_), Value::Int(i)) => Cell::F64(*i as f64),
            (ColumnBuilder::F32(_) | ColumnBuilder::F64(_), _) => return Err("a number"),
            (ColumnBuilder::Utf8(_) | ColumnBuilder::LargeUtf8(_), Value::Str(s)) => Cell::Str(s),
            (ColumnBuilder::Utf8(_) | ColumnBuilder::LargeUtf8(_), _) => return Err("text"),
            (ColumnBuilder::Binary(_) | ColumnBuilder::LargeBinary(_), Value::Bytes(b)) => {
                Cell::Bytes(b)
            }
            (ColumnBuilder::Binary(_) | ColumnBuilder::LargeBinary(_), _) => return Err("bytes"),
            (ColumnBuilder::Fixed(_, n), Value::Bytes(b)) if b.len() == *n as usize => {
                Cell::Bytes(b)
            }
            (ColumnBuilder::Fixed(..), _) => return Err("bytes of the column's fixed width"),
        })
    }

    /// Append a cell made by [`ColumnBuilder::cell`] for this column.
    fn push(&mut self, cell: Cell<'_>) {
        if let Cell::Null = cell {
            self.push_null();
            return;
        }
        match (self, cell) {
            (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (ColumnBuilder::I16(b), Cell::I64(v)) => b.append_value(v as i16),
            (ColumnBuilder::I32(b), Cell::I64(v)) => b.append_value(v as i32),
            (ColumnBuilder::Date32(b), Cell::I64(v)) => b.append_value(v as i32),
            (ColumnBuilder::I64(b), Cell::I64(v)) => b.append_value(v),
            (ColumnBuilder::Time64(b), Cell::I64(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Cell::I64(v)) => b.append_value(v),
            (ColumnBuilder::U32(b), Cell::U64(v)) => b.append_value(v as u32),
            (ColumnBuilder::U64(b), Cell::U64(v)) => b.append_value(v),
            (ColumnBuilder::F32(b), Cell::F64(v)) => b.append_value(v as f32),
            (ColumnBuilder::F64(b), Cell::F64(v)) => b.append_value(v),
            (ColumnBuilder::Utf8(b), Cell::Str(v)) => b.append_value(v),
            (ColumnBuilder::LargeUtf8(b), Cell::Str(v)) => b.append_value(v),
            (ColumnBuilder::Binary(b), Cell::Bytes(v)) => b.append_value(v),
            (ColumnBuilder::LargeBinary(b), Cell::Bytes(v)) => b.append_value(v),
            (ColumnBuilder::Fixed(b, _), Cell::Bytes(v)) => {
                b.append_value(v).expect("width checked in cell()")
            }
            _ => unreachable!("cell() admitted a value of another type"),
        }
    }

    fn push_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::I16(b) => b.append_null(),
            ColumnBuilder::I32(b) => b.append_null(),
            ColumnBuilder::I64(b) => b.append_null(),
            ColumnBuilder::U32(b) => b.append_null(),
            ColumnBuilder::U64(b) => b.append_null(),
            ColumnBuilder::F32(b) => b.append_null(),
            ColumnBuilder::F64(b) => b.append_null(),
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::LargeUtf8(b) => b.append_null(),
            ColumnBuilder::Binary(b) => b.append_null(),
            ColumnBuilder::LargeBinary(b) => b.append_null(),
            ColumnBuilder::Fixed(b, _) => b.append_null(),
            ColumnBuilder::Date32(b) => b.append_null(),
            ColumnBuilder::Time64(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::I16(b) => Arc::new(b.finish()),
            ColumnBuilder::I32(b) => Arc::new(b.finish()),
            ColumnBuilder::I64(b) => Arc::new(b.finish()),
            ColumnBuilder::U32(b) => Arc::new(b.finish()),
            ColumnBuilder::U64(b) => Arc::new(b.finish()),
            ColumnBuilder::F32(b) => Arc::new(b.finish()),
            ColumnBuilder::F64(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::LargeUtf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(b) => Arc::new(b.finish()),
            ColumnBuilder::LargeBinary(b) => Arc::new(b.finish()),
            ColumnBuilder::Fixed(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Date32(b) => Arc::new(b.finish()),
            ColumnBuilder::Time64(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// Which NULLs a row may hold.
#[derive(Clone, Copy)]
enum Nulls<'u> {
    /// As the columns declare.
    Declared,
    /// Declared, plus the columns whose bit is set in an unchanged bitmap.
    Unchanged(&'u [u8]),
    /// Only key columns must be present (before images, deletes).
    KeyOnly,
}

/// Column builders for a table's columns, shared by snapshot and change builders.
struct Columns {
    schema: TableSchema,
    builders: Vec<ColumnBuilder>,
}

impl Columns {
    fn new(schema: &TableSchema) -> Columns {
        Columns {
            builders: schema
                .columns
                .iter()
                .map(|c| {
                    ColumnBuilder::new(&c.data_type, 1024).expect("checked in TableSchema::new")
                })
                .collect(),
            schema: schema.clone(),
        }
    }

    /// Check a whole row before appending any of it, so a bad value leaves no partial row.
    fn check(&self, row: &[Value<'_>], nulls: Nulls<'_>, row_index: usize) -> Result<()> {
        let table = &self.schema.table;
        if row.len() != self.builders.len() {
            return Err(ConnectorError::internal(format!(
                "table {table} has {} columns but row {row_index} has {} values",
                self.builders.len(),
                row.len()
            )));
        }
        for (i, ((builder, column), value)) in self
            .builders
            .iter()
            .zip(self.schema.columns.iter())
            .zip(row)
            .enumerate()
        {
            if let Err(expected) = builder.cell(value) {
                return Err(ConnectorError::internal(format!(
                    "table {table}, column `{}` ({}, Arrow {}), row {row_index}: expected {expected}, got {value}",
                    column.name, column.type_name, column.data_type
                )));
            }
            if matches!(value, Value::Null) {
                let allowed = match nulls {
                    Nulls::Declared => column.nullable,
                    Nulls::Unchanged(bits) => {
                        column.nullable || bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
                    }
                    Nulls::KeyOnly => !column.primary_key,
                };
                if !allowed {
                    return Err(ConnectorError::internal(format!(
                        "table {table}, column `{}` is NOT NULL but row {row_index} has no value for it",
                        column.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, row: &[Value<'_>]) {
        for (builder, value) in self.builders.iter_mut().zip(row) {
            match builder.cell(value) {
                Ok(cell) => builder.push(cell),
                Err(_) => unreachable!("the row was checked before"),
            }
        }
    }

    fn push_nulls(&mut self) {
        for b in &mut self.builders {
            b.push_null();
        }
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect()
    }
}

/// Builds one table's snapshot rows into a [`TableRows`].
pub struct TableRowsBuilder {
    columns: Columns,
    rows: usize,
    first_of_table: bool,
}

impl TableRowsBuilder {
    /// An empty builder for `schema`'s table.
    pub fn new(schema: &TableSchema) -> TableRowsBuilder {
        TableRowsBuilder {
            columns: Columns::new(schema),
            rows: 0,
            first_of_table: false,
        }
    }

    /// Mark the rows as the table's first snapshot batch: the destination replaces
    /// whatever it held for the table.
    pub fn first_of_table(mut self, first: bool) -> TableRowsBuilder {
        self.first_of_table = first;
        self
    }

    /// Append a row: one value per column, in column order.
    pub fn append_row(&mut self, row: &[Value<'_>]) -> Result<()> {
        self.columns.check(row, Nulls::Declared, self.rows)?;
        self.columns.push(row);
        self.rows += 1;
        Ok(())
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows as an Arrow record batch.
    pub fn finish_record_batch(mut self) -> Result<RecordBatch> {
        let schema = self.columns.schema.snapshot_schema();
        let arrays = self.columns.finish();
        RecordBatch::try_new(schema, arrays).map_err(|e| {
            ConnectorError::internal(format!(
                "table {}: cannot assemble the Arrow batch: {e}",
                self.columns.schema.table
            ))
        })
    }

    /// The rows as IPC stream bytes with their count.
    pub fn finish(self) -> Result<TableRows> {
        let table = self.columns.schema.table.clone();
        let first = self.first_of_table;
        let batch = self.finish_record_batch()?;
        TableRows::from_record_batch(table, first, &batch)
    }
}

/// The operation of a change row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Inserted row.
    Insert,
    /// After-image of an updated row.
    Update,
    /// Before-image of the next `Update` row (needed when the key changed).
    Before,
    /// Deleted row (at least the key columns).
    Delete,
    /// The table was truncated (every table column null).
    Truncate,
}

impl Op {
    /// The letter in `__culvert_op`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "I",
            Op::Update => "U",
            Op::Before => "B",
            Op::Delete => "D",
            Op::Truncate => "T",
        }
    }

    /// Parse a `__culvert_op` letter.
    pub fn parse(letter: &str) -> Option<Op> {
        Some(match letter {
            "I" => Op::Insert,
            "U" => Op::Update,
            "B" => Op::Before,
            "D" => Op::Delete,
            "T" => Op::Truncate,
            _ => return None,
        })
    }
}

/// Builds one table's change rows (`__culvert_op`, `__culvert_lsn`, `__culvert_seq`,
/// `__culvert_unchanged`, then the table's columns) into a [`TableRows`].
///
/// `lsn` is the commit position of the row's transaction and `seq` the row's ordinal
/// within it; both must grow in the order rows are appended.
pub struct ChangesBuilder {
    columns: Columns,
    op: StringBuilder,
    lsn: UInt64Builder,
    seq: UInt64Builder,
    unchanged: BinaryBuilder,
    rows: usize,
    pending_before: bool,
}

impl ChangesBuilder {
    /// An empty builder for `schema`'s table.
    pub fn new(schema: &TableSchema) -> ChangesBuilder {
        ChangesBuilder {
            columns: Columns::new(schema),
            op: StringBuilder::new(),
            lsn: UInt64Builder::new(),
            seq: UInt64Builder::new(),
            unchanged: BinaryBuilder::new(),
            rows: 0,
            pending_before: false,
        }
    }

    /// An inserted row.
    pub fn insert(&mut self, lsn: u64, seq: u64, row: &[Value<'_>]) -> Result<()> {
        self.append(Op::Insert, lsn, seq, None, row)
    }

    /// The after-image of an updated row.
    pub fn update(&mut self, lsn: u64, seq: u64, row: &[Value<'_>]) -> Result<()> {
        self.append(Op::Update, lsn, seq, None, row)
    }

    /// The before-image of the update appended next; needed when the key changed
    /// (non-key columns may be null).
    pub fn before(&mut self, lsn: u64, seq: u64, row: &[Value<'_>]) -> Result<()> {
        self.append(Op::Before, lsn, seq, None, row)
    }

    /// A deleted row: the key columns, other columns may be null.
    pub fn delete(&mut self, lsn: u64, seq: u64, row: &[Value<'_>]) -> Result<()> {
        self.append(Op::Delete, lsn, seq, None, row)
    }

    /// The table was truncated.
    pub fn truncate(&mut self, lsn: u64, seq: u64) -> Result<()> {
        self.append(Op::Truncate, lsn, seq, None, &[])
    }

    /// Any change row. `unchanged` is a bitmap over the table columns (bit `i % 8` of
    /// byte `i / 8` for column `i`) of values not sent because they did not change;
    /// such columns hold null. `row` is ignored for [`Op::Truncate`].
    pub fn append(
        &mut self,
        op: Op,
        lsn: u64,
        seq: u64,
        unchanged: Option<&[u8]>,
        row: &[Value<'_>],
    ) -> Result<()> {
        let table = &self.columns.schema.table;
        if self.pending_before && op != Op::Update {
            return Err(ConnectorError::internal(format!(
                "table {table}: a before-image (B) row must be followed by its update (U) row, got {}",
                op.as_str()
            )));
        }
        let width = self.columns.builders.len();
        if let Some(bits) = unchanged
            && bits.len() != width.div_ceil(8)
        {
            return Err(ConnectorError::internal(format!(
                "table {table}: the unchanged bitmap has {} bytes, expected {} for {width} columns",
                bits.len(),
                width.div_ceil(8)
            )));
        }
        if op == Op::Truncate {
            self.columns.push_nulls();
        } else {
            let nulls = match (op, unchanged) {
                (Op::Before | Op::Delete, _) => Nulls::KeyOnly,
                (_, Some(bits)) => Nulls::Unchanged(bits),
                (_, None) => Nulls::Declared,
            };
            self.columns.check(row, nulls, self.rows)?;
            self.columns.push(row);
        }
        self.op.append_value(op.as_str());
        self.lsn.append_value(lsn);
        self.seq.append_value(seq);
        self.unchanged.append_option(unchanged);
        self.pending_before = op == Op::Before;
        self.rows += 1;
        Ok(())
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows as an Arrow record batch.
    pub fn finish_record_batch(mut self) -> Result<RecordBatch> {
        let table = self.columns.schema.table.clone();
        if self.pending_before {
            return Err(ConnectorError::internal(format!(
                "table {table}: the last row is a before-image (B) without its update (U)"
            )));
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.op.finish()),
            Arc::new(self.lsn.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.unchanged.finish()),
        ];
        arrays.extend(self.columns.finish());
        RecordBatch::try_new(self.columns.schema.changes_schema(), arrays).map_err(|e| {
            ConnectorError::internal(format!(
                "table {table}: cannot assemble the Arrow batch: {e}"
            ))
        })
    }

    /// The rows as IPC stream bytes with their count (`first_of_table` is false).
    pub fn finish(self) -> Result<TableRows> {
        let table = self.columns.schema.table.clone();
        let batch = self.finish_record_batch()?;
        TableRows::from_record_batch(table, false, &batch)
    }
}

impl TableRows {
    /// Encode a record batch as IPC stream bytes (schema, batch, end-of-stream marker).
    pub fn from_record_batch(
        table: TableRef,
        first_of_table: bool,
        batch: &RecordBatch,
    ) -> Result<TableRows> {
        let row_count = u32::try_from(batch.num_rows()).map_err(|_| {
            ConnectorError::internal(format!(
                "table {table}: {} rows do not fit one batch; respect `max_rows`",
                batch.num_rows()
            ))
        })?;
        let mut ipc = Vec::with_capacity(batch.get_array_memory_size() + 1024);
        let encode = |ipc: &mut Vec<u8>| -> std::result::Result<(), arrow_schema::ArrowError> {
            let mut writer = StreamWriter::try_new(ipc, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()
        };
        encode(&mut ipc).map_err(|e| {
            ConnectorError::internal(format!("table {table}: cannot encode Arrow IPC: {e}"))
        })?;
        Ok(TableRows {
            table,
            first_of_table,
            row_count,
            ipc,
        })
    }

    /// Decode the IPC stream into record batches (for destinations).
    pub fn record_batches(&self) -> Result<Vec<RecordBatch>> {
        let bad = |e: arrow_schema::ArrowError| {
            ConnectorError::internal(format!(
                "table {}: the batch's Arrow IPC data does not decode: {e}",
                self.table
            ))
        };
        let reader = StreamReader::try_new(self.ipc.as_slice(), None).map_err(bad)?;
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows != self.row_count as usize {
            return Err(ConnectorError::internal(format!(
                "table {}: row-count says {} but the Arrow data holds {rows} rows",
                self.table, self.row_count
            )));
        }
        Ok(batches)
    }
}

/// Whether a field is one of the leading `__culvert_` change columns.
pub fn is_change_column(field: &Field) -> bool {
    field.name().starts_with("__culvert_")
}

/// The `culvert.type` of a table column, if present.
pub fn type_name(field: &Field) -> Option<&str> {
    field.metadata().get(META_TYPE).map(String::as_str)
}

/// The primary-key column names from the schema's `culvert.primary_key` (empty when absent).
pub fn primary_key(schema: &Schema) -> Result<Vec<String>> {
    match schema.metadata().get(META_PRIMARY_KEY) {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            ConnectorError::internal(format!(
                "schema metadata `{META_PRIMARY_KEY}` is not a JSON array of names ({e}): {json}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType, UInt64Type};
    use arrow_array::{Array, BinaryArray};

    fn items() -> TableSchema {
        TableSchema::new(
            TableRef::new("demo", "items"),
            vec![
                Column::bigint("id").primary_key(),
                Column::text("name"),
                Column::double("amount").not_null(),
                Column::timestamptz("at"),
                Column::numeric("price"),
                Column::bytea("blob"),
                Column::boolean("flag"),
            ],
        )
        .unwrap()
    }

    fn row(id: i64) -> Vec<Value<'static>> {
        vec![
            id.into(),
            format!("n{id}").into(),
            (id as f64 / 2.0).into(),
            Value::Int(1_700_000_000_000_000 + id),
            "12.50".into(),
            vec![id as u8, 0xff].into(),
            (id % 2 == 0).into(),
        ]
    }

    #[test]
    fn snapshot_rows_round_trip_with_metadata() {
        let schema = items();
        let mut b = TableRowsBuilder::new(&schema).first_of_table(true);
        for id in 1..=3 {
            b.append_row(&row(id)).unwrap();
        }
        b.append_row(&[
            4i64.into(),
            Value::Null,
            0.0.into(),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ])
        .unwrap();
        let rows = b.finish().unwrap();
        assert_eq!(rows.row_count, 4);
        assert!(rows.first_of_table);
        assert_eq!(
            &rows.ipc[rows.ipc.len() - 8..],
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
        );
        let batches = rows.record_batches().unwrap();
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        let s = batch.schema();
        assert_eq!(primary_key(&s).unwrap(), vec!["id".to_string()]);
        assert_eq!(s.metadata()[META_NAMESPACE], "demo");
        assert_eq!(type_name(s.field(2)), Some("double precision"));
        assert_eq!(s.field(4).metadata()[META_KIND], "numeric");
        assert_eq!(s.field(3).metadata()[META_KIND], "timestamptz");
        assert_eq!(s.field(0).metadata()[META_KEY], "1");
        assert!(!s.field(0).is_nullable());
        assert_eq!(
            s.field(3).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 2, 3, 4]);
        let at = batch.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), 1_700_000_000_000_001);
        assert!(at.is_null(3));
        assert_eq!(batch.column(1).as_string::<i32>().value(2), "n3");
        let blob = batch
            .column(5)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        assert_eq!(blob.value(0), &[1, 0xff]);
    }

    #[test]
    fn bad_values_are_rejected_without_partial_rows() {
        let schema = items();
        let mut b = TableRowsBuilder::new(&schema);
        let mut r = row(1);
        r[2] = "not a number".into();
        let e = b.append_row(&r).unwrap_err();
        assert!(e.message.contains("column `amount`"), "{}", e.message);
        assert!(e.message.contains("expected a number"), "{}", e.message);
        let mut r = row(1);
        r[0] = Value::Null;
        let e = b.append_row(&r).unwrap_err();
        assert!(e.message.contains("`id` is NOT NULL"), "{}", e.message);
        let e = b.append_row(&row(1)[..3]).unwrap_err();
        assert!(
            e.message.contains("has 7 columns but row 0 has 3 values"),
            "{}",
            e.message
        );
        b.append_row(&row(2)).unwrap();
        let rows = b.finish().unwrap();
        assert_eq!(rows.row_count, 1);
        assert_eq!(rows.record_batches().unwrap()[0].num_rows(), 1);
    }

    #[test]
    fn integer_ranges_are_checked() {
        let schema = TableSchema::new(
            TableRef::new("a", "b"),
            vec![
                Column::smallint("s"),
                Column::new("u", DataType::UInt32, "oid"),
            ],
        )
        .unwrap();
        let mut b = TableRowsBuilder::new(&schema);
        assert!(b.append_row(&[70_000i64.into(), 1u32.into()]).is_err());
        assert!(b.append_row(&[1i64.into(), Value::Int(-1)]).is_err());
        b.append_row(&[Value::UInt(7), Value::Int(5)]).unwrap();
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn schema_rejects_reserved_duplicate_and_unsupported_columns() {
        let t = TableRef::new("a", "b");
        assert!(TableSchema::new(t.clone(), vec![Column::text("__culvert_op")]).is_err());
        assert!(TableSchema::new(t.clone(), vec![Column::text("x"), Column::text("x")]).is_err());
        let e = TableSchema::new(t.clone(), vec![Column::new("l", DataType::Null, "void")])
            .unwrap_err();
        assert!(e.message.contains("not supported"), "{}", e.message);
        assert!(TableSchema::new(t, vec![]).is_err());
    }

    #[test]
    fn changes_lead_with_culvert_columns() {
        let schema = items();
        let mut b = ChangesBuilder::new(&schema);
        b.insert(10, 0, &row(1)).unwrap();
        b.before(10, 1, &row(1)).unwrap();
        b.update(10, 2, &row(2)).unwrap();
        let key_only = [
            2i64.into(),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ];
        b.delete(11, 0, &key_only).unwrap();
        b.truncate(12, 0).unwrap();
        let mut unchanged_row = row(3);
        unchanged_row[2] = Value::Null;
        b.append(Op::Update, 13, 0, Some(&[0b100]), &unchanged_row)
            .unwrap();
        let rows = b.finish().unwrap();
        assert_eq!(rows.row_count, 6);
        assert!(!rows.first_of_table);
        let batch = &rows.record_batches().unwrap()[0];
        let s = batch.schema();
        let names: Vec<&str> = s
            .fields()
            .iter()
            .take(5)
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, [COL_OP, COL_LSN, COL_SEQ, COL_UNCHANGED, "id"]);
        assert!(
            s.fields()
                .iter()
                .skip(CHANGE_COLUMNS)
                .all(|f| f.is_nullable())
        );
        assert!(is_change_column(s.field(0)) && !is_change_column(s.field(4)));
        let ops: Vec<&str> = batch
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|o| o.unwrap())
            .collect();
        assert_eq!(ops, ["I", "B", "U", "D", "T", "U"]);
        let lsn = batch.column(1).as_primitive::<UInt64Type>();
        assert_eq!(lsn.values().to_vec(), vec![10, 10, 10, 11, 12, 13]);
        let unchanged = batch
            .column(3)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        assert!(unchanged.is_null(0));
        assert_eq!(unchanged.value(5), &[0b100]);
        assert!(batch.column(4).is_null(4));
    }

    #[test]
    fn changes_enforce_before_then_update_and_keys() {
        let schema = items();
        let mut b = ChangesBuilder::new(&schema);
        b.before(1, 0, &row(1)).unwrap();
        assert!(b.insert(1, 1, &row(2)).is_err());
        b.update(1, 1, &row(2)).unwrap();
        let no_key = [
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ];
        assert!(b.delete(2, 0, &no_key).is_err());
        assert!(b.append(Op::Update, 3, 0, Some(&[0, 0]), &row(1)).is_err());
        b.before(4, 0, &row(1)).unwrap();
        assert!(b.finish().is_err());
    }

    #[test]
    fn table_info_reports_keys() {
        let info = items().table_info(42);
        assert!(info.identifiable);
        assert_eq!(info.estimated_rows, 42);
        assert_eq!(info.columns[0].key_ordinal, Some(1));
        assert!(!info.columns[2].nullable);
        assert_eq!(info.columns[3].type_name, "timestamp with time zone");
    }

    #[test]
    fn row_count_mismatch_and_garbage_are_detected() {
        let schema = items();
        let mut b = TableRowsBuilder::new(&schema);
        b.append_row(&row(1)).unwrap();
        let mut rows = b.finish().unwrap();
        rows.row_count = 2;
        assert!(
            rows.record_batches()
                .unwrap_err()
                .message
                .contains("row-count says 2")
        );
        rows.ipc = vec![1, 2, 3];
        assert!(rows.record_batches().is_err());
    }

    #[test]
    fn empty_builders_make_valid_streams() {
        let rows = ChangesBuilder::new(&items()).finish().unwrap();
        assert_eq!(rows.row_count, 0);
        assert_eq!(rows.record_batches().unwrap()[0].num_rows(), 0);
    }
}

//! How each PostgreSQL type travels in Arrow.

use serde::{Deserialize, Serialize};

/// The Arrow representation chosen for a PostgreSQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgKind {
    /// `bool` as Arrow Boolean.
    Bool,
    /// `int2` as Int16.
    Int2,
    /// `int4` as Int32.
    Int4,
    /// `int8` as Int64.
    Int8,
    /// `float4` as Float32 (NaN and infinities included).
    Float4,
    /// `float8` as Float64.
    Float8,
    /// `text`, `varchar`, `bpchar`, `name` as Utf8.
    Text,
    /// `json` as Utf8.
    Json,
    /// `jsonb` as Utf8 (PostgreSQL's canonical jsonb text).
    Jsonb,
    /// An enum label as Utf8.
    Enum,
    /// `bytea` as Binary.
    Bytea,
    /// `uuid` as FixedSizeBinary(16).
    Uuid,
    /// `numeric` as Utf8 in PostgreSQL's canonical text (`NaN` and infinities included).
    Numeric,
    /// `date` as Date32 (infinities as `i32::MAX` / `i32::MIN`).
    Date,
    /// `time` as Time64 microseconds.
    Time,
    /// `timestamp` as Timestamp microseconds (infinities as `i64::MAX` / `i64::MIN`).
    Timestamp,
    /// `timestamptz` as Timestamp microseconds in UTC.
    Timestamptz,
    /// Any other type as Binary holding PostgreSQL's binary send format.
    Raw,
}

/// Days between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
pub const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl PgKind {
    /// The kind of a built-in type by its OID; enums are detected by the caller from `pg_type`.
    pub fn from_builtin_oid(oid: u32) -> PgKind {
        match oid {
            16 => PgKind::Bool,
            17 => PgKind::Bytea,
            19 | 25 | 1042 | 1043 => PgKind::Text,
            20 => PgKind::Int8,
            21 => PgKind::Int2,
            23 => PgKind::Int4,
            114 => PgKind::Json,
            700 => PgKind::Float4,
            701 => PgKind::Float8,
            1082 => PgKind::Date,
            1083 => PgKind::Time,
            1114 => PgKind::Timestamp,
            1184 => PgKind::Timestamptz,
            1700 => PgKind::Numeric,
            2950 => PgKind::Uuid,
            3802 => PgKind::Jsonb,
            _ => PgKind::Raw,
        }
    }

    /// Lower-case name used in Arrow field metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            PgKind::Bool => "bool",
            PgKind::Int2 => "int2",
            PgKind::Int4 => "int4",
            PgKind::Int8 => "int8",
            PgKind::Float4 => "float4",
            PgKind::Float8 => "float8",
            PgKind::Text => "text",
            PgKind::Json => "json",
            PgKind::Jsonb => "jsonb",
            PgKind::Enum => "enum",
            PgKind::Bytea => "bytea",
            PgKind::Uuid => "uuid",
            PgKind::Numeric => "numeric",
            PgKind::Date => "date",
            PgKind::Time => "time",
            PgKind::Timestamp => "timestamp",
            PgKind::Timestamptz => "timestamptz",
            PgKind::Raw => "raw",
        }
    }

    /// Parse the metadata name written by [`PgKind::as_str`].
    pub fn parse(name: &str) -> Option<PgKind> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

/// An enum type the destination must create before a column can use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnumDef {
    /// Schema of the type.
    pub namespace: String,
    /// Name of the type.
    pub name: String,
    /// Labels in sort order.
    pub labels: Vec<String>,
}

/// A replicated column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDesc {
    /// Column name, unquoted.
    pub name: String,
    /// `format_type(atttypid, atttypmod)` on the source, used to create the target column.
    pub type_name: String,
    /// How values travel.
    pub kind: PgKind,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// 1-based position in the primary key.
    pub key_ordinal: Option<u16>,
    /// The enum type used by the column (directly or as array element).
    pub enum_def: Option<EnumDef>,
}

/// A stored generated column: not carried, recreated at the destination with its expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedColumn {
    /// Column name, unquoted.
    pub name: String,
    /// Type as `format_type` prints it.
    pub type_name: String,
    /// The generation expression as `pg_get_expr` prints it.
    pub expression: String,
    /// Number of carried columns that come before it in the table.
    pub after: usize,
}

/// A replicated table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDesc {
    /// Schema, unquoted.
    pub namespace: String,
    /// Table name, unquoted.
    pub name: String,
    /// Columns in source order.
    pub columns: Vec<ColumnDesc>,
    /// Stored generated columns, recreated rather than carried.
    pub generated: Vec<GeneratedColumn>,
}

impl TableDesc {
    /// Indexes of the primary-key columns in key order.
    pub fn key_columns(&self) -> Vec<usize> {
        let mut keyed: Vec<(u16, usize)> = self
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.key_ordinal.map(|k| (k, i)))
            .collect();
        keyed.sort();
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// `"schema"."name"` quoted for SQL.
    pub fn qualified(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.namespace),
            quote_ident(&self.name)
        )
    }
}

/// Quote an identifier for SQL, doubling embedded quotes.
pub fn quote_ident(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 2);
    out.push('"');
    for ch in ident.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// Quote a string literal for SQL, doubling embedded quotes.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for oid in [
            16, 17, 20, 21, 23, 25, 114, 700, 701, 1082, 1083, 1114, 1184, 1700, 2950, 3802, 1186,
        ] {
            let kind = PgKind::from_builtin_oid(oid);
            assert_eq!(PgKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(PgKind::parse("enum"), Some(PgKind::Enum));
        assert_eq!(PgKind::parse("nope"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"Mixed "Case""#), r#""Mixed ""Case""""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}

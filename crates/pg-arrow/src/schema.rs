//! The Arrow schema of a table's rows and the metadata that lets a destination rebuild
//! the PostgreSQL table from it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use thiserror::Error;

use crate::types::{ColumnDesc, EnumDef, PgKind, TableDesc};

/// Field metadata: the source type name.
pub const META_TYPE: &str = "culvert.type";
/// Field metadata: the [`PgKind`] name.
pub const META_KIND: &str = "culvert.kind";
/// Field metadata: `pg-binary` for values in PostgreSQL's binary send format.
pub const META_ENCODING: &str = "culvert.encoding";
/// Field metadata: JSON [`EnumDef`] of an enum or enum-array column.
pub const META_ENUM: &str = "culvert.enum";
/// Field metadata: 1-based primary-key position.
pub const META_KEY: &str = "culvert.key";
/// Schema metadata: JSON array of primary-key column names.
pub const META_PRIMARY_KEY: &str = "culvert.primary_key";
/// Schema metadata: JSON array of generated columns the destination recreates.
pub const META_GENERATED: &str = "culvert.generated";
/// Schema metadata: the table's schema name.
pub const META_NAMESPACE: &str = "culvert.namespace";
/// Schema metadata: the table's name.
pub const META_TABLE: &str = "culvert.table";

/// Change column: operation (`I`, `U`, `B`, `D`, `T`).
pub const COL_OP: &str = "__culvert_op";
/// Change column: commit LSN of the transaction.
pub const COL_LSN: &str = "__culvert_lsn";
/// Change column: ordinal of the change within its transaction.
pub const COL_SEQ: &str = "__culvert_seq";
/// Change column: bitmap of table columns not sent (unchanged large values).
pub const COL_UNCHANGED: &str = "__culvert_unchanged";
/// Number of leading change columns.
pub const CHANGE_COLUMNS: usize = 4;

/// A schema that does not carry what a destination needs.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// A required metadata key is missing.
    #[error("Arrow field `{field}` lacks metadata `{key}`")]
    MissingMetadata {
        /// Field name.
        field: String,
        /// Metadata key.
        key: &'static str,
    },
    /// A metadata value does not parse.
    #[error("Arrow field `{field}` has invalid metadata `{key}`: {reason}")]
    InvalidMetadata {
        /// Field name.
        field: String,
        /// Metadata key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// Arrow data type for a kind.
pub fn arrow_type(kind: PgKind) -> DataType {
    match kind {
        PgKind::Bool => DataType::Boolean,
        PgKind::Int2 => DataType::Int16,
        PgKind::Int4 => DataType::Int32,
        PgKind::Int8 => DataType::Int64,
        PgKind::Float4 => DataType::Float32,
        PgKind::Float8 => DataType::Float64,
        PgKind::Text | PgKind::Json | PgKind::Jsonb | PgKind::Enum | PgKind::Numeric => {
            DataType::Utf8
        }
        PgKind::Bytea | PgKind::Raw => DataType::Binary,
        PgKind::Uuid => DataType::FixedSizeBinary(16),
        PgKind::Date => DataType::Date32,
        PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
        PgKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        PgKind::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

fn column_field(col: &ColumnDesc) -> Field {
    let mut meta = HashMap::new();
    meta.insert(META_TYPE.to_string(), col.type_name.clone());
    meta.insert(META_KIND.to_string(), col.kind.as_str().to_string());
    if col.kind == PgKind::Raw {
        meta.insert(META_ENCODING.to_string(), "pg-binary".to_string());
    }
    if let Some(def) = &col.enum_def {
        meta.insert(
            META_ENUM.to_string(),
            serde_json::to_string(def).unwrap_or_default(),
        );
    }
    if let Some(k) = col.key_ordinal {
        meta.insert(META_KEY.to_string(), k.to_string());
    }
    // Every column is nullable in Arrow: change rows leave columns empty (deletes, unchanged values).
    Field::new(&col.name, arrow_type(col.kind), true).with_metadata(meta)
}

fn table_metadata(table: &TableDesc) -> HashMap<String, String> {
    let keys: Vec<&str> = table
        .key_columns()
        .into_iter()
        .map(|i| table.columns[i].name.as_str())
        .collect();
    let mut meta = HashMap::new();
    meta.insert(
        META_PRIMARY_KEY.to_string(),
        serde_json::to_string(&keys).unwrap_or_default(),
    );
    if !table.generated.is_empty() {
        meta.insert(
            META_GENERATED.to_string(),
            serde_json::to_string(&table.generated).unwrap_or_default(),
        );
    }
    meta.insert(META_NAMESPACE.to_string(), table.namespace.clone());
    meta.insert(META_TABLE.to_string(), table.name.clone());
    meta
}

/// Schema of snapshot rows: the table's columns.
pub fn snapshot_schema(table: &TableDesc) -> Arc<Schema> {
    let fields: Vec<Field> = table.columns.iter().map(column_field).collect();
    Arc::new(Schema::new_with_metadata(fields, table_metadata(table)))
}

/// Schema of change rows: the change columns, then the table's columns.
pub fn change_schema(table: &TableDesc) -> Arc<Schema> {
    let mut fields = vec![
        Field::new(COL_OP, DataType::Utf8, false),
        Field::new(COL_LSN, DataType::UInt64, false),
        Field::new(COL_SEQ, DataType::UInt64, false),
        Field::new(COL_UNCHANGED, DataType::Binary, true),
    ];
    fields.extend(table.columns.iter().map(column_field));
    Arc::new(Schema::new_with_metadata(fields, table_metadata(table)))
}

/// Rebuild the table description from a schema written by [`snapshot_schema`] or
/// [`change_schema`], skipping change columns.
pub fn table_from_schema(schema: &Schema) -> Result<TableDesc, SchemaError> {
    let meta = schema.metadata();
    let namespace = meta.get(META_NAMESPACE).cloned().unwrap_or_default();
    let name = meta.get(META_TABLE).cloned().unwrap_or_default();
    let mut columns = Vec::new();
    for field in schema
        .fields()
        .iter()
        .filter(|f| !f.name().starts_with("__culvert_"))
    {
        let fm = field.metadata();
        let missing = |key| SchemaError::MissingMetadata {
            field: field.name().clone(),
            key,
        };
        let type_name = fm.get(META_TYPE).ok_or_else(|| missing(META_TYPE))?.clone();
        let kind_name = fm.get(META_KIND).ok_or_else(|| missing(META_KIND))?;
        let kind = PgKind::parse(kind_name).ok_or_else(|| SchemaError::InvalidMetadata {
            field: field.name().clone(),
            key: META_KIND,
            reason: format!("unknown kind `{kind_name}`"),
        })?;
        let enum_def = match fm.get(META_ENUM) {
            Some(json) => Some(serde_json::from_str::<EnumDef>(json).map_err(|e| {
                SchemaError::InvalidMetadata {
                    field: field.name().clone(),
                    key: META_ENUM,
                    reason: e.to_string(),
                }
            })?),
            None => None,
        };
        let key_ordinal = fm.get(META_KEY).and_then(|k| k.parse().ok());
        columns.push(ColumnDesc {
            name: field.name().clone(),
            type_name,
            kind,
            nullable: true,
            key_ordinal,
            enum_def,
        });
    }
    let generated = match meta.get(META_GENERATED) {
        Some(json) => serde_json::from_str(json).map_err(|e| SchemaError::InvalidMetadata {
            field: String::new(),
            key: META_GENERATED,
            reason: e.to_string(),
        })?,
        None => Vec::new(),
    };
    Ok(TableDesc {
        namespace,
        name,
        columns,
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TableDesc {
        TableDesc {
            generated: vec![crate::types::GeneratedColumn {
                name: "total".into(),
                type_name: "bigint".into(),
                expression: "(id * 2)".into(),
                after: 1,
            }],
            namespace: "Sales".into(),
            name: "Order Items".into(),
            columns: vec![
                ColumnDesc {
                    name: "id".into(),
                    type_name: "bigint".into(),
                    kind: PgKind::Int8,
                    nullable: false,
                    key_ordinal: Some(1),
                    enum_def: None,
                },
                ColumnDesc {
                    name: "Mood".into(),
                    type_name: "\"Sales\".mood[]".into(),
                    kind: PgKind::Raw,
                    nullable: true,
                    key_ordinal: None,
                    enum_def: Some(EnumDef {
                        namespace: "Sales".into(),
                        name: "mood".into(),
                        labels: vec!["ok".into()],
                    }),
                },
            ],
        }
    }

    #[test]
    fn schema_round_trips_table() {
        let table = sample();
        for schema in [snapshot_schema(&table), change_schema(&table)] {
            let back = table_from_schema(&schema).unwrap();
            assert_eq!(back.namespace, table.namespace);
            assert_eq!(back.name, table.name);
            assert_eq!(back.columns.len(), 2);
            assert_eq!(back.columns[1].enum_def, table.columns[1].enum_def);
            assert_eq!(back.key_columns(), vec![0]);
            assert_eq!(back.generated, table.generated);
        }
    }
}

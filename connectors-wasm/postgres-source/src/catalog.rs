//! Reading table definitions from the source's catalog.

use std::collections::HashMap;

use culvert_pg_arrow::types::{ColumnDesc, EnumDef, GeneratedColumn, PgKind, TableDesc};
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, pg_error};
use tokio_postgres::Client;

use crate::config::matches;

/// A table in the catalog with what replication needs to know about it.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    /// Relation OID.
    pub oid: u32,
    /// Columns, types and key.
    pub desc: TableDesc,
    /// `pg_class.relreplident`: d, n, f or i.
    pub replica_identity: char,
    /// Planner estimate of rows.
    pub estimated_rows: u64,
    /// Heap pages, to split large tables into ranges.
    pub pages: u64,
    /// A partitioned table: replicated as one table, its partitions through it.
    pub partitioned: bool,
    /// Per column: empty, or why it cannot be replicated.
    pub unsupported: Vec<String>,
}

impl CatalogTable {
    /// Whether updates and deletes can be matched on the target.
    pub fn identifiable(&self) -> bool {
        !self.desc.key_columns().is_empty() || self.replica_identity == 'f'
    }

    /// `schema.name` for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.desc.namespace, self.desc.name)
    }

    /// Error unless every column can be replicated and rows can be identified.
    pub fn ensure_replicable(&self) -> GuestResult<()> {
        for (col, reason) in self.desc.columns.iter().zip(&self.unsupported) {
            if !reason.is_empty() {
                return Err(GuestError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "table {}, column `{}` has type {}: {reason}; exclude the table from `tables` or change the column type",
                        self.display(),
                        col.name,
                        col.type_name
                    ),
                ));
            }
        }
        if !self.identifiable() {
            return Err(GuestError::new(
                ErrorKind::Unsupported,
                format!(
                    "table {} has no primary key and its REPLICA IDENTITY is not FULL, so updates and deletes cannot be matched; add a primary key or run ALTER TABLE {} REPLICA IDENTITY FULL",
                    self.display(),
                    self.desc.qualified()
                ),
            ));
        }
        Ok(())
    }
}

const TABLES_SQL: &str = "
SELECT c.oid, n.nspname, c.relname, c.relreplident::text, greatest(c.reltuples, 0)::int8,
       a.attname,
       -- A domain travels as its base type: same binary format, no constraint to recreate.
       pg_catalog.format_type(t.oid, CASE WHEN d.typtype = 'd' THEN d.typtypmod ELSE a.atttypmod END),
       t.oid, a.attnotnull,
       t.typtype::text, coalesce(et.typtype::text, ''), t.typelem, coalesce(et.oid, 0::oid),
       coalesce(
         (SELECT array_position(string_to_array(i.indkey::text, ' ')::int2[], a.attnum)::int2
            FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
         (SELECT array_position(string_to_array(i.indkey::text, ' ')::int2[], a.attnum)::int2
            FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident AND c.relreplident = 'i')
       ),
       pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int8,
       c.relkind = 'p'
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
  JOIN pg_catalog.pg_type d ON d.oid = a.atttypid
  JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
  LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typelem <> 0 AND t.typlen = -1
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_culvert')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
   AND ($1::oid IS NULL OR c.oid = $1::oid)
 ORDER BY n.nspname, c.relname, a.attnum";

const GENERATED_SQL: &str = "
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
       pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
       (SELECT count(*) FROM pg_catalog.pg_attribute b
         WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND b.attnum < a.attnum
           AND NOT b.attisdropped AND b.attgenerated = '')::int8
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE a.attgenerated = 's' AND a.attnum > 0 AND NOT a.attisdropped
   AND ($1::oid IS NULL OR a.attrelid = $1::oid)
 ORDER BY a.attrelid, a.attnum";

const ENUMS_SQL: &str = "
SELECT t.oid, n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
  FROM pg_catalog.pg_type t
  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
  JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid
 GROUP BY t.oid, n.nspname, t.typname";

/// Classify a column type: its kind, enum, and a reason when it cannot be replicated.
fn classify(
    typtype: &str,
    type_oid: u32,
    elem_typtype: &str,
    elem_oid: u32,
    enums: &HashMap<u32, EnumDef>,
) -> (PgKind, Option<EnumDef>, String) {
    match typtype {
        "e" => (PgKind::Enum, enums.get(&type_oid).cloned(), String::new()),
        "b" if elem_oid != 0 => match elem_typtype {
            "e" => (PgKind::Raw, enums.get(&elem_oid).cloned(), String::new()),
            "b" | "r" | "m" => (PgKind::Raw, None, String::new()),
            other => (
                PgKind::Raw,
                None,
                format!("arrays of {} types are not supported", type_class(other)),
            ),
        },
        "b" => (PgKind::from_builtin_oid(type_oid), None, String::new()),
        "r" | "m" => (PgKind::Raw, None, String::new()),
        other => (
            PgKind::Raw,
            None,
            format!("{} types are not supported", type_class(other)),
        ),
    }
}

fn type_class(typtype: &str) -> &'static str {
    match typtype {
        "c" => "composite",
        "d" => "domain",
        "p" => "pseudo",
        _ => "user-defined",
    }
}

/// Every enum type with its labels in sort order, by OID.
async fn load_enums(client: &Client, cfg: &PgConnectConfig) -> GuestResult<HashMap<u32, EnumDef>> {
    Ok(client
        .query(ENUMS_SQL, &[])
        .await
        .map_err(|e| pg_error(cfg, "read enum types", &e))?
        .into_iter()
        .map(|r| {
            (
                r.get::<_, u32>(0),
                EnumDef {
                    namespace: r.get(1),
                    name: r.get(2),
                    labels: r.get(3),
                },
            )
        })
        .collect())
}

/// Load every ordinary table, or only the one with `oid`.
pub async fn load_tables(
    client: &Client,
    cfg: &PgConnectConfig,
    oid: Option<u32>,
) -> GuestResult<Vec<CatalogTable>> {
    // Qualify every non-catalog type name so the target can recreate it.
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(|e| pg_error(cfg, "read catalog", &e))?;
    let enums = load_enums(client, cfg).await?;
    let rows = client
        .query(TABLES_SQL, &[&oid])
        .await
        .map_err(|e| pg_error(cfg, "read tables", &e))?;
    let mut tables: Vec<CatalogTable> = Vec::new();
    for r in rows {
        let table_oid: u32 = r.get(0);
        if tables.last().map(|t| t.oid) != Some(table_oid) {
            let relreplident: String = r.get(3);
            tables.push(CatalogTable {
                oid: table_oid,
                desc: TableDesc {
                    generated: Vec::new(),
                    namespace: r.get(1),
                    name: r.get(2),
                    columns: Vec::new(),
                },
                replica_identity: relreplident.chars().next().unwrap_or('d'),
                estimated_rows: r.get::<_, i64>(4).max(0) as u64,
                pages: r.get::<_, i64>(14).max(0) as u64,
                partitioned: r.get(15),
                unsupported: Vec::new(),
            });
        }
        let table = tables.last_mut().expect("pushed above");
        let typtype: String = r.get(9);
        let elem_typtype: String = r.get(10);
        let (kind, enum_def, reason) =
            classify(&typtype, r.get(7), &elem_typtype, r.get(12), &enums);
        table.desc.columns.push(ColumnDesc {
            name: r.get(5),
            type_name: r.get(6),
            kind,
            nullable: !r.get::<_, bool>(8),
            key_ordinal: r.get::<_, Option<i16>>(13).map(|k| k as u16),
            enum_def,
        });
        table.unsupported.push(reason);
    }
    let generated = client
        .query(GENERATED_SQL, &[&oid])
        .await
        .map_err(|e| pg_error(cfg, "read generated columns", &e))?;
    for r in generated {
        let table_oid: u32 = r.get(0);
        if let Some(t) = tables.iter_mut().find(|t| t.oid == table_oid) {
            t.desc.generated.push(GeneratedColumn {
                name: r.get(1),
                type_name: r.get(2),
                expression: r.get(3),
                after: r.get::<_, i64>(4).max(0) as usize,
            });
        }
    }
    client
        .batch_execute("RESET search_path")
        .await
        .map_err(|e| pg_error(cfg, "read catalog", &e))?;
    Ok(tables)
}

/// Tables matching any of the globs.
pub fn select(tables: Vec<CatalogTable>, globs: &[String]) -> Vec<CatalogTable> {
    tables
        .into_iter()
        .filter(|t| {
            globs
                .iter()
                .any(|g| matches(g, &t.desc.namespace, &t.desc.name))
        })
        .collect()
}

/// A column as the change stream reports it: name and type as they were when written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct StreamColumn {
    /// Column name.
    pub name: String,
    /// Type OID (a domain's own OID; described as its base type).
    #[serde(rename = "type")]
    pub type_oid: u32,
    /// Type modifier, -1 when none.
    pub typmod: i32,
}

const TYPES_SQL: &str = "
SELECT pg_catalog.format_type(t.oid, CASE WHEN d.typtype = 'd' THEN d.typtypmod ELSE u.typmod END),
       t.oid, t.typtype::text, coalesce(et.typtype::text, ''), coalesce(et.oid, 0::oid)
  FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS u(typ, typmod, i)
  JOIN pg_catalog.pg_type d ON d.oid = u.typ
  JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN d.typtype = 'd' THEN d.typbasetype ELSE d.oid END
  LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typelem <> 0 AND t.typlen = -1
 ORDER BY u.i";

/// Describe table `oid` with the columns the stream reports, in that order. Keys,
/// nullability and generated columns come from the current catalog (matched by name);
/// `None` when the table no longer exists.
pub async fn describe_stream_table(
    client: &Client,
    cfg: &PgConnectConfig,
    oid: u32,
    columns: &[StreamColumn],
) -> GuestResult<Option<CatalogTable>> {
    let Some(mut current) = load_tables(client, cfg, Some(oid))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    if columns.is_empty() {
        return Ok(Some(current));
    }
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(|e| pg_error(cfg, "read catalog", &e))?;
    let oids: Vec<u32> = columns.iter().map(|c| c.type_oid).collect();
    let mods: Vec<i32> = columns.iter().map(|c| c.typmod).collect();
    let types = client.query(TYPES_SQL, &[&oids, &mods]).await;
    let enums = load_enums(client, cfg).await;
    client
        .batch_execute("RESET search_path")
        .await
        .map_err(|e| pg_error(cfg, "read catalog", &e))?;
    let types = types.map_err(|e| pg_error(cfg, "read column types", &e))?;
    let enums = enums?;
    if types.len() != columns.len() {
        return Err(GuestError::new(
            ErrorKind::State,
            format!(
                "table {}: a column type was dropped while its changes were streaming",
                current.display()
            ),
        ));
    }
    let mut descs = Vec::with_capacity(columns.len());
    let mut unsupported = Vec::with_capacity(columns.len());
    for (c, r) in columns.iter().zip(types) {
        let typtype: String = r.get(2);
        let elem_typtype: String = r.get(3);
        let (kind, enum_def, reason) =
            classify(&typtype, r.get(1), &elem_typtype, r.get(4), &enums);
        let now = current.desc.columns.iter().find(|d| d.name == c.name);
        descs.push(ColumnDesc {
            name: c.name.clone(),
            type_name: r.get(0),
            kind,
            nullable: now.is_none_or(|d| d.nullable),
            key_ordinal: now.and_then(|d| d.key_ordinal),
            enum_def,
        });
        unsupported.push(reason);
    }
    // A key column the stream does not have yet (added later) cannot be the key now.
    if descs.iter().filter(|c| c.key_ordinal.is_some()).count()
        != current
            .desc
            .columns
            .iter()
            .filter(|c| c.key_ordinal.is_some())
            .count()
    {
        for c in &mut descs {
            c.key_ordinal = None;
        }
    }
    let width = descs.len();
    current
        .desc
        .generated
        .iter_mut()
        .for_each(|g| g.after = g.after.min(width));
    current.desc.columns = descs;
    current.unsupported = unsupported;
    Ok(Some(current))
}

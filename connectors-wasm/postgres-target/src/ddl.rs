//! Creating what the replica needs: schemas, enum types, tables, staging tables.

use std::collections::HashMap;

use culvert_pg_arrow::types::{
    EnumDef, GeneratedColumn, PgKind, TableDesc, quote_ident, quote_literal,
};
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, pg_error};
use tokio_postgres::Client;

/// A destination table ready to receive rows.
pub struct TargetTable {
    /// The table as the source describes it.
    pub desc: TableDesc,
    /// Indexes of the key columns (empty: rows are matched on every column).
    pub key: Vec<usize>,
    /// Per column: the destination's element type OID for array columns.
    pub element_oids: Vec<Option<u32>>,
    /// Name of this session's staging table, once created.
    pub stage: Option<String>,
}

/// A schema change that came with a table's rows (see the source's DDL capture).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SchemaChange {
    /// The table was dropped at the source.
    #[serde(default)]
    pub drop: bool,
    /// Renamed columns: `[old, new]`.
    #[serde(default)]
    pub renames: Vec<(String, String)>,
    /// Columns added with a constant default: the value existing rows hold, as text.
    #[serde(default)]
    pub defaults: std::collections::BTreeMap<String, String>,
}

/// Tables known to this session, by qualified name.
#[derive(Default)]
pub struct Tables {
    known: HashMap<String, TargetTable>,
    stages: usize,
}

impl Tables {
    /// Before the batch transaction: schemas and enum types (new enum labels must commit
    /// before rows use them).
    pub async fn prepare_types(
        &mut self,
        client: &Client,
        cfg: &PgConnectConfig,
        desc: &TableDesc,
    ) -> GuestResult<()> {
        if self
            .known
            .get(&desc.qualified())
            .is_some_and(|t| t.desc == *desc)
        {
            return Ok(());
        }
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(&desc.namespace)
            ))
            .await
            .map_err(|e| ddl_error(cfg, desc, "create schema", &e))?;
        for def in desc.columns.iter().filter_map(|c| c.enum_def.as_ref()) {
            ensure_enum(client, cfg, desc, def).await?;
        }
        Ok(())
    }

    /// Inside the batch transaction: the table, created or changed to match `desc`.
    pub async fn resolve(
        &mut self,
        client: &Client,
        cfg: &PgConnectConfig,
        desc: &TableDesc,
        change: Option<&SchemaChange>,
    ) -> GuestResult<()> {
        let name = desc.qualified();
        if change.is_none() && self.known.get(&name).is_some_and(|t| t.desc == *desc) {
            return Ok(());
        }
        let table = prepare(client, cfg, desc, change).await?;
        self.known.insert(name, table);
        Ok(())
    }

    /// Forget a table (dropped, or changed in a transaction that rolled back).
    pub fn forget(&mut self, name: &str) {
        self.known.remove(name);
    }

    /// Forget everything after a failed transaction: schema changes and staging
    /// tables may have rolled back with it.
    pub fn reset(&mut self) {
        self.known.clear();
    }

    /// A table prepared earlier in this batch.
    pub fn get(&self, name: &str) -> &TargetTable {
        &self.known[name]
    }

    /// The staging table of `name`, created in this session if needed.
    pub async fn stage(
        &mut self,
        client: &Client,
        cfg: &PgConnectConfig,
        name: &str,
    ) -> GuestResult<String> {
        let next = self.stages;
        let table = self.known.get_mut(name).expect("ensured before staging");
        if let Some(stage) = &table.stage {
            client
                .batch_execute(&format!("TRUNCATE {stage}"))
                .await
                .map_err(|e| pg_error(cfg, "reset staging table", &e))?;
            return Ok(stage.clone());
        }
        let stage = format!(
            "pg_temp.{}",
            quote_ident(&format!("__culvert_stage_{next}"))
        );
        let cols: Vec<String> = table
            .desc
            .columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), c.type_name))
            .collect();
        let sql = format!(
            "DROP TABLE IF EXISTS {stage}; CREATE TEMP TABLE {stage} ({}, __culvert_action \"char\", __culvert_mask bytea)",
            cols.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| pg_error(cfg, "create staging table", &e))?;
        table.stage = Some(stage.clone());
        self.stages += 1;
        Ok(stage)
    }
}

fn ddl_error(
    cfg: &PgConnectConfig,
    desc: &TableDesc,
    what: &str,
    e: &tokio_postgres::Error,
) -> GuestError {
    let mut err = pg_error(
        cfg,
        &format!("{what} for {}.{}", desc.namespace, desc.name),
        e,
    );
    if err.kind == ErrorKind::Permission {
        err.message.push_str(&format!(
            "; the target role needs CREATE on database `{}` and on schema `{}`",
            cfg.database, desc.namespace
        ));
    }
    err
}

/// A column as the target has it.
struct Existing {
    name: String,
    type_name: String,
    generated: bool,
    elem: u32,
}

async fn target_columns(
    client: &Client,
    cfg: &PgConnectConfig,
    desc: &TableDesc,
) -> GuestResult<Option<Vec<Existing>>> {
    // Type names as the source spells them: schema-qualified outside pg_catalog.
    let path: String = client
        .query_one("SELECT pg_catalog.current_setting('search_path')", &[])
        .await
        .map_err(|e| ddl_error(cfg, desc, "read search_path", &e))?
        .get(0);
    client
        .batch_execute("SELECT pg_catalog.set_config('search_path', '', true)")
        .await
        .map_err(|e| ddl_error(cfg, desc, "set search_path", &e))?;
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', t.typelem
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&desc.qualified()],
        )
        .await;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass($1)",
            &[&desc.qualified()],
        )
        .await;
    client
        .query_one(
            "SELECT pg_catalog.set_config('search_path', $1, true)",
            &[&path],
        )
        .await
        .map_err(|e| ddl_error(cfg, desc, "restore search_path", &e))?;
    let rows = rows.map_err(|e| ddl_error(cfg, desc, "read columns", &e))?;
    if exists
        .map_err(|e| ddl_error(cfg, desc, "look up table", &e))?
        .is_none()
    {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(|r| Existing {
                name: r.get(0),
                type_name: r.get(1),
                generated: r.get(2),
                elem: r.get(3),
            })
            .collect(),
    ))
}

async fn create_table(client: &Client, cfg: &PgConnectConfig, desc: &TableDesc) -> GuestResult<()> {
    let key = desc.key_columns();
    let mut cols: Vec<String> = Vec::new();
    // Generated columns go back where they were, so the replica's column order matches.
    let generated = |g: &GeneratedColumn| {
        format!(
            "{} {} GENERATED ALWAYS AS ({}) STORED",
            quote_ident(&g.name),
            g.type_name,
            g.expression
        )
    };
    for (i, c) in desc.columns.iter().enumerate() {
        cols.extend(
            desc.generated
                .iter()
                .filter(|g| g.after == i)
                .map(generated),
        );
        let not_null = if c.key_ordinal.is_some() {
            " NOT NULL"
        } else {
            ""
        };
        cols.push(format!(
            "{} {}{not_null}",
            quote_ident(&c.name),
            c.type_name
        ));
    }
    cols.extend(
        desc.generated
            .iter()
            .filter(|g| g.after >= desc.columns.len())
            .map(generated),
    );
    if !key.is_empty() {
        let names: Vec<String> = key
            .iter()
            .map(|&i| quote_ident(&desc.columns[i].name))
            .collect();
        cols.push(format!("PRIMARY KEY ({})", names.join(", ")));
    }
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            desc.qualified(),
            cols.join(", ")
        ))
        .await
        .map_err(|e| ddl_error(cfg, desc, "create table", &e))
}

/// The statements that turn the target's columns into the source's.
fn evolve_sql(
    desc: &TableDesc,
    existing: &[Existing],
    change: Option<&SchemaChange>,
) -> Vec<String> {
    let t = desc.qualified();
    let mut names: Vec<String> = existing.iter().map(|e| e.name.clone()).collect();
    let mut out = Vec::new();
    let wanted = |n: &str| desc.columns.iter().any(|c| c.name == n);
    let generated = |n: &str| desc.generated.iter().any(|g| g.name == n);
    for (from, to) in change.map(|c| c.renames.as_slice()).unwrap_or_default() {
        if names.contains(from) && !names.contains(to) && wanted(to) {
            out.push(format!(
                "ALTER TABLE {t} RENAME COLUMN {} TO {}",
                quote_ident(from),
                quote_ident(to)
            ));
            if let Some(n) = names.iter_mut().find(|n| *n == from) {
                *n = to.clone();
            }
        }
    }
    for (e, name) in existing.iter().zip(&names) {
        if !(wanted(name) || e.generated && generated(name)) {
            out.push(format!("ALTER TABLE {t} DROP COLUMN {}", quote_ident(name)));
        }
    }
    for c in &desc.columns {
        let col = quote_ident(&c.name);
        match existing.iter().zip(&names).find(|(_, n)| **n == c.name) {
            None => {
                let default = change.and_then(|ch| ch.defaults.get(&c.name));
                match default {
                    // Existing rows get the source's value without a rewrite, then the
                    // default goes: replicated rows always carry their own values.
                    Some(v) => {
                        out.push(format!(
                            "ALTER TABLE {t} ADD COLUMN {col} {ty} DEFAULT {}::{ty}",
                            quote_literal(v),
                            ty = c.type_name
                        ));
                        out.push(format!("ALTER TABLE {t} ALTER COLUMN {col} DROP DEFAULT"));
                    }
                    None => out.push(format!("ALTER TABLE {t} ADD COLUMN {col} {}", c.type_name)),
                }
            }
            Some((e, _)) if e.type_name != c.type_name => out.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {col} TYPE {ty} USING {col}::{ty}",
                ty = c.type_name
            )),
            Some(_) => {}
        }
    }
    out
}

async fn prepare(
    client: &Client,
    cfg: &PgConnectConfig,
    desc: &TableDesc,
    change: Option<&SchemaChange>,
) -> GuestResult<TargetTable> {
    let existing = match target_columns(client, cfg, desc).await? {
        Some(existing) => {
            let statements = evolve_sql(desc, &existing, change);
            for sql in &statements {
                client.batch_execute(sql).await.map_err(|e| {
                    let mut err = ddl_error(cfg, desc, "change the table like the source", &e);
                    err.kind = ErrorKind::Unsupported;
                    err.message.push_str(&format!(" (statement: {sql})"));
                    err
                })?;
            }
            ensure_key(client, cfg, desc).await?;
            if statements.is_empty() {
                existing
            } else {
                target_columns(client, cfg, desc).await?.unwrap_or_default()
            }
        }
        None => {
            create_table(client, cfg, desc).await?;
            target_columns(client, cfg, desc).await?.unwrap_or_default()
        }
    };
    let mut element_oids = Vec::with_capacity(desc.columns.len());
    for c in &desc.columns {
        let Some(col) = existing.iter().find(|e| e.name == c.name) else {
            return Err(GuestError::new(
                ErrorKind::State,
                format!(
                    "target table {}.{} has no column `{}` after applying the source's schema",
                    desc.namespace, desc.name, c.name
                ),
            ));
        };
        element_oids.push((c.kind == PgKind::Raw && col.elem != 0).then_some(col.elem));
    }
    Ok(TargetTable {
        desc: desc.clone(),
        key: desc.key_columns(),
        element_oids,
        stage: None,
    })
}

/// Make the target's primary key the source's key (it may have changed with the schema).
async fn ensure_key(client: &Client, cfg: &PgConnectConfig, desc: &TableDesc) -> GuestResult<()> {
    let row = client
        .query_opt(
            "SELECT c.conname::text, array_agg(a.attname::text ORDER BY k.i)
               FROM pg_catalog.pg_constraint c
               CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, i)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
              WHERE c.conrelid = pg_catalog.to_regclass($1) AND c.contype = 'p'
              GROUP BY c.conname",
            &[&desc.qualified()],
        )
        .await
        .map_err(|e| ddl_error(cfg, desc, "read primary key", &e))?;
    let wanted: Vec<String> = desc
        .key_columns()
        .iter()
        .map(|&i| desc.columns[i].name.clone())
        .collect();
    let (name, have): (Option<String>, Vec<String>) = match row {
        Some(r) => (Some(r.get(0)), r.get(1)),
        None => (None, Vec::new()),
    };
    if have == wanted {
        return Ok(());
    }
    let t = desc.qualified();
    if let Some(name) = name {
        client
            .batch_execute(&format!(
                "ALTER TABLE {t} DROP CONSTRAINT {}",
                quote_ident(&name)
            ))
            .await
            .map_err(|e| ddl_error(cfg, desc, "drop the old primary key", &e))?;
    }
    if !wanted.is_empty() {
        let cols: Vec<String> = wanted.iter().map(|c| quote_ident(c)).collect();
        client
            .batch_execute(&format!(
                "ALTER TABLE {t} ADD PRIMARY KEY ({})",
                cols.join(", ")
            ))
            .await
            .map_err(|e| ddl_error(cfg, desc, "add the new primary key", &e))?;
    }
    Ok(())
}

async fn ensure_enum(
    client: &Client,
    cfg: &PgConnectConfig,
    desc: &TableDesc,
    def: &EnumDef,
) -> GuestResult<()> {
    let name = format!("{}.{}", quote_ident(&def.namespace), quote_ident(&def.name));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(&def.namespace)
        ))
        .await
        .map_err(|e| ddl_error(cfg, desc, "create schema", &e))?;
    let existing: Vec<String> = client
        .query(
            "SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = to_regtype($1) ORDER BY e.enumsortorder",
            &[&name],
        )
        .await
        .map_err(|e| ddl_error(cfg, desc, "read enum", &e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let type_exists = client
        .query_opt("SELECT 1 WHERE to_regtype($1) IS NOT NULL", &[&name])
        .await
        .map_err(|e| ddl_error(cfg, desc, "look up enum", &e))?
        .is_some();
    if !type_exists {
        let labels: Vec<String> = def.labels.iter().map(|l| quote_literal(l)).collect();
        client
            .batch_execute(&format!(
                "CREATE TYPE {name} AS ENUM ({})",
                labels.join(", ")
            ))
            .await
            .map_err(|e| ddl_error(cfg, desc, "create enum type", &e))?;
        return Ok(());
    }
    // Keep the source's sort order: place each new label after its predecessor.
    let mut present = existing;
    for (i, label) in def.labels.iter().enumerate() {
        if present.contains(label) {
            continue;
        }
        let place = match i.checked_sub(1).map(|p| &def.labels[p]) {
            Some(prev) => format!(" AFTER {}", quote_literal(prev)),
            None => present
                .first()
                .map(|f| format!(" BEFORE {}", quote_literal(f)))
                .unwrap_or_default(),
        };
        client
            .batch_execute(&format!(
                "ALTER TYPE {name} ADD VALUE IF NOT EXISTS {}{place}",
                quote_literal(label)
            ))
            .await
            .map_err(|e| ddl_error(cfg, desc, "add enum label", &e))?;
        present.push(label.clone());
    }
    Ok(())
}

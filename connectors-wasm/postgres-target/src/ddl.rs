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

/// Tables known to this session, by qualified name.
#[derive(Default)]
pub struct Tables {
    known: HashMap<String, TargetTable>,
    stages: usize,
}

impl Tables {
    /// The table for `desc`, created or checked on first use.
    pub async fn ensure(
        &mut self,
        client: &Client,
        cfg: &PgConnectConfig,
        desc: &TableDesc,
    ) -> GuestResult<&mut TargetTable> {
        let name = desc.qualified();
        let stale = self.known.get(&name).is_some_and(|t| t.desc != *desc);
        if stale || !self.known.contains_key(&name) {
            let table = prepare(client, cfg, desc).await?;
            self.known.insert(name.clone(), table);
        }
        Ok(self.known.get_mut(&name).expect("inserted above"))
    }

    /// A table prepared earlier in this batch.
    pub fn get(&self, name: &str) -> &TargetTable {
        &self.known[name]
    }

    /// Forget cached state after a failed transaction (staging tables may be gone).
    pub fn reset_stages(&mut self) {
        for t in self.known.values_mut() {
            t.stage = None;
        }
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

async fn prepare(
    client: &Client,
    cfg: &PgConnectConfig,
    desc: &TableDesc,
) -> GuestResult<TargetTable> {
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
    let key: Vec<usize> = desc.key_columns();
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_class WHERE oid = to_regclass($1)",
            &[&desc.qualified()],
        )
        .await
        .map_err(|e| ddl_error(cfg, desc, "look up table", &e))?
        .is_some();
    if !exists {
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
            .map_err(|e| ddl_error(cfg, desc, "create table", &e))?;
    }
    let rows = client
        .query(
            "SELECT a.attname::text, t.typelem FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&desc.qualified()],
        )
        .await
        .map_err(|e| ddl_error(cfg, desc, "read columns", &e))?;
    let target: HashMap<String, u32> = rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut element_oids = Vec::with_capacity(desc.columns.len());
    for c in &desc.columns {
        let Some(elem) = target.get(&c.name) else {
            return Err(GuestError::new(
                ErrorKind::State,
                format!(
                    "target table {}.{} exists without column `{}` that the source has; drop the target table to let Culvert recreate it, or add the column ({})",
                    desc.namespace, desc.name, c.name, c.type_name
                ),
            ));
        };
        element_oids.push((c.kind == PgKind::Raw && *elem != 0).then_some(*elem));
    }
    Ok(TargetTable {
        desc: desc.clone(),
        key,
        element_oids,
        stage: None,
    })
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

//! `check` and `discover`: what an operator needs to know before the first run.

use culvert_connector_sdk as sdk;
use culvert_pg_guest::{GuestResult, connect, parse_config};

use crate::Resolver;
use crate::catalog::{load_tables, select};
use crate::config::SourceConfig;

fn result(name: &str, ok: bool, message: impl Into<String>) -> sdk::CheckResult {
    sdk::CheckResult {
        name: name.to_string(),
        ok,
        message: message.into(),
    }
}

/// Run every check; stops at the first one the later checks depend on.
pub async fn run(config: &str, resolve: Resolver) -> Vec<sdk::CheckResult> {
    let mut out = Vec::new();
    let cfg: SourceConfig = match parse_config(config) {
        Ok(c) => c,
        Err(e) => {
            out.push(result("configuration", false, e.message));
            return out;
        }
    };
    out.push(result("configuration", true, ""));
    let client = match connect(&cfg.conn, "culvert check", &*resolve).await {
        Ok(c) => c,
        Err(e) => {
            out.push(result("connect", false, e.message));
            return out;
        }
    };
    out.push(result("connect", true, ""));
    let single = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .map(|r| r.get::<_, String>(0))
        }
    };
    match single("SELECT current_setting('wal_level')").await {
        Ok(level) if level == "logical" => out.push(result("wal_level", true, "")),
        Ok(level) => out.push(result(
            "wal_level",
            false,
            format!("wal_level is `{level}`; set wal_level = logical (ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"),
        )),
        Err(e) => out.push(result("wal_level", false, e.to_string())),
    }
    match single("SELECT (rolreplication OR rolsuper)::text FROM pg_catalog.pg_roles WHERE rolname = current_user").await {
        Ok(v) if v == "true" => out.push(result("replication_privilege", true, "")),
        Ok(_) => out.push(result(
            "replication_privilege",
            false,
            format!("role `{}` lacks REPLICATION; run ALTER ROLE \"{}\" REPLICATION", cfg.conn.user, cfg.conn.user),
        )),
        Err(e) => out.push(result("replication_privilege", false, e.to_string())),
    }
    match single(
        "SELECT (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_catalog.pg_replication_slots))::text",
    )
    .await
    {
        Ok(free) if free.parse::<i64>().unwrap_or(0) > 0 => out.push(result("free_replication_slots", true, free)),
        Ok(_) => {
            let slot_exists = client
                .query_opt("SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", &[&cfg.slot])
                .await
                .ok()
                .flatten()
                .is_some();
            out.push(result(
                "free_replication_slots",
                slot_exists,
                if slot_exists { String::new() } else { "no free replication slot: raise max_replication_slots or drop an unused slot".to_string() },
            ))
        }
        Err(e) => out.push(result("free_replication_slots", false, e.to_string())),
    }
    match load_tables(&client, &cfg.conn, None).await {
        Ok(tables) => {
            // Without a selection (a connector checked before any pipeline uses it), every
            // visible table is checked, and finding none is not an error.
            let unselected = cfg.tables.is_empty();
            let selected = if unselected {
                tables
            } else {
                select(tables, &cfg.tables)
            };
            if selected.is_empty() && unselected {
                out.push(result(
                    "tables",
                    true,
                    "no tables yet; pipelines select them".to_string(),
                ));
            } else if selected.is_empty() {
                out.push(result(
                    "tables",
                    false,
                    format!("no table matches {:?}; check `tables`", cfg.tables),
                ));
            } else {
                let problems: Vec<String> = selected
                    .iter()
                    .filter_map(|t| t.ensure_replicable().err().map(|e| e.message))
                    .collect();
                out.push(result("tables", problems.is_empty(), problems.join("\n")));
            }
        }
        Err(e) => out.push(result("tables", false, e.message)),
    }
    out
}

/// Every table the configured role can see, with columns, types and keys.
pub async fn discover(config: &str, resolve: Resolver) -> GuestResult<Vec<sdk::TableInfo>> {
    let cfg: SourceConfig = parse_config(config)?;
    let client = connect(&cfg.conn, "culvert discover", &*resolve).await?;
    let tables = load_tables(&client, &cfg.conn, None).await?;
    Ok(tables
        .into_iter()
        .map(|t| sdk::TableInfo {
            identifiable: t.identifiable(),
            estimated_rows: t.estimated_rows,
            table: sdk::TableRef {
                namespace: t.desc.namespace.clone(),
                name: t.desc.name.clone(),
            },
            columns: t
                .desc
                .columns
                .iter()
                .zip(&t.unsupported)
                .map(|(c, reason)| sdk::ColumnInfo {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    nullable: c.nullable,
                    key_ordinal: c.key_ordinal,
                    unsupported_reason: reason.clone(),
                })
                .collect(),
        })
        .collect())
}

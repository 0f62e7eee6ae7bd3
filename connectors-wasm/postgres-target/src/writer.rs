//! The `writer` resource: one session, batches applied atomically with their position.

use std::collections::HashSet;

use culvert_connector_sdk as sdk;
use culvert_connector_sdk::host::{Level, gauge_set};
use culvert_pg_arrow::arrow_array::{Array, RecordBatch, StringArray};
use culvert_pg_arrow::ipc::from_ipc;
use culvert_pg_arrow::schema::table_from_schema;
use culvert_pg_arrow::types::TableDesc;
use culvert_pg_guest::{
    ErrorKind, GuestError, GuestResult, PgConnectConfig, connect, parse_config, pg_error,
};
use tokio_postgres::Client;

use crate::apply::{apply_changes, apply_snapshot};
use crate::ddl::{SchemaChange, Tables};
use crate::log;
use crate::{Resolver, resolver, runtime};

/// Schema metadata key of a table-rows entry that carries a schema change.
const DDL_METADATA: &str = "culvert.ddl";

const POSITIONS_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS _culvert;
CREATE TABLE IF NOT EXISTS _culvert.positions (
    pipeline text PRIMARY KEY,
    position bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS _culvert.pending (
    pipeline text NOT NULL,
    ord bigint NOT NULL,
    namespace text NOT NULL,
    name text NOT NULL,
    first_of_table bool NOT NULL,
    ipc bytea NOT NULL,
    PRIMARY KEY (pipeline, ord)
);
CREATE TABLE IF NOT EXISTS _culvert.fences (
    pipeline text PRIMARY KEY,
    epoch bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS _culvert.paused (
    pipeline text NOT NULL,
    table_name text NOT NULL,
    reason text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, table_name)
)";

struct Session {
    cfg: PgConnectConfig,
    pipeline: String,
    client: Client,
    tables: Tables,
    /// Tables whose schema change the target could not take: skipped until recopied.
    paused: HashSet<String>,
    /// The lease epoch this writer holds (`fence_epoch`), when a control plane assigns it.
    fence: Option<i64>,
}

/// Raise the pipeline's fence to `epoch`; fails when a newer lease holder has raised it
/// further, so an agent that lost its lease can never commit again.
async fn check_fence(
    client: &Client,
    cfg: &PgConnectConfig,
    pipeline: &str,
    epoch: i64,
) -> GuestResult<()> {
    let held = client
        .query_opt(
            "INSERT INTO _culvert.fences (pipeline, epoch) VALUES ($1, $2)
             ON CONFLICT (pipeline) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = now()
             WHERE _culvert.fences.epoch <= EXCLUDED.epoch
             RETURNING epoch",
            &[&pipeline, &epoch],
        )
        .await
        .map_err(|e| pg_error(cfg, "check the lease fence", &e))?;
    if held.is_none() {
        return Err(GuestError::new(
            ErrorKind::State,
            format!(
                "pipeline {pipeline} is fenced: its lease moved to another agent (this writer holds epoch {epoch}); it stops here"
            ),
        ));
    }
    Ok(())
}

fn fence_of(config: &str) -> GuestResult<Option<i64>> {
    let v: serde_json::Value = parse_config(config)?;
    match v.get("fence_epoch") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| GuestError::new(ErrorKind::Config, "`fence_epoch` must be an integer")),
    }
}

/// A destination session.
pub struct Writer {
    rt: tokio::runtime::Runtime,
    session: Session,
}

impl sdk::Writer for Writer {
    fn open(config: &str, pipeline: &str) -> Result<Writer, sdk::ConnectorError> {
        let rt = runtime();
        let session = rt.block_on(open(config, pipeline.to_string(), resolver()))?;
        Ok(Writer { rt, session })
    }

    fn committed(&mut self) -> Result<Option<Vec<u8>>, sdk::ConnectorError> {
        let session = &self.session;
        Ok(self.rt.block_on(committed(
            &session.client,
            &session.cfg,
            &session.pipeline,
            false,
        ))?)
    }

    fn apply(&mut self, batch: sdk::Batch) -> Result<Vec<u8>, sdk::ConnectorError> {
        let result = self.rt.block_on(apply(&mut self.session, batch));
        if result.is_err() {
            let s = &mut self.session;
            let _ = self.rt.block_on(s.client.batch_execute("ROLLBACK"));
            s.tables.reset();
            if let Ok(paused) = self.rt.block_on(load_paused(&s.client, &s.pipeline)) {
                s.paused = paused;
            }
        }
        Ok(result?)
    }
}

async fn open(config: &str, pipeline: String, resolve: Resolver) -> GuestResult<Session> {
    let cfg: PgConnectConfig = parse_config(config)?;
    let client = connect(&cfg, "culvert apply", &*resolve).await?;
    client.batch_execute(POSITIONS_DDL).await.map_err(|e| {
        let mut err = pg_error(&cfg, "create _culvert.positions", &e);
        err.message
            .push_str("; the target role needs CREATE on the database");
        err
    })?;
    let paused = load_paused(&client, &pipeline)
        .await
        .map_err(|e| pg_error(&cfg, "read paused tables", &e))?;
    let fence = fence_of(config)?;
    if let Some(epoch) = fence {
        // Fence out older holders now, before they commit another batch.
        check_fence(&client, &cfg, &pipeline, epoch).await?;
    }
    Ok(Session {
        cfg,
        pipeline,
        client,
        tables: Tables::default(),
        paused,
        fence,
    })
}

async fn load_paused(
    client: &Client,
    pipeline: &str,
) -> Result<HashSet<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT table_name FROM _culvert.paused WHERE pipeline = $1",
            &[&pipeline],
        )
        .await?;
    let paused: HashSet<String> = rows.into_iter().map(|r| r.get(0)).collect();
    gauge_set("paused_tables", paused.len() as f64);
    Ok(paused)
}

async fn committed(
    client: &Client,
    cfg: &PgConnectConfig,
    pipeline: &str,
    lock: bool,
) -> GuestResult<Option<Vec<u8>>> {
    let sql = if lock {
        "SELECT position FROM _culvert.positions WHERE pipeline = $1 FOR UPDATE"
    } else {
        "SELECT position FROM _culvert.positions WHERE pipeline = $1"
    };
    let row = client
        .query_opt(sql, &[&pipeline])
        .await
        .map_err(|e| pg_error(cfg, "read committed position", &e))?;
    Ok(row.map(|r| r.get(0)))
}

/// One table's rows from a batch, decoded.
struct Entry {
    desc: TableDesc,
    change: Option<SchemaChange>,
    first: bool,
    batches: Vec<RecordBatch>,
}

fn decode(namespace: &str, name: &str, first: bool, ipc: &[u8]) -> GuestResult<Option<Entry>> {
    let batches = from_ipc(ipc).map_err(|e| {
        GuestError::new(
            ErrorKind::Internal,
            format!("batch for {namespace}.{name} is not valid Arrow IPC: {e}"),
        )
    })?;
    let Some(head) = batches.first() else {
        return Ok(None);
    };
    let schema = head.schema();
    let mut desc = table_from_schema(&schema)
        .map_err(|e| GuestError::new(ErrorKind::Internal, format!("{namespace}.{name}: {e}")))?;
    desc.namespace = namespace.to_string();
    desc.name = name.to_string();
    let change = match schema.metadata().get(DDL_METADATA) {
        Some(v) => Some(serde_json::from_str::<SchemaChange>(v).map_err(|e| {
            GuestError::new(
                ErrorKind::Internal,
                format!("{namespace}.{name}: schema change does not parse: {e}"),
            )
        })?),
        None => None,
    };
    Ok(Some(Entry {
        desc,
        change,
        first,
        batches,
    }))
}

async fn apply(session: &mut Session, batch: sdk::Batch) -> GuestResult<Vec<u8>> {
    let mut entries = Vec::with_capacity(batch.tables.len());
    for rows in &batch.tables {
        if let Some(e) = decode(
            &rows.table.namespace,
            &rows.table.name,
            rows.first_of_table,
            &rows.ipc,
        )? {
            if e.change.as_ref().is_none_or(|c| !c.drop) {
                session
                    .tables
                    .prepare_types(&session.client, &session.cfg, &e.desc)
                    .await?;
            }
            entries.push(e);
        }
    }
    let Session {
        cfg,
        pipeline,
        client,
        fence,
        ..
    } = &*session;
    let (cfg, pipeline) = (cfg.clone(), pipeline.clone());
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| pg_error(&cfg, "begin", &e))?;
    if let Some(epoch) = *fence {
        // In the batch's transaction: the fence row stays locked until commit.
        if let Err(e) = check_fence(client, &cfg, &pipeline, epoch).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    if let Some(done) = committed(client, &cfg, &pipeline, true).await?
        && done >= batch.position
    {
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| pg_error(&cfg, "rollback", &e))?;
        return Ok(done);
    }
    if batch.continues {
        // Part of a transaction: kept aside, invisible, until the part that completes it.
        for rows in &batch.tables {
            session
                .client
                .execute(
                    "INSERT INTO _culvert.pending (pipeline, ord, namespace, name, first_of_table, ipc)
                     SELECT $1, coalesce(max(ord), 0) + 1, $2, $3, $4, $5 FROM _culvert.pending WHERE pipeline = $1",
                    &[&pipeline, &rows.table.namespace, &rows.table.name, &rows.first_of_table, &rows.ipc],
                )
                .await
                .map_err(|e| pg_error(&cfg, "keep part of a large transaction", &e))?;
        }
    } else {
        let held: Vec<i64> = session
            .client
            .query(
                "SELECT ord FROM _culvert.pending WHERE pipeline = $1 ORDER BY ord",
                &[&pipeline],
            )
            .await
            .map_err(|e| pg_error(&cfg, "read held parts of a transaction", &e))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        for ord in &held {
            let row = session
                .client
                .query_one(
                    "SELECT namespace, name, first_of_table, ipc FROM _culvert.pending WHERE pipeline = $1 AND ord = $2",
                    &[&pipeline, ord],
                )
                .await
                .map_err(|e| pg_error(&cfg, "read a held part of a transaction", &e))?;
            let (ns, name, first, ipc): (String, String, bool, Vec<u8>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if let Some(e) = decode(&ns, &name, first, &ipc)? {
                if e.change.as_ref().is_none_or(|c| !c.drop) {
                    // Types were created when the part arrived; this is a no-op then.
                    session
                        .tables
                        .prepare_types(&session.client, &cfg, &e.desc)
                        .await?;
                }
                // Only change batches continue a transaction; the completing batch may be
                // a bare position.
                apply_entry(session, sdk::BatchKind::Changes, e).await?;
            }
        }
        if !held.is_empty() {
            session
                .client
                .execute(
                    "DELETE FROM _culvert.pending WHERE pipeline = $1",
                    &[&pipeline],
                )
                .await
                .map_err(|e| pg_error(&cfg, "clear held parts of a transaction", &e))?;
        }
        for e in entries {
            apply_entry(session, batch.kind, e).await?;
        }
    }
    session
        .client
        .execute(
            "INSERT INTO _culvert.positions (pipeline, position, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (pipeline) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
            &[&pipeline, &batch.position],
        )
        .await
        .map_err(|e| pg_error(&cfg, "record position", &e))?;
    session
        .client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| pg_error(&cfg, "commit", &e))?;
    Ok(batch.position)
}

/// The last truncate among change rows: from there on the table's contents are replaced.
fn last_truncate(batches: &[RecordBatch]) -> Option<(usize, usize)> {
    batches.iter().enumerate().rev().find_map(|(b, rb)| {
        let ops = rb.column(0).as_any().downcast_ref::<StringArray>()?;
        (0..ops.len())
            .rev()
            .find(|&i| ops.value(i) == "T")
            .map(|i| (b, i))
    })
}

async fn apply_entry(session: &mut Session, kind: sdk::BatchKind, mut e: Entry) -> GuestResult<()> {
    let Session {
        cfg,
        pipeline,
        client,
        tables,
        paused,
        ..
    } = session;
    let name = e.desc.qualified();
    // Paused tables are recorded under the name operators type: schema.table.
    let plain = format!("{}.{}", e.desc.namespace, e.desc.name);
    if e.change.as_ref().is_some_and(|c| c.drop) {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
            .await
            .map_err(|err| pg_error(cfg, &format!("drop {name} like the source"), &err))?;
        tables.forget(&name);
        unpause(client, cfg, pipeline, paused, &plain).await?;
        return Ok(());
    }
    if paused.contains(&plain) {
        // A recopy (or a truncate) replaces the table: rebuild it in the source's shape
        // and apply what follows the truncate.
        if kind == sdk::BatchKind::Changes {
            let Some((b, i)) = last_truncate(&e.batches) else {
                return Ok(());
            };
            let mut rest: Vec<RecordBatch> = e.batches.split_off(b);
            rest[0] = rest[0].slice(i, rest[0].num_rows() - i);
            e.batches = rest;
        } else if !(kind == sdk::BatchKind::Snapshot && e.first) {
            return Ok(());
        }
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
            .await
            .map_err(|err| pg_error(cfg, &format!("recreate paused table {name}"), &err))?;
        tables.forget(&name);
        unpause(client, cfg, pipeline, paused, &plain).await?;
    }
    client
        .batch_execute("SAVEPOINT culvert_schema")
        .await
        .map_err(|err| pg_error(cfg, "savepoint", &err))?;
    if let Err(err) = tables
        .resolve(client, cfg, &e.desc, e.change.as_ref())
        .await
    {
        if err.kind != ErrorKind::Unsupported {
            return Err(err);
        }
        // Only this table stops; the others go on.
        client
            .batch_execute("ROLLBACK TO SAVEPOINT culvert_schema")
            .await
            .map_err(|err| pg_error(cfg, "rollback to savepoint", &err))?;
        tables.forget(&name);
        let reason = format!(
            "{}; the table is paused and its changes are skipped. Fix the target table by hand or drop it, then run `culvert-agent resync --pipeline FILE --table {}.{}` to copy it again",
            err.message, e.desc.namespace, e.desc.name
        );
        client
            .execute(
                "INSERT INTO _culvert.paused (pipeline, table_name, reason) VALUES ($1, $2, $3)
                 ON CONFLICT (pipeline, table_name) DO UPDATE SET reason = EXCLUDED.reason, paused_at = now()",
                &[&*pipeline, &plain, &reason],
            )
            .await
            .map_err(|err| pg_error(cfg, "record a paused table", &err))?;
        paused.insert(plain.clone());
        gauge_set("paused_tables", paused.len() as f64);
        log(Level::Error, &format!("table {plain} paused: {reason}"));
        return Ok(());
    }
    for (i, rb) in e.batches.iter().enumerate() {
        match kind {
            sdk::BatchKind::Snapshot => {
                apply_snapshot(client, cfg, tables, &name, e.first && i == 0, rb).await?
            }
            sdk::BatchKind::Changes => {
                if rb.num_rows() > 0 {
                    apply_changes(client, cfg, tables, &name, rb).await?
                }
            }
            sdk::BatchKind::Heartbeat => {}
        }
    }
    Ok(())
}

async fn unpause(
    client: &Client,
    cfg: &PgConnectConfig,
    pipeline: &str,
    paused: &mut HashSet<String>,
    name: &str,
) -> GuestResult<()> {
    if paused.remove(name) {
        client
            .execute(
                "DELETE FROM _culvert.paused WHERE pipeline = $1 AND table_name = $2",
                &[&pipeline, &name],
            )
            .await
            .map_err(|err| pg_error(cfg, "clear a paused table", &err))?;
        gauge_set("paused_tables", paused.len() as f64);
        log(Level::Info, &format!("table {name} replicates again"));
    }
    Ok(())
}

/// Reachability, credentials and privileges of the target.
pub async fn check(config: &str, resolve: Resolver) -> Vec<sdk::CheckResult> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<sdk::CheckResult>, name: &str, r: Result<(), String>| {
        out.push(sdk::CheckResult {
            name: name.to_string(),
            ok: r.is_ok(),
            message: r.err().unwrap_or_default(),
        })
    };
    let cfg: PgConnectConfig = match parse_config(config) {
        Ok(c) => c,
        Err(e) => {
            push(&mut out, "configuration", Err(e.message));
            return out;
        }
    };
    push(&mut out, "configuration", Ok(()));
    let client = match connect(&cfg, "culvert check", &*resolve).await {
        Ok(c) => c,
        Err(e) => {
            push(&mut out, "connect", Err(e.message));
            return out;
        }
    };
    push(&mut out, "connect", Ok(()));
    let can_create = client
        .query_one(
            "SELECT has_database_privilege(current_user, current_database(), 'CREATE')",
            &[],
        )
        .await
        .map(|r| r.get::<_, bool>(0));
    push(
        &mut out,
        "create_privilege",
        match can_create {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "role `{}` cannot create schemas in `{}`: GRANT CREATE ON DATABASE \"{}\" TO \"{}\"",
                cfg.user, cfg.database, cfg.database, cfg.user
            )),
            Err(e) => Err(e.to_string()),
        },
    );
    out
}

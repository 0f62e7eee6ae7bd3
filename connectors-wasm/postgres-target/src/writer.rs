//! The `writer` resource: one session, batches applied atomically with their position.

use std::cell::RefCell;

use culvert_pg_arrow::ipc::from_ipc;
use culvert_pg_arrow::schema::table_from_schema;
use culvert_pg_guest::{
    ErrorKind, GuestError, GuestResult, PgConnectConfig, connect, parse_config, pg_error,
};
use tokio_postgres::Client;

use crate::apply::{apply_changes, apply_snapshot};
use crate::ddl::Tables;
use crate::exports::culvert::connector::destination_connector::GuestWriter;
use crate::{Resolver, resolver, runtime, to_wit, wit};

const POSITIONS_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS _culvert;
CREATE TABLE IF NOT EXISTS _culvert.positions (
    pipeline text PRIMARY KEY,
    position bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

struct Session {
    cfg: PgConnectConfig,
    pipeline: String,
    client: Client,
    tables: Tables,
}

/// A destination session.
pub struct Writer {
    rt: tokio::runtime::Runtime,
    session: RefCell<Session>,
}

impl GuestWriter for Writer {
    fn open(config: String, pipeline: String) -> Result<crate::api::Writer, wit::ConnectorError> {
        let rt = runtime();
        let session = rt
            .block_on(open(&config, pipeline, resolver()))
            .map_err(to_wit)?;
        Ok(crate::api::Writer::new(Writer {
            rt,
            session: RefCell::new(session),
        }))
    }

    fn committed(&self) -> Result<Option<Vec<u8>>, wit::ConnectorError> {
        let session = self.session.borrow();
        self.rt
            .block_on(committed(
                &session.client,
                &session.cfg,
                &session.pipeline,
                false,
            ))
            .map_err(to_wit)
    }

    fn apply(&self, batch: wit::Batch) -> Result<Vec<u8>, wit::ConnectorError> {
        let mut session = self.session.borrow_mut();
        let result = self.rt.block_on(apply(&mut session, batch));
        if result.is_err() {
            let s = &mut *session;
            let _ = self.rt.block_on(s.client.batch_execute("ROLLBACK"));
            s.tables.reset_stages();
        }
        result.map_err(to_wit)
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
    Ok(Session {
        cfg,
        pipeline,
        client,
        tables: Tables::default(),
    })
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

async fn apply(session: &mut Session, batch: wit::Batch) -> GuestResult<Vec<u8>> {
    let Session {
        cfg,
        pipeline,
        client,
        tables,
    } = session;
    // Decode and create tables first: DDL (enum labels in particular) must commit before use.
    let mut decoded = Vec::with_capacity(batch.tables.len());
    for rows in &batch.tables {
        let batches = from_ipc(&rows.ipc).map_err(|e| {
            GuestError::new(
                ErrorKind::Internal,
                format!(
                    "batch for {}.{} is not valid Arrow IPC: {e}",
                    rows.table.namespace, rows.table.name
                ),
            )
        })?;
        let Some(first) = batches.first() else {
            continue;
        };
        let mut desc = table_from_schema(&first.schema()).map_err(|e| {
            GuestError::new(
                ErrorKind::Internal,
                format!("{}.{}: {e}", rows.table.namespace, rows.table.name),
            )
        })?;
        desc.namespace = rows.table.namespace.clone();
        desc.name = rows.table.name.clone();
        tables.ensure(client, cfg, &desc).await?;
        decoded.push((desc.qualified(), rows.first_of_table, batches));
    }
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| pg_error(cfg, "begin", &e))?;
    if let Some(done) = committed(client, cfg, pipeline, true).await?
        && done >= batch.position
    {
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| pg_error(cfg, "rollback", &e))?;
        return Ok(done);
    }
    for (name, first, batches) in decoded {
        for (i, rb) in batches.iter().enumerate() {
            match batch.kind {
                wit::BatchKind::Snapshot => {
                    apply_snapshot(client, cfg, tables, &name, first && i == 0, rb).await?
                }
                wit::BatchKind::Changes => apply_changes(client, cfg, tables, &name, rb).await?,
                wit::BatchKind::Heartbeat => {}
            }
        }
    }
    client
        .execute(
            "INSERT INTO _culvert.positions (pipeline, position, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (pipeline) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
            &[&*pipeline, &batch.position],
        )
        .await
        .map_err(|e| pg_error(cfg, "record position", &e))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| pg_error(cfg, "commit", &e))?;
    Ok(batch.position)
}

/// Reachability, credentials and privileges of the target.
pub async fn check(config: &str, resolve: Resolver) -> Vec<wit::CheckResult> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<wit::CheckResult>, name: &str, r: Result<(), String>| {
        out.push(wit::CheckResult {
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

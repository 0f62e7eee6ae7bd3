//! The `reader` resource: snapshot first, then the change stream, with resume.

use std::time::Duration;

use culvert_connector_sdk::{self as sdk, host::Level};
use culvert_pg_arrow::position::{Position, Stage, TableRanges};
use culvert_pg_arrow::types::{TableDesc, quote_ident};
use culvert_pg_guest::{
    ErrorKind, GuestError, GuestResult, PgConnectConfig, PgStream, connect, connect_stream,
    parse_config, pg_error,
};
use culvert_pg_replication::{ConnectParams, ReplicationConnection};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::backfill::{self, Request};
use crate::catalog::{CatalogTable, load_tables, select};
use crate::changes::{ChangeStream, StreamStart};
use crate::config::{SourceConfig, named};
use crate::snapshot::{Chunk, SnapshotPlan};
use crate::{Resolver, log, resolver, runtime};

enum Phase {
    Snapshot {
        chunks: mpsc::Receiver<GuestResult<Chunk>>,
        conn: Option<ReplicationConnection<PgStream>>,
        tables: Vec<TableDesc>,
        generation: u64,
        counter: u64,
        finished: Vec<TableRanges>,
    },
    Streaming(Box<ChangeStream>),
    Failed,
}

struct State {
    cfg: SourceConfig,
    globs: Vec<String>,
    phase: Phase,
}

/// A source stream.
pub struct Reader {
    rt: tokio::runtime::Runtime,
    state: State,
}

impl sdk::Reader for Reader {
    fn open(
        config: &str,
        selection: Vec<String>,
        resume: Option<Vec<u8>>,
    ) -> Result<Reader, sdk::ConnectorError> {
        let rt = runtime();
        let state = rt.block_on(open(config, selection, resume, resolver()))?;
        Ok(Reader { rt, state })
    }

    fn next(&mut self, max_rows: u32) -> Result<Option<sdk::Batch>, sdk::ConnectorError> {
        Ok(self.rt.block_on(next(&mut self.state, max_rows.max(1)))?)
    }

    fn ack(&mut self, position: &[u8]) -> Result<(), sdk::ConnectorError> {
        let position =
            Position::decode(position).map_err(|e| sdk::ConnectorError::internal(e.to_string()))?;
        if let (Phase::Streaming(stream), Some(lsn)) = (&mut self.state.phase, position.lsn()) {
            self.rt.block_on(stream.ack(lsn))?;
        }
        Ok(())
    }
}

fn replication_params(cfg: &PgConnectConfig) -> ConnectParams {
    ConnectParams {
        user: cfg.user.clone(),
        password: cfg.password.clone(),
        database: cfg.database.clone(),
        application_name: "culvert replication".to_string(),
    }
}

async fn replication_connection(
    cfg: &PgConnectConfig,
    resolve: &Resolver,
) -> GuestResult<ReplicationConnection<PgStream>> {
    let stream = connect_stream(cfg, &**resolve).await?;
    ReplicationConnection::connect(stream, &replication_params(cfg)).await.map_err(|e| {
        let kind = match e.sqlstate() {
            Some("28P01") | Some("28000") => ErrorKind::Auth,
            Some("42501") => ErrorKind::Permission,
            _ => ErrorKind::Connection,
        };
        GuestError::new(
            kind,
            format!(
                "open a replication connection to {}: {e}; the role needs LOGIN and REPLICATION (ALTER ROLE {} REPLICATION) and pg_hba.conf must admit it",
                cfg.endpoint(),
                quote_ident(&cfg.user)
            ),
        )
    })
}

async fn open(
    config: &str,
    selection: Vec<String>,
    resume: Option<Vec<u8>>,
    resolve: Resolver,
) -> GuestResult<State> {
    let (cfg, globs, client, tables) = prepare(config, selection, &resolve).await?;
    let added = ensure_publication(&client, &cfg, &tables).await?;
    let resume = resume
        .map(|r| Position::decode(&r))
        .transpose()
        .map_err(|e| GuestError::new(ErrorKind::State, e.to_string()))?;
    let phase = match resume {
        Some(Position {
            stage: Stage::Changes { lsn, seq },
            tables: backfills,
        }) => {
            slot_ready(&client, &cfg, &tables).await?;
            if !added.is_empty() {
                // Tables newly selected: copied in the background while changes stream.
                request_copy(&client, &cfg, added).await?;
            }
            let start = StreamStart {
                resume: Some((lsn, seq)),
                backfills,
            };
            stream(&cfg, &globs, start, &resolve).await?
        }
        Some(Position {
            stage: Stage::Snapshot { generation, .. },
            tables: finished,
        }) if !finished.is_empty() && slot_usable(&client, &cfg).await? => {
            resume_snapshot(
                &client, &cfg, &globs, &tables, generation, finished, &resolve,
            )
            .await?
        }
        _ => start_snapshot(&client, &cfg, tables, &resolve).await?,
    };
    drop(client);
    Ok(State { cfg, globs, phase })
}

/// Configuration, selection, a catalog connection and the selected tables.
async fn prepare(
    config: &str,
    selection: Vec<String>,
    resolve: &Resolver,
) -> GuestResult<(SourceConfig, Vec<String>, Client, Vec<CatalogTable>)> {
    let cfg: SourceConfig = parse_config(config)?;
    let globs = if selection.is_empty() {
        cfg.tables.clone()
    } else {
        selection
    };
    if globs.is_empty() {
        return Err(GuestError::new(
            ErrorKind::Config,
            "no tables selected: set `tables`, for example [\"public.*\"]",
        ));
    }
    let client = connect(&cfg.conn, "culvert catalog", &**resolve).await?;
    crate::ddl_capture::install(&client, &cfg.conn).await?;
    let mut tables = select(load_tables(&client, &cfg.conn, None).await?, &globs);
    // A table only a wildcard matched is left out with a warning; one named exactly
    // must replicate.
    let mut kept = Vec::with_capacity(tables.len());
    for t in tables {
        match t.ensure_replicable() {
            Ok(()) => kept.push(t),
            Err(e) if !named(&globs, &t.desc.namespace, &t.desc.name) => {
                log(Level::Warn, &format!("{}; it is left out", e.message));
            }
            Err(e) => return Err(e),
        }
    }
    tables = kept;
    if tables.is_empty() {
        return Err(GuestError::new(
            ErrorKind::Config,
            format!(
                "no table in database `{}` matches {:?}; check `tables`",
                cfg.conn.database, globs
            ),
        ));
    }
    Ok((cfg, globs, client, tables))
}

async fn stream(
    cfg: &SourceConfig,
    globs: &[String],
    start: StreamStart,
    resolve: &Resolver,
) -> GuestResult<Phase> {
    let conn = replication_connection(&cfg.conn, resolve).await?;
    let catalog = connect(&cfg.conn, "culvert catalog", &**resolve).await?;
    let stream = ChangeStream::start(conn, catalog, cfg.clone(), globs.to_vec(), start).await?;
    Ok(Phase::Streaming(Box::new(stream)))
}

/// Finish an interrupted snapshot: the copied ranges stay, the rest is copied in the
/// background while the stream replays from the snapshot's point.
async fn resume_snapshot(
    client: &Client,
    cfg: &SourceConfig,
    globs: &[String],
    tables: &[CatalogTable],
    generation: u64,
    finished: Vec<TableRanges>,
    resolve: &Resolver,
) -> GuestResult<Phase> {
    let mut backfills = Vec::new();
    let mut fresh = Vec::new();
    let mut copied = 0u64;
    for t in tables {
        let done = finished
            .iter()
            .find(|f| f.namespace == t.desc.namespace && f.name == t.desc.name);
        match done {
            Some(f) if f.complete() => copied += 1,
            Some(f) => backfills.push(TableRanges {
                namespace: f.namespace.clone(),
                name: f.name.clone(),
                ranges: f.complement(),
            }),
            None => fresh.push((t.desc.namespace.clone(), t.desc.name.clone())),
        }
    }
    log(
        Level::Info,
        &format!(
            "resuming an interrupted snapshot: {copied} tables copied, {} partly, {} not started; copying the rest while changes stream",
            backfills.len(),
            fresh.len()
        ),
    );
    if !fresh.is_empty() {
        request_copy(client, cfg, fresh).await?;
    }
    let start = StreamStart {
        resume: Some(after_snapshot(generation)),
        backfills,
    };
    stream(cfg, globs, start, resolve).await
}

async fn ensure_publication(
    client: &Client,
    cfg: &SourceConfig,
    tables: &[CatalogTable],
) -> GuestResult<Vec<(String, String)>> {
    let conn = &cfg.conn;
    let existing = client
        .query(
            "SELECT puballtables, pubviaroot FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
        .map_err(|e| pg_error(conn, "read publications", &e))?;
    let names: Vec<String> = tables.iter().map(|t| t.desc.qualified()).collect();
    let fix = |e: &tokio_postgres::Error, what: &str| {
        let mut err = pg_error(conn, what, e);
        if err.kind == ErrorKind::Permission {
            err.message.push_str(&format!(
                "; or create it yourself: CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(&cfg.publication),
                names.join(", ")
            ));
        }
        err
    };
    match existing.first() {
        None => {
            // Partitioned tables replicate as one table: changes arrive under the root's name.
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
                quote_ident(&cfg.publication),
                names.join(", ")
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| fix(&e, "create publication"))?;
            log(
                Level::Info,
                &format!(
                    "created publication `{}` for {} tables",
                    cfg.publication,
                    names.len()
                ),
            );
        }
        Some(row) if row.get::<_, bool>(0) => {}
        Some(row) => {
            if !row.get::<_, bool>(1) && tables.iter().any(|t| t.partitioned) {
                let sql = format!(
                    "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                    quote_ident(&cfg.publication)
                );
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| fix(&e, "publish partitioned tables through their root"))?;
                log(
                    Level::Info,
                    &format!(
                        "publication `{}` now publishes partitions through their root",
                        cfg.publication
                    ),
                );
            }
            let published: Vec<(String, String)> = client
                .query(
                    "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables WHERE pubname = $1",
                    &[&cfg.publication],
                )
                .await
                .map_err(|e| pg_error(conn, "read publication tables", &e))?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let missing_tables: Vec<&CatalogTable> = tables
                .iter()
                .filter(|t| {
                    !published
                        .iter()
                        .any(|(s, n)| *s == t.desc.namespace && *n == t.desc.name)
                })
                .collect();
            let missing: Vec<String> = missing_tables.iter().map(|t| t.desc.qualified()).collect();
            if !missing.is_empty() {
                let sql = format!(
                    "ALTER PUBLICATION {} ADD TABLE {}",
                    quote_ident(&cfg.publication),
                    missing.join(", ")
                );
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| fix(&e, "add tables to publication"))?;
                log(
                    Level::Info,
                    &format!(
                        "added {} tables to publication `{}`",
                        missing.len(),
                        cfg.publication
                    ),
                );
            }
            return Ok(missing_tables
                .iter()
                .map(|t| (t.desc.namespace.clone(), t.desc.name.clone()))
                .collect());
        }
    }
    Ok(Vec::new())
}

/// `None` when the slot is missing, else its `wal_status`.
async fn slot_status(client: &Client, cfg: &SourceConfig) -> GuestResult<Option<String>> {
    let rows = client
        .query(
            "SELECT coalesce(wal_status, '') FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&cfg.slot],
        )
        .await
        .map_err(|e| pg_error(&cfg.conn, "read replication slots", &e))?;
    Ok(rows.first().map(|r| r.get::<_, String>(0)))
}

async fn slot_usable(client: &Client, cfg: &SourceConfig) -> GuestResult<bool> {
    Ok(slot_status(client, cfg).await?.is_some_and(|s| s != "lost"))
}

/// Error on a missing or invalidated slot, or rebuild it when configured to.
async fn slot_ready(
    client: &Client,
    cfg: &SourceConfig,
    tables: &[CatalogTable],
) -> GuestResult<()> {
    let err = match slot_status(client, cfg).await? {
        None => crate::slot::missing(&cfg.slot),
        Some(s) if s == "lost" => crate::slot::lost(&cfg.slot),
        Some(_) => return Ok(()),
    };
    if !cfg.resync_on_slot_loss {
        return Err(err);
    }
    log(
        Level::Warn,
        &format!("{}; resyncing as configured", err.message),
    );
    rebuild(client, cfg, tables).await?;
    Ok(())
}

/// Replace a missing or invalidated slot and copy every selected table again.
async fn rebuild(
    client: &Client,
    cfg: &SourceConfig,
    tables: &[CatalogTable],
) -> GuestResult<String> {
    if slot_status(client, cfg).await?.is_some() {
        crate::slot::drop_slot(client, &cfg.conn, &cfg.slot).await?;
    }
    // A failover slot from PostgreSQL 17 on, like the one the first snapshot creates.
    let failover = client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 170000",
            &[],
        )
        .await
        .map_err(|e| pg_error(&cfg.conn, "read the server version", &e))?
        .get::<_, bool>(0);
    let sql = if failover {
        "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    let row = client.query_one(sql, &[&cfg.slot]).await.map_err(|e| {
        pg_error(
            &cfg.conn,
            &format!("create replication slot `{}`", cfg.slot),
            &e,
        )
    })?;
    let created: String = row.get(0);
    request_copy(
        client,
        cfg,
        tables
            .iter()
            .map(|t| (t.desc.namespace.clone(), t.desc.name.clone()))
            .collect(),
    )
    .await?;
    Ok(format!(
        "rebuilt replication slot `{}` at {created}; {} tables will be copied again while changes stream",
        cfg.slot,
        tables.len()
    ))
}

/// Ask the stream to copy `tables` again in the background; returns the request's LSN.
async fn request_copy(
    client: &Client,
    cfg: &SourceConfig,
    tables: Vec<(String, String)>,
) -> GuestResult<u64> {
    let req = Request {
        slot: cfg.slot.clone(),
        tables,
    };
    backfill::request(client, &cfg.conn, &req).await
}

/// Copy `tables` again (all selected ones when empty), rebuilding the slot if it is gone.
pub async fn resync(
    config: &str,
    selection: Vec<String>,
    only: Vec<(String, String)>,
    resolve: Resolver,
) -> GuestResult<String> {
    let (cfg, _globs, client, tables) = prepare(config, selection, &resolve).await?;
    ensure_publication(&client, &cfg, &tables).await?;
    if !slot_usable(&client, &cfg).await? {
        return rebuild(&client, &cfg, &tables).await;
    }
    let mut chosen = Vec::new();
    for (ns, name) in &only {
        if !tables
            .iter()
            .any(|t| t.desc.namespace == *ns && t.desc.name == *name)
        {
            return Err(GuestError::new(
                ErrorKind::Config,
                format!(
                    "table {ns}.{name} is not in this pipeline's selection (or does not exist); check `tables`"
                ),
            ));
        }
        chosen.push((ns.clone(), name.clone()));
    }
    if chosen.is_empty() {
        chosen = tables
            .iter()
            .map(|t| (t.desc.namespace.clone(), t.desc.name.clone()))
            .collect();
    }
    let n = chosen.len();
    let at = request_copy(&client, &cfg, chosen).await?;
    Ok(format!(
        "{n} tables will be copied again while changes stream (requested at {})",
        culvert_pg_replication::format_lsn(at)
    ))
}

async fn start_snapshot(
    client: &Client,
    cfg: &SourceConfig,
    tables: Vec<CatalogTable>,
    resolve: &Resolver,
) -> GuestResult<Phase> {
    if slot_status(client, cfg).await?.is_some() {
        // A snapshot cannot be resumed once its exporting connection is gone: start over.
        crate::slot::drop_slot(client, &cfg.conn, &cfg.slot).await?;
        log(
            Level::Info,
            &format!(
                "dropped slot `{}` of an unfinished snapshot; copying again",
                cfg.slot
            ),
        );
    }
    let mut conn = replication_connection(&cfg.conn, resolve).await?;
    let created = conn.create_logical_slot(&cfg.slot, true).await.map_err(|e| {
        let hint = match e.sqlstate() {
            Some("53400") => "; all replication slots are in use: raise max_replication_slots or drop unused slots",
            Some("55000") => "; set wal_level = logical on the source and restart it",
            _ => "",
        };
        GuestError::new(ErrorKind::State, format!("create replication slot `{}`: {e}{hint}", cfg.slot))
    })?;
    log(
        Level::Info,
        &format!(
            "created replication slot `{}` at {}",
            cfg.slot,
            culvert_pg_replication::format_lsn(created.consistent_lsn)
        ),
    );
    let snapshot_name = created.snapshot_name.ok_or_else(|| {
        GuestError::new(
            ErrorKind::Internal,
            "the server did not export a snapshot for the new slot",
        )
    })?;
    let pages: Vec<u64> = tables.iter().map(|t| t.pages).collect();
    let descs: Vec<TableDesc> = tables.into_iter().map(|t| t.desc).collect();
    let chunks = crate::snapshot::start(
        SnapshotPlan {
            conn: cfg.conn.clone(),
            snapshot_name,
            tables: descs.clone(),
            pages,
            workers: cfg.snapshot_workers,
            batch_rows: cfg.batch_rows,
            batch_bytes: cfg.batch_bytes,
            range_pages: cfg.snapshot_range_pages,
        },
        resolve.clone(),
    );
    Ok(Phase::Snapshot {
        chunks,
        conn: Some(conn),
        tables: descs,
        generation: created.consistent_lsn,
        counter: 0,
        finished: Vec::new(),
    })
}

/// Where the stream picks up after a snapshot taken at the slot's consistent point
/// `generation`: a transaction may commit exactly there, and the snapshot does not hold it.
fn after_snapshot(generation: u64) -> (u64, u64) {
    match Stage::before(generation) {
        Stage::Changes { lsn, seq } => (lsn, seq),
        Stage::Snapshot { .. } => unreachable!("before() is a change-stream position"),
    }
}

fn table_ref(desc: &TableDesc) -> sdk::TableRef {
    sdk::TableRef {
        namespace: desc.namespace.clone(),
        name: desc.name.clone(),
    }
}

async fn next(state: &mut State, max_rows: u32) -> GuestResult<Option<sdk::Batch>> {
    let phase = std::mem::replace(&mut state.phase, Phase::Failed);
    let (phase, result) = match phase {
        Phase::Snapshot {
            mut chunks,
            conn,
            tables,
            generation,
            counter,
            mut finished,
        } => match chunks.recv().await {
            Some(Ok(chunk)) => {
                let table = &tables[chunk.table];
                if let Some((start, end)) = chunk.done {
                    match finished
                        .iter_mut()
                        .find(|f| f.namespace == table.namespace && f.name == table.name)
                    {
                        Some(f) => f.add(start, end),
                        None => {
                            let mut f = TableRanges {
                                namespace: table.namespace.clone(),
                                name: table.name.clone(),
                                ranges: Vec::new(),
                            };
                            f.add(start, end);
                            finished.push(f);
                            finished.sort();
                        }
                    }
                }
                let batch = sdk::Batch {
                    kind: sdk::BatchKind::Snapshot,
                    position: Position {
                        stage: Stage::Snapshot {
                            generation,
                            table: 0,
                            chunk: counter,
                        },
                        tables: finished.clone(),
                    }
                    .encode(),
                    tables: vec![sdk::TableRows {
                        table: table_ref(table),
                        first_of_table: chunk.first,
                        row_count: chunk.rows,
                        ipc: chunk.ipc,
                    }],
                    lag_bytes: 0,
                    continues: false,
                };
                (
                    Phase::Snapshot {
                        chunks,
                        conn,
                        tables,
                        generation,
                        counter: counter + 1,
                        finished,
                    },
                    Ok(Some(batch)),
                )
            }
            Some(Err(e)) => (Phase::Failed, Err(e)),
            None => {
                let conn = conn.expect("replication connection kept for the stream");
                let catalog = connect(&state.cfg.conn, "culvert catalog", &*resolver()).await?;
                let stream = ChangeStream::start(
                    conn,
                    catalog,
                    state.cfg.clone(),
                    state.globs.clone(),
                    StreamStart {
                        resume: Some(after_snapshot(generation)),
                        backfills: Vec::new(),
                    },
                )
                .await?;
                log(
                    Level::Info,
                    &format!(
                        "snapshot of {} tables done; streaming changes",
                        tables.len()
                    ),
                );
                let batch = sdk::Batch {
                    kind: sdk::BatchKind::Heartbeat,
                    position: Position::from(Stage::before(generation)).encode(),
                    tables: Vec::new(),
                    lag_bytes: 0,
                    continues: false,
                };
                (Phase::Streaming(Box::new(stream)), Ok(Some(batch)))
            }
        },
        Phase::Streaming(mut stream) => {
            let result = stream
                .next(max_rows, Duration::from_secs(1))
                .await
                .map(|b| {
                    b.map(|b| {
                        let lsn = b.position.lsn().unwrap_or(0);
                        sdk::Batch {
                            kind: if b.heartbeat {
                                sdk::BatchKind::Heartbeat
                            } else {
                                sdk::BatchKind::Changes
                            },
                            position: b.position.encode(),
                            lag_bytes: stream.received().saturating_sub(lsn),
                            continues: b.continues,
                            tables: b
                                .tables
                                .into_iter()
                                .map(|(desc, rows, ipc)| sdk::TableRows {
                                    table: table_ref(&desc),
                                    first_of_table: false,
                                    row_count: rows,
                                    ipc,
                                })
                                .collect(),
                        }
                    })
                });
            let phase = if result.is_ok() {
                Phase::Streaming(stream)
            } else {
                Phase::Failed
            };
            (phase, result)
        }
        Phase::Failed => (
            Phase::Failed,
            Err(GuestError::new(
                ErrorKind::Internal,
                "the reader failed earlier; reopen it",
            )),
        ),
    };
    state.phase = phase;
    result
}

//! The `reader` resource: snapshot first, then the change stream, with resume.

use std::cell::RefCell;
use std::time::Duration;

use culvert_pg_arrow::position::Position;
use culvert_pg_arrow::types::{TableDesc, quote_ident};
use culvert_pg_guest::{
    ErrorKind, GuestError, GuestResult, PgConnectConfig, PgStream, connect, connect_stream,
    parse_config, pg_error,
};
use culvert_pg_replication::{ConnectParams, ReplicationConnection};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::catalog::{CatalogTable, load_tables, select};
use crate::changes::ChangeStream;
use crate::config::SourceConfig;
use crate::culvert::connector::host::Level;
use crate::exports::culvert::connector::source_connector::GuestReader;
use crate::snapshot::{Chunk, SnapshotPlan};
use crate::{Resolver, log, resolver, runtime, to_wit, wit};

enum Phase {
    Snapshot {
        chunks: mpsc::Receiver<GuestResult<Chunk>>,
        conn: Option<ReplicationConnection<PgStream>>,
        tables: Vec<TableDesc>,
        generation: u64,
        counter: u64,
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
    state: RefCell<State>,
}

impl GuestReader for Reader {
    fn open(
        config: String,
        selection: Vec<String>,
        resume: Option<Vec<u8>>,
    ) -> Result<crate::api::Reader, wit::ConnectorError> {
        let rt = runtime();
        let state = rt
            .block_on(open(&config, selection, resume, resolver()))
            .map_err(to_wit)?;
        Ok(crate::api::Reader::new(Reader {
            rt,
            state: RefCell::new(state),
        }))
    }

    fn next(&self, max_rows: u32) -> Result<Option<wit::Batch>, wit::ConnectorError> {
        let mut state = self.state.borrow_mut();
        self.rt
            .block_on(next(&mut state, max_rows.max(1)))
            .map_err(to_wit)
    }

    fn ack(&self, position: Vec<u8>) -> Result<(), wit::ConnectorError> {
        let mut state = self.state.borrow_mut();
        let position = Position::decode(&position)
            .map_err(|e| to_wit(GuestError::new(ErrorKind::Internal, e.to_string())))?;
        if let (Phase::Streaming(stream), Position::Changes { lsn, .. }) =
            (&mut state.phase, position)
        {
            self.rt.block_on(stream.ack(lsn)).map_err(to_wit)?;
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
    let client = connect(&cfg.conn, "culvert catalog", &*resolve).await?;
    let tables = select(load_tables(&client, &cfg.conn, None).await?, &globs);
    if tables.is_empty() {
        return Err(GuestError::new(
            ErrorKind::Config,
            format!(
                "no table in database `{}` matches {:?}; check `tables`",
                cfg.conn.database, globs
            ),
        ));
    }
    for t in &tables {
        t.ensure_replicable()?;
    }
    ensure_publication(&client, &cfg, &tables).await?;
    let resume = resume
        .map(|r| Position::decode(&r))
        .transpose()
        .map_err(|e| GuestError::new(ErrorKind::State, e.to_string()))?;
    let phase = match resume {
        Some(Position::Changes { lsn, seq }) => {
            ensure_slot_usable(&client, &cfg).await?;
            let conn = replication_connection(&cfg.conn, &resolve).await?;
            let stream = ChangeStream::start(
                conn,
                connect(&cfg.conn, "culvert catalog", &*resolve).await?,
                cfg.conn.clone(),
                globs.clone(),
                &cfg.slot,
                &cfg.publication,
                Some((lsn, seq)),
            )
            .await?;
            Phase::Streaming(Box::new(stream))
        }
        _ => start_snapshot(&client, &cfg, tables, &resolve).await?,
    };
    drop(client);
    Ok(State { cfg, globs, phase })
}

async fn ensure_publication(
    client: &Client,
    cfg: &SourceConfig,
    tables: &[CatalogTable],
) -> GuestResult<()> {
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
            let missing: Vec<String> = tables
                .iter()
                .filter(|t| {
                    !published
                        .iter()
                        .any(|(s, n)| *s == t.desc.namespace && *n == t.desc.name)
                })
                .map(|t| t.desc.qualified())
                .collect();
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
        }
    }
    Ok(())
}

async fn ensure_slot_usable(client: &Client, cfg: &SourceConfig) -> GuestResult<()> {
    let rows = client
        .query(
            "SELECT coalesce(wal_status, '') FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&cfg.slot],
        )
        .await
        .map_err(|e| pg_error(&cfg.conn, "read replication slots", &e))?;
    match rows.first().map(|r| r.get::<_, String>(0)) {
        None => Err(GuestError::new(
            ErrorKind::State,
            format!(
                "replication slot `{}` is missing, so changes since the last committed position are gone; resync the pipeline to rebuild the replica",
                cfg.slot
            ),
        )),
        Some(status) if status == "lost" => Err(GuestError::new(
            ErrorKind::State,
            format!(
                "replication slot `{}` was invalidated (WAL removed, see max_slot_wal_keep_size); resync the pipeline to rebuild the replica",
                cfg.slot
            ),
        )),
        Some(_) => Ok(()),
    }
}

async fn start_snapshot(
    client: &Client,
    cfg: &SourceConfig,
    tables: Vec<CatalogTable>,
    resolve: &Resolver,
) -> GuestResult<Phase> {
    let existing = client
        .query(
            "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&cfg.slot],
        )
        .await
        .map_err(|e| pg_error(&cfg.conn, "read replication slots", &e))?;
    if let Some(row) = existing.first() {
        // A snapshot cannot be resumed once its exporting connection is gone: start over.
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            let _ = client
                .execute("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid])
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot($1)",
                &[&cfg.slot],
            )
            .await
            .map_err(|e| pg_error(&cfg.conn, "drop the unfinished snapshot's slot", &e))?;
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
        },
        resolve.clone(),
    );
    Ok(Phase::Snapshot {
        chunks,
        conn: Some(conn),
        tables: descs,
        generation: created.consistent_lsn,
        counter: 0,
    })
}

async fn next(state: &mut State, max_rows: u32) -> GuestResult<Option<wit::Batch>> {
    let phase = std::mem::replace(&mut state.phase, Phase::Failed);
    let (phase, result) = match phase {
        Phase::Snapshot {
            mut chunks,
            conn,
            tables,
            generation,
            counter,
        } => match chunks.recv().await {
            Some(Ok(chunk)) => {
                let table = &tables[chunk.table];
                let batch = wit::Batch {
                    kind: wit::BatchKind::Snapshot,
                    position: Position::Snapshot {
                        generation,
                        table: 0,
                        chunk: counter,
                    }
                    .encode(),
                    tables: vec![wit::TableRows {
                        table: wit::TableRef {
                            namespace: table.namespace.clone(),
                            name: table.name.clone(),
                        },
                        first_of_table: chunk.first,
                        row_count: chunk.rows,
                        ipc: chunk.ipc,
                    }],
                    lag_bytes: 0,
                };
                (
                    Phase::Snapshot {
                        chunks,
                        conn,
                        tables,
                        generation,
                        counter: counter + 1,
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
                    state.cfg.conn.clone(),
                    state.globs.clone(),
                    &state.cfg.slot,
                    &state.cfg.publication,
                    Some((generation, u64::MAX)),
                )
                .await?;
                log(
                    Level::Info,
                    &format!(
                        "snapshot of {} tables done; streaming changes",
                        tables.len()
                    ),
                );
                let batch = wit::Batch {
                    kind: wit::BatchKind::Heartbeat,
                    position: Position::Changes {
                        lsn: generation,
                        seq: u64::MAX,
                    }
                    .encode(),
                    tables: Vec::new(),
                    lag_bytes: 0,
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
                        let lsn = match b.position {
                            Position::Changes { lsn, .. } => lsn,
                            Position::Snapshot { .. } => 0,
                        };
                        wit::Batch {
                            kind: if b.heartbeat {
                                wit::BatchKind::Heartbeat
                            } else {
                                wit::BatchKind::Changes
                            },
                            position: b.position.encode(),
                            lag_bytes: stream.received().saturating_sub(lsn),
                            tables: b
                                .tables
                                .into_iter()
                                .map(|(desc, rows, ipc)| wit::TableRows {
                                    table: wit::TableRef {
                                        namespace: desc.namespace,
                                        name: desc.name,
                                    },
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

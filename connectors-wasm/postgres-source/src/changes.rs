//! The change stream: pgoutput over logical replication, turned into change batches
//! that end on transaction boundaries (or split very large transactions by rows).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use culvert_pg_arrow::decode::RowsBuilder;
use culvert_pg_arrow::ipc::to_ipc;
use culvert_pg_arrow::pgoutput::{PgOutputMessage, Relation, TupleValue, parse_message};
use culvert_pg_arrow::position::Position;
use culvert_pg_arrow::types::TableDesc;
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, PgStream, pg_error};
use culvert_pg_replication::{ReplicationConnection, ReplicationMessage};
use tokio_postgres::Client;

use crate::catalog::{CatalogTable, load_tables};
use crate::config::matches;

/// A finished change batch.
pub struct ChangeBatch {
    /// Position after the batch.
    pub position: Position,
    /// Rows per table, in first-seen order.
    pub tables: Vec<(TableDesc, u32, Vec<u8>)>,
    /// Whether the batch carries no rows (position only).
    pub heartbeat: bool,
}

struct RelState {
    desc: Option<TableDesc>,
    /// For each pgoutput column, the index of the replicated column (None: not replicated).
    map: Vec<Option<usize>>,
    builder: Option<RowsBuilder>,
    rows: u32,
}

struct Txn {
    final_lsn: u64,
    seq: u64,
    skip_through: Option<u64>,
}

/// State of the change stream.
pub struct ChangeStream {
    conn: ReplicationConnection<PgStream>,
    catalog: Client,
    cfg: PgConnectConfig,
    globs: Vec<String>,
    relations: HashMap<u32, RelState>,
    order: Vec<u32>,
    txn: Option<Txn>,
    resume: Option<(u64, u64)>,
    last_position: Position,
    last_emitted: Position,
    received: u64,
    acked: u64,
    rows_pending: u32,
    pending_complete: bool,
    flushed: Vec<(TableDesc, u32, Vec<u8>)>,
}

fn proto_err(e: impl std::fmt::Display) -> GuestError {
    GuestError::new(ErrorKind::Connection, format!("replication stream: {e}"))
}

impl ChangeStream {
    /// Stream from `start`, skipping what `resume` says was already delivered.
    pub async fn start(
        mut conn: ReplicationConnection<PgStream>,
        catalog: Client,
        cfg: PgConnectConfig,
        globs: Vec<String>,
        slot: &str,
        publication: &str,
        resume: Option<(u64, u64)>,
    ) -> GuestResult<ChangeStream> {
        let start = resume.map(|(lsn, _)| lsn).unwrap_or(0);
        conn.start_logical(
            slot,
            start,
            &[
                ("proto_version", "1"),
                ("publication_names", publication),
                ("binary", "true"),
            ],
        )
        .await
        .map_err(|e| {
            GuestError::new(
                ErrorKind::State,
                format!("start replication from slot `{slot}`: {e}"),
            )
        })?;
        let position = Position::Changes {
            lsn: start,
            seq: u64::MAX,
        };
        Ok(ChangeStream {
            conn,
            catalog,
            cfg,
            globs,
            relations: HashMap::new(),
            order: Vec::new(),
            txn: None,
            resume,
            last_position: position,
            last_emitted: position,
            received: start,
            acked: start,
            rows_pending: 0,
            pending_complete: false,
            flushed: Vec::new(),
        })
    }

    /// Lag: bytes of WAL the server has that this stream has not consumed.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Tell the server everything through `lsn` is durable at the destination.
    pub async fn ack(&mut self, lsn: u64) -> GuestResult<()> {
        self.acked = self.acked.max(lsn);
        self.conn
            .send_status(self.received.max(self.acked), self.acked, self.acked, false)
            .await
            .map_err(proto_err)
    }

    /// The next batch, or `None` if nothing arrived within `wait`.
    pub async fn next(
        &mut self,
        max_rows: u32,
        wait: Duration,
    ) -> GuestResult<Option<ChangeBatch>> {
        let deadline = Instant::now() + wait;
        let mut first_row_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let in_txn = self.txn.is_some();
            if self.pending_complete && !in_txn {
                let linger = first_row_at
                    .map(|t| now.duration_since(t) >= Duration::from_millis(100))
                    .unwrap_or(true);
                if self.rows_pending >= max_rows || linger || now >= deadline {
                    return self.emit(false).map(Some);
                }
            }
            if in_txn && self.rows_pending >= max_rows {
                return self.emit(true).map(Some);
            }
            if now >= deadline && !in_txn {
                if self.rows_pending == 0 && self.last_position > self.last_emitted {
                    return self.emit(false).map(Some);
                }
                return Ok(None);
            }
            let remaining = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(50));
            let Some(msg) = self
                .conn
                .recv(remaining.min(Duration::from_millis(200)))
                .await
                .map_err(proto_err)?
            else {
                continue;
            };
            match msg {
                ReplicationMessage::Keepalive {
                    wal_end,
                    reply_requested,
                } => {
                    self.received = self.received.max(wal_end);
                    if self.txn.is_none() && self.rows_pending == 0 && !self.pending_complete {
                        let pos = Position::Changes {
                            lsn: wal_end,
                            seq: u64::MAX,
                        };
                        if pos > self.last_position {
                            self.last_position = pos;
                        }
                    }
                    if reply_requested {
                        self.conn
                            .send_status(self.received, self.acked, self.acked, false)
                            .await
                            .map_err(proto_err)?;
                    }
                }
                ReplicationMessage::XLogData { wal_end, data, .. } => {
                    self.received = self.received.max(wal_end);
                    let before = self.rows_pending;
                    self.handle(parse_message(data).map_err(proto_err)?).await?;
                    if self.rows_pending > before && first_row_at.is_none() {
                        first_row_at = Some(Instant::now());
                    }
                }
            }
        }
    }

    async fn handle(&mut self, msg: PgOutputMessage) -> GuestResult<()> {
        match msg {
            PgOutputMessage::Begin { final_lsn, .. } => {
                let skip_through = match self.resume {
                    Some((lsn, _)) if final_lsn < lsn => Some(u64::MAX),
                    Some((lsn, seq)) if final_lsn == lsn => Some(seq),
                    _ => None,
                };
                self.txn = Some(Txn {
                    final_lsn,
                    seq: 0,
                    skip_through,
                });
            }
            PgOutputMessage::Commit { .. } => {
                if let Some(txn) = self.txn.take() {
                    let pos = Position::Changes {
                        lsn: txn.final_lsn,
                        seq: u64::MAX,
                    };
                    if pos > self.last_position {
                        self.last_position = pos;
                    }
                    self.pending_complete = true;
                }
            }
            PgOutputMessage::Relation(rel) => self.relation(rel).await?,
            PgOutputMessage::Insert { relation, new } => self.row(relation, 'I', &new, None)?,
            PgOutputMessage::Update {
                relation, old, new, ..
            } => {
                let mut new = new;
                if let Some(old) = &old {
                    // A full old image fills values the new image left out as unchanged.
                    for (n, o) in new.iter_mut().zip(old) {
                        if matches!(n, TupleValue::Unchanged) && !matches!(o, TupleValue::Unchanged)
                        {
                            *n = o.clone();
                        }
                    }
                    self.row(relation, 'B', old, None)?;
                }
                self.row(relation, 'U', &new, None)?;
            }
            PgOutputMessage::Delete { relation, old, .. } => self.row(relation, 'D', &old, None)?,
            PgOutputMessage::Truncate { relations, .. } => {
                for rel in relations {
                    let width = self.relations.get(&rel).map(|r| r.map.len()).unwrap_or(0);
                    let nulls = vec![TupleValue::Null; width];
                    self.row(rel, 'T', &nulls, None)?;
                }
            }
            PgOutputMessage::Origin { .. }
            | PgOutputMessage::Type { .. }
            | PgOutputMessage::Message { .. } => {}
        }
        Ok(())
    }

    async fn relation(&mut self, rel: Relation) -> GuestResult<()> {
        // A partition's changes belong to its partitioned root, which is what replicates
        // (whether or not the publication publishes through the root).
        let root: u32 = self
            .catalog
            .query_one(
                "SELECT coalesce(pg_catalog.pg_partition_root($1::oid)::oid, $1::oid)",
                &[&rel.oid],
            )
            .await
            .map_err(|e| pg_error(&self.cfg, "look up the partition root", &e))?
            .get(0);
        let tables: Vec<CatalogTable> = load_tables(&self.catalog, &self.cfg, Some(root)).await?;
        let table = tables.into_iter().next();
        let selected = table.as_ref().is_some_and(|t| {
            self.globs
                .iter()
                .any(|g| matches(g, &t.desc.namespace, &t.desc.name))
        });
        let Some(table) = table.filter(|_| selected) else {
            if root == rel.oid
                && self
                    .globs
                    .iter()
                    .any(|g| matches(g, &rel.namespace, &rel.name))
            {
                return Err(GuestError::new(
                    ErrorKind::State,
                    format!(
                        "table {}.{} disappeared from the catalog while its changes were streaming",
                        rel.namespace, rel.name
                    ),
                ));
            }
            let ignored = RelState {
                desc: None,
                map: Vec::new(),
                builder: None,
                rows: 0,
            };
            self.relations.insert(rel.oid, ignored);
            return Ok(());
        };
        table.ensure_replicable()?;
        let map: Vec<Option<usize>> = rel
            .columns
            .iter()
            .map(|c| table.desc.columns.iter().position(|d| d.name == c.name))
            .collect();
        // Rows already buffered for the old shape stay in their own Arrow batch.
        let old = self.relations.remove(&rel.oid);
        if let Some(mut old) = old
            && let (Some(desc), Some(builder)) = (old.desc.take(), old.builder.as_mut())
            && old.rows > 0
        {
            let ipc = to_ipc(&builder.finish().map_err(internal)?).map_err(internal)?;
            self.flushed.push((desc, old.rows, ipc));
        }
        if !self.order.contains(&rel.oid) {
            self.order.push(rel.oid);
        }
        self.relations.insert(
            rel.oid,
            RelState {
                desc: Some(table.desc),
                map,
                builder: None,
                rows: 0,
            },
        );
        Ok(())
    }

    fn row(
        &mut self,
        relation: u32,
        op: char,
        values: &[TupleValue],
        _unused: Option<()>,
    ) -> GuestResult<()> {
        let Some(txn) = self.txn.as_mut() else {
            return Err(GuestError::new(
                ErrorKind::Internal,
                "change outside a transaction",
            ));
        };
        txn.seq += 1;
        let seq = txn.seq;
        let final_lsn = txn.final_lsn;
        if txn.skip_through.is_some_and(|s| seq <= s) {
            return Ok(());
        }
        let Some(state) = self.relations.get_mut(&relation) else {
            return Err(GuestError::new(
                ErrorKind::Internal,
                format!("change for unknown relation {relation}"),
            ));
        };
        let Some(desc) = &state.desc else {
            return Ok(());
        };
        let builder = state
            .builder
            .get_or_insert_with(|| RowsBuilder::changes(desc));
        let width = desc.columns.len();
        let mut unchanged: Option<Vec<u8>> = None;
        let mut cells: Vec<Option<&[u8]>> = vec![None; width];
        for (i, v) in values.iter().enumerate() {
            let Some(Some(col)) = state.map.get(i) else {
                continue;
            };
            match v {
                TupleValue::Null => {}
                TupleValue::Unchanged => {
                    let bits = unchanged.get_or_insert_with(|| vec![0u8; width.div_ceil(8)]);
                    bits[col / 8] |= 1 << (col % 8);
                }
                TupleValue::Binary(b) => cells[*col] = Some(b),
                TupleValue::Text(_) => {
                    return Err(GuestError::new(
                        ErrorKind::Unsupported,
                        format!(
                            "table {}.{}, column `{}` ({}) arrived in text form because its type has no binary send function; exclude the table or change the column type",
                            desc.namespace,
                            desc.name,
                            desc.columns[*col].name,
                            desc.columns[*col].type_name
                        ),
                    ));
                }
            }
        }
        builder.begin_change(op, final_lsn, seq, unchanged.as_deref());
        for (col, cell) in cells.iter().enumerate() {
            builder.append(col, *cell).map_err(|e| {
                GuestError::new(
                    ErrorKind::Unsupported,
                    format!("table {}.{}: {e}", desc.namespace, desc.name),
                )
            })?;
        }
        builder.end_row();
        state.rows += 1;
        self.rows_pending += 1;
        if let Some(t) = self.txn.as_ref() {
            self.last_position = self.last_position.max(Position::Changes {
                lsn: t.final_lsn,
                seq,
            });
        }
        Ok(())
    }

    fn emit(&mut self, split: bool) -> GuestResult<ChangeBatch> {
        let mut tables = std::mem::take(&mut self.flushed);
        for oid in &self.order {
            let Some(state) = self.relations.get_mut(oid) else {
                continue;
            };
            if state.rows == 0 {
                continue;
            }
            let (Some(desc), Some(builder)) = (&state.desc, state.builder.as_mut()) else {
                continue;
            };
            let batch = builder.finish().map_err(internal)?;
            tables.push((desc.clone(), state.rows, to_ipc(&batch).map_err(internal)?));
            state.rows = 0;
        }
        let position = if split {
            let txn = self.txn.as_ref().expect("split inside a transaction");
            Position::Changes {
                lsn: txn.final_lsn,
                seq: txn.seq,
            }
        } else {
            self.last_position
        };
        self.rows_pending = 0;
        self.pending_complete = false;
        self.last_emitted = position;
        self.last_position = self.last_position.max(position);
        let heartbeat = tables.is_empty();
        Ok(ChangeBatch {
            position,
            tables,
            heartbeat,
        })
    }
}

fn internal(e: impl std::fmt::Display) -> GuestError {
    GuestError::new(ErrorKind::Internal, e.to_string())
}

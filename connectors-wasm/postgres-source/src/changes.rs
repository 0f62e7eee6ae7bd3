//! The change stream: pgoutput over logical replication, turned into change batches
//! that end on transaction boundaries (or split very large transactions by rows), with
//! schema changes, background copies (backfills), heartbeats and slot monitoring.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use culvert_connector_sdk::host::Level;
use culvert_pg_arrow::arrow_array::RecordBatch;
use culvert_pg_arrow::arrow_schema::Schema;
use culvert_pg_arrow::decode::RowsBuilder;
use culvert_pg_arrow::ipc::to_ipc;
use culvert_pg_arrow::pgoutput::{PgOutputMessage, Relation, TupleValue, parse_message};
use culvert_pg_arrow::position::{Position, Stage, TableRanges};
use culvert_pg_arrow::types::{TableDesc, quote_ident};
use culvert_pg_guest::raw::{RawCell, RawValue};
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, PgStream, pg_error};
use culvert_pg_replication::{ReplicationConnection, ReplicationMessage};
use tokio_postgres::Client;

use crate::backfill::{self, Backfill, Chunk, REQUEST_PREFIX, WATERMARK_PREFIX};
use crate::catalog::{CatalogTable, StreamColumn, describe_stream_table};
use crate::config::{SourceConfig, matches};
use crate::ddl_capture::{self, DDL_PREFIX, DdlEvent};
use crate::log;
use crate::slot::{self, HEARTBEAT_PREFIX};

/// Schema metadata key of a table-rows entry that carries a schema change.
pub const DDL_METADATA: &str = "culvert.ddl";

/// A finished change batch.
pub struct ChangeBatch {
    /// Position after the batch.
    pub position: Position,
    /// Rows per table, in first-seen order.
    pub tables: Vec<(TableDesc, u32, Vec<u8>)>,
    /// Whether the batch carries no rows (position only).
    pub heartbeat: bool,
    /// The batch ends inside a source transaction that the next batch continues.
    pub continues: bool,
}

struct RelState {
    desc: Option<TableDesc>,
    /// For each pgoutput column, the index of the replicated column (None: not replicated).
    map: Vec<Option<usize>>,
    builder: Option<RowsBuilder>,
    rows: u32,
}

/// Changes to the backfill set that take effect when their transaction commits.
enum BackfillOp {
    Start(Backfill),
    Done { oid: u32, pages: (u64, u64) },
    Cancel(u32),
}

struct Txn {
    final_lsn: u64,
    seq: u64,
    skip_through: Option<u64>,
    ops: Vec<BackfillOp>,
    /// A watermark transaction: its chunk goes out whole, its commit follows at once.
    whole: bool,
}

impl Txn {
    /// Count one change; whether it was already delivered before a restart.
    fn step(&mut self) -> bool {
        self.seq += 1;
        self.skip_through.is_some_and(|s| self.seq <= s)
    }
}

/// State of the change stream.
pub struct ChangeStream {
    conn: Option<ReplicationConnection<PgStream>>,
    catalog: Client,
    cfg: PgConnectConfig,
    opts: SourceConfig,
    globs: Vec<String>,
    relations: HashMap<u32, RelState>,
    order: Vec<u32>,
    txn: Option<Txn>,
    resume: Option<(u64, u64)>,
    last_position: Stage,
    last_emitted: Position,
    received: u64,
    acked: u64,
    rows_pending: u32,
    pending_complete: bool,
    flushed: Vec<(TableDesc, u32, Vec<u8>)>,
    backfills: Vec<Backfill>,
    chunk: Option<Chunk>,
    nonce: u64,
    chunks_read: u64,
    last_activity: Instant,
    last_slot_check: Instant,
    warned: bool,
    /// The source's event triggers capture DDL (renames, defaults of added columns).
    ddl_capture: bool,
}

fn proto_err(e: impl std::fmt::Display) -> GuestError {
    GuestError::new(ErrorKind::Connection, format!("replication stream: {e}"))
}

fn internal(e: impl std::fmt::Display) -> GuestError {
    GuestError::new(ErrorKind::Internal, e.to_string())
}

/// Arrow IPC of `rb`, with a schema change description attached when given.
fn ipc_with(rb: RecordBatch, ddl: Option<&serde_json::Value>) -> GuestResult<Vec<u8>> {
    let rb = match ddl {
        None => rb,
        Some(v) => {
            let mut meta = rb.schema().metadata().clone();
            meta.insert(DDL_METADATA.to_string(), v.to_string());
            let schema = Schema::new_with_metadata(rb.schema().fields().clone(), meta);
            rb.with_schema(std::sync::Arc::new(schema))
                .map_err(internal)?
        }
    };
    to_ipc(&rb).map_err(internal)
}

/// Where the stream starts.
pub struct StreamStart {
    /// Resume after this `(lsn, seq)`; `None` streams from the slot's position.
    pub resume: Option<(u64, u64)>,
    /// Tables with page ranges still to copy.
    pub backfills: Vec<TableRanges>,
}

impl ChangeStream {
    /// Stream from the slot, skipping what `start.resume` says was already delivered.
    pub async fn start(
        mut conn: ReplicationConnection<PgStream>,
        catalog: Client,
        opts: SourceConfig,
        globs: Vec<String>,
        start: StreamStart,
    ) -> GuestResult<ChangeStream> {
        let from = start.resume.map(|(lsn, _)| lsn).unwrap_or(0);
        conn.start_logical(
            &opts.slot,
            from,
            &[
                ("proto_version", "1"),
                ("publication_names", &opts.publication),
                ("binary", "true"),
                ("messages", "true"),
            ],
        )
        .await
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("does not exist") {
                slot::missing(&opts.slot)
            } else if text.contains("invalidated") || text.contains("can no longer") {
                slot::lost(&opts.slot)
            } else {
                GuestError::new(
                    ErrorKind::State,
                    format!("start replication from slot `{}`: {e}", opts.slot),
                )
            }
        })?;
        let mut backfills = Vec::new();
        for t in start.backfills {
            match backfill::table_oid(&catalog, &opts.conn, &t.namespace, &t.name).await? {
                Some(oid) if !t.ranges.is_empty() => backfills.push(Backfill { oid, ranges: t }),
                _ => {}
            }
        }
        let stage = Stage::Changes {
            lsn: from,
            seq: u64::MAX,
        };
        let ddl_capture: bool = catalog
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'culvert_ddl_end' AND evtenabled <> 'D')",
                &[],
            )
            .await
            .map_err(|e| pg_error(&opts.conn, "look for schema change capture", &e))?
            .get(0);
        let mut ranges: Vec<TableRanges> = backfills.iter().map(|b| b.ranges.clone()).collect();
        ranges.sort();
        Ok(ChangeStream {
            conn: Some(conn),
            catalog,
            cfg: opts.conn.clone(),
            opts,
            globs,
            relations: HashMap::new(),
            order: Vec::new(),
            txn: None,
            resume: start.resume,
            last_position: stage,
            last_emitted: Position {
                stage,
                tables: ranges,
            },
            received: from,
            acked: from,
            rows_pending: 0,
            pending_complete: false,
            flushed: Vec::new(),
            backfills,
            chunk: None,
            nonce: rand_nonce(),
            chunks_read: 0,
            last_activity: Instant::now(),
            last_slot_check: Instant::now() - Duration::from_secs(3600),
            warned: false,
            ddl_capture,
        })
    }

    fn conn(&mut self) -> &mut ReplicationConnection<PgStream> {
        self.conn.as_mut().expect("replication connection open")
    }

    /// Lag: bytes of WAL the server has that this stream has not consumed.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Tell the server everything through `lsn` is durable at the destination.
    pub async fn ack(&mut self, lsn: u64) -> GuestResult<()> {
        self.acked = self.acked.max(lsn);
        let (received, acked) = (self.received.max(self.acked), self.acked);
        self.conn()
            .send_status(received, acked, acked, false)
            .await
            .map_err(proto_err)
    }

    fn position(&self, stage: Stage) -> Position {
        let mut tables: Vec<TableRanges> =
            self.backfills.iter().map(|b| b.ranges.clone()).collect();
        tables.sort();
        Position { stage, tables }
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
            if in_txn
                && self.rows_pending >= max_rows
                && !self.txn.as_ref().is_some_and(|t| t.whole)
            {
                return self.emit(true).map(Some);
            }
            if !in_txn {
                self.housekeeping().await?;
            }
            if now >= deadline && !in_txn {
                if self.rows_pending == 0 && self.position(self.last_position) > self.last_emitted {
                    return self.emit(false).map(Some);
                }
                return Ok(None);
            }
            let remaining = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(50));
            let Some(msg) = self
                .conn()
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
                        self.advance(wal_end);
                    }
                    if reply_requested {
                        let (received, acked) = (self.received, self.acked);
                        self.conn()
                            .send_status(received, acked, acked, false)
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

    /// Everything committing before `lsn` is delivered (a keepalive's or heartbeat's WAL end).
    fn advance(&mut self, lsn: u64) {
        let pos = Stage::before(lsn);
        if pos > self.last_position {
            self.last_position = pos;
        }
    }

    /// Between transactions: start the next backfill chunk, watch the slot, and write
    /// a heartbeat when the selected tables have been quiet.
    async fn housekeeping(&mut self) -> GuestResult<()> {
        // One chunk per batch: the destination's memory bounds the batch, not the copy.
        if self.chunk.is_none()
            && self.rows_pending == 0
            && !self.pending_complete
            && let Some(b) = self.backfills.first().cloned()
        {
            let desc = match self.relations.get(&b.oid).and_then(|r| r.desc.clone()) {
                Some(d) => Some(d),
                None => describe_stream_table(&self.catalog, &self.cfg, b.oid, &[])
                    .await?
                    .map(|t| t.desc),
            };
            match desc {
                None => {
                    // Dropped while waiting: nothing left to copy.
                    self.backfills.retain(|x| x.oid != b.oid);
                }
                Some(desc) => {
                    self.chunks_read += 1;
                    let id = format!("{}:{:x}:{}", self.opts.slot, self.nonce, self.chunks_read);
                    let chunk = backfill::read_chunk(
                        &self.catalog,
                        &self.cfg,
                        &b,
                        &desc,
                        id,
                        self.opts.backfill_chunk_pages,
                    )
                    .await?;
                    self.chunk = Some(chunk);
                }
            }
        }
        if self.last_slot_check.elapsed() >= Duration::from_secs(self.opts.slot_check_seconds) {
            self.last_slot_check = Instant::now();
            let stats = slot::stats(&self.catalog, &self.cfg, &self.opts.slot).await?;
            slot::check_bounds(
                &stats,
                &self.opts.slot,
                self.opts.retained_wal_warn_bytes,
                &mut self.warned,
            );
            if let Some(limit) = self.opts.retained_wal_drop_bytes
                && stats.retained_bytes > limit
            {
                // The replication connection must go first: the slot is in use by it.
                self.conn = None;
                slot::drop_slot(&self.catalog, &self.cfg, &self.opts.slot).await?;
                return Err(GuestError::new(
                    ErrorKind::State,
                    format!(
                        "dropped replication slot `{}` because it retained {} MiB of WAL, over retained_wal_drop_bytes ({} MiB), to protect the source's disk; run `culvert-agent resync --pipeline FILE` to rebuild it",
                        self.opts.slot,
                        stats.retained_bytes >> 20,
                        limit >> 20
                    ),
                ));
            }
        }
        if self.opts.heartbeat_seconds > 0
            && self.last_activity.elapsed() >= Duration::from_secs(self.opts.heartbeat_seconds)
        {
            self.last_activity = Instant::now();
            slot::heartbeat(&self.catalog, &self.cfg, &self.opts.slot).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, msg: PgOutputMessage) -> GuestResult<()> {
        match msg {
            PgOutputMessage::Begin { final_lsn, .. } => {
                self.last_activity = Instant::now();
                let skip_through = match self.resume {
                    Some((lsn, _)) if final_lsn < lsn => Some(u64::MAX),
                    Some((lsn, seq)) if final_lsn == lsn => Some(seq),
                    _ => None,
                };
                self.txn = Some(Txn {
                    final_lsn,
                    seq: 0,
                    skip_through,
                    ops: Vec::new(),
                    whole: false,
                });
            }
            PgOutputMessage::Commit { .. } => {
                if let Some(txn) = self.txn.take() {
                    for op in txn.ops {
                        self.apply_op(op);
                    }
                    let pos = Stage::Changes {
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
            PgOutputMessage::Insert { relation, new } => self.row(relation, 'I', &new)?,
            PgOutputMessage::Update {
                relation, old, new, ..
            } => {
                let mut new = new;
                if new.iter().any(|v| matches!(v, TupleValue::Unchanged))
                    && self.backfills.iter().any(|b| b.oid == relation)
                    && let Some(full) = self.fetch_row(relation, &new).await?
                {
                    new = full;
                }
                if let Some(old) = &old {
                    // A full old image fills values the new image left out as unchanged.
                    for (n, o) in new.iter_mut().zip(old) {
                        if matches!(n, TupleValue::Unchanged) && !matches!(o, TupleValue::Unchanged)
                        {
                            *n = o.clone();
                        }
                    }
                    self.row(relation, 'B', old)?;
                }
                self.row(relation, 'U', &new)?;
            }
            PgOutputMessage::Delete { relation, old, .. } => self.row(relation, 'D', &old)?,
            PgOutputMessage::Truncate { relations, .. } => {
                for rel in relations {
                    let width = self.relations.get(&rel).map(|r| r.map.len()).unwrap_or(0);
                    let nulls = vec![TupleValue::Null; width];
                    self.row(rel, 'T', &nulls)?;
                }
            }
            PgOutputMessage::Message {
                transactional,
                lsn,
                prefix,
                content,
            } => {
                if !transactional {
                    if prefix == HEARTBEAT_PREFIX && self.txn.is_none() {
                        self.advance(lsn);
                    }
                    return Ok(());
                }
                let Some(txn) = self.txn.as_mut() else {
                    return Ok(());
                };
                if !prefix.starts_with("culvert.") {
                    return Ok(());
                }
                // Side effects of a message already delivered before a restart still
                // count (a backfill it started), its rows do not.
                let skipped = txn.step();
                match prefix.as_str() {
                    DDL_PREFIX => match ddl_capture::parse(&content) {
                        Ok(ev) => self.ddl(ev, skipped).await?,
                        Err(e) => log(
                            Level::Warn,
                            &format!("ignoring a schema change message that does not parse: {e}"),
                        ),
                    },
                    WATERMARK_PREFIX if !skipped => self.watermark(&content)?,
                    REQUEST_PREFIX => self.request(&content).await?,
                    _ => {}
                }
            }
            PgOutputMessage::Origin { .. } | PgOutputMessage::Type { .. } => {}
        }
        Ok(())
    }

    /// While a table is copied in the background, a change that left large values out
    /// may reach a row the destination does not hold yet: read the whole row now (a
    /// state at or after the change; later changes still apply on top).
    async fn fetch_row(
        &self,
        relation: u32,
        new: &[TupleValue],
    ) -> GuestResult<Option<Vec<TupleValue>>> {
        let Some(state) = self.relations.get(&relation) else {
            return Ok(None);
        };
        let Some(desc) = &state.desc else {
            return Ok(None);
        };
        let key = desc.key_columns();
        if key.is_empty() {
            return Ok(None);
        }
        let mut by_col: Vec<Option<&TupleValue>> = vec![None; desc.columns.len()];
        for (i, v) in new.iter().enumerate() {
            if let Some(Some(c)) = state.map.get(i) {
                by_col[*c] = Some(v);
            }
        }
        let mut params = Vec::with_capacity(key.len());
        let mut conds = Vec::with_capacity(key.len());
        for (n, &k) in key.iter().enumerate() {
            match by_col[k] {
                Some(TupleValue::Binary(b)) => params.push(RawValue(Some(b.to_vec()))),
                _ => return Ok(None),
            }
            conds.push(format!(
                "{} = ${}",
                quote_ident(&desc.columns[k].name),
                n + 1
            ));
        }
        let cols: Vec<String> = desc.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            cols.join(", "),
            desc.qualified(),
            conds.join(" AND ")
        );
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let Some(row) = self
            .catalog
            .query_opt(sql.as_str(), &refs)
            .await
            .map_err(|e| pg_error(&self.cfg, "read a changed row while copying its table", &e))?
        else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(new.len());
        for (i, old) in new.iter().enumerate() {
            out.push(match state.map.get(i) {
                Some(Some(c)) => match row.get::<_, RawCell>(*c).0 {
                    Some(b) => TupleValue::Binary(b.into()),
                    None => TupleValue::Null,
                },
                _ => old.clone(),
            });
        }
        Ok(Some(out))
    }

    fn apply_op(&mut self, op: BackfillOp) {
        match op {
            BackfillOp::Start(b) => {
                log(
                    Level::Info,
                    &format!(
                        "copying {}.{} in the background while changes stream",
                        b.ranges.namespace, b.ranges.name
                    ),
                );
                self.backfills.retain(|x| x.oid != b.oid);
                if self.chunk.as_ref().is_some_and(|c| c.oid == b.oid) {
                    self.chunk = None;
                }
                self.backfills.push(b);
            }
            BackfillOp::Cancel(oid) => {
                self.backfills.retain(|x| x.oid != oid);
                if self.chunk.as_ref().is_some_and(|c| c.oid == oid) {
                    self.chunk = None;
                }
            }
            BackfillOp::Done { oid, pages } => {
                if let Some(i) = self.backfills.iter().position(|b| b.oid == oid) {
                    let b = &mut self.backfills[i];
                    let mut left = TableRanges {
                        namespace: b.ranges.namespace.clone(),
                        name: b.ranges.name.clone(),
                        ranges: Vec::new(),
                    };
                    for &(s, e) in &b.ranges.ranges {
                        if s < pages.0 {
                            left.ranges.push((s, e.min(pages.0)));
                        }
                        if e > pages.1 {
                            left.ranges.push((s.max(pages.1), e));
                        }
                    }
                    b.ranges = left;
                    if b.ranges.ranges.is_empty() {
                        let done = self.backfills.remove(i);
                        log(
                            Level::Info,
                            &format!(
                                "background copy of {}.{}: last chunk read; the copy is complete once the destination commits it",
                                done.ranges.namespace, done.ranges.name
                            ),
                        );
                    }
                }
            }
        }
    }

    /// The rows of a chunk whose watermark the stream just reached.
    fn watermark(&mut self, content: &[u8]) -> GuestResult<()> {
        let ours = self
            .chunk
            .as_ref()
            .is_some_and(|c| c.id.as_bytes() == content);
        if !ours {
            return Ok(());
        }
        let chunk = self.chunk.take().expect("checked above");
        let txn = self.txn.as_mut().expect("watermark inside a transaction");
        let (mut builder, seq) = backfill::chunk_rows(&chunk, txn.final_lsn, txn.seq)?;
        txn.seq = seq;
        txn.whole = true;
        txn.ops.push(BackfillOp::Done {
            oid: chunk.oid,
            pages: chunk.pages,
        });
        self.flush_relation(chunk.oid)?;
        let rows = builder.rows() as u32;
        log(
            Level::Debug,
            &format!(
                "chunk of {}.{}: pages {:?}, {rows} rows, {} bytes",
                chunk.desc.namespace,
                chunk.desc.name,
                chunk.pages,
                chunk.data.len()
            ),
        );
        if rows > 0 {
            let ipc = ipc_with(builder.finish().map_err(internal)?, None)?;
            self.flushed.push((chunk.desc, rows, ipc));
            self.rows_pending += rows;
        }
        Ok(())
    }

    /// A backfill request written by `resync`.
    async fn request(&mut self, content: &[u8]) -> GuestResult<()> {
        let Ok(req) = serde_json::from_slice::<backfill::Request>(content) else {
            return Ok(());
        };
        if req.slot != self.opts.slot {
            return Ok(());
        }
        for (namespace, name) in req.tables {
            let oid = backfill::table_oid(&self.catalog, &self.cfg, &namespace, &name).await?;
            if let Some(oid) = oid {
                self.start_backfill(oid, &namespace, &name, true).await?;
            }
        }
        Ok(())
    }

    /// Replace what the destination holds of table `oid` by a background copy.
    async fn start_backfill(
        &mut self,
        oid: u32,
        namespace: &str,
        name: &str,
        truncate: bool,
    ) -> GuestResult<()> {
        if self.relations.get(&oid).is_none_or(|r| r.desc.is_none()) {
            let Some(table) = describe_stream_table(&self.catalog, &self.cfg, oid, &[]).await?
            else {
                return Ok(());
            };
            table.ensure_replicable()?;
            self.relations.insert(
                oid,
                RelState {
                    desc: Some(table.desc),
                    map: Vec::new(),
                    builder: None,
                    rows: 0,
                },
            );
        }
        let keyless = self
            .relations
            .get(&oid)
            .and_then(|r| r.desc.as_ref())
            .is_some_and(|d| d.key_columns().is_empty());
        if !keyless && truncate {
            // Keyed rows are upserted, so the copy starts from an empty table; a keyless
            // table's single chunk carries its own truncate.
            self.truncate_row(oid)?;
        }
        let txn = self
            .txn
            .as_mut()
            .expect("backfills start inside a transaction");
        txn.ops.push(BackfillOp::Start(Backfill {
            oid,
            ranges: TableRanges {
                namespace: namespace.to_string(),
                name: name.to_string(),
                ranges: vec![(0, u64::MAX)],
            },
        }));
        Ok(())
    }

    fn truncate_row(&mut self, oid: u32) -> GuestResult<()> {
        let txn = self.txn.as_mut().expect("inside a transaction");
        if txn.step() {
            return Ok(());
        }
        let (lsn, seq) = (txn.final_lsn, txn.seq);
        let state = self.relations.get_mut(&oid).expect("described above");
        let Some(desc) = &state.desc else {
            return Ok(());
        };
        let builder = state
            .builder
            .get_or_insert_with(|| RowsBuilder::changes(desc));
        builder.begin_change('T', lsn, seq, None);
        for col in 0..desc.columns.len() {
            builder.append(col, None).map_err(internal)?;
        }
        builder.end_row();
        state.rows += 1;
        self.rows_pending += 1;
        if !self.order.contains(&oid) {
            self.order.push(oid);
        }
        Ok(())
    }

    fn selected(&self, namespace: &str, name: &str) -> bool {
        self.globs.iter().any(|g| matches(g, namespace, name))
    }

    async fn in_publication(&self, oid: u32) -> GuestResult<bool> {
        let row = self
            .catalog
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p
                                  LEFT JOIN pg_catalog.pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = $2
                                 WHERE p.pubname = $1 AND (p.puballtables OR r.prrelid IS NOT NULL))",
                &[&self.opts.publication, &oid],
            )
            .await
            .map_err(|e| pg_error(&self.cfg, "read the publication", &e))?;
        Ok(row.get(0))
    }

    /// A schema change captured by the event triggers, in stream order.
    async fn ddl(&mut self, ev: DdlEvent, skipped: bool) -> GuestResult<()> {
        let tracked = self
            .relations
            .get(&ev.relid)
            .is_some_and(|r| r.desc.is_some());
        if ev.dropped {
            if (tracked || self.selected(&ev.namespace, &ev.name)) && !skipped {
                self.flush_relation(ev.relid)?;
                self.relations.remove(&ev.relid);
                self.order.retain(|o| *o != ev.relid);
                let desc = TableDesc {
                    namespace: ev.namespace.clone(),
                    name: ev.name.clone(),
                    columns: Vec::new(),
                    generated: Vec::new(),
                };
                let rb = RowsBuilder::changes(&desc).finish().map_err(internal)?;
                let ipc = ipc_with(rb, Some(&serde_json::json!({"drop": true})))?;
                self.flushed.push((desc, 0, ipc));
                if let Some(txn) = self.txn.as_mut() {
                    txn.ops.push(BackfillOp::Cancel(ev.relid));
                }
                log(
                    Level::Info,
                    &format!(
                        "table {}.{} was dropped at the source",
                        ev.namespace, ev.name
                    ),
                );
            }
            return Ok(());
        }
        if let Some((pns, pname)) = ev.previous.clone()
            && (tracked || self.selected(&pns, &pname))
        {
            // Renamed or moved: the old table goes, the table under its new name (if it
            // is still selected) is copied in the background.
            let dropped = DdlEvent {
                dropped: true,
                namespace: pns,
                name: pname,
                previous: None,
                ..ev.clone()
            };
            Box::pin(self.ddl(dropped, skipped)).await?;
            if self.selected(&ev.namespace, &ev.name) && self.in_publication(ev.relid).await? {
                return self
                    .start_backfill(ev.relid, &ev.namespace, &ev.name, true)
                    .await;
            }
        }
        if !self.selected(&ev.namespace, &ev.name) {
            return Ok(());
        }
        if !self.in_publication(ev.relid).await? {
            // A new table: publish it, then copy what it already holds.
            let Some(table) =
                describe_stream_table(&self.catalog, &self.cfg, ev.relid, &[]).await?
            else {
                return Ok(());
            };
            if let Err(e) = table.ensure_replicable() {
                log(
                    Level::Warn,
                    &format!("new table: {}; it is left out", e.message),
                );
                return Ok(());
            }
            // By its name now: it may have been renamed since this DDL.
            let sql = format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(&self.opts.publication),
                table.desc.qualified()
            );
            self.catalog
                .batch_execute(&sql)
                .await
                .map_err(|e| pg_error(&self.cfg, "add a new table to the publication", &e))?;
            log(
                Level::Info,
                &format!(
                    "new table {}.{} matches the selection",
                    ev.namespace, ev.name
                ),
            );
            let (ns, name) = (table.desc.namespace.clone(), table.desc.name.clone());
            return self.start_backfill(ev.relid, &ns, &name, true).await;
        }
        let Some(table) =
            describe_stream_table(&self.catalog, &self.cfg, ev.relid, &ev.columns).await?
        else {
            return Ok(());
        };
        if !skipped {
            let meta = serde_json::json!({
                "renames": ev.renames,
                "defaults": ev.defaults,
            });
            self.set_shape(ev.relid, table, Some(meta))?;
        }
        if ev.rewrite {
            log(
                Level::Info,
                &format!(
                    "{}.{} was rewritten with values the change stream does not carry; copying it again",
                    ev.namespace, ev.name
                ),
            );
            self.start_backfill(ev.relid, &ev.namespace, &ev.name, true)
                .await?;
        }
        Ok(())
    }

    /// Move rows buffered for `oid` into their own Arrow batch (they keep their shape).
    fn flush_relation(&mut self, oid: u32) -> GuestResult<()> {
        if let Some(state) = self.relations.get_mut(&oid)
            && let (Some(desc), Some(builder)) = (&state.desc, state.builder.as_mut())
            && state.rows > 0
        {
            let ipc = ipc_with(builder.finish().map_err(internal)?, None)?;
            self.flushed.push((desc.clone(), state.rows, ipc));
            state.rows = 0;
        }
        Ok(())
    }

    /// The table now has this shape: rows before stay in the old one, and the
    /// destination learns the change even if no row follows.
    fn set_shape(
        &mut self,
        oid: u32,
        table: CatalogTable,
        ddl: Option<serde_json::Value>,
    ) -> GuestResult<()> {
        let prev = self.relations.get(&oid).and_then(|r| r.desc.as_ref());
        let known = prev.is_some();
        if prev.is_some_and(|d| *d == table.desc) && ddl.is_none() {
            return Ok(());
        }
        table.ensure_replicable()?;
        self.flush_relation(oid)?;
        if known || ddl.is_some() {
            let marker = RowsBuilder::changes(&table.desc)
                .finish()
                .map_err(internal)?;
            let ipc = ipc_with(marker, ddl.as_ref())?;
            self.flushed.push((table.desc.clone(), 0, ipc));
        }
        if !self.order.contains(&oid) {
            self.order.push(oid);
        }
        let map = self
            .relations
            .remove(&oid)
            .map(|r| r.map)
            .unwrap_or_default();
        self.relations.insert(
            oid,
            RelState {
                desc: Some(table.desc),
                map,
                builder: None,
                rows: 0,
            },
        );
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
        let columns: Vec<StreamColumn> = rel
            .columns
            .iter()
            .map(|c| StreamColumn {
                name: c.name.clone(),
                type_oid: c.type_oid,
                typmod: c.type_modifier,
            })
            .collect();
        let cols = if root == rel.oid { &columns[..] } else { &[] };
        let table = describe_stream_table(&self.catalog, &self.cfg, root, cols).await?;
        let selected = table
            .as_ref()
            .is_some_and(|t| self.selected(&t.desc.namespace, &t.desc.name));
        let Some(table) = table.filter(|_| selected) else {
            if root == rel.oid && self.selected(&rel.namespace, &rel.name) {
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
        let map: Vec<Option<usize>> = rel
            .columns
            .iter()
            .map(|c| table.desc.columns.iter().position(|d| d.name == c.name))
            .collect();
        // Without captured DDL an added column may be a renamed one, or one whose default
        // filled existing rows: only a copy makes the table exact again.
        let added = !self.ddl_capture
            && self
                .relations
                .get(&rel.oid)
                .and_then(|r| r.desc.as_ref())
                .is_some_and(|prev| {
                    table
                        .desc
                        .columns
                        .iter()
                        .any(|c| !prev.columns.iter().any(|p| p.name == c.name))
                });
        let (ns, name) = (table.desc.namespace.clone(), table.desc.name.clone());
        self.set_shape(rel.oid, table, None)?;
        if added && self.txn.is_some() {
            log(
                Level::Info,
                &format!(
                    "{ns}.{name} gained a column and schema changes are not captured; copying it again"
                ),
            );
            self.start_backfill(rel.oid, &ns, &name, false).await?;
        }
        if let Some(state) = self.relations.get_mut(&rel.oid) {
            state.map = map;
        }
        Ok(())
    }

    fn row(&mut self, relation: u32, op: char, values: &[TupleValue]) -> GuestResult<()> {
        let Some(txn) = self.txn.as_mut() else {
            return Err(GuestError::new(
                ErrorKind::Internal,
                "change outside a transaction",
            ));
        };
        if txn.step() {
            return Ok(());
        }
        let (seq, final_lsn) = (txn.seq, txn.final_lsn);
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
        if !self.order.contains(&relation) {
            self.order.push(relation);
        }
        self.last_position = self.last_position.max(Stage::Changes {
            lsn: final_lsn,
            seq,
        });
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
            tables.push((desc.clone(), state.rows, ipc_with(batch, None)?));
            state.rows = 0;
        }
        let stage = if split {
            let txn = self.txn.as_ref().expect("split inside a transaction");
            Stage::Changes {
                lsn: txn.final_lsn,
                seq: txn.seq,
            }
        } else {
            self.last_position
        };
        let position = self.position(stage);
        self.rows_pending = 0;
        self.pending_complete = false;
        self.last_emitted = position.clone();
        self.last_position = self.last_position.max(stage);
        let heartbeat = tables.is_empty();
        Ok(ChangeBatch {
            position,
            tables,
            heartbeat,
            continues: split,
        })
    }
}

/// Distinguishes this stream's watermarks from those of an earlier run.
fn rand_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

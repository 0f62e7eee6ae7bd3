//! The initial copy: parallel workers import the slot's exported snapshot and stream
//! each table with `COPY ... TO STDOUT (FORMAT binary)`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use culvert_pg_arrow::copy::{CopyError, CopyReader};
use culvert_pg_arrow::decode::{DecodeError, RowsBuilder};
use culvert_pg_arrow::ipc::to_ipc;
use culvert_pg_arrow::types::{TableDesc, quote_ident, quote_literal};
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, connect, pg_error};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::Resolver;

/// One finished piece of a table's copy.
pub struct Chunk {
    /// Index of the table in the snapshot's table list.
    pub table: usize,
    /// Whether this is the table's first chunk.
    pub first: bool,
    /// Rows in `ipc`.
    pub rows: u32,
    /// Arrow IPC stream bytes.
    pub ipc: Vec<u8>,
    /// Page range of the table this chunk completes, if it is the last of its range.
    pub done: Option<(u64, u64)>,
}

/// Settings of one snapshot run.
pub struct SnapshotPlan {
    /// Connection settings.
    pub conn: PgConnectConfig,
    /// Exported snapshot every worker imports.
    pub snapshot_name: String,
    /// Tables in copy order.
    pub tables: Vec<TableDesc>,
    /// Heap pages of each table.
    pub pages: Vec<u64>,
    /// Worker connections.
    pub workers: usize,
    /// Rows per chunk.
    pub batch_rows: usize,
    /// Approximate bytes per chunk.
    pub batch_bytes: usize,
    /// Heap pages per range.
    pub range_pages: u64,
}

/// A unit of copy work: a table, or a range of its heap pages (`[start, end)`, open-ended when `end` is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Table index.
    pub table: usize,
    /// Page range, or the whole table.
    pub range: Option<(u64, Option<u64>)>,
}

/// Split tables into work items, the largest first so the tail of the copy is short.
pub fn plan_work(pages: &[u64], range_pages: u64) -> Vec<Work> {
    let range_pages = range_pages.max(1);
    let mut order: Vec<usize> = (0..pages.len()).collect();
    order.sort_by_key(|&t| std::cmp::Reverse(pages[t]));
    let mut work = Vec::new();
    for t in order {
        let ranges = pages[t].div_ceil(range_pages);
        if ranges <= 1 {
            work.push(Work {
                table: t,
                range: None,
            });
            continue;
        }
        for r in 0..ranges {
            let start = r * range_pages;
            let end = (r + 1 < ranges).then_some(start + range_pages);
            work.push(Work {
                table: t,
                range: Some((start, end)),
            });
        }
    }
    work
}

/// Start the workers; chunks arrive on the returned channel, which closes when every
/// table is copied or after the first error. Every table's first chunk is an empty one
/// marked first-of-table, sent before any rows, so ranges copied in parallel never race
/// the destination's replacement of the table.
pub fn start(plan: SnapshotPlan, resolve: Resolver) -> mpsc::Receiver<GuestResult<Chunk>> {
    culvert_connector_sdk::host::gauge_set("snapshot_tables_total", plan.tables.len() as f64);
    let workers = plan.workers.max(1);
    let (tx, rx) = mpsc::channel(workers + 1);
    let queue: Arc<Mutex<VecDeque<Work>>> =
        Arc::new(Mutex::new(plan_work(&plan.pages, plan.range_pages).into()));
    let plan = Arc::new(plan);
    tokio::spawn(async move {
        for (index, table) in plan.tables.iter().enumerate() {
            let mut builder = RowsBuilder::snapshot(table);
            let header = finish_chunk(&mut builder, index, true).map_err(|e| match e {
                RowError::Decode(d) => GuestError::new(ErrorKind::Internal, d.to_string()),
                RowError::Copy(c) => GuestError::new(ErrorKind::Internal, c.to_string()),
            });
            if tx.send(header).await.is_err() {
                return;
            }
        }
        for worker in 0..workers {
            let (tx, queue, plan, resolve) =
                (tx.clone(), queue.clone(), plan.clone(), resolve.clone());
            tokio::spawn(async move {
                if let Err(e) = run_worker(worker, &plan, &queue, &tx, resolve).await {
                    let _ = tx.send(Err(e)).await;
                }
            });
        }
    });
    rx
}

async fn run_worker(
    worker: usize,
    plan: &SnapshotPlan,
    queue: &Mutex<VecDeque<Work>>,
    tx: &mpsc::Sender<GuestResult<Chunk>>,
    resolve: Resolver,
) -> GuestResult<()> {
    let cfg = &plan.conn;
    let client = connect(cfg, &format!("culvert snapshot {worker}"), &*resolve).await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&plan.snapshot_name)
        ))
        .await
        .map_err(|e| pg_error(cfg, "import the slot's snapshot", &e))?;
    loop {
        let next = queue.lock().expect("queue lock").pop_front();
        let Some(work) = next else { break };
        copy_table(&client, plan, work, tx).await?;
    }
    let _ = client.batch_execute("COMMIT").await;
    Ok(())
}

async fn copy_table(
    client: &tokio_postgres::Client,
    plan: &SnapshotPlan,
    work: Work,
    tx: &mpsc::Sender<GuestResult<Chunk>>,
) -> GuestResult<()> {
    let index = work.table;
    let table = &plan.tables[index];
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let sql = match work.range {
        // The query form also reads partitioned tables, which `COPY table TO` refuses.
        None => format!(
            "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
            columns.join(", "),
            table.qualified()
        ),
        Some((start, end)) => {
            let upper = end
                .map(|e| format!(" AND ctid < '({e},0)'::tid"))
                .unwrap_or_default();
            format!(
                "COPY (SELECT {} FROM {} WHERE ctid >= '({start},0)'::tid{upper}) TO STDOUT (FORMAT binary)",
                columns.join(", "),
                table.qualified()
            )
        }
    };
    let what = format!("copy table {}.{}", table.namespace, table.name);
    let stream = client
        .copy_out(sql.as_str())
        .await
        .map_err(|e| pg_error(&plan.conn, &what, &e))?;
    futures_util::pin_mut!(stream);
    let mut reader = CopyReader::new(table.columns.len());
    let mut builder = RowsBuilder::snapshot(table);
    let decode_err = |e: DecodeError| {
        GuestError::new(
            ErrorKind::Unsupported,
            format!("table {}.{}: {e}", table.namespace, table.name),
        )
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| pg_error(&plan.conn, &what, &e))?;
        reader.push(&chunk);
        let mut pending: Vec<Chunk> = Vec::new();
        reader
            .drain::<RowError>(|fields| {
                for (i, v) in fields.iter().enumerate() {
                    builder.append(i, *v)?;
                }
                builder.end_row();
                if builder.rows() >= plan.batch_rows || builder.bytes() >= plan.batch_bytes {
                    pending.push(finish_chunk(&mut builder, index, false)?);
                }
                Ok(())
            })
            .map_err(|e| match e {
                RowError::Decode(d) => decode_err(d),
                RowError::Copy(c) => GuestError::new(ErrorKind::Internal, format!("{what}: {c}")),
            })?;
        for c in pending {
            if tx.send(Ok(c)).await.is_err() {
                return Ok(());
            }
        }
    }
    reader
        .finish()
        .map_err(|e| GuestError::new(ErrorKind::Internal, format!("{what}: {e}")))?;
    // The last chunk (possibly empty) records that the range is copied.
    let mut c = finish_chunk(&mut builder, index, false).map_err(|e| match e {
        RowError::Decode(d) => decode_err(d),
        RowError::Copy(c) => GuestError::new(ErrorKind::Internal, format!("{what}: {c}")),
    })?;
    c.done = Some(match work.range {
        None => (0, u64::MAX),
        Some((start, end)) => (start, end.unwrap_or(u64::MAX)),
    });
    let _ = tx.send(Ok(c)).await;
    Ok(())
}

fn finish_chunk(builder: &mut RowsBuilder, table: usize, first: bool) -> Result<Chunk, RowError> {
    let rows = builder.rows() as u32;
    let batch = builder.finish()?;
    let ipc = to_ipc(&batch).map_err(|e| RowError::Decode(DecodeError::Arrow(e)))?;
    Ok(Chunk {
        table,
        first,
        rows,
        ipc,
        done: None,
    })
}

/// A failure decoding COPY output into Arrow rows.
pub enum RowError {
    /// A value did not decode.
    Decode(DecodeError),
    /// The COPY stream was malformed.
    Copy(CopyError),
}

impl From<CopyError> for RowError {
    fn from(e: CopyError) -> Self {
        RowError::Copy(e)
    }
}

impl From<DecodeError> for RowError {
    fn from(e: DecodeError) -> Self {
        RowError::Decode(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_split_into_ranges_largest_first() {
        const PAGES_PER_RANGE: u64 = 16_384;
        let work = plan_work(&[10, PAGES_PER_RANGE * 2 + 1, 0], PAGES_PER_RANGE);
        assert_eq!(
            work[0],
            Work {
                table: 1,
                range: Some((0, Some(PAGES_PER_RANGE)))
            }
        );
        assert_eq!(
            work[2],
            Work {
                table: 1,
                range: Some((PAGES_PER_RANGE * 2, None))
            }
        );
        assert_eq!(
            work[3],
            Work {
                table: 0,
                range: None
            }
        );
        assert_eq!(work.len(), 5);
    }
}

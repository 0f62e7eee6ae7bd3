//! Copying a table while its changes stream (watermark backfill).
//!
//! A chunk is read right after a watermark message commits, and its rows enter the
//! stream at that watermark, ahead of every change that commits after it. Each row
//! reflects a state at or after the watermark, and every later change is applied on
//! top, so each key converges to the source. Keyless tables cannot be matched row by
//! row: they are copied whole under a SHARE lock taken before the watermark, so the
//! copy is exactly the table at the watermark.

use culvert_pg_arrow::copy::CopyReader;
use culvert_pg_arrow::decode::{DecodeError, RowsBuilder};
use culvert_pg_arrow::types::{TableDesc, quote_ident, quote_literal};
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, pg_error};
use futures_util::StreamExt;
use tokio_postgres::Client;

use crate::snapshot::RowError;

/// Prefix of watermark messages.
pub const WATERMARK_PREFIX: &str = "culvert.wm";
/// Prefix of backfill requests (written by `resync`).
pub const REQUEST_PREFIX: &str = "culvert.backfill";

/// A table being copied in the background.
#[derive(Debug, Clone)]
pub struct Backfill {
    /// Relation OID.
    pub oid: u32,
    /// Remaining page ranges.
    pub ranges: culvert_pg_arrow::position::TableRanges,
}

/// A chunk read after its watermark, waiting for the stream to reach it.
pub struct Chunk {
    /// Watermark id.
    pub id: String,
    /// Relation OID.
    pub oid: u32,
    /// Pages covered: `[start, end)`.
    pub pages: (u64, u64),
    /// The table as read.
    pub desc: TableDesc,
    /// Whether the table has no key (copied whole; replaces the destination's rows).
    pub keyless: bool,
    /// Raw `COPY ... (FORMAT binary)` output.
    pub data: Vec<u8>,
}

/// A backfill request as written into the WAL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// Slot of the pipeline the request is for.
    pub slot: String,
    /// Tables, as `[namespace, name]`.
    pub tables: Vec<(String, String)>,
}

/// Write a backfill request into the WAL; the stream starts the copies when it reaches it.
pub async fn request(client: &Client, cfg: &PgConnectConfig, req: &Request) -> GuestResult<u64> {
    let body = serde_json::to_string(req).expect("request serializes");
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)::text",
            &[&REQUEST_PREFIX, &body],
        )
        .await
        .map_err(|e| pg_error(cfg, "write the backfill request", &e))?;
    culvert_pg_replication::parse_lsn(row.get::<_, &str>(0))
        .map_err(|e| GuestError::new(ErrorKind::Internal, e.to_string()))
}

/// OID of table `namespace.name` as it is named now, `None` if there is none.
pub async fn table_oid(
    client: &Client,
    cfg: &PgConnectConfig,
    namespace: &str,
    name: &str,
) -> GuestResult<Option<u32>> {
    let qualified = format!("{}.{}", quote_ident(namespace), quote_ident(name));
    Ok(client
        .query_one("SELECT to_regclass($1)::oid", &[&qualified])
        .await
        .map_err(|e| pg_error(cfg, &format!("look up table {namespace}.{name}"), &e))?
        .get(0))
}

/// Heap pages of the table's largest leaf (ranges apply to every partition alike).
async fn pages(client: &Client, cfg: &PgConnectConfig, oid: u32) -> GuestResult<u64> {
    let row = client
        .query_one(
            "SELECT (greatest(pg_catalog.pg_relation_size($1::oid::regclass),
                              (SELECT coalesce(max(pg_catalog.pg_relation_size(relid)), 0)
                                 FROM pg_catalog.pg_partition_tree($1::oid::regclass) WHERE isleaf))
                     / current_setting('block_size')::int8)::int8",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error(cfg, "measure the table to copy", &e))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// Read the next chunk of `backfill`: write its watermark, then copy its pages.
pub async fn read_chunk(
    client: &Client,
    cfg: &PgConnectConfig,
    backfill: &Backfill,
    desc: &TableDesc,
    id: String,
    chunk_pages: u64,
) -> GuestResult<Chunk> {
    let (start, end) = *backfill
        .ranges
        .ranges
        .first()
        .expect("a backfill has ranges left");
    let keyless = desc.key_columns().is_empty();
    let columns: Vec<String> = desc.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let select = format!("SELECT {} FROM {}", columns.join(", "), desc.qualified());
    let emit = format!(
        "SELECT pg_catalog.pg_logical_emit_message(true, {}, {})",
        quote_literal(WATERMARK_PREFIX),
        quote_literal(&id)
    );
    let what = format!("copy {}.{} while streaming", desc.namespace, desc.name);
    let (pages_read, sql) = if keyless {
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {} IN SHARE MODE; {emit}",
                desc.qualified()
            ))
            .await
            .map_err(|e| pg_error(cfg, &what, &e))?;
        ((0, u64::MAX), select)
    } else {
        let size = pages(client, cfg, backfill.oid).await?;
        let stop = if end == u64::MAX && start.saturating_add(chunk_pages) >= size {
            u64::MAX
        } else {
            end.min(start.saturating_add(chunk_pages))
        };
        client
            .batch_execute(&emit)
            .await
            .map_err(|e| pg_error(cfg, "write a watermark", &e))?;
        let upper = if stop == u64::MAX {
            String::new()
        } else {
            format!(" AND ctid < '({stop},0)'::tid")
        };
        (
            (start, stop),
            format!("{select} WHERE ctid >= '({start},0)'::tid{upper}"),
        )
    };
    let data = copy_out(client, cfg, &sql, &what).await;
    if keyless {
        let end = if data.is_ok() { "COMMIT" } else { "ROLLBACK" };
        client
            .batch_execute(end)
            .await
            .map_err(|e| pg_error(cfg, &what, &e))?;
    }
    Ok(Chunk {
        id,
        oid: backfill.oid,
        pages: pages_read,
        desc: desc.clone(),
        keyless,
        data: data?,
    })
}

async fn copy_out(
    client: &Client,
    cfg: &PgConnectConfig,
    select: &str,
    what: &str,
) -> GuestResult<Vec<u8>> {
    let stream = client
        .copy_out(format!("COPY ({select}) TO STDOUT (FORMAT binary)").as_str())
        .await
        .map_err(|e| pg_error(cfg, what, &e))?;
    futures_util::pin_mut!(stream);
    let mut data = Vec::new();
    while let Some(part) = stream.next().await {
        data.extend_from_slice(&part.map_err(|e| pg_error(cfg, what, &e))?);
    }
    Ok(data)
}

/// Turn a chunk into change rows at the watermark's commit `lsn`, numbering them from
/// `seq + 1`; returns the builder and the last ordinal used. Keyed rows are after-images
/// (`U`, applied as upserts); a keyless table's copy starts with a truncate.
pub fn chunk_rows(chunk: &Chunk, lsn: u64, mut seq: u64) -> GuestResult<(RowsBuilder, u64)> {
    let desc = &chunk.desc;
    let mut builder = RowsBuilder::changes(desc);
    let width = desc.columns.len();
    if chunk.keyless {
        seq += 1;
        builder.begin_change('T', lsn, seq, None);
        for col in 0..width {
            builder.append(col, None).map_err(|e| decode(desc, e))?;
        }
        builder.end_row();
    }
    let op = if chunk.keyless { 'I' } else { 'U' };
    let mut reader = CopyReader::new(width);
    reader.push(&chunk.data);
    reader
        .drain::<RowError>(|fields| {
            seq += 1;
            builder.begin_change(op, lsn, seq, None);
            for (i, v) in fields.iter().enumerate() {
                builder.append(i, *v)?;
            }
            builder.end_row();
            Ok(())
        })
        .map_err(|e| match e {
            RowError::Decode(d) => decode(desc, d),
            RowError::Copy(c) => GuestError::new(
                ErrorKind::Internal,
                format!("copy of {}.{}: {c}", desc.namespace, desc.name),
            ),
        })?;
    reader.finish().map_err(|e| {
        GuestError::new(
            ErrorKind::Internal,
            format!("copy of {}.{}: {e}", desc.namespace, desc.name),
        )
    })?;
    Ok((builder, seq))
}

fn decode(desc: &TableDesc, e: DecodeError) -> GuestError {
    GuestError::new(
        ErrorKind::Unsupported,
        format!("table {}.{}: {e}", desc.namespace, desc.name),
    )
}

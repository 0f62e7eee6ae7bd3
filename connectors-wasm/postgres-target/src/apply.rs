//! Writing rows: snapshots with COPY, changes set-based through a staging table, or
//! row by row where only the destination holds the values a change needs.

use std::collections::HashMap;

use culvert_pg_arrow::arrow_array::{Array, BinaryArray, RecordBatch, StringArray};
use culvert_pg_arrow::copy::{write_field, write_header, write_raw_field, write_trailer};
use culvert_pg_arrow::encode::ColumnEncoder;
use culvert_pg_arrow::reduce::{Action, Change, Step, plan};
use culvert_pg_arrow::schema::CHANGE_COLUMNS;
use culvert_pg_arrow::types::{TableDesc, quote_ident};
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, pg_error};
use futures_util::SinkExt;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::ddl::{Tables, TargetTable};
use culvert_pg_guest::raw::RawValue;

fn encode_err(desc: &TableDesc, e: impl std::fmt::Display) -> GuestError {
    GuestError::new(
        ErrorKind::Unsupported,
        format!("table {}.{}: {e}", desc.namespace, desc.name),
    )
}

fn encoders<'a>(
    table: &TargetTable,
    rb: &'a RecordBatch,
    offset: usize,
) -> GuestResult<Vec<ColumnEncoder<'a>>> {
    table
        .desc
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            ColumnEncoder::new(
                &c.name,
                rb.column(offset + i),
                c.kind,
                table.element_oids[i],
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|e| encode_err(&table.desc, e))
}

fn column_list(desc: &TableDesc) -> String {
    desc.columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes handed to the server at a time: the server parses one chunk while the next is encoded.
const COPY_CHUNK: usize = 512 * 1024;

/// A `COPY ... FROM STDIN (FORMAT binary)` that streams rows as they are encoded.
struct CopyIn<'a> {
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<bytes::Bytes>>>,
    buf: Vec<u8>,
    cfg: &'a PgConnectConfig,
    what: String,
}

impl<'a> CopyIn<'a> {
    async fn start(
        client: &Client,
        cfg: &'a PgConnectConfig,
        sql: &str,
        what: String,
    ) -> GuestResult<CopyIn<'a>> {
        let sink = client
            .copy_in::<_, bytes::Bytes>(sql)
            .await
            .map_err(|e| pg_error(cfg, &what, &e))?;
        let mut buf = Vec::with_capacity(COPY_CHUNK + (64 << 10));
        write_header(&mut buf);
        Ok(CopyIn {
            sink: Box::pin(sink),
            buf,
            cfg,
            what,
        })
    }

    /// Send what is buffered once it is a chunk's worth.
    async fn row_done(&mut self) -> GuestResult<()> {
        if self.buf.len() >= COPY_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> GuestResult<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(COPY_CHUNK + (64 << 10)));
        self.sink
            .send(bytes::Bytes::from(data))
            .await
            .map_err(|e| pg_error(self.cfg, &self.what, &e))?;
        // Let the connection task write the chunk out before encoding the next one.
        tokio::task::yield_now().await;
        Ok(())
    }

    async fn finish(mut self) -> GuestResult<()> {
        write_trailer(&mut self.buf);
        self.flush().await?;
        self.sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| pg_error(self.cfg, &self.what, &e))?;
        Ok(())
    }
}

/// Load snapshot rows; the first chunk of a table replaces what the table held.
pub async fn apply_snapshot(
    client: &Client,
    cfg: &PgConnectConfig,
    tables: &mut Tables,
    name: &str,
    first: bool,
    rb: &RecordBatch,
) -> GuestResult<()> {
    let table = tables.get(name);
    if first {
        client
            .batch_execute(&format!("TRUNCATE {}", table.desc.qualified()))
            .await
            .map_err(|e| pg_error(cfg, &format!("truncate {name} before copying it"), &e))?;
    }
    if rb.num_rows() == 0 {
        return Ok(());
    }
    let enc = encoders(table, rb, 0)?;
    let sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.desc.qualified(),
        column_list(&table.desc)
    );
    let mut copy = CopyIn::start(client, cfg, &sql, format!("copy rows into {name}")).await?;
    for row in 0..rb.num_rows() {
        copy.buf
            .extend_from_slice(&(enc.len() as i16).to_be_bytes());
        for e in &enc {
            write_field(&mut copy.buf, e, row).map_err(|e| encode_err(&table.desc, e))?;
        }
        copy.row_done().await?;
    }
    copy.finish().await
}

/// Apply change rows of one table, in order.
pub async fn apply_changes(
    client: &Client,
    cfg: &PgConnectConfig,
    tables: &mut Tables,
    name: &str,
    rb: &RecordBatch,
) -> GuestResult<()> {
    let table = tables.get(name);
    let desc = table.desc.clone();
    let ops = rb
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| encode_err(&desc, "change column __culvert_op is not utf8"))?;
    let unchanged = rb
        .column(3)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| encode_err(&desc, "change column __culvert_unchanged is not binary"))?;
    let enc = encoders(table, rb, CHANGE_COLUMNS)?;
    let op_at = |row: usize| ops.value(row).as_bytes().first().copied().unwrap_or(b'?');
    let unchanged_at = |row: usize| (!unchanged.is_null(row)).then(|| unchanged.value(row));
    if table.key.is_empty() {
        return apply_row_by_row(client, cfg, table, &enc, rb.num_rows(), op_at, unchanged_at)
            .await;
    }
    // Every row's key, length-prefixed per column, in one buffer: no allocation per row.
    let mut key_bytes: Vec<u8> = Vec::with_capacity(rb.num_rows() * 16);
    let mut key_ends: Vec<usize> = Vec::with_capacity(rb.num_rows());
    for row in 0..rb.num_rows() {
        for &k in &table.key {
            if enc[k].is_null(row) {
                key_bytes.extend_from_slice(&u32::MAX.to_be_bytes());
                continue;
            }
            let at = key_bytes.len();
            key_bytes.extend_from_slice(&[0; 4]);
            enc[k]
                .write(row, &mut key_bytes)
                .map_err(|e| encode_err(&desc, e))?;
            let len = (key_bytes.len() - at - 4) as u32;
            key_bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        key_ends.push(key_bytes.len());
    }
    let changes: Vec<Change<'_>> = (0..rb.num_rows())
        .map(|row| Change {
            op: op_at(row),
            key: &key_bytes[if row == 0 { 0 } else { key_ends[row - 1] }..key_ends[row]],
            unchanged: unchanged_at(row),
        })
        .collect();
    let Some(steps) = plan(&changes, desc.columns.len()) else {
        return apply_row_by_row(client, cfg, table, &enc, rb.num_rows(), op_at, unchanged_at)
            .await;
    };
    let key = table.key.clone();
    for step in steps {
        match step {
            Step::Truncate => client
                .batch_execute(&format!("TRUNCATE {}", desc.qualified()))
                .await
                .map_err(|e| pg_error(cfg, &format!("truncate {name}"), &e))?,
            Step::Rows(rows) => {
                let stage = tables.stage(client, cfg, name).await?;
                let sql = format!(
                    "COPY {stage} ({}, __culvert_action, __culvert_mask) FROM STDIN (FORMAT binary)",
                    column_list(&desc)
                );
                let mut copy =
                    CopyIn::start(client, cfg, &sql, format!("stage changes for {name}")).await?;
                let (mut deletes, mut upserts, mut partials, mut inserts) =
                    (false, false, false, false);
                for r in &rows {
                    let data = &mut copy.buf;
                    data.extend_from_slice(&((enc.len() + 2) as i16).to_be_bytes());
                    for (c, e) in enc.iter().enumerate() {
                        write_field(data, e, r.sources[c] as usize)
                            .map_err(|e| encode_err(&desc, e))?;
                    }
                    let (action, mask) = match &r.action {
                        Action::Delete => (b'd', None),
                        Action::Upsert if r.fresh => (b'i', None),
                        Action::Upsert => (b'u', None),
                        Action::Partial(m) => (b'p', Some(m.as_slice())),
                    };
                    deletes |= action == b'd';
                    upserts |= action == b'u';
                    partials |= action == b'p';
                    inserts |= action == b'i';
                    write_raw_field(data, Some(&[action]));
                    write_raw_field(data, mask);
                    copy.row_done().await?;
                }
                copy.finish().await?;
                let sql = set_based_sql(&desc, &key, &stage, deletes, upserts, partials);
                if !sql.is_empty() {
                    client
                        .batch_execute(&sql)
                        .await
                        .map_err(|e| pg_error(cfg, &format!("apply changes to {name}"), &e))?;
                }
                if inserts {
                    insert_fresh(client, cfg, &desc, &key, &stage, name).await?;
                }
            }
        }
    }
    Ok(())
}

/// `INSERT ... ON CONFLICT DO UPDATE` of the staged rows marked `action`.
fn upsert_sql(desc: &TableDesc, key: &[usize], stage: &str, action: char) -> String {
    let t = desc.qualified();
    let cols = column_list(desc);
    let keys: Vec<String> = key
        .iter()
        .map(|&k| quote_ident(&desc.columns[k].name))
        .collect();
    let non_key: Vec<String> = (0..desc.columns.len())
        .filter(|c| !key.contains(c))
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&desc.columns[c].name)))
        .collect();
    let on_conflict = if non_key.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", non_key.join(", "))
    };
    format!(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {stage} WHERE __culvert_action = '{action}' ON CONFLICT ({}) {on_conflict}",
        keys.join(", ")
    )
}

/// Insert rows whose keys the batch created. The replica matches the source before the
/// batch, so a plain INSERT (much cheaper than an upsert) suffices; if the target was
/// changed behind Culvert's back, the upsert takes over instead of failing.
async fn insert_fresh(
    client: &Client,
    cfg: &PgConnectConfig,
    desc: &TableDesc,
    key: &[usize],
    stage: &str,
    name: &str,
) -> GuestResult<()> {
    let cols = column_list(desc);
    let t = desc.qualified();
    let what = format!("insert new rows into {name}");
    client
        .batch_execute("SAVEPOINT culvert_fresh")
        .await
        .map_err(|e| pg_error(cfg, &what, &e))?;
    let plain =
        format!("INSERT INTO {t} ({cols}) SELECT {cols} FROM {stage} WHERE __culvert_action = 'i'");
    match client.batch_execute(&plain).await {
        Ok(()) => {
            client
                .batch_execute("RELEASE SAVEPOINT culvert_fresh")
                .await
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT culvert_fresh")
                .await
                .map_err(|e| pg_error(cfg, &what, &e))?;
            client
                .batch_execute(&upsert_sql(desc, key, stage, 'i'))
                .await
        }
        Err(e) => Err(e),
    }
    .map_err(|e| pg_error(cfg, &what, &e))
}

fn set_based_sql(
    desc: &TableDesc,
    key: &[usize],
    stage: &str,
    deletes: bool,
    upserts: bool,
    partials: bool,
) -> String {
    let t = desc.qualified();
    let key_match: Vec<String> = key
        .iter()
        .map(|&k| format!("t.{0} = s.{0}", quote_ident(&desc.columns[k].name)))
        .collect();
    let key_match = key_match.join(" AND ");
    let non_key: Vec<usize> = (0..desc.columns.len())
        .filter(|c| !key.contains(c))
        .collect();
    let mut sql = String::new();
    if deletes {
        sql.push_str(&format!(
            "DELETE FROM {t} t USING {stage} s WHERE s.__culvert_action = 'd' AND {key_match};\n"
        ));
    }
    if upserts {
        sql.push_str(&upsert_sql(desc, key, stage, 'u'));
        sql.push_str(";\n");
    }
    if partials && !non_key.is_empty() {
        let sets: Vec<String> = non_key
            .iter()
            .map(|&c| {
                format!(
                    "{0} = CASE WHEN get_bit(s.__culvert_mask, {c}) = 1 THEN t.{0} ELSE s.{0} END",
                    quote_ident(&desc.columns[c].name)
                )
            })
            .collect();
        sql.push_str(&format!(
            "UPDATE {t} t SET {} FROM {stage} s WHERE s.__culvert_action = 'p' AND {key_match};\n",
            sets.join(", ")
        ));
    }
    sql
}

fn bit(bits: Option<&[u8]>, col: usize) -> bool {
    bits.is_some_and(|b| b.get(col / 8).is_some_and(|x| x & (1 << (col % 8)) != 0))
}

/// Apply changes one statement per row, for keyless tables and key moves that need
/// values only the destination holds.
async fn apply_row_by_row<'b>(
    client: &Client,
    cfg: &PgConnectConfig,
    table: &TargetTable,
    enc: &[ColumnEncoder<'_>],
    rows: usize,
    op_at: impl Fn(usize) -> u8,
    unchanged_at: impl Fn(usize) -> Option<&'b [u8]>,
) -> GuestResult<()> {
    let desc = &table.desc;
    let t = desc.qualified();
    let name = format!("{}.{}", desc.namespace, desc.name);
    let mut statements: HashMap<String, tokio_postgres::Statement> = HashMap::new();
    let typed = |c: usize, n: usize| format!("${n}::{}", desc.columns[c].type_name);
    // Rows are matched on the key, or on every column's text form when there is none
    // (text comparison works for types without an equality operator, such as json).
    let matcher = |first_param: usize| -> String {
        if table.key.is_empty() {
            let conds: Vec<String> = (0..desc.columns.len())
                .map(|c| {
                    format!(
                        "({}::text) IS NOT DISTINCT FROM ({}::text)",
                        quote_ident(&desc.columns[c].name),
                        typed(c, first_param + c)
                    )
                })
                .collect();
            format!(
                "ctid = (SELECT ctid FROM {t} WHERE {} LIMIT 1)",
                conds.join(" AND ")
            )
        } else {
            let conds: Vec<String> = table
                .key
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    format!(
                        "{} = {}",
                        quote_ident(&desc.columns[c].name),
                        typed(c, first_param + i)
                    )
                })
                .collect();
            conds.join(" AND ")
        }
    };
    let match_cols: Vec<usize> = if table.key.is_empty() {
        (0..desc.columns.len()).collect()
    } else {
        table.key.clone()
    };
    let value = |c: usize, row: usize| -> GuestResult<RawValue> {
        Ok(RawValue(
            enc[c].value(row).map_err(|e| encode_err(desc, e))?,
        ))
    };
    let mut row = 0;
    while row < rows {
        let op = op_at(row);
        let (sql, params): (String, Vec<RawValue>) = match op {
            b'I' => {
                let cols = column_list(desc);
                let vals: Vec<String> = (0..desc.columns.len()).map(|c| typed(c, c + 1)).collect();
                let conflict = if table.key.is_empty() {
                    String::new()
                } else {
                    let keys: Vec<String> = table
                        .key
                        .iter()
                        .map(|&k| quote_ident(&desc.columns[k].name))
                        .collect();
                    let non_key: Vec<String> = (0..desc.columns.len())
                        .filter(|c| !table.key.contains(c))
                        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&desc.columns[c].name)))
                        .collect();
                    if non_key.is_empty() {
                        format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
                    } else {
                        format!(
                            " ON CONFLICT ({}) DO UPDATE SET {}",
                            keys.join(", "),
                            non_key.join(", ")
                        )
                    }
                };
                let params = (0..desc.columns.len())
                    .map(|c| value(c, row))
                    .collect::<GuestResult<_>>()?;
                (
                    format!(
                        "INSERT INTO {t} ({cols}) VALUES ({}){conflict}",
                        vals.join(", ")
                    ),
                    params,
                )
            }
            b'D' => {
                let params = match_cols
                    .iter()
                    .map(|&c| value(c, row))
                    .collect::<GuestResult<Vec<_>>>()?;
                (format!("DELETE FROM {t} WHERE {}", matcher(1)), params)
            }
            b'B' | b'U' => {
                let (old_row, new_row) = if op == b'B' {
                    if row + 1 >= rows || op_at(row + 1) != b'U' {
                        return Err(encode_err(desc, "before-image without its update"));
                    }
                    row += 1;
                    (row - 1, row)
                } else {
                    if table.key.is_empty() {
                        return Err(encode_err(
                            desc,
                            "update without a before-image on a table without a key",
                        ));
                    }
                    (row, row)
                };
                let skip = unchanged_at(new_row);
                let set_cols: Vec<usize> =
                    (0..desc.columns.len()).filter(|&c| !bit(skip, c)).collect();
                let n = match_cols.len();
                let sets: Vec<String> = set_cols
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        format!(
                            "{} = {}",
                            quote_ident(&desc.columns[c].name),
                            typed(c, n + 1 + i)
                        )
                    })
                    .collect();
                let mut params = match_cols
                    .iter()
                    .map(|&c| value(c, old_row))
                    .collect::<GuestResult<Vec<_>>>()?;
                for &c in &set_cols {
                    params.push(value(c, new_row)?);
                }
                (
                    format!("UPDATE {t} SET {} WHERE {}", sets.join(", "), matcher(1)),
                    params,
                )
            }
            b'T' => (format!("TRUNCATE {t}"), Vec::new()),
            other => {
                return Err(encode_err(
                    desc,
                    format!("unknown change operation {:?}", other as char),
                ));
            }
        };
        if !statements.contains_key(&sql) {
            let stmt = client
                .prepare(&sql)
                .await
                .map_err(|e| pg_error(cfg, &format!("prepare change for {name}"), &e))?;
            statements.insert(sql.clone(), stmt);
        }
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        client
            .execute(&statements[&sql], &refs)
            .await
            .map_err(|e| pg_error(cfg, &format!("apply change to {name}"), &e))?;
        row += 1;
    }
    Ok(())
}

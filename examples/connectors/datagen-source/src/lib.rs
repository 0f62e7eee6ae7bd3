//! `datagen-source`: a Culvert source that generates deterministic synthetic tables, for
//! tests and benchmarks.
//!
//! It copies `table_count` tables of `rows` rows each, then streams `change_rows` changes per
//! table (inserts, updates, deletes and key changes with before-images) in transactions
//! of a few changes. Every value is a function of the seed, so two runs with the same
//! configuration produce the same batches, and a reader resumed after any position it
//! produced continues exactly where the first one left off.

mod r#gen;

use culvert_connector_sdk::config::{JsonSchema, parse_config, spec_of};
use culvert_connector_sdk::position::{decode_u64s, encode_u64s, to_hex};
use culvert_connector_sdk::rows::{ChangesBuilder, Column, TableRowsBuilder, TableSchema, Value};
use culvert_connector_sdk::{
    Batch, CheckResult, ConnectorError, Reader, Result, Source, TableInfo, TableRef, export_source,
    host,
};
use serde::Deserialize;

use crate::r#gen::{Change, Row, SNAPSHOT_STAMP, change, row};

/// Namespace of the generated tables.
const NAMESPACE: &str = "datagen";
/// Changes (over all tables) per source transaction.
const TXN_CHANGES: u64 = 4;
/// Changes of unselected tables skipped in one `next` call before it reports progress.
const SCAN_LIMIT: u64 = 100_000;

/// Configuration of `datagen-source`. Unknown fields are accepted: the agent may add its own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(title = "datagen-source")]
pub struct Config {
    /// Seed of every generated value: the same seed gives the same data.
    #[serde(default)]
    pub seed: u64,
    /// Number of tables, named `datagen.table_1`, `datagen.table_2`, …
    #[serde(default = "default_tables")]
    pub table_count: u32,
    /// Rows per table in the snapshot.
    #[serde(default = "default_rows")]
    pub rows: u64,
    /// Changes per table after the snapshot: inserts, updates, deletes and key changes.
    #[serde(default)]
    pub change_rows: u64,
    /// Most rows in one batch (the agent may ask for fewer).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: u32,
}

fn default_tables() -> u32 {
    1
}

fn default_rows() -> u64 {
    1000
}

fn default_batch_rows() -> u32 {
    10_000
}

/// Largest `rows` and `change_rows`, far beyond any test, so arithmetic never overflows.
const MAX_ROWS: u64 = 1_000_000_000_000;
/// Largest `table_count`.
const MAX_TABLES: u32 = 10_000;
/// Largest `batch_rows`.
const MAX_BATCH_ROWS: u32 = 1_000_000;

/// Parse and validate; errors name the field and say what values work.
pub fn load(config: &str) -> Result<Config> {
    let cfg: Config = parse_config(config)?;
    if cfg.table_count == 0 || cfg.table_count > MAX_TABLES {
        return Err(ConnectorError::config(format!(
            "field `table_count` is {} but must be between 1 and {MAX_TABLES}",
            cfg.table_count
        )));
    }
    if cfg.rows > MAX_ROWS {
        return Err(ConnectorError::config(format!(
            "field `rows` is {} but must be at most {MAX_ROWS}",
            cfg.rows
        )));
    }
    if cfg.change_rows > MAX_ROWS {
        return Err(ConnectorError::config(format!(
            "field `change_rows` is {} but must be at most {MAX_ROWS}",
            cfg.change_rows
        )));
    }
    if cfg.batch_rows == 0 || cfg.batch_rows > MAX_BATCH_ROWS {
        return Err(ConnectorError::config(format!(
            "field `batch_rows` is {} but must be between 1 and {MAX_BATCH_ROWS}",
            cfg.batch_rows
        )));
    }
    Ok(cfg)
}

/// Table `index` (0-based) as the agent sees it.
fn table_ref(index: u64) -> TableRef {
    TableRef::new(NAMESPACE, format!("table_{}", index + 1))
}

/// The columns every generated table has.
fn table_schema(index: u64) -> Result<TableSchema> {
    TableSchema::new(
        table_ref(index),
        vec![
            Column::bigint("id").primary_key(),
            Column::text("name"),
            Column::double("score").not_null(),
            Column::boolean("active").not_null(),
            Column::timestamptz("created_at").not_null(),
            Column::numeric("amount").not_null(),
            Column::bytea("payload").not_null(),
        ],
    )
}

fn values(r: &Row) -> [Value<'_>; 7] {
    [
        Value::Int(r.id as i64),
        r.name.as_deref().into(),
        r.score.into(),
        r.active.into(),
        Value::Int(r.created_at),
        r.amount.as_str().into(),
        r.payload.as_slice().into(),
    ]
}

/// Only the key: before-images and deletes carry no other values.
fn key_only(id: u64) -> [Value<'static>; 7] {
    let mut v = [const { Value::Null }; 7];
    v[0] = Value::Int(id as i64);
    v
}

/// The generator as a source connector.
pub struct Datagen;

impl Source for Datagen {
    type Reader = DatagenReader;

    fn spec() -> String {
        spec_of::<Config>()
    }

    fn check(config: &str) -> Vec<CheckResult> {
        vec![CheckResult::from_result("config", load(config))]
    }

    fn discover(config: &str) -> Result<Vec<TableInfo>> {
        let cfg = load(config)?;
        (0..u64::from(cfg.table_count))
            .map(|t| Ok(table_schema(t)?.table_info(cfg.rows)))
            .collect()
    }
}

/// Where the reader is. Its position is three big-endian u64s: `[0, table, rows copied]`
/// during the snapshot, `[1, changes done, half]` afterwards, where `half` is 1 only
/// after the first row of a key change that had to be split because `max_rows` is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Snapshot {
        table: u64,
        done: u64,
        started: bool,
    },
    Changes {
        done: u64,
        half: bool,
    },
}

impl Stage {
    fn position(self) -> Vec<u8> {
        match self {
            Stage::Snapshot { table, done, .. } => encode_u64s(&[0, table, done]),
            Stage::Changes { done, half } => encode_u64s(&[1, done, u64::from(half)]),
        }
    }
}

/// Streams the generated tables.
pub struct DatagenReader {
    cfg: Config,
    schemas: Vec<TableSchema>,
    selected: Vec<bool>,
    stage: Stage,
}

impl DatagenReader {
    fn tables(&self) -> u64 {
        u64::from(self.cfg.table_count)
    }

    fn total_changes(&self) -> u64 {
        self.tables() * self.cfg.change_rows
    }

    /// The global change number `g` as (table, change number within the table).
    fn locate(&self, g: u64) -> (u64, u64) {
        (g % self.tables(), g / self.tables())
    }

    fn change_at(&self, g: u64) -> (u64, u64, Change) {
        let (table, c) = self.locate(g);
        (table, c, change(self.cfg.seed, table, self.cfg.rows, c))
    }

    /// Rows of selected tables in `g`'s transaction before `g`: its first `__culvert_seq`.
    fn seq_of(&self, g: u64) -> u64 {
        (g - g % TXN_CHANGES..g)
            .map(|h| self.change_at(h))
            .filter(|(table, _, _)| self.selected[*table as usize])
            .map(|(_, _, ch)| ch.rows())
            .sum()
    }

    fn resume(&self, position: &[u8]) -> Result<Stage> {
        let foreign = || {
            ConnectorError::state(format!(
                "position {} does not belong to this configuration (were `seed`, `table_count`, `rows` or `change_rows` changed?); reset the pipeline to start over",
                to_hex(position)
            ))
        };
        let [stage, a, b] = decode_u64s::<3>(position)?;
        match stage {
            0 if a < self.tables() && b <= self.cfg.rows => Ok(Stage::Snapshot {
                table: a,
                done: b,
                started: true,
            }),
            1 if a <= self.total_changes() && b <= 1 => {
                let half = b == 1;
                if half && (a == self.total_changes() || self.change_at(a).2.rows() != 2) {
                    return Err(foreign());
                }
                Ok(Stage::Changes { done: a, half })
            }
            _ => Err(foreign()),
        }
    }

    fn next_snapshot(&mut self, limit: u64) -> Result<Option<Batch>> {
        loop {
            let Stage::Snapshot {
                table,
                done,
                started,
            } = self.stage
            else {
                return Ok(None);
            };
            if table == self.tables() {
                host::log(
                    host::Level::Info,
                    &format!("snapshot done; streaming {} changes", self.total_changes()),
                );
                self.stage = Stage::Changes {
                    done: 0,
                    half: false,
                };
                return Ok(None);
            }
            if !self.selected[table as usize] || (started && done == self.cfg.rows) {
                self.stage = Stage::Snapshot {
                    table: table + 1,
                    done: 0,
                    started: false,
                };
                continue;
            }
            let last = self.cfg.rows.min(done + limit);
            let schema = &self.schemas[table as usize];
            let mut rows = TableRowsBuilder::new(schema).first_of_table(!started);
            for id in done + 1..=last {
                rows.append_row(&values(&row(self.cfg.seed, table, id, SNAPSHOT_STAMP)))?;
            }
            host::counter_add("rows_generated", last - done);
            self.stage = Stage::Snapshot {
                table,
                done: last,
                started: true,
            };
            return Ok(Some(Batch::snapshot(
                self.stage.position(),
                vec![rows.finish()?],
            )));
        }
    }

    fn next_changes(&mut self, limit: u64) -> Result<Option<Batch>> {
        let Stage::Changes { mut done, mut half } = self.stage else {
            return Ok(None);
        };
        let total = self.total_changes();
        let start = self.stage;
        let mut builders: Vec<Option<ChangesBuilder>> = self.schemas.iter().map(|_| None).collect();
        let mut order = Vec::new();
        let mut rows = 0u64;
        let mut scanned = 0u64;
        while done < total && rows < limit && scanned < SCAN_LIMIT {
            let (table, c, ch) = self.change_at(done);
            if !self.selected[table as usize] {
                done += 1;
                scanned += 1;
                continue;
            }
            let room = limit - rows;
            if let Change::Rekey { .. } = ch
                && !half
                && room < 2
                && rows > 0
            {
                // The next batch has room for both rows of the key change.
                break;
            }
            let (lsn, seq) = (done / TXN_CHANGES + 1, self.seq_of(done));
            let seed = self.cfg.seed;
            let write = |id| row(seed, table, id, c + 1);
            let builder = builders[table as usize].get_or_insert_with(|| {
                order.push(table as usize);
                ChangesBuilder::new(&self.schemas[table as usize])
            });
            match ch {
                Change::Insert { id } => builder.insert(lsn, seq, &values(&write(id)))?,
                Change::Update { id } => builder.update(lsn, seq, &values(&write(id)))?,
                Change::Delete { id } => builder.delete(lsn, seq, &key_only(id))?,
                Change::Rekey { new, .. } if half => {
                    builder.insert(lsn, seq + 1, &values(&write(new)))?;
                    half = false;
                }
                Change::Rekey { old, .. } if room < 2 => {
                    // `max_rows` is 1: the key change travels as a delete of the old key
                    // and, in the next batch, an insert of the new one.
                    builder.delete(lsn, seq, &key_only(old))?;
                    half = true;
                    rows += 1;
                    break;
                }
                Change::Rekey { old, new } => {
                    builder.before(lsn, seq, &key_only(old))?;
                    builder.update(lsn, seq + 1, &values(&write(new)))?;
                    rows += 1;
                }
            }
            rows += 1;
            done += 1;
        }
        self.stage = Stage::Changes { done, half };
        if self.stage == start {
            return Ok(None);
        }
        if rows == 0 {
            return Ok(Some(Batch::heartbeat(self.stage.position())));
        }
        host::counter_add("rows_generated", rows);
        let mut tables = Vec::with_capacity(order.len());
        for t in order {
            let builder = builders[t].take().expect("listed tables have builders");
            tables.push(builder.finish()?);
        }
        let mut batch = Batch::changes(self.stage.position(), tables);
        // Inside a transaction when the next change belongs to the same one.
        batch.continues = half || (done < total && done % TXN_CHANGES != 0);
        Ok(Some(batch))
    }
}

impl Reader for DatagenReader {
    fn open(config: &str, selection: Vec<String>, resume: Option<Vec<u8>>) -> Result<Self> {
        let cfg = load(config)?;
        let schemas = (0..u64::from(cfg.table_count))
            .map(table_schema)
            .collect::<Result<Vec<_>>>()?;
        let selected = schemas
            .iter()
            .map(|s| s.table().is_selected(&selection))
            .collect();
        let mut reader = DatagenReader {
            cfg,
            schemas,
            selected,
            stage: Stage::Snapshot {
                table: 0,
                done: 0,
                started: false,
            },
        };
        if let Some(position) = resume {
            reader.stage = reader.resume(&position)?;
        }
        Ok(reader)
    }

    fn next(&mut self, max_rows: u32) -> Result<Option<Batch>> {
        let limit = u64::from(self.cfg.batch_rows.min(max_rows).max(1));
        if let Some(batch) = self.next_snapshot(limit)? {
            return Ok(Some(batch));
        }
        self.next_changes(limit)
    }
}

export_source!(Datagen);

#[cfg(test)]
mod tests;

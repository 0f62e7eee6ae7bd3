//! A reference destination in memory: applies batches the way the WIT contract says a
//! destination must, so two runs of a source can be compared by what they leave behind.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;

use crate::batch::{Batch, Kind, TableRows};

/// The leading columns of a changes batch.
pub const CHANGE_COLUMNS: [&str; 4] = [
    "__culvert_op",
    "__culvert_lsn",
    "__culvert_seq",
    "__culvert_unchanged",
];

/// Decode one table's Arrow IPC stream, checking it against its `row-count`.
pub fn decode(t: &TableRows) -> Result<Vec<RecordBatch>, String> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(&t.ipc), None)
        .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Arrow IPC stream does not decode: {e}"))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows != t.row_count as usize {
        return Err(format!(
            "row-count says {} but the Arrow data holds {rows} rows",
            t.row_count
        ));
    }
    Ok(batches)
}

/// One table's rows, keyed by primary key (or counted, without one).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TableState {
    keyed: BTreeMap<Vec<String>, Vec<String>>,
    keyless: BTreeMap<Vec<String>, usize>,
}

/// Every table a run has written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Model {
    tables: BTreeMap<String, TableState>,
    /// Things a correct source never produces (an insert of a key already present, a
    /// delete of a missing row), with where they happened.
    pub anomalies: Vec<String>,
}

fn render_rows(batch: &RecordBatch, skip: usize) -> Result<Vec<Vec<String>>, String> {
    let options = FormatOptions::default().with_null("\u{2400}");
    // Named time zones need a tz database to display; the instant alone identifies a value.
    let columns = batch
        .columns()
        .iter()
        .skip(skip)
        .map(|c| match c.data_type() {
            DataType::Timestamp(_, Some(_)) => {
                arrow_cast::cast(c.as_ref(), &DataType::Int64).map_err(|e| e.to_string())
            }
            _ => Ok(c.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let formatters = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|i| formatters.iter().map(|f| f.value(i).to_string()).collect())
        .collect())
}

fn primary_key(batch: &RecordBatch, skip: usize) -> Vec<usize> {
    let schema = batch.schema();
    let names: Vec<String> = schema
        .metadata()
        .get("culvert.primary_key")
        .and_then(|k| serde_json::from_str(k).ok())
        .unwrap_or_default();
    names
        .iter()
        .filter_map(|n| {
            schema
                .fields()
                .iter()
                .skip(skip)
                .position(|f| f.name() == n)
        })
        .collect()
}

impl Model {
    /// Apply one batch; an error means the batch breaks the contract.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), String> {
        for t in &batch.tables {
            let name = format!("{}.{}", t.namespace, t.name);
            let decoded = decode(t).map_err(|e| format!("table {name}: {e}"))?;
            if batch.kind == Kind::Snapshot && t.first_of_table {
                self.tables.insert(name.clone(), TableState::default());
            }
            for rb in &decoded {
                match batch.kind {
                    Kind::Snapshot => self.snapshot_rows(&name, rb)?,
                    Kind::Changes => self.change_rows(&name, rb)?,
                    Kind::Heartbeat => {
                        return Err("a heartbeat batch carries table rows".into());
                    }
                }
            }
        }
        Ok(())
    }

    fn snapshot_rows(&mut self, name: &str, rb: &RecordBatch) -> Result<(), String> {
        let key = primary_key(rb, 0);
        let rows = render_rows(rb, 0).map_err(|e| format!("table {name}: {e}"))?;
        let table = self.tables.entry(name.to_string()).or_default();
        for row in rows {
            if key.is_empty() {
                *table.keyless.entry(row).or_default() += 1;
            } else {
                let k: Vec<String> = key.iter().map(|&i| row[i].clone()).collect();
                if table.keyed.insert(k.clone(), row).is_some() {
                    self.anomalies
                        .push(format!("table {name}: snapshot holds key {k:?} twice"));
                }
            }
        }
        Ok(())
    }

    fn change_rows(&mut self, name: &str, rb: &RecordBatch) -> Result<(), String> {
        let schema = rb.schema();
        for (i, expected) in CHANGE_COLUMNS.iter().enumerate() {
            match schema.fields().get(i) {
                Some(f) if f.name() == expected => {}
                _ => {
                    return Err(format!(
                        "table {name}: a changes batch must start with the columns {CHANGE_COLUMNS:?}"
                    ));
                }
            }
        }
        let ops = rb
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("table {name}: __culvert_op must be utf8"))?;
        if rb.column(1).data_type() != &DataType::UInt64
            || rb.column(2).data_type() != &DataType::UInt64
        {
            return Err(format!(
                "table {name}: __culvert_lsn and __culvert_seq must be uint64"
            ));
        }
        let _ = rb.column(1).as_primitive::<UInt64Type>();
        let unchanged = rb
            .column(3)
            .as_binary_opt::<i32>()
            .ok_or_else(|| format!("table {name}: __culvert_unchanged must be binary"))?;
        let key = primary_key(rb, 4);
        let rows = render_rows(rb, 4).map_err(|e| format!("table {name}: {e}"))?;
        let table = self.tables.entry(name.to_string()).or_default();
        let mut before: Option<Vec<String>> = None;
        for (i, mut row) in rows.into_iter().enumerate() {
            let op = if ops.is_null(i) { "" } else { ops.value(i) };
            let key_of =
                |r: &[String]| -> Vec<String> { key.iter().map(|&k| r[k].clone()).collect() };
            match op {
                "T" => {
                    table.keyed.clear();
                    table.keyless.clear();
                }
                "B" => before = Some(row),
                "I" | "U" => {
                    if key.is_empty() {
                        if let Some(old) = before.take() {
                            remove_keyless(table, &old, name, &mut self.anomalies);
                        }
                        *table.keyless.entry(row).or_default() += 1;
                        continue;
                    }
                    let old_key = before.take().map(|b| key_of(&b));
                    let k = key_of(&row);
                    if !unchanged.is_null(i) {
                        let bits = unchanged.value(i);
                        let prior = table.keyed.get(old_key.as_ref().unwrap_or(&k)).cloned();
                        for (c, cell) in row.iter_mut().enumerate() {
                            if bits.get(c / 8).is_some_and(|b| b & (1 << (c % 8)) != 0) {
                                match &prior {
                                    Some(p) => *cell = p[c].clone(),
                                    None => self.anomalies.push(format!(
                                        "table {name}: an update leaves column {c} unchanged but key {k:?} is not present"
                                    )),
                                }
                            }
                        }
                    }
                    if let Some(old) = old_key.filter(|o| *o != k) {
                        table.keyed.remove(&old);
                    }
                    let existed = table.keyed.insert(k.clone(), row).is_some();
                    if op == "I" && existed {
                        self.anomalies.push(format!(
                            "table {name}: insert of key {k:?}, which is already present (a duplicate)"
                        ));
                    }
                }
                "D" => {
                    if key.is_empty() {
                        remove_keyless(table, &row, name, &mut self.anomalies);
                    } else if table.keyed.remove(&key_of(&row)).is_none() {
                        self.anomalies.push(format!(
                            "table {name}: delete of key {:?}, which is not present",
                            key_of(&row)
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "table {name}: unknown __culvert_op {other:?}; use I, U, B, D or T"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rows per table.
    pub fn row_counts(&self) -> BTreeMap<String, usize> {
        self.tables
            .iter()
            .map(|(n, t)| (n.clone(), t.keyed.len() + t.keyless.values().sum::<usize>()))
            .collect()
    }

    /// The first difference from `other`, for a report.
    pub fn difference(&self, other: &Model) -> Option<String> {
        let names: std::collections::BTreeSet<&String> =
            self.tables.keys().chain(other.tables.keys()).collect();
        for name in names {
            let (a, b) = (self.tables.get(name), other.tables.get(name));
            if a == b {
                continue;
            }
            let (a, b) = (
                a.cloned().unwrap_or_default(),
                b.cloned().unwrap_or_default(),
            );
            for (k, row) in &a.keyed {
                match b.keyed.get(k) {
                    None => return Some(format!("table {name}: key {k:?} is missing")),
                    Some(r) if r != row => {
                        return Some(format!(
                            "table {name}: key {k:?} is {r:?}, expected {row:?}"
                        ));
                    }
                    _ => {}
                }
            }
            if let Some(k) = b.keyed.keys().find(|k| !a.keyed.contains_key(*k)) {
                return Some(format!("table {name}: key {k:?} should not be there"));
            }
            for (row, n) in &a.keyless {
                let m = b.keyless.get(row).copied().unwrap_or(0);
                if m != *n {
                    return Some(format!(
                        "table {name}: row {row:?} is there {m} times, expected {n}"
                    ));
                }
            }
            return Some(format!("table {name}: rows differ"));
        }
        None
    }
}

fn remove_keyless(table: &mut TableState, row: &[String], name: &str, anomalies: &mut Vec<String>) {
    match table.keyless.get_mut(row) {
        Some(n) if *n > 1 => *n -= 1,
        Some(_) => {
            table.keyless.remove(row);
        }
        None => anomalies.push(format!(
            "table {name}: delete of row {row:?}, which is not present"
        )),
    }
}

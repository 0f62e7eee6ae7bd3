use std::collections::{BTreeMap, BTreeSet};

use culvert_connector_sdk::BatchKind;
use culvert_connector_sdk::arrow_array::Array;
use culvert_connector_sdk::arrow_array::cast::AsArray;
use culvert_connector_sdk::arrow_array::types::Int64Type;
use culvert_connector_sdk::rows::{CHANGE_COLUMNS, primary_key, type_name};

use super::*;
use crate::r#gen::live_range;

fn config(seed: u64, tables: u32, rows: u64, change_rows: u64, batch_rows: u32) -> String {
    format!(
        r#"{{"seed": {seed}, "table_count": {tables}, "rows": {rows}, "change_rows": {change_rows}, "batch_rows": {batch_rows}}}"#
    )
}

fn read(config: &str, selection: &[&str], resume: Option<Vec<u8>>, max_rows: u32) -> Vec<Batch> {
    let selection = selection.iter().map(|s| s.to_string()).collect();
    let mut reader = DatagenReader::open(config, selection, resume).unwrap();
    let mut out = Vec::new();
    while let Some(batch) = reader.next(max_rows).unwrap() {
        out.push(batch);
        assert!(out.len() < 100_000, "the reader never went idle");
    }
    out
}

/// A destination keyed by (table, id): applies batches the way a real one must.
#[derive(Default)]
struct Keyed {
    rows: BTreeMap<(String, i64), Option<String>>,
}

impl Keyed {
    fn apply(&mut self, batch: &Batch) {
        for t in &batch.tables {
            let name = t.table.to_string();
            if t.first_of_table {
                self.rows.retain(|(table, _), _| *table != name);
            }
            for rb in t.record_batches().unwrap() {
                let off = if batch.kind == BatchKind::Changes {
                    CHANGE_COLUMNS
                } else {
                    0
                };
                let ids = rb.column(off).as_primitive::<Int64Type>();
                let names = rb.column(off + 1).as_string::<i32>();
                for i in 0..rb.num_rows() {
                    let key = (name.clone(), ids.value(i));
                    let value = (!names.is_null(i)).then(|| names.value(i).to_string());
                    let op = if batch.kind == BatchKind::Changes {
                        rb.column(0).as_string::<i32>().value(i).to_string()
                    } else {
                        "I".to_string()
                    };
                    match op.as_str() {
                        "I" | "U" => {
                            self.rows.insert(key, value);
                        }
                        "B" | "D" => {
                            assert!(
                                self.rows.remove(&key).is_some(),
                                "{op} of a missing row {key:?}"
                            );
                        }
                        other => panic!("unexpected op {other}"),
                    }
                }
            }
        }
    }
}

#[test]
fn snapshot_then_changes_with_increasing_positions() {
    let cfg = config(7, 3, 25, 40, 10);
    let batches = read(&cfg, &[], None, 1000);
    assert!(batches.windows(2).all(|w| w[0].position < w[1].position));
    let snapshot: u64 = batches
        .iter()
        .filter(|b| b.kind == BatchKind::Snapshot)
        .map(Batch::row_count)
        .sum();
    assert_eq!(snapshot, 75);
    let firsts: Vec<String> = batches
        .iter()
        .flat_map(|b| &b.tables)
        .filter(|t| t.first_of_table)
        .map(|t| t.table.to_string())
        .collect();
    assert_eq!(
        firsts,
        ["datagen.table_1", "datagen.table_2", "datagen.table_3"]
    );
    assert!(batches.iter().any(|b| b.kind == BatchKind::Changes));
    for b in &batches {
        assert!(b.row_count() <= 10);
        for t in &b.tables {
            let decoded: usize = t
                .record_batches()
                .unwrap()
                .iter()
                .map(|r| r.num_rows())
                .sum();
            assert_eq!(decoded as u32, t.row_count);
        }
    }
}

#[test]
fn same_seed_same_batches_other_seed_other_data() {
    let a = read(&config(1, 2, 30, 30, 16), &[], None, 1000);
    let b = read(&config(1, 2, 30, 30, 16), &[], None, 1000);
    let c = read(&config(2, 2, 30, 30, 16), &[], None, 1000);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn resume_after_every_position_yields_exactly_the_rest() {
    for max_rows in [1, 3, 7, 1000] {
        let cfg = config(5, 2, 9, 20, 5);
        let all = read(&cfg, &[], None, max_rows);
        for (i, b) in all.iter().enumerate() {
            let rest = read(&cfg, &[], Some(b.position.clone()), max_rows);
            assert_eq!(
                rest,
                all[i + 1..].to_vec(),
                "max_rows {max_rows}, after batch {i}"
            );
        }
    }
}

#[test]
fn keyed_destination_ends_with_the_live_rows() {
    for max_rows in [1, 2, 50] {
        let (rows, changes) = (12, 37);
        let cfg = config(11, 2, rows, changes, 64);
        let all = read(&cfg, &[], None, max_rows);
        assert!(all.iter().all(|b| b.row_count() <= u64::from(max_rows)));
        let mut dest = Keyed::default();
        for b in &all {
            dest.apply(b);
        }
        let (low, high) = live_range(rows, changes);
        for t in ["datagen.table_1", "datagen.table_2"] {
            let ids: BTreeSet<i64> = dest
                .rows
                .keys()
                .filter(|(table, _)| table == t)
                .map(|(_, id)| *id)
                .collect();
            assert_eq!(
                ids,
                (low as i64..=high as i64).collect(),
                "{t}, max_rows {max_rows}"
            );
        }
        // A crash after any batch and a replay of the rest gives the same result.
        let mid = all.len() / 2;
        let mut replayed = Keyed::default();
        for b in &all[..=mid] {
            replayed.apply(b);
        }
        for b in read(&cfg, &[], Some(all[mid].position.clone()), max_rows) {
            replayed.apply(&b);
        }
        assert_eq!(replayed.rows, dest.rows);
    }
}

#[test]
fn changes_carry_before_images_only_for_key_changes() {
    let all = read(&config(3, 1, 5, 16, 100), &[], None, 100);
    let mut ops = String::new();
    for b in all.iter().filter(|b| b.kind == BatchKind::Changes) {
        for t in &b.tables {
            for rb in t.record_batches().unwrap() {
                let op = rb.column(0).as_string::<i32>();
                for i in 0..rb.num_rows() {
                    ops.push_str(op.value(i));
                }
            }
        }
    }
    assert_eq!(ops, "IIIUUDBUU".repeat(2));
}

#[test]
fn transactions_split_across_batches_are_marked() {
    let all = read(&config(3, 1, 0, 8, 100), &[], None, 3);
    let changes: Vec<&Batch> = all
        .iter()
        .filter(|b| b.kind == BatchKind::Changes)
        .collect();
    // Transactions of four changes; three rows per batch leave the first open.
    assert!(changes[0].continues);
    assert!(!changes.last().unwrap().continues);
}

#[test]
fn selection_limits_tables() {
    let all = read(&config(1, 3, 4, 6, 10), &["datagen.table_2"], None, 100);
    let names: BTreeSet<String> = all
        .iter()
        .flat_map(|b| &b.tables)
        .map(|t| t.table.to_string())
        .collect();
    assert_eq!(names, BTreeSet::from(["datagen.table_2".to_string()]));
    assert!(
        read(&config(1, 3, 4, 6, 10), &["other.*"], None, 100)
            .iter()
            .all(|b| b.tables.is_empty())
    );
}

#[test]
fn schema_carries_types_and_key() {
    let all = read(&config(1, 1, 3, 0, 10), &[], None, 100);
    let rb = &all[0].tables[0].record_batches().unwrap()[0];
    let schema = rb.schema();
    assert_eq!(primary_key(&schema).unwrap(), ["id"]);
    let types: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| type_name(f).unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "bigint",
            "text",
            "double precision",
            "boolean",
            "timestamp with time zone",
            "numeric",
            "bytea"
        ]
    );
}

#[test]
fn empty_tables_and_no_changes() {
    let all = read(&config(1, 2, 0, 0, 10), &[], None, 100);
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|b| b.tables[0].first_of_table && b.row_count() == 0)
    );
    let rest = read(
        &config(1, 2, 0, 0, 10),
        &[],
        Some(all[0].position.clone()),
        100,
    );
    assert_eq!(rest, all[1..].to_vec());
}

#[test]
fn check_and_discover() {
    assert!(Datagen::check(&config(1, 2, 3, 4, 5))[0].ok);
    for (bad, field) in [
        (r#"{"table_count": 0}"#, "`table_count`"),
        (r#"{"batch_rows": 0}"#, "`batch_rows`"),
        (r#"{"rows": -1}"#, "`rows`"),
        (r#"{"change_rows": 1e20}"#, "`change_rows`"),
        (r#"{"seed": "x"}"#, "`seed`"),
    ] {
        let result = &Datagen::check(bad)[0];
        assert!(!result.ok, "{bad}");
        assert!(result.message.contains(field), "{bad}: {}", result.message);
    }
    let tables = Datagen::discover(&config(1, 2, 3, 4, 5)).unwrap();
    assert_eq!(tables.len(), 2);
    assert_eq!(tables[1].table.to_string(), "datagen.table_2");
    assert_eq!(tables[1].estimated_rows, 3);
    assert!(tables[1].identifiable);
    let spec: serde_json::Value = serde_json::from_str(&Datagen::spec()).unwrap();
    assert_eq!(spec["properties"]["batch_rows"]["default"], 10_000);
}

#[test]
fn foreign_positions_are_refused() {
    let cfg = config(1, 2, 3, 4, 5);
    for bad in [
        vec![1, 2, 3],
        encode_u64s(&[0, 9, 0]),
        encode_u64s(&[1, 99, 0]),
        encode_u64s(&[2, 0, 0]),
    ] {
        let e = DatagenReader::open(&cfg, Vec::new(), Some(bad))
            .err()
            .unwrap();
        assert_eq!(e.kind, culvert_connector_sdk::ErrorKind::State);
    }
}

//! The batches the kit applies to a destination: a small table copied in two snapshot
//! chunks, then changes of every kind, a heartbeat and a transaction split over two batches.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::model::CHANGE_COLUMNS;
use crate::batch::{Batch, Kind, TableRows};

/// Schema of the kit's table.
pub const NAMESPACE: &str = "culvert_kit";
/// Name of the kit's table.
pub const TABLE: &str = "items";

/// Rows the snapshot copies.
pub const SNAPSHOT_ROWS: i64 = 1000;

/// One row of the kit's table.
#[derive(Clone)]
struct Item {
    id: i64,
    name: Option<String>,
    amount: f64,
    active: bool,
    created_micros: i64,
}

fn item(id: i64) -> Item {
    Item {
        id,
        name: (id % 10 != 0).then(|| format!("item {id} \u{e9}\u{2603}")),
        amount: id as f64 * 1.25,
        active: id % 3 == 0,
        created_micros: 1_700_000_000_000_000 + id * 1_000_003,
    }
}

fn table_fields() -> Vec<Field> {
    let typed = |name: &str, dt: DataType, nullable: bool, ty: &str| {
        Field::new(name, dt, nullable).with_metadata(HashMap::from([(
            "culvert.type".to_string(),
            ty.to_string(),
        )]))
    };
    vec![
        typed("id", DataType::Int64, false, "bigint"),
        typed("name", DataType::Utf8, true, "text"),
        typed("amount", DataType::Float64, false, "double precision"),
        typed("active", DataType::Boolean, false, "boolean"),
        typed(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
            "timestamp with time zone",
        ),
    ]
}

fn table_columns(items: &[Item]) -> Vec<ArrayRef> {
    let mut id = Int64Builder::new();
    let mut name = StringBuilder::new();
    let mut amount = Float64Builder::new();
    let mut active = BooleanBuilder::new();
    let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for it in items {
        id.append_value(it.id);
        name.append_option(it.name.as_deref());
        amount.append_value(it.amount);
        active.append_value(it.active);
        created.append_value(it.created_micros);
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(amount.finish()),
        Arc::new(active.finish()),
        Arc::new(created.finish()),
    ]
}

fn ipc(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Vec<u8> {
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        HashMap::from([("culvert.primary_key".to_string(), "[\"id\"]".to_string())]),
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), columns).expect("kit batch matches its schema");
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).expect("ipc writer");
    w.write(&batch).expect("ipc write");
    w.finish().expect("ipc finish");
    drop(w);
    out
}

fn rows(first_of_table: bool, count: usize, ipc: Vec<u8>) -> TableRows {
    TableRows {
        namespace: NAMESPACE.into(),
        name: TABLE.into(),
        first_of_table,
        row_count: count as u32,
        ipc,
    }
}

fn snapshot(ids: std::ops::RangeInclusive<i64>, first: bool) -> TableRows {
    let items: Vec<Item> = ids.map(item).collect();
    rows(
        first,
        items.len(),
        ipc(table_fields(), table_columns(&items)),
    )
}

fn changes(lsn: u64, changes: &[(&str, Item)]) -> TableRows {
    let mut fields: Vec<Field> = vec![
        Field::new(CHANGE_COLUMNS[0], DataType::Utf8, false),
        Field::new(CHANGE_COLUMNS[1], DataType::UInt64, false),
        Field::new(CHANGE_COLUMNS[2], DataType::UInt64, false),
        Field::new(CHANGE_COLUMNS[3], DataType::Binary, true),
    ];
    fields.extend(table_fields());
    let mut op = StringBuilder::new();
    let mut l = UInt64Builder::new();
    let mut seq = UInt64Builder::new();
    let mut unchanged = BinaryBuilder::new();
    for (i, (o, _)) in changes.iter().enumerate() {
        op.append_value(o);
        l.append_value(lsn);
        seq.append_value(i as u64);
        unchanged.append_null();
    }
    let items: Vec<Item> = changes.iter().map(|(_, it)| it.clone()).collect();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(op.finish()),
        Arc::new(l.finish()),
        Arc::new(seq.finish()),
        Arc::new(unchanged.finish()),
    ];
    columns.extend(table_columns(&items));
    rows(false, changes.len(), ipc(fields, columns))
}

/// Position `n`: eight bytes, big-endian, so byte order is numeric order.
pub fn position(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn batch(kind: Kind, n: u64, continues: bool, tables: Vec<TableRows>) -> Batch {
    Batch {
        kind,
        position: position(n),
        tables,
        lag_bytes: 0,
        continues,
    }
}

/// The kit's batches, in order, with strictly increasing positions.
pub fn batches() -> Vec<Batch> {
    let mut updated = item(5);
    updated.name = Some("renamed \"five\"".into());
    updated.amount = -0.5;
    let mut moved = item(8);
    let before = moved.clone();
    moved.id = 1008;
    let mut later = item(1002);
    later.active = !later.active;
    vec![
        batch(Kind::Snapshot, 1, false, vec![snapshot(1..=600, true)]),
        batch(
            Kind::Snapshot,
            2,
            false,
            vec![snapshot(601..=SNAPSHOT_ROWS, false)],
        ),
        batch(Kind::Heartbeat, 3, false, Vec::new()),
        batch(
            Kind::Changes,
            4,
            false,
            vec![changes(
                4,
                &[
                    ("I", item(1001)),
                    ("U", updated),
                    ("D", item(7)),
                    ("B", before),
                    ("U", moved),
                ],
            )],
        ),
        batch(
            Kind::Changes,
            5,
            true,
            vec![changes(5, &[("I", item(1002))])],
        ),
        batch(Kind::Changes, 6, false, vec![changes(5, &[("U", later)])]),
        batch(
            Kind::Changes,
            7,
            false,
            vec![changes(7, &[("D", item(1001))])],
        ),
    ]
}

/// Rows the kit's table holds once every batch is applied.
pub fn expected_rows() -> i64 {
    // Two inserts, two deletes.
    SNAPSHOT_ROWS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::model::Model;

    #[test]
    fn the_kit_batches_follow_the_contract() {
        let mut model = Model::default();
        for b in batches() {
            model.apply(&b).unwrap();
        }
        assert!(model.anomalies.is_empty(), "{:?}", model.anomalies);
        let counts = model.row_counts();
        assert_eq!(
            counts[&format!("{NAMESPACE}.{TABLE}")] as i64,
            expected_rows()
        );
        let positions: Vec<Vec<u8>> = batches().into_iter().map(|b| b.position).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }
}

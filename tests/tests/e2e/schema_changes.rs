//! Schema changes at the source follow to the target, in order with the data around
//! them, without a resync; a change the target cannot take pauses only that table.

use culvert_tests::{Cluster, first_difference, replicate, resync};

#[test]
fn every_kind_of_ddl_interleaved_with_dml_replicates_exactly() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
         INSERT INTO items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 2000) g;
         CREATE TABLE other (id int PRIMARY KEY, v text);
         INSERT INTO other VALUES (1, 'one');
         CREATE TABLE keyless (a int, b text);
         INSERT INTO keyless SELECT g % 5, 'k' FROM generate_series(1, 50) g;
         ALTER TABLE keyless REPLICA IDENTITY FULL;",
    );
    let (_work, _pipeline, mut agent) = replicate("ddl", &src, &dst, &["public.*"]);
    agent.wait_until(120, "the snapshot", || {
        first_difference(&src, &dst, &["items", "other", "keyless"]).is_none()
    });

    // Each statement commits on its own, back to back, so the agent meets them in
    // one stretch of WAL, as it would after falling behind.
    for sql in [
        "INSERT INTO items VALUES (3001, 'before add', 1)",
        "ALTER TABLE items ADD COLUMN price numeric(10,2) DEFAULT 9.99",
        "INSERT INTO items VALUES (3002, 'after add', 2, 1.50)",
        "ALTER TABLE items ADD COLUMN note text",
        "UPDATE items SET note = 'n' || id WHERE id % 3 = 0",
        "ALTER TABLE items RENAME COLUMN name TO title",
        "INSERT INTO items (id, title, qty) VALUES (3003, 'after rename', 3)",
        "UPDATE items SET title = title || '!' WHERE id % 5 = 0",
        "ALTER TABLE items DROP COLUMN qty",
        "INSERT INTO items (id, title) VALUES (3004, 'after drop')",
        "ALTER TABLE items ALTER COLUMN price TYPE numeric(12,3)",
        "UPDATE items SET price = price + 0.001 WHERE id % 11 = 0",
        "ALTER TABLE items ALTER COLUMN id TYPE bigint",
        "INSERT INTO items (id, title) VALUES (5000000000, 'big key')",
        "BEGIN; INSERT INTO items (id, title) VALUES (3005, 'same txn before');
         ALTER TABLE items ADD COLUMN flag bool DEFAULT true;
         INSERT INTO items (id, title, flag) VALUES (3006, 'same txn after', false); COMMIT",
        "ALTER TABLE items RENAME COLUMN note TO remark",
        "ALTER TABLE items RENAME COLUMN remark TO note2",
        "UPDATE items SET note2 = 'twice renamed' WHERE id = 3",
        "ALTER TABLE items ADD COLUMN stamp float8 DEFAULT random()",
        "ALTER TABLE keyless ADD COLUMN c int DEFAULT 4",
        "INSERT INTO keyless VALUES (9, 'after', 5)",
        "CREATE TABLE fresh (id int PRIMARY KEY, v text)",
        "INSERT INTO fresh SELECT g, 'f' || g FROM generate_series(1, 500) g",
        "UPDATE fresh SET v = 'changed' WHERE id < 10",
        "CREATE TABLE moving (id int PRIMARY KEY, v text)",
        "INSERT INTO moving SELECT g, 'm' FROM generate_series(1, 100) g",
        "ALTER TABLE moving RENAME TO moved",
        "UPDATE moved SET v = 'after table rename' WHERE id < 5",
        "DROP TABLE other",
    ] {
        src.sql("app", sql);
    }
    agent.wait_clean(120, "the schema changes to follow", || {
        first_difference(&src, &dst, &["items", "keyless", "fresh", "moved"]).or_else(|| {
            (dst.try_sql(
                "replica",
                "SELECT to_regclass('public.other') IS NULL AND to_regclass('public.moving') IS NULL",
            ) != Ok("t".to_string()))
            .then(|| "other or moving was not dropped".to_string())
        })
    });
    if let Some(d) = first_difference(&src, &dst, &["items", "keyless", "fresh"]) {
        panic!("{d}");
    }
    // A rename kept the values: the renamed column was never empty.
    assert_eq!(
        dst.sql("replica", "SELECT note2 FROM items WHERE id = 3"),
        "twice renamed"
    );
    assert_eq!(
        dst.sql(
            "replica",
            "SELECT count(*) FROM items WHERE note2 IS NOT NULL"
        ),
        src.sql("app", "SELECT count(*) FROM items WHERE note2 IS NOT NULL")
    );
    assert!(agent.exited().is_none(), "{}", agent.log());
}

#[test]
fn a_change_the_target_cannot_take_pauses_only_that_table() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text);
         INSERT INTO orders SELECT g, g, 'x' FROM generate_series(1, 300) g;
         CREATE TABLE events (id int PRIMARY KEY, v text);",
    );
    let (work, _pipeline, mut agent) = replicate("paused", &src, &dst, &["public.*"]);
    agent.wait_until(120, "the snapshot", || {
        first_difference(&src, &dst, &["orders", "events"]).is_none()
    });
    // Something at the target depends on the column the source is about to drop.
    dst.sql(
        "replica",
        "CREATE VIEW order_qty AS SELECT id, qty FROM orders",
    );
    src.sql("app", "ALTER TABLE orders DROP COLUMN qty");
    src.sql("app", "INSERT INTO orders VALUES (1000, 'after drop')");
    src.sql("app", "INSERT INTO events VALUES (1, 'goes on')");
    agent.wait_until(60, "the other table to go on", || {
        dst.try_sql("replica", "SELECT v FROM events WHERE id = 1")
            .is_ok_and(|v| v == "goes on")
    });
    let reason = dst.sql(
        "replica",
        "SELECT reason FROM _culvert.paused WHERE table_name = 'public.orders'",
    );
    assert!(
        reason.contains("order_qty") && reason.contains("resync"),
        "reason should name the cause and the way forward: {reason}"
    );
    assert!(agent.exited().is_none(), "{}", agent.log());

    // The documented way forward: fix the target, then copy the table again.
    dst.sql("replica", "DROP VIEW order_qty");
    src.sql(
        "app",
        "UPDATE orders SET note = 'while paused' WHERE id < 50",
    );
    let (ok, out) = resync(&work, &["public.orders"]);
    assert!(ok, "resync failed: {out}");
    agent.wait_clean(120, "the paused table to be copied again", || {
        first_difference(&src, &dst, &["orders", "events"])
    });
    assert_eq!(
        dst.sql("replica", "SELECT count(*) FROM _culvert.paused"),
        "0"
    );
}

#[test]
fn without_captured_ddl_a_renamed_column_is_recovered_by_a_copy() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
    );
    let (work, pipeline, mut agent) = replicate("nocapture", &src, &dst, &["public.*"]);
    agent.wait_clean(120, "the snapshot", || {
        first_difference(&src, &dst, &["items"])
    });
    agent.stop();
    // As if the role could not create event triggers.
    src.sql(
        "app",
        "ALTER EVENT TRIGGER culvert_ddl_end DISABLE; ALTER EVENT TRIGGER culvert_ddl_drop DISABLE",
    );
    let mut agent = culvert_tests::Agent::run(&work, &pipeline, &[]);
    src.sql("app", "INSERT INTO items VALUES (1001, 'before')");
    src.sql("app", "ALTER TABLE items RENAME COLUMN name TO title");
    src.sql("app", "ALTER TABLE items ADD COLUMN qty int DEFAULT 3");
    src.sql("app", "INSERT INTO items VALUES (1002, 'after', 4)");
    agent.wait_clean(120, "the table to be exact again", || {
        first_difference(&src, &dst, &["items"])
    });
}

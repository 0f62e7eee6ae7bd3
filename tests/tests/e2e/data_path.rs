//! The data path end to end: snapshot and changes of every supported type between two
//! real PostgreSQL clusters through the real agent and the real wasm connectors.

use culvert_tests::{Agent, Cluster, replicate, workdir};

const TYPES_DDL: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
CREATE DOMAIN price AS numeric(10,2);
CREATE SCHEMA "Sales";
CREATE TABLE all_types (
  id bigint PRIMARY KEY,
  b bool, i2 int2, i4 int4, i8 int8,
  n numeric, n122 numeric(12,2),
  f4 float4, f8 float8,
  t text, vc varchar(20), c5 char(5),
  by bytea, u uuid, j json, jb jsonb,
  d date, tm time, ts timestamp, tstz timestamptz, iv interval,
  a_int int4[], a_text text[], a_2d int8[][], m mood, m_arr mood[],
  inet_v inet, tstz_range tstzrange, big text, em email, pr price, tz timetz, bits varbit, money_v money
);
CREATE TABLE "Sales"."Order Items" ("Id" int PRIMARY KEY, "Qty" int, note text);
CREATE TABLE no_key (a int, b text);
ALTER TABLE no_key REPLICA IDENTITY FULL;
CREATE TABLE composite_key (a int, b text, v text, PRIMARY KEY (a, b));
CREATE TABLE measurements (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE with_generated (id int PRIMARY KEY, qty int, total int GENERATED ALWAYS AS (qty * 2) STORED, note text);
"#;

const TYPES_ROWS: &str = r#"
INSERT INTO all_types VALUES
 (1, true, -32768, -2147483648, -9223372036854775808,
  'NaN', 1234567890.12, 'NaN', 'Infinity', 'hello', 'var', 'ab', '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}]}', '{"z": 1, "a": "x"}', 'infinity', '24:00:00', '-infinity', 'infinity',
  '-178000000 years', '{1,NULL,3}', '{"a","b c",NULL,""}', '{{1,2},{3,4}}', 'happy', '{sad,NULL,ok}',
  '192.168.0.1/24', '[2020-01-01 00:00+00,2021-01-01 00:00+00)', NULL, 'a@b.c', 12.5, '10:00:00+05:30', B'1011', 12.34),
 (2, false, 32767, 2147483647, 9223372036854775807,
  '-0.000000000000000000000000000001', -9999999999.99, '-Infinity', '-1.7976931348623157e308', 'ünïcødé ✓ "quotes" \ and tab	x', '', 'x', '', '00000000-0000-0000-0000-000000000000',
  '[]', '[]', '4713-01-01 BC', '00:00:00.000001', '4713-01-01 00:00:00 BC', '1999-12-31 23:59:59.999999+00',
  '1 year 2 mons 3 days 04:05:06.789', '{}', '{}', '{}', 'sad', '{}', '::1', 'empty', repeat('x', 3000000), NULL, -0.01, '00:00:00-12', B'', -1.5),
 (3, NULL, NULL, NULL, NULL, '123456789012345678901234567890.123456789012345678901234567890', NULL, 1.17549435e-38, 2.2250738585072014e-308,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, '294276-12-31', NULL, '2000-01-01 00:00:00', '1970-01-01 00:00:00+00', NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO all_types (id, n, f8, t, jb) SELECT g, g * 1.5, g / 7.0, 'row ' || g, jsonb_build_object('g', g) FROM generate_series(10, 20000) g;
INSERT INTO "Sales"."Order Items" SELECT g, g % 7, 'note ' || g FROM generate_series(1, 1000) g;
INSERT INTO no_key VALUES (1, 'dup'), (1, 'dup'), (2, NULL), (NULL, NULL);
INSERT INTO composite_key VALUES (1, 'a', 'x'), (1, 'b', 'y');
INSERT INTO with_generated (id, qty, note) VALUES (1, 5, 'five'), (2, NULL, 'none');
INSERT INTO measurements SELECT g, date '2024-01-01' + g, 'm' || g FROM generate_series(1, 600) g;
"#;

const TABLES: &[&str] = &[
    "all_types",
    "\"Sales\".\"Order Items\"",
    "no_key",
    "composite_key",
];

fn assert_same(src: &Cluster, dst: &Cluster) {
    for t in TABLES {
        let a = src.dump("app", t);
        let b = dst.dump("replica", t);
        assert!(
            a == b,
            "table {t} differs:\nsource: {:.2000}\ntarget: {:.2000}",
            a,
            b
        );
    }
}

fn same(src: &Cluster, dst: &Cluster) -> bool {
    TABLES.iter().all(|t| {
        dst.try_sql("replica", &format!("SELECT count(*) FROM {t}"))
            .is_ok()
            && src.dump("app", t) == dst.dump("replica", t)
    })
}

#[test]
fn snapshot_then_every_kind_of_change_replicates_exactly() {
    let (src, dst) = Cluster::pair();
    src.sql("app", TYPES_DDL);
    src.sql("app", TYPES_ROWS);
    let work = workdir("types");
    let metrics_addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", culvert_tests::cluster::free_port())
            .parse()
            .unwrap();
    let pipeline = culvert_tests::agent::pipeline_toml(
        "types",
        src.port,
        "app",
        dst.port,
        "replica",
        &["public.*", "Sales.*"],
        &work.join("buffer"),
    );
    let mut agent = Agent::run(
        &work,
        &pipeline,
        &["--metrics-addr", &metrics_addr.to_string()],
    );
    agent.wait_until(120, "snapshot to match", || same(&src, &dst));
    assert_same(&src, &dst);

    // Every kind of change, with a rolled-back transaction in the middle.
    src.sql(
        "app",
        r#"
        INSERT INTO all_types (id, t, big) VALUES (300000, 'new', repeat('y', 5000));
        UPDATE all_types SET i4 = 7 WHERE id = 2;              -- big stays unchanged (TOAST)
        UPDATE all_types SET id = 300001 WHERE id = 300000;          -- primary key change
        UPDATE all_types SET t = 'moved', id = 300002 WHERE id = 2; -- key change with unchanged TOAST
        DELETE FROM all_types WHERE id BETWEEN 10 AND 500;
        BEGIN; INSERT INTO all_types (id) VALUES (999999); DELETE FROM all_types WHERE id = 1; ROLLBACK;
        UPDATE no_key SET b = 'one' WHERE ctid = (SELECT ctid FROM no_key WHERE a = 1 LIMIT 1);
        DELETE FROM no_key WHERE a IS NULL;
        INSERT INTO no_key VALUES (3, 'three');
        UPDATE composite_key SET b = 'c' WHERE b = 'b';
        UPDATE with_generated SET qty = 7 WHERE id = 1;
        INSERT INTO with_generated (id, qty, note) VALUES (3, 1, 'one');
        UPDATE measurements SET v = 'edited' WHERE id = 10;
        UPDATE measurements SET at = date '2025-06-01' WHERE id = 20;  -- moves between partitions
        DELETE FROM measurements WHERE id = 30;
        INSERT INTO measurements VALUES (1000, '2025-02-02', 'new');
        TRUNCATE "Sales"."Order Items";
        INSERT INTO "Sales"."Order Items" VALUES (1, 1, 'after truncate');
        UPDATE all_types SET jb = jb || '{"u": true}', n = n * 2 WHERE id % 3 = 0;
        "#,
    );
    agent.wait_until(120, "changes to match", || same(&src, &dst));
    assert_same(&src, &dst);
    assert!(
        agent.exited().is_none(),
        "agent exited early:\n{}",
        agent.log()
    );
    assert_eq!(
        agent.stop(),
        Some(0),
        "graceful stop exits 0:\n{}",
        agent.log()
    );
}

#[test]
fn a_type_that_cannot_be_carried_fails_naming_table_column_and_type() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TYPE pair AS (a int, b text); CREATE TABLE odd (id int PRIMARY KEY, p pair);",
    );
    let (_work, _pipeline, mut agent) = replicate("odd", &src, &dst, &["public.odd"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let code = loop {
        if let Some(code) = agent.exited() {
            break code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent kept running:\n{}",
            agent.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_ne!(code, 0);
    let log = agent.log();
    assert!(
        log.contains("table public.odd, column `p` has type public.pair"),
        "{log}"
    );
    assert!(log.contains("composite types are not supported"), "{log}");
}

/// A transaction whose commit record directly follows another transaction's commit:
/// the WAL end the server reports in between (a keepalive, sent while the first
/// transaction is still open) equals the commit's LSN. The position taken from that
/// keepalive must sort before the transaction, or it is taken as delivered and skipped.
#[test]
fn a_commit_at_the_wal_end_of_a_keepalive_is_not_skipped() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TABLE slow (id int PRIMARY KEY, v text);
         CREATE TABLE unreplicated (id int);
         INSERT INTO slow VALUES (0, 'seed');",
    );
    let (_work, _pipeline, mut agent) = replicate("keepalive", &src, &dst, &["public.slow"]);
    let count = |c: &Cluster, db: &str| c.try_sql(db, "SELECT count(*) FROM slow").ok();
    agent.wait_until(60, "the snapshot", || {
        count(&dst, "replica").as_deref() == Some("1")
    });
    for round in 0..4 {
        std::thread::scope(|s| {
            // Open with its rows written; while it sleeps, a transaction on a table
            // outside the publication commits, the server flushes and decodes it, and,
            // idle, reports that WAL end, which is where this commit then lands.
            s.spawn(|| {
                src.sql(
                    "app",
                    &format!(
                        "BEGIN;
                         INSERT INTO slow SELECT g, 'round {round}' FROM generate_series({a}, {b}) g;
                         SELECT pg_sleep(2.5);
                         COMMIT;",
                        a = round * 1000 + 1,
                        b = round * 1000 + 1000
                    ),
                )
            });
            std::thread::sleep(std::time::Duration::from_millis(700));
            src.sql("app", "INSERT INTO unreplicated VALUES (1)");
        });
    }
    let want = count(&src, "app");
    agent.wait_until(60, "every transaction", || count(&dst, "replica") == want);
    assert_eq!(src.dump("app", "slow"), dst.dump("replica", "slow"));
}

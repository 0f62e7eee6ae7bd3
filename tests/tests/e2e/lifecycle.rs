//! Replication that survives production: idle slots, lost slots and resync, tables
//! added under load, resumable snapshots, source restarts, intact transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use culvert_tests::cluster::free_port;
use culvert_tests::{
    Agent, Cluster, first_difference, http_get, metric, pipeline_in_workdir, resync, wait_until,
};

fn metrics_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Writes small transactions into `table (id int PRIMARY KEY, v text)` until stopped.
/// Also updates an older row without touching its other (possibly large) columns.
fn load(src: &Cluster, table: &str, stop: &AtomicBool, from: i64) -> i64 {
    let mut i = from;
    while !stop.load(Ordering::Relaxed) {
        src.sql(
            "app",
            &format!(
                "BEGIN;
                 INSERT INTO {table} (id, v) VALUES ({i}, 'v{i}') ON CONFLICT (id) DO UPDATE SET v = 'again';
                 UPDATE {table} SET v = 'u{i}' WHERE id = {i} - 5;
                 DELETE FROM {table} WHERE id = {i} - 9;
                 UPDATE {table} SET v = 'p{i}' WHERE id = ({i} * 7919) % 20000;
                 COMMIT;"
            ),
        );
        i += 1;
    }
    i
}

fn lsn(c: &Cluster, sql: &str) -> u64 {
    let text = c.sql("app", sql);
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[test]
fn an_idle_tables_slot_keeps_advancing_while_other_tables_write() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TABLE quiet (id int PRIMARY KEY, v text); INSERT INTO quiet VALUES (1, 'q');
         CREATE TABLE busy (id int PRIMARY KEY, v text);",
    );
    let (work, text) = pipeline_in_workdir(
        "idle",
        &src,
        &dst,
        &["public.quiet"],
        "heartbeat_seconds = 1\nslot_check_seconds = 1\nretained_wal_warn_bytes = 1",
    );
    let addr = metrics_addr();
    let mut agent = Agent::run(&work, &text, &["--metrics-addr", &addr.to_string()]);
    agent.wait_clean(60, "the snapshot", || {
        first_difference(&src, &dst, &["quiet"])
    });
    for round in 0..5 {
        src.sql(
            "app",
            &format!("INSERT INTO busy SELECT g, repeat('x', 200) FROM generate_series({0} * 20000, {0} * 20000 + 19999) g", round),
        );
    }
    let written = lsn(&src, "SELECT pg_current_wal_lsn()");
    agent.wait_until(60, "the idle slot to confirm past the other tables' writes", || {
        lsn(
            &src,
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'culvert_idle'",
        ) >= written
    });
    let body = http_get(addr, "/metrics").unwrap();
    assert!(
        metric(
            &body,
            "culvert_connector_gauge",
            &["slot_retained_wal_bytes"]
        )
        .is_some(),
        "retained WAL is reported:\n{body}"
    );
    assert!(metric(&body, "culvert_connector_gauge", &["slot_active"]) == Some(1.0));
    assert!(
        agent.log().contains("retains"),
        "the warning bound is reported"
    );
}

#[test]
fn an_invalidated_slot_is_reported_and_resync_rebuilds_an_exact_replica() {
    let src = Cluster::start(&["max_slot_wal_keep_size=1MB", "wal_keep_size=0"]);
    let dst = Cluster::start(&[]);
    src.create_db("app");
    dst.create_db("replica");
    src.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5000) g;
         CREATE TABLE k (a int, b text); ALTER TABLE k REPLICA IDENTITY FULL;
         INSERT INTO k SELECT g % 10, 'k' FROM generate_series(1, 100) g;",
    );
    let (work, text) = pipeline_in_workdir("lost", &src, &dst, &["public.*"], "");
    let mut agent = Agent::run(&work, &text, &[]);
    agent.wait_clean(60, "the snapshot", || {
        first_difference(&src, &dst, &["t", "k"])
    });
    agent.kill9();
    // Changes the slot will never deliver: inserts, updates and deletes.
    src.sql(
        "app",
        "DELETE FROM t WHERE id % 4 = 0; UPDATE t SET v = 'gap' WHERE id % 4 = 1;
         INSERT INTO t SELECT g, 'new' FROM generate_series(10001, 12000) g;
         DELETE FROM k WHERE a = 3;",
    );
    for _ in 0..4 {
        src.sql(
            "app",
            "CREATE TABLE IF NOT EXISTS filler (x text);
             INSERT INTO filler SELECT repeat('f', 500) FROM generate_series(1, 20000);
             SELECT pg_switch_wal(); CHECKPOINT;",
        );
    }
    assert_eq!(
        src.sql(
            "app",
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'culvert_lost'"
        ),
        "lost"
    );
    let mut agent = Agent::run(&work, &text, &[]);
    wait_until(60, "the agent to stop on the lost slot", || {
        agent.exited().is_some()
    });
    assert_ne!(agent.exited(), Some(0));
    let log = agent.log();
    assert!(
        log.contains("invalidated") && log.contains("resync"),
        "the error says what happened and what to do:\n{log}"
    );
    let (ok, out) = resync(&work, &[]);
    assert!(ok, "resync failed: {out}");
    assert!(out.contains("rebuilt"), "{out}");
    src.sql("app", "UPDATE t SET v = 'after resync' WHERE id < 100");
    let mut agent = Agent::run(&work, &text, &[]);
    agent.wait_clean(120, "an exact replica after resync", || {
        first_difference(&src, &dst, &["t", "k"])
    });
}

#[test]
fn a_table_added_while_a_write_load_runs_is_copied_exactly() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text, big text);
         INSERT INTO b SELECT g, 'b' || g,
                CASE WHEN g % 10 = 0 THEN (SELECT string_agg(md5(g::text || s::text), '') FROM generate_series(1, 100) s) END
           FROM generate_series(1, 20000) g;",
    );
    let (work, text) = pipeline_in_workdir(
        "addtable",
        &src,
        &dst,
        &["public.a"],
        "backfill_chunk_pages = 64",
    );
    let mut agent = Agent::run(&work, &text, &[]);
    agent.wait_clean(60, "the first table", || {
        first_difference(&src, &dst, &["a"])
    });
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let la = s.spawn(|| load(&src, "a", &stop, 1));
        let lb = s.spawn(|| load(&src, "b", &stop, 100_000));
        std::thread::sleep(std::time::Duration::from_secs(1));
        // The operator adds the table to the running pipeline.
        agent.stop();
        let text = text.replace(
            "tables = [\"public.a\"]",
            "tables = [\"public.a\", \"public.b\"]",
        );
        agent = Agent::run(&work, &text, &[]);
        agent.wait_until(60, "the copy of b to start", || {
            agent_log_has(&work, "copying public.b")
        });
        std::thread::sleep(std::time::Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        la.join().unwrap();
        lb.join().unwrap();
    });
    agent.wait_clean(120, "both tables exact", || {
        first_difference(&src, &dst, &["a", "b"])
    });
}

fn agent_log_has(work: &std::path::Path, text: &str) -> bool {
    std::fs::read_dir(work).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("agent-")
            && std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains(text)
    })
}

#[test]
fn a_crash_mid_snapshot_resumes_after_the_finished_ranges() {
    let (src, dst) = Cluster::pair();
    let rows = 300_000u64;
    src.sql(
        "app",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, v text, pad text);
             INSERT INTO big SELECT g, md5(g::text), repeat('p', 100) FROM generate_series(1, {rows}) g;"
        ),
    );
    let (work, text) = pipeline_in_workdir(
        "resume",
        &src,
        &dst,
        &["public.big"],
        "snapshot_range_pages = 256\nsnapshot_workers = 2",
    );
    let mut agent = Agent::run(&work, &text, &[]);
    agent.wait_until(120, "part of the snapshot", || {
        dst.try_sql("replica", "SELECT count(*) FROM big")
            .map(|n| n.parse::<u64>().unwrap_or(0) > rows / 3)
            .unwrap_or(false)
    });
    agent.kill9();
    let copied: u64 = dst
        .sql("replica", "SELECT count(*) FROM big")
        .parse()
        .unwrap();
    assert!(
        copied < rows,
        "the kill lands mid-snapshot ({copied} copied)"
    );
    src.sql(
        "app",
        "UPDATE big SET v = 'during the outage' WHERE id % 1000 = 0",
    );
    let addr = metrics_addr();
    let mut agent = Agent::run(&work, &text, &["--metrics-addr", &addr.to_string()]);
    agent.wait_clean(120, "the resumed snapshot", || {
        first_difference(&src, &dst, &["big"])
    });
    let body = http_get(addr, "/metrics").unwrap();
    let recopied = metric(&body, "culvert_rows_total", &["stage=\"source\""]).unwrap();
    assert!(
        recopied < rows as f64 * 0.9,
        "only the unfinished ranges are copied again: {recopied} of {rows} rows"
    );
    assert!(agent.log().contains("resuming an interrupted snapshot"));
}

#[test]
fn a_source_restart_under_load_is_ridden_out() {
    let (src, dst) = Cluster::pair();
    src.sql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let (work, text) = pipeline_in_workdir("srcrestart", &src, &dst, &["public.t"], "");
    let addr = metrics_addr();
    let mut agent = Agent::run(&work, &text, &["--metrics-addr", &addr.to_string()]);
    agent.wait_clean(60, "the snapshot", || first_difference(&src, &dst, &["t"]));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let l = s.spawn(|| {
            let mut i = 1;
            while !stop.load(Ordering::Relaxed) {
                // Writes fail while the server is down; the load just retries.
                let _ = src.try_sql(
                    "app",
                    &format!(
                        "INSERT INTO t VALUES ({i}, 'v') ON CONFLICT (id) DO UPDATE SET v = 'again'"
                    ),
                );
                i += 1;
            }
        });
        std::thread::sleep(std::time::Duration::from_secs(2));
        src.stop();
        std::thread::sleep(std::time::Duration::from_secs(2));
        src.restart();
        std::thread::sleep(std::time::Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        l.join().unwrap();
    });
    agent.wait_clean(120, "the replica after the restart", || {
        first_difference(&src, &dst, &["t"])
    });
    let body = http_get(addr, "/metrics").unwrap();
    let resumed = metric(&body, "culvert_source_resume_seconds", &[]).unwrap_or(-1.0);
    assert!(resumed > 0.0, "time to resume is reported:\n{body}");
    assert!(agent.exited().is_none());
}

#[test]
fn a_transaction_larger_than_a_batch_becomes_visible_at_once() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (0, 'seed')",
    );
    let (work, text) = pipeline_in_workdir("bigtxn", &src, &dst, &["public.t"], "");
    let mut agent = Agent::run(&work, &text, &[]);
    agent.wait_clean(60, "the snapshot", || first_difference(&src, &dst, &["t"]));
    // 60k rows in one transaction, against batches of 5k rows.
    src.sql(
        "app",
        "BEGIN; INSERT INTO t SELECT g, 'big' FROM generate_series(1, 60000) g;
         UPDATE t SET v = 'seen' WHERE id = 0; COMMIT;",
    );
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let n: u64 = dst
            .sql("replica", "SELECT count(*) FROM t")
            .parse()
            .unwrap();
        seen.insert(n);
        if n == 60001 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![1, 60001],
        "readers see the transaction all or nothing"
    );
    assert_eq!(
        dst.sql("replica", "SELECT count(*) FROM _culvert.pending"),
        "0"
    );
    agent.wait_clean(30, "exact", || first_difference(&src, &dst, &["t"]));
}

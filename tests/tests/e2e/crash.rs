//! `kill -9` of the agent during the snapshot and during the change stream, then a
//! restart: the replica ends exactly equal to the source, nothing lost, nothing doubled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use culvert_tests::{Agent, Cluster, replicate};

const TABLES: &[&str] = &["big", "log_no_key", "counters"];

fn setup(rows: u32) -> (Cluster, Cluster) {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        &format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, v text, n numeric, j jsonb);
             INSERT INTO big SELECT g, md5(g::text), g / 3.0, jsonb_build_object('g', g, 's', repeat('x', 100)) FROM generate_series(1, {rows}) g;
             CREATE TABLE log_no_key (k int, msg text);
             ALTER TABLE log_no_key REPLICA IDENTITY FULL;
             INSERT INTO log_no_key SELECT g % 10, 'seed' FROM generate_series(1, 100) g;
             CREATE TABLE counters (id int PRIMARY KEY, c bigint);
             INSERT INTO counters SELECT g, 0 FROM generate_series(1, 50) g;"
        ),
    );
    (src, dst)
}

/// What differs between source and replica, or `None` when they are equal.
fn differences(src: &Cluster, dst: &Cluster) -> Option<String> {
    let mut out = Vec::new();
    for t in TABLES {
        if dst
            .try_sql("replica", &format!("SELECT 1 FROM {t} LIMIT 1"))
            .is_err()
        {
            out.push(format!("{t}: not in the replica yet"));
            continue;
        }
        let (a, b) = (src.dump("app", t), dst.dump("replica", t));
        if a == b {
            continue;
        }
        // Multisets: log_no_key holds identical rows on purpose.
        let mut count = std::collections::BTreeMap::<&str, i64>::new();
        a.lines().for_each(|l| *count.entry(l).or_default() += 1);
        b.lines().for_each(|l| *count.entry(l).or_default() -= 1);
        let missing: Vec<_> = count.iter().filter(|(_, n)| **n > 0).collect();
        let extra: Vec<_> = count.iter().filter(|(_, n)| **n < 0).collect();
        out.push(format!(
            "{t}: source {} rows, replica {} rows; missing {} (e.g. {:?}), extra {} (e.g. {:?})",
            a.lines().count(),
            b.lines().count(),
            missing.len(),
            &missing[..missing.len().min(5)],
            extra.len(),
            &extra[..extra.len().min(5)],
        ));
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

fn same(src: &Cluster, dst: &Cluster) -> bool {
    differences(src, dst).is_none()
}

fn assert_same(src: &Cluster, dst: &Cluster) {
    if let Some(d) = differences(src, dst) {
        panic!("replica differs from the source:\n{d}");
    }
}

/// Writes transactions of inserts, updates and deletes until stopped.
fn write_load(src: &Cluster, stop: Arc<AtomicBool>, first: u32, max_iterations: u32) -> u32 {
    let mut i = first;
    while !stop.load(Ordering::Relaxed) && i < first + max_iterations {
        i += 1;
        src.sql(
            "app",
            &format!(
                "BEGIN;
                 INSERT INTO log_no_key VALUES ({k}, 'txn {i}'), ({k}, 'txn {i}');
                 UPDATE counters SET c = c + 1 WHERE id = {c};
                 UPDATE big SET v = 'changed {i}' WHERE id = {i} * 7;
                 DELETE FROM big WHERE id = {i} * 11;
                 INSERT INTO big VALUES (1000000 + {i}, 'new', {i}, NULL);
                 DELETE FROM log_no_key WHERE ctid = (SELECT ctid FROM log_no_key WHERE k = {k} LIMIT 1);
                 COMMIT;",
                k = i % 10,
                c = i % 50 + 1
            ),
        );
    }
    i - first
}

#[test]
fn kill_during_snapshot_then_restart_is_exact() {
    let (src, dst) = setup(400_000);
    let (work, pipeline, mut agent) = replicate("crashsnap", &src, &dst, &["public.*"]);
    agent.wait_until(120, "the snapshot to start landing", || {
        dst.try_sql("replica", "SELECT count(*) FROM big")
            .map(|n| n.parse::<u64>().unwrap_or(0) > 0)
            .unwrap_or(false)
    });
    let copied: u64 = dst
        .sql("replica", "SELECT count(*) FROM big")
        .parse()
        .unwrap();
    agent.kill9();
    assert!(
        copied < 400_000,
        "the kill should land mid-snapshot (copied {copied})"
    );
    src.sql(
        "app",
        "INSERT INTO big VALUES (2000000, 'written while the agent was down', 1, NULL)",
    );
    let mut agent = Agent::run(&work, &pipeline, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !same(&src, &dst) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    agent.kill9();
    assert_same(&src, &dst);
}

#[test]
fn kill_during_changes_then_restart_loses_and_doubles_nothing() {
    let (src, dst) = setup(20_000);
    let (work, pipeline, mut agent) = replicate("crashcdc", &src, &dst, &["public.*"]);
    agent.wait_until(120, "the snapshot", || same(&src, &dst));
    std::thread::scope(|s| {
        let stop = Arc::new(AtomicBool::new(false));
        let load = s.spawn({
            let stop = stop.clone();
            let src = &src;
            move || write_load(src, stop, 0, 400)
        });
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            agent.kill9();
            std::thread::sleep(std::time::Duration::from_millis(300));
            agent = Agent::run(&work, &pipeline, &[]);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(load.join().unwrap() > 10, "the load ran");
    });
    agent.wait_until(180, "the replica to catch up", || same(&src, &dst));
    assert_same(&src, &dst);
}

#[test]
fn target_and_source_outages_are_ridden_out() {
    let (src, dst) = setup(5_000);
    let (_work, _pipeline, mut agent) = replicate("outage", &src, &dst, &["public.*"]);
    agent.wait_until(120, "the snapshot", || same(&src, &dst));

    // Target down: the source keeps reading into the buffer; the target catches up later.
    dst.stop();
    write_load(&src, Arc::new(AtomicBool::new(false)), 0, 40);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        agent.exited().is_none(),
        "agent must wait for the target:\n{}",
        agent.log()
    );
    dst.restart();
    agent.wait_until(120, "the target to catch up after its outage", || {
        same(&src, &dst)
    });

    // Source restarted: the agent reconnects and resumes from its slot.
    src.stop();
    std::thread::sleep(std::time::Duration::from_secs(2));
    src.restart();
    write_load(&src, Arc::new(AtomicBool::new(false)), 1000, 40);
    agent.wait_until(
        120,
        "the replica to catch up after the source restart",
        || same(&src, &dst),
    );
    assert_same(&src, &dst);
    assert!(
        agent.log().contains("reconnecting"),
        "the outage was noticed:\n{}",
        agent.log()
    );
}

/// A deterministic sequence of pseudo-random kill delays (no extra dependency needed).
fn delays(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            200 + x % 2500
        })
        .collect()
}

#[test]
fn kills_at_random_points_from_snapshot_through_changes_end_exact() {
    let (src, dst) = setup(150_000);
    let (work, pipeline, mut agent) = replicate("randomkill", &src, &dst, &["public.*"]);
    // CULVERT_KILL_SEED replays the kill delays of an earlier run.
    let seed = std::env::var("CULVERT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill delays seed {seed} (CULVERT_KILL_SEED replays it)");
    std::thread::scope(|s| {
        let stop = Arc::new(AtomicBool::new(false));
        let load = s.spawn({
            let stop = stop.clone();
            let src = &src;
            move || write_load(src, stop, 5000, 600)
        });
        for ms in delays(seed, 8) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            agent.kill9();
            agent = Agent::run(&work, &pipeline, &[]);
        }
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap();
    });
    agent.wait_clean(240, "the replica to converge after random kills", || {
        differences(&src, &dst)
    });
    assert_same(&src, &dst);
}

#[test]
fn kill_inside_a_large_transaction_resumes_at_the_right_change() {
    let (src, dst) = setup(100_000);
    let (work, pipeline, mut agent) = replicate("bigtxn", &src, &dst, &["public.*"]);
    agent.wait_until(120, "the snapshot", || same(&src, &dst));
    assert_eq!(agent.stop(), Some(0));
    // One transaction far larger than a batch (batch_rows = 5000 in the test pipeline).
    src.sql(
        "app",
        "BEGIN;
         UPDATE big SET v = v || '!', n = n + 1;
         INSERT INTO big SELECT g, 'bulk', g, NULL FROM generate_series(3000000, 3100000) g;
         DELETE FROM big WHERE id % 5 = 0;
         INSERT INTO log_no_key SELECT g % 3, 'bulk' FROM generate_series(1, 20000) g;
         COMMIT;",
    );
    for ms in [1200, 900, 1500] {
        agent = Agent::run(&work, &pipeline, &[]);
        std::thread::sleep(std::time::Duration::from_millis(ms));
        agent.kill9();
    }
    let mut agent = Agent::run(&work, &pipeline, &[]);
    agent.wait_until(240, "the large transaction to land exactly once", || {
        same(&src, &dst)
    });
    assert_same(&src, &dst);
}

#[test]
fn a_row_written_into_the_target_behind_culverts_back_is_overwritten_not_fatal() {
    let (src, dst) = setup(1_000);
    let (_work, _pipeline, mut agent) = replicate("drift", &src, &dst, &["public.*"]);
    agent.wait_until(120, "the snapshot", || same(&src, &dst));
    dst.sql(
        "replica",
        "INSERT INTO big VALUES (5000000, 'stale target row', 0, NULL)",
    );
    src.sql(
        "app",
        "INSERT INTO big VALUES (5000000, 'source row', 1, '{}'), (5000001, 'another', 2, NULL)",
    );
    agent.wait_until(120, "the source's row to win", || same(&src, &dst));
    assert_same(&src, &dst);
}

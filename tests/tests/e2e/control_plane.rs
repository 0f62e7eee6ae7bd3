//! From `culvert` CLI commands to rows in the target: the local stack (control store,
//! Azurite, the Functions runtime, the handler, the local compute provider), an
//! environment, two connectors with a sealed password, a pipeline deployed to an agent.

use std::time::{Duration, Instant};

use culvert_tests::stack::Stack;
use culvert_tests::{Cluster, difference, wait_until, workdir};

const SECRET: &str = "pw-9f3c2a7e-never-in-a-log";

fn count(c: &Cluster, db: &str, table: &str) -> i64 {
    c.try_sql(db, &format!("select count(*) from {table}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn cli_to_rows_in_the_target() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "create table orders (id bigint primary key, note text, amount numeric(12,2));
         insert into orders select g, 'n' || g, g * 1.5 from generate_series(1, 20000) g;",
    );
    let state = workdir("control-plane");
    let mut stack = Stack::up(&state);

    // Environment: local compute starts an agent, which registers.
    let env = stack.local_env("demo");
    assert_eq!(env["provider"], "local");
    let agents = stack.json(&["agent", "list"]);
    assert_eq!(
        agents["items"].as_array().map(Vec::len),
        Some(1),
        "{agents}"
    );

    // Connectors; the password comes from the environment and is sealed for the agent.
    for (name, ty, c, db) in [
        ("src", "postgres-source", &src, "app"),
        ("dst", "postgres-target", &dst, "replica"),
    ] {
        let r = stack.create_connector(name, ty, c, db, SECRET);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stdout.contains(SECRET));
    }
    let bad = stack.culvert(&[
        "connector",
        "create",
        "x",
        "--env",
        "demo",
        "--type",
        "postgres-source",
        "--set",
        "port=99999",
    ]);
    assert_eq!(bad.code, 5, "invalid input exits 5: {}", bad.stderr);
    assert!(bad.stderr.contains("/config/"), "{}", bad.stderr);
    assert_eq!(
        stack.culvert(&["connector", "get", "nope"]).code,
        3,
        "not found exits 3"
    );

    // Validation runs on the agent.
    let r = stack.culvert(&["connector", "validate", "src", "--wait", "--timeout", "120"]);
    assert_eq!(r.code, 0, "validation failed: {}\n{}", r.stdout, r.stderr);

    // The pipeline: created, deployed, leased to the agent, snapshot then changes.
    let r = stack.culvert(&[
        "pipeline", "create", "orders", "--source", "src", "--target", "dst", "--tables",
        "public.*",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = stack.culvert(&["pipeline", "deploy", "orders"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let started = Instant::now();
    wait_until(180, "the snapshot to arrive", || {
        count(&dst, "replica", "orders") == 20000
    });
    eprintln!(
        "snapshot through the control plane in {:?}",
        started.elapsed()
    );
    src.sql(
        "app",
        "update orders set note = 'changed' where id % 10 = 0; delete from orders where id % 7 = 0;
         insert into orders values (30001, 'new', 1);",
    );
    wait_until(60, "the changes to arrive", || {
        difference(&src, &dst, "orders").is_none()
    });
    // Status is what the agent's last heartbeat reported.
    let mut status = serde_json::Value::Null;
    wait_until(30, "the status to show streaming", || {
        status = stack.json(&["pipeline", "status", "orders"]);
        status["phase"] == "streaming"
            && status["progress"]["rows_applied"].as_u64().unwrap_or(0) >= 20000
    });
    assert!(status["agent_id"].is_string(), "{status}");

    // Pause stops the flow; resume picks up where it stopped.
    assert_eq!(stack.culvert(&["pipeline", "pause", "orders"]).code, 0);
    wait_until(60, "the pipeline to stop", || {
        stack.json(&["pipeline", "status", "orders"])["phase"] == "paused"
    });
    std::thread::sleep(Duration::from_secs(3));
    src.sql(
        "app",
        "insert into orders values (30002, 'while paused', 2)",
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        count(&dst, "replica", "orders where id = 30002"),
        0,
        "a paused pipeline wrote"
    );
    assert_eq!(stack.culvert(&["pipeline", "resume", "orders"]).code, 0);
    wait_until(90, "the row written while paused", || {
        difference(&src, &dst, "orders").is_none()
    });

    // An agent killed mid-stream is restarted by local compute and resumes exactly.
    let pids = std::process::Command::new("pgrep")
        .args(["-f", &format!("culvert-agent agent .*{}", state.display())])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).to_string();
    assert!(!pids.trim().is_empty(), "no agent process found");
    src.sql(
        "app",
        "insert into orders select g, 'burst', 1 from generate_series(40000, 45000) g",
    );
    for pid in pids.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    src.sql(
        "app",
        "update orders set amount = amount + 1 where id between 40000 and 41000",
    );
    wait_until(120, "replication after the agent was killed", || {
        difference(&src, &dst, "orders").is_none()
    });

    // More agents, then fewer: the pipeline moves off a retiring agent without loss.
    assert_eq!(stack.culvert(&["env", "scale", "demo", "2"]).code, 0);
    wait_until(60, "two healthy agents", || {
        let a = stack.json(&["agent", "list"]);
        a["items"]
            .as_array()
            .is_some_and(|items| items.iter().filter(|i| i["health"] == "healthy").count() == 2)
    });
    assert_eq!(stack.culvert(&["env", "scale", "demo", "1"]).code, 0);
    src.sql(
        "app",
        "insert into orders select g, 'after scale', 2 from generate_series(50000, 51000) g",
    );
    wait_until(120, "replication after scaling down", || {
        difference(&src, &dst, "orders").is_none()
            && stack.json(&["pipeline", "status", "orders"])["phase"] == "streaming"
    });

    // `local down` loses nothing: after `up` the pipeline runs again from where it was.
    stack.restart();
    src.sql(
        "app",
        "insert into orders values (30003, 'after restart', 3)",
    );
    wait_until(180, "replication after the stack restarted", || {
        difference(&src, &dst, "orders").is_none()
    });

    // The password never reached a log.
    assert!(
        !stack.logs().contains(SECRET),
        "the password appears in a log"
    );
    stack.down();
}

//! A connector from the registry, end to end on the local stack: signing keys, `culvert
//! connector publish` (through the local Functions runtime), a connector pinned to the
//! version, and an agent that fetches the component by digest, verifies it, and fetches it
//! again when the cached file was altered.

use std::time::Duration;

use culvert_tests::stack::Stack;
use culvert_tests::{Cluster, difference, wait_until, workdir};

const SECRET: &str = "pw-registry-5d1e-never-in-a-log";

#[test]
fn a_registered_connector_runs_from_its_verified_component() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        "create table items (id bigint primary key, note text);
         insert into items select g, 'n' || g from generate_series(1, 3000) g;",
    );
    let state = workdir("registry");
    let stack = Stack::up(&state);
    let env = stack.local_env("demo");
    let env_id = env["id"].as_str().unwrap().to_string();

    // A signing key: from now on only signed versions are accepted.
    let key = state.join("release.key");
    let r = stack.culvert(&["connector", "keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let public = r.stdout.trim().to_string();
    let pub_file = state.join("release.key.pub");
    let r = stack.culvert(&[
        "signing-key",
        "add",
        "release",
        "--public-key",
        pub_file.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let keys = stack.json(&["signing-key", "list"]);
    assert_eq!(keys[0]["public_key"], public.as_str(), "{keys}");

    // The first-party target component, published as a registered type.
    let component = std::path::Path::new(culvert_agent_host::connectors::build_dir())
        .join("postgres_target.wasm");
    let bytes = std::fs::read(&component).unwrap();
    let publish = |extra: &[&str]| {
        let mut args = vec![
            "--output",
            "json",
            "connector",
            "publish",
            component.to_str().unwrap(),
            "--name",
            "pg-replica",
            "--version",
            "1.0.0",
            "--memory-mib",
            "256",
            "--description",
            "the PostgreSQL target, from the registry",
        ];
        args.extend_from_slice(extra);
        stack.culvert(&args)
    };
    let r = publish(&[]);
    assert_eq!(r.code, 6, "an unsigned version is refused: {}", r.stderr);
    assert!(r.stderr.contains("--sign-key"), "{}", r.stderr);
    let r = publish(&["--sign-key", key.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let version = r.json();
    assert_eq!(version["kind"], "target", "{version}");
    assert_eq!(version["signed_by"], "release");
    assert_eq!(version["size"], bytes.len() as u64);
    let digest = version["digest"].as_str().unwrap().to_string();
    let r = publish(&["--sign-key", key.to_str().unwrap()]);
    assert_eq!(
        r.code, 0,
        "publishing the same version again is a no-op: {}",
        r.stderr
    );
    let t = stack.json(&["connector", "versions", "pg-replica"]);
    assert_eq!(t["latest_version"], "1.0.0", "{t}");

    // A pipeline whose target runs the pinned version.
    let r = stack.create_connector("src", "postgres-source", &src, "app", SECRET);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = stack.create_connector("dst", "pg-replica@1.0.0", &dst, "replica", SECRET);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = stack.json(&["connector", "get", "dst"]);
    assert_eq!(
        (c["type_version"].as_str(), c["digest"].as_str()),
        (Some("1.0.0"), Some(digest.as_str())),
        "{c}"
    );
    let r = stack.culvert(&[
        "pipeline", "create", "items", "--source", "src", "--target", "dst", "--tables", "public.*",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(stack.culvert(&["pipeline", "deploy", "items"]).code, 0);
    wait_until(180, "the snapshot through the registered target", || {
        difference(&src, &dst, "items").is_none()
    });
    let status = stack.json(&["pipeline", "status", "items"]);
    assert_eq!(
        status["connectors"]["target"]["type_version"], "1.0.0",
        "{status}"
    );
    assert_eq!(status["connectors"]["target"]["digest"], digest.as_str());

    // The agent keeps the verified bytes by digest; altered bytes are fetched again.
    let cached = state
        .join("agents")
        .join(&env_id)
        .join("0")
        .join("components")
        .join(format!("{digest}.wasm"));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        bytes,
        "{}",
        cached.display()
    );
    assert_eq!(stack.culvert(&["pipeline", "pause", "items"]).code, 0);
    wait_until(60, "the pipeline to stop", || {
        stack.json(&["pipeline", "status", "items"])["phase"] == "paused"
    });
    std::fs::write(&cached, b"altered on disk").unwrap();
    assert_eq!(stack.culvert(&["pipeline", "resume", "items"]).code, 0);
    src.sql(
        "app",
        "insert into items values (9001, 'after the cache was altered')",
    );
    wait_until(120, "replication with the component fetched again", || {
        difference(&src, &dst, "items").is_none()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        bytes,
        "the altered file was replaced"
    );
    assert!(
        !stack.logs().contains(SECRET),
        "the password appears in a log"
    );
}

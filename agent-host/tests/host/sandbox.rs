//! Misbehaving connectors are stopped with a clear error and the host stays healthy.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use culvert_agent_host::config::PipelineConfig;
use culvert_agent_host::connectors;
use culvert_agent_host::engine::ConnectorEngine;
use culvert_agent_host::metrics::Metrics;
use culvert_agent_host::pipeline::Sides;

fn sides(source_settings: &str) -> Arc<Sides> {
    let wasm = format!("{}/test_misbehave.wasm", connectors::build_dir());
    let cfg = PipelineConfig::parse(&format!(
        r#"
name = "sandbox"
[source]
connector = "{wasm}"
{source_settings}
[source.limits]
memory_mib = 64
cpu_seconds_per_call = 2
call_timeout_seconds = 30
[target]
connector = "postgres-target"
host = "127.0.0.1"
user = "postgres"
database = "x"
[buffer]
url = "file:///tmp/culvert-sandbox-test"
"#
    ))
    .unwrap();
    let cache = std::env::temp_dir().join("culvert-test-cache");
    Arc::new(Sides::load(cfg, ConnectorEngine::new(&cache).unwrap(), Metrics::new()).unwrap())
}

fn open_error(settings: &str) -> String {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sides = sides(settings);
    match rt.block_on(sides.open_source(None)) {
        Ok(_) => panic!("misbehaving connector opened successfully"),
        Err(e) => e.message,
    }
}

#[test]
fn infinite_loop_hits_the_cpu_limit() {
    let started = Instant::now();
    let e = open_error(r#"mode = "spin""#);
    assert!(e.contains("exceeded its CPU limit of 2 s"), "{e}");
    assert!(
        e.contains("test_misbehave.wasm"),
        "names the connector: {e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped promptly"
    );
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let e = open_error(r#"mode = "memory""#);
    assert!(e.contains("exceeded its memory limit of 64 MiB"), "{e}");
}

#[test]
fn connection_outside_the_allow_list_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    // The configuration allows 127.0.0.1 on another port only.
    let e = open_error(&format!(
        "mode = \"connect\"\ntarget = \"{addr}\"\nhost = \"127.0.0.1\"\nport = {}",
        addr.port() + 1
    ));
    assert!(e.contains(&format!("connect to {addr} refused")), "{e}");
    let mut buf = [0u8; 4];
    match listener.accept() {
        Ok((mut s, _)) => panic!("guest reached the listener: read {:?}", s.read(&mut buf)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}

#[test]
fn host_files_are_invisible() {
    let e = open_error(
        r#"mode = "read-file"
path = "/etc/hostname""#,
    );
    assert!(e.contains("reading /etc/hostname failed"), "{e}");
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert!(
        host.trim().is_empty() || !e.contains(host.trim()),
        "file content leaked: {e}"
    );
}

#[test]
fn the_host_keeps_working_after_a_trap() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let spin = sides(r#"mode = "spin""#);
    assert!(rt.block_on(spin.open_source(None)).is_err());
    // A well-behaved call on a fresh instance of the same engine still works.
    let e = open_error(r#"mode = "unknown""#);
    assert!(e.contains("unknown mode unknown"), "{e}");
}

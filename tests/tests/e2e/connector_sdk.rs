//! Third-party connectors end to end: a project from each template (`culvert connector new`)
//! builds with its own `build.sh`, passes the conformance kit and replicates through the real
//! agent; the example connectors pass the kit and run from the control plane's registry.

use std::path::Path;

use culvert_tests::azurite::Azurite;
use culvert_tests::connectors::{assert_kit_passes, build, kit, scaffold};
use culvert_tests::{Agent, workdir};
use serde_json::{Value, json};

/// Rows of every NDJSON batch summary a template destination wrote under `prefix`.
fn summarized_rows(azurite: &Azurite, container: &str, prefix: &str) -> u64 {
    azurite
        .list(container, prefix)
        .iter()
        .filter(|n| n.ends_with(".ndjson"))
        .map(|n| {
            let body = azurite.get(container, n).unwrap_or_default();
            String::from_utf8_lossy(&body)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let v: Value = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("{n}: line {l:?} is not JSON: {e}"));
                    v["rows"].as_u64().unwrap_or(0)
                })
                .sum::<u64>()
        })
        .sum()
}

fn committed(azurite: &Azurite, container: &str, blob: &str) -> Option<String> {
    azurite
        .get(container, blob)
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// Both templates of `lang`: scaffold, build, kit, then source -> destination through the agent.
fn templates_of(lang: &str) {
    let work = workdir(&format!("templates-{lang}"));
    let azurite = Azurite::start(&work.join("azurite"));
    azurite.create_container("sink");
    let (src_name, dst_name) = (format!("{lang}-tpl-source"), format!("{lang}-tpl-sink"));
    let src = scaffold(&work, &src_name, lang, "source");
    let dst = scaffold(&work, &dst_name, lang, "destination");
    let src_wasm = build(&src, &src_name);
    let dst_wasm = build(&dst, &dst_name);

    let report = assert_kit_passes(
        &src_wasm,
        &json!({"rows": 4500, "batch_rows": 700}),
        &["--max-rows", "1000"],
    );
    assert!(report.contains("PASS  resume"), "{report}");
    let sink = json!({
        "container_url": azurite.container_url("sink"),
        "sas": azurite.sas(),
        "prefix": "kit/",
    });
    let report = assert_kit_passes(&dst_wasm, &sink, &[]);
    assert!(report.contains("PASS  crash-recovery"), "{report}");

    // A destination whose SAS is refused fails `check` with a message, not a trap.
    let refused = kit(
        &dst_wasm,
        &json!({"container_url": azurite.container_url("sink"), "sas": "sv=2021-12-02&sig=bad"}),
        &[],
    );
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("FAIL  check "),
        "{}",
        refused.stdout
    );

    let pipeline = format!("{lang}-tpl");
    let rows = 20_000u64;
    let text = format!(
        r#"name = "{pipeline}"
batch_rows = 1000

[source]
connector = "{src}"
rows = {rows}

[target]
connector = "{dst}"
container_url = "{url}"
sas = "{sas}"
prefix = "run/"

[buffer]
url = "file://{buffer}"
"#,
        src = src_wasm.display(),
        dst = dst_wasm.display(),
        url = azurite.container_url("sink"),
        sas = azurite.sas(),
        buffer = work.join("buffer").display(),
    );
    let mut agent = Agent::run(&work, &text, &[]);
    let last = hex(rows);
    let pointer = format!("run/{pipeline}/_committed");
    agent.wait_until(300, "the destination to commit the last row", || {
        committed(&azurite, "sink", &pointer).as_deref() == Some(last.as_str())
    });
    assert_eq!(
        summarized_rows(&azurite, "sink", &format!("run/{pipeline}/")),
        rows
    );
    // Restarted from the committed position, nothing more is written and nothing is lost.
    agent.kill9();
    let mut again = Agent::run(&work, &text, &[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(again.exited().is_none(), "{}", again.log());
    assert_eq!(
        summarized_rows(&azurite, "sink", &format!("run/{pipeline}/")),
        rows
    );
}

fn hex(n: u64) -> String {
    n.to_be_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn rust_templates_build_pass_the_kit_and_replicate() {
    templates_of("rust");
}

#[test]
fn python_templates_build_pass_the_kit_and_replicate() {
    templates_of("python");
}

#[test]
fn js_templates_build_pass_the_kit_and_replicate() {
    templates_of("js");
}

/// The example API server (`test_server.py`) on a free port; killed on drop.
struct TestApi {
    child: std::process::Child,
    url: String,
}

impl TestApi {
    fn start(script: &Path, token: &str, items: u32) -> TestApi {
        let port = culvert_tests::cluster::free_port();
        let child = std::process::Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--token", token])
            .args([
                "--resources",
                "orders,customers",
                "--items",
                &items.to_string(),
            ])
            .spawn()
            .expect("start test_server.py");
        culvert_tests::wait_until(30, "the test API to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        TestApi {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn post(&self, resource: &str, token: &str, body: &Value) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/{resource}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .expect("post to the test API");
        assert!(r.status().is_success(), "{}", r.status());
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every NDJSON line the example destination wrote under `prefix`, with its blob name.
fn ndjson_lines(azurite: &Azurite, container: &str, prefix: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for name in azurite.list(container, prefix) {
        if !name.ends_with(".ndjson") {
            continue;
        }
        let body = azurite.get(container, &name).unwrap_or_default();
        for line in String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: {line:?} is not JSON: {e}"));
            out.push((name.clone(), v));
        }
    }
    out
}

/// Distinct `row.id`s written for tables whose blob path names `resource`.
fn ids_of(lines: &[(String, Value)], resource: &str) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .filter(|(name, _)| name.contains(resource))
        .filter_map(|(_, v)| {
            let id = &v["row"]["id"];
            id.as_str()
                .map(str::to_string)
                .or_else(|| id.as_i64().map(|n| n.to_string()))
        })
        .collect()
}

#[test]
fn examples_pass_the_kit_and_run_from_the_registry() {
    let work = workdir("connector-examples");
    let examples = culvert_tests::connectors::repo_root().join("examples/connectors");
    let datagen = build(&examples.join("datagen-source"), "datagen-source");
    let http = build(&examples.join("http-json-source"), "http-json-source");
    let ndjson = build(
        &examples.join("blob-ndjson-destination"),
        "blob-ndjson-destination",
    );
    let token = "kit-token-7";
    let api = TestApi::start(
        &examples.join("http-json-source/test_server.py"),
        token,
        300,
    );
    let azurite = Azurite::start(&work.join("azurite"));
    azurite.create_container("events");

    let report = assert_kit_passes(
        &datagen,
        &json!({"seed": 3, "table_count": 2, "rows": 3000, "change_rows": 1500, "batch_rows": 400}),
        &["--max-rows", "500"],
    );
    assert!(report.contains("PASS  resume"), "{report}");
    let source_config = json!({
        "base_url": api.url,
        "token": token,
        "resources": ["orders", "customers"],
        "page_size": 70,
        "poll_seconds": 1,
    });
    let report = assert_kit_passes(&http, &source_config, &["--max-rows", "100"]);
    assert!(report.contains("PASS  resume"), "{report}");
    let sink = json!({
        "container_url": azurite.container_url("events"),
        "sas": azurite.sas(),
        "prefix": "kit/",
    });
    assert_kit_passes(&ndjson, &sink, &[]);

    // The kit fails a component that breaks its limits, and says which.
    let misbehave =
        Path::new(culvert_agent_host::connectors::build_dir()).join("test_misbehave.wasm");
    let r = kit(
        &misbehave,
        &json!({"mode": "memory"}),
        &["--memory-mib", "64"],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("memory limit of 64 MiB"), "{}", r.stdout);
    // A wrong token is a failed check with the API's refusal, not a crash.
    let mut wrong = source_config.clone();
    wrong["token"] = json!("not-the-token");
    let r = kit(&http, &wrong, &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("FAIL  check "), "{}", r.stdout);

    // Published to the registry, pinned by version, run by the environment's agents.
    let stack = culvert_tests::stack::Stack::up(&work.join("stack"));
    for (wasm, name) in [
        (&http, "http-json-source"),
        (&ndjson, "blob-ndjson-destination"),
    ] {
        let r = stack.culvert(&[
            "connector",
            "publish",
            wasm.to_str().unwrap(),
            "--name",
            name,
            "--version",
            "1.0.0",
        ]);
        assert_eq!(r.code, 0, "publish {name}: {}{}", r.stdout, r.stderr);
    }
    let versions = stack.json(&["connector", "versions", "http-json-source"]);
    assert!(versions.to_string().contains("1.0.0"), "{versions}");
    stack.local_env("demo");
    let src_file = work.join("api-src.json");
    std::fs::write(
        &src_file,
        json!({"base_url": api.url, "resources": ["orders", "customers"], "page_size": 70, "poll_seconds": 1}).to_string(),
    )
    .unwrap();
    let r = stack.culvert_env(
        &[
            "connector",
            "create",
            "api-src",
            "--env",
            "demo",
            "--type",
            "http-json-source@1.0.0",
            "--config",
            src_file.to_str().unwrap(),
            "--secret-env",
            "token=API_TOKEN",
        ],
        &[("API_TOKEN", token)],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let sink_url = azurite.container_url("events");
    let r = stack.culvert_env(
        &[
            "connector",
            "create",
            "events-sink",
            "--env",
            "demo",
            "--type",
            "blob-ndjson-destination",
            "--set",
            &format!("container_url={sink_url}"),
            "--set",
            "prefix=cdc/",
            "--secret-env",
            "sas=SINK_SAS",
        ],
        &[("SINK_SAS", azurite.sas())],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let sink_connector = stack.json(&["connector", "get", "events-sink"]);
    assert_eq!(sink_connector["type_version"], "1.0.0", "{sink_connector}");
    let r = stack.culvert(&[
        "pipeline",
        "create",
        "api",
        "--source",
        "api-src",
        "--target",
        "events-sink",
        "--tables",
        "api.*",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = stack.culvert(&["pipeline", "deploy", "api"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let all: std::collections::BTreeSet<String> = (1..=300).map(|i| i.to_string()).collect();
    culvert_tests::wait_until(240, "every item in the NDJSON files", || {
        let lines = ndjson_lines(&azurite, "events", "cdc/");
        ids_of(&lines, "orders") == all && ids_of(&lines, "customers") == all
    });
    api.post(
        "orders",
        token,
        &json!({"id": 5, "name": "changed at the source"}),
    );
    culvert_tests::wait_until(120, "the update to arrive as a change", || {
        ndjson_lines(&azurite, "events", "cdc/")
            .iter()
            .any(|(_, v)| v.to_string().contains("changed at the source"))
    });
}

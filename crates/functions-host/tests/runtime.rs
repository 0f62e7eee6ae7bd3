//! End-to-end tests of the runtime binary with a real handler (the `test_handler` example) and real Azurite.

use culvert_functions_host::connection::{AccountSas, DEVSTORE_ACCOUNT, DEVSTORE_KEY};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------- helpers: processes ----------

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sigterm(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn azurite_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AZURITE_BIN") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("azurite");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cached = home.join(".cache/culvert/npm/node_modules/.bin/azurite");
    assert!(
        cached.is_file(),
        "Azurite not found (AZURITE_BIN, PATH, {}); install it with `npm install --prefix $HOME/.cache/culvert/npm azurite@3` \
         or run scripts/setup.sh",
        cached.display()
    );
    cached
}

/// A real Azurite on free ports, persisting to `location` so it can be restarted with its data.
struct Azurite {
    child: Option<Child>,
    location: PathBuf,
    ports: [u16; 3],
}

impl Azurite {
    fn start(location: &Path) -> Self {
        let mut a = Azurite {
            child: None,
            location: location.to_path_buf(),
            ports: [free_port(), free_port(), free_port()],
        };
        a.launch();
        a
    }

    fn launch(&mut self) {
        let [blob, queue, table] = self.ports;
        let child = Command::new(azurite_bin())
            .args(["--silent", "--location"])
            .arg(&self.location)
            .args([
                "--blobPort",
                &blob.to_string(),
                "--queuePort",
                &queue.to_string(),
                "--tablePort",
                &table.to_string(),
            ])
            .args(["--skipApiVersionCheck", "--loose"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", queue)).is_err() {
            assert!(
                Instant::now() < deadline,
                "azurite did not open its queue port"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops Azurite gracefully so its data is saved for the restart.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn queue_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEVSTORE_ACCOUNT}", self.ports[1])
    }

    fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={DEVSTORE_ACCOUNT};AccountKey={DEVSTORE_KEY};QueueEndpoint={};",
            self.queue_endpoint()
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The test handler example, built by `cargo test` next to this test binary (built on demand otherwise).
fn handler_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("examples/test_handler");
    if !bin.is_file() {
        let target_dir = profile_dir.parent().unwrap();
        let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        cmd.args([
            "build",
            "--example",
            "test_handler",
            "-p",
            "culvert-functions-host",
            "--manifest-path",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "building the test_handler example failed"
        );
    }
    bin
}

/// The runtime binary running an app, its stderr in a log file and the handler's records in another.
struct Host {
    child: Option<Child>,
    base: String,
    log: PathBuf,
    records: PathBuf,
}

impl Host {
    fn start(app_root: &Path, extra_env: &[(&str, String)]) -> Self {
        let log = app_root.join("runtime.log");
        let records = app_root.join("records.jsonl");
        let mut child = Command::new(env!("CARGO_BIN_EXE_culvert-functions-host"))
            .args(["--app-root"])
            .arg(app_root)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("TEST_HANDLER_RECORD", &records)
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("runtime starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut host = Host {
            child: Some(child),
            base: String::new(),
            log,
            records,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                host.base = line
                    .strip_prefix("listening on ")
                    .unwrap_or_else(|| {
                        panic!("unexpected first line {line:?}\n{}", host.log_text())
                    })
                    .to_owned();
            }
            Err(_) => panic!("runtime never printed its address\n{}", host.log_text()),
        }
        host
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    fn root_url(&self, path: &str) -> String {
        let root = self.base.trim_end_matches("/api");
        format!("{root}{path}")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn records(&self, path: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.records).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["path"] == path)
            .collect()
    }

    fn payloads(&self, path: &str) -> Vec<Value> {
        self.records(path)
            .iter()
            .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
            .collect()
    }

    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        sigterm(&child);
        wait_exit(&mut child, Duration::from_secs(20))
            .expect("runtime exits within 20 s of SIGTERM")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- runtime log -----\n{}", self.log_text());
        }
    }
}

// ---------- helpers: app, queues, waiting ----------

fn write_app(root: &Path, host: Value, functions: &[(&str, Value)]) {
    std::fs::write(
        root.join("host.json"),
        serde_json::to_string_pretty(&host).unwrap(),
    )
    .unwrap();
    for (name, json) in functions {
        std::fs::create_dir_all(root.join(name)).unwrap();
        std::fs::write(
            root.join(name).join("function.json"),
            serde_json::to_string_pretty(json).unwrap(),
        )
        .unwrap();
    }
}

fn host_json(queues: Value) -> Value {
    json!({
        "version": "2.0",
        "customHandler": {"description": {"defaultExecutablePath": handler_bin().to_str().unwrap(), "arguments": []},
                          "enableForwardingHttpRequest": true},
        "extensions": {"http": {"routePrefix": "api"}, "queues": queues}
    })
}

fn http_fn(route: Option<&str>, methods: &[&str], extra_out: bool) -> Value {
    let mut trigger = json!({"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous", "methods": methods});
    if let Some(r) = route {
        trigger["route"] = json!(r);
    }
    let mut bindings = vec![
        trigger,
        json!({"type": "http", "direction": "out", "name": "res"}),
    ];
    if extra_out {
        // An extra output moves the function from forwarding to the invocation payload.
        bindings.push(json!({"type": "queue", "direction": "out", "name": "unused", "queueName": "unused", "connection": "Storage"}));
    }
    json!({"bindings": bindings})
}

fn queue_fn(queue: &str) -> Value {
    json!({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "msg", "queueName": queue, "connection": "Storage"}]})
}

/// Direct Queue REST calls, signed with an account SAS, to seed and inspect queues independently of the runtime.
struct QueueRest {
    endpoint: String,
    sas: String,
    http: reqwest::Client,
}

impl QueueRest {
    fn new(endpoint: String) -> Self {
        let key = base64_decode(DEVSTORE_KEY);
        let sas = AccountSas::for_queues(chrono_like_expiry()).to_query(DEVSTORE_ACCOUNT, &key);
        Self {
            endpoint,
            sas,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &str,
        body: Option<String>,
    ) -> reqwest::Response {
        let url = format!(
            "{}/{path}?{query}{}{}",
            self.endpoint,
            if query.is_empty() { "" } else { "&" },
            self.sas
        );
        let mut req = self
            .http
            .request(method, url)
            .header("x-ms-version", "2021-12-02");
        req = match body {
            Some(b) => req.body(b),
            None => req.header("content-length", "0"),
        };
        req.send().await.unwrap()
    }

    async fn create(&self, queue: &str) {
        let r = self.call(reqwest::Method::PUT, queue, "", None).await;
        assert!(r.status().is_success(), "create {queue}: {}", r.status());
    }

    async fn put_base64(&self, queue: &str, text: &str) {
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            base64_encode(text.as_bytes())
        );
        let r = self
            .call(
                reqwest::Method::POST,
                &format!("{queue}/messages"),
                "",
                Some(body),
            )
            .await;
        assert_eq!(r.status().as_u16(), 201, "put message into {queue}");
    }

    /// Visible message texts (as stored), via Peek Messages.
    async fn peek(&self, queue: &str) -> Vec<String> {
        let r = self
            .call(
                reqwest::Method::GET,
                &format!("{queue}/messages"),
                "peekonly=true&numofmessages=32",
                None,
            )
            .await;
        if r.status().as_u16() == 404 {
            return Vec::new();
        }
        let xml = r.text().await.unwrap();
        xml.split("<MessageText>")
            .skip(1)
            .filter_map(|s| s.split("</MessageText>").next())
            .map(str::to_owned)
            .collect()
    }

    /// `x-ms-approximate-messages-count` (visible and invisible messages).
    async fn count(&self, queue: &str) -> u64 {
        let r = self
            .call(reqwest::Method::GET, queue, "comp=metadata", None)
            .await;
        r.headers()
            .get("x-ms-approximate-messages-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn chrono_like_expiry() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::hours(2)
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, host: &Host, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n----- runtime log -----\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `Data.msg` value of a queue payload, unwrapped from the host's double encoding.
fn queue_text(payload: &Value) -> String {
    serde_json::from_str::<String>(
        payload["Data"]["msg"]
            .as_str()
            .expect("Data.msg is a string"),
    )
    .expect("Data.msg holds a JSON string")
}

fn dequeue_counts(host: &Host, path: &str) -> Vec<i64> {
    host.payloads(path)
        .iter()
        .map(|p| p["Metadata"]["DequeueCount"].as_i64().unwrap())
        .collect()
}

async fn expect_problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

// ---------- tests ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_queues_timers_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let azurite = Azurite::start(&dir.path().join("azurite"));
    write_app(
        &app,
        host_json(
            json!({"maxPollingInterval": "00:00:00.500", "visibilityTimeout": "00:00:00", "batchSize": 4,
                         "maxDequeueCount": 3, "messageEncoding": "base64"}),
        ),
        &[
            (
                "echo",
                http_fn(Some("echo/{id}"), &["get", "post", "put"], false),
            ),
            (
                "orders",
                json!({"bindings": [
                    {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post"], "route": "orders/{id:int}"},
                    {"type": "http", "direction": "out", "name": "res"},
                    {"type": "queue", "direction": "out", "name": "outMsg", "queueName": "work", "connection": "Storage"}]}),
            ),
            ("work", queue_fn("work")),
            ("flaky", queue_fn("flaky")),
            ("doomed", queue_fn("doomed")),
            (
                "tick",
                json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "*/1 * * * * *"}]}),
            ),
            (
                "starter",
                json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "0 0 0 1 1 *", "runOnStartup": true}]}),
            ),
            (
                "pipeline-status",
                http_fn(Some("v1/pipelines/{id}/status"), &["get"], true),
            ),
            (
                "pipeline-actions",
                http_fn(
                    Some("v1/pipelines/{id}/{action:regex(^(pause|resume|resync)$)}"),
                    &["post"],
                    true,
                ),
            ),
            (
                "item-guid",
                http_fn(Some("items/{id:guid}"), &["get"], true),
            ),
            ("item-int", http_fn(Some("items/{n:int}"), &["get"], true)),
            ("things", http_fn(Some("things/{id?}"), &[], true)),
            ("noroute", http_fn(None, &["get"], true)),
            ("badbody", http_fn(Some("bad"), &["get"], true)),
            (
                "returner",
                json!({"bindings": [
                    {"type": "httpTrigger", "direction": "in", "name": "req", "route": "ret"},
                    {"type": "http", "direction": "out", "name": "$return"},
                    {"type": "queue", "direction": "out", "name": "unused", "queueName": "unused", "connection": "Storage"}]}),
            ),
        ],
    );
    let mut host = Host::start(&app, &[("Storage", azurite.connection_string())]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let rest = QueueRest::new(azurite.queue_endpoint());

    // runOnStartup fires once when the host starts.
    wait_until(
        "the runOnStartup timer",
        Duration::from_secs(5),
        &host,
        || async { !host.records("/starter").is_empty() },
    )
    .await;

    // --- forwarded HTTP: method, path, query, body and headers reach the handler; its response comes back as is.
    let resp = http
        .post(host.url("echo/42?x=1&y=two"))
        .header("x-test", "abc")
        .header("content-type", "text/plain")
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["x-echo"], "forwarded");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/echo/42");
    assert_eq!(echo["query"], "x=1&y=two");
    assert_eq!(echo["body"], "hello body");
    assert_eq!(echo["headers"]["x-test"], "abc");
    assert_eq!(echo["headers"]["content-type"], "text/plain");
    assert_eq!(
        echo["headers"]["x-azure-functions-hostversion"],
        "4.x-culvert-local"
    );
    assert_eq!(
        echo["headers"]["user-agent"],
        "Azure-Functions-Host/4.x-culvert-local"
    );
    let id = uuid::Uuid::parse_str(
        echo["headers"]["x-azure-functions-invocationid"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(id.get_version_num(), 4);
    let resp = http.get(host.url("echo/43")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = expect_problem(http.delete(host.url("echo/42")).send().await.unwrap(), 405).await;
    assert!(
        body["detail"].as_str().unwrap().contains("GET, POST, PUT"),
        "{body}"
    );

    // --- payload HTTP with a queue output; the queue function receives it.
    let resp = http
        .post(host.url("orders/7?src=test"))
        .header("content-type", "application/json")
        .body(r#"{"item":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(resp.headers()["x-order"], "7");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": 7}));
    let record = host.records("/orders").pop().expect("orders was invoked");
    assert_eq!(record["method"], "POST");
    assert_eq!(
        record["headers"]["x-azure-functions-hostversion"],
        "4.x-culvert-local"
    );
    assert!(
        uuid::Uuid::parse_str(
            record["headers"]["x-azure-functions-invocationid"]
                .as_str()
                .unwrap()
        )
        .is_ok()
    );
    let payload: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
    let req = &payload["Data"]["req"];
    assert!(
        req["Url"]
            .as_str()
            .unwrap()
            .ends_with("/api/orders/7?src=test"),
        "{req}"
    );
    assert_eq!(req["Method"], "POST");
    assert_eq!(req["Query"], json!({"src": "test"}));
    assert_eq!(req["Headers"]["content-type"], json!(["application/json"]));
    assert_eq!(req["Params"], json!({"id": "7"}));
    assert_eq!(req["Identities"], json!([]));
    assert_eq!(req["Body"], r#"{"item":"x"}"#);
    assert_eq!(payload["Metadata"]["id"], "\"7\"");
    assert_eq!(payload["Metadata"]["src"], "\"test\"");
    assert_eq!(payload["Metadata"]["sys"]["MethodName"], "orders");
    assert!(
        payload["Metadata"]["sys"]["RandGuid"].is_string()
            && payload["Metadata"]["sys"]["UtcNow"].is_string()
    );

    wait_until(
        "work to get the order",
        Duration::from_secs(10),
        &host,
        || async { !host.records("/work").is_empty() },
    )
    .await;
    let work = host.payloads("/work").pop().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&queue_text(&work)).unwrap(),
        json!({"order": 7})
    );
    assert_eq!(work["Metadata"]["DequeueCount"], 1);
    assert!(work["Metadata"]["Id"].is_string() && work["Metadata"]["PopReceipt"].is_string());
    assert!(
        work["Metadata"]["InsertionTime"].is_string()
            && work["Metadata"]["NextVisibleTime"].is_string()
    );
    assert_eq!(work["Metadata"]["sys"]["MethodName"], "work");

    // --- a function failing twice then succeeding sees DequeueCount 1, 2, 3 and the message is gone.
    rest.create("flaky").await;
    rest.put_base64("flaky", "flaky-1").await;
    wait_until(
        "three flaky deliveries",
        Duration::from_secs(10),
        &host,
        || async { host.records("/flaky").len() >= 3 },
    )
    .await;
    wait_until(
        "flaky queue to drain",
        Duration::from_secs(5),
        &host,
        || async { rest.count("flaky").await == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(dequeue_counts(&host, "/flaky"), vec![1, 2, 3]);
    assert!(
        host.payloads("/flaky")
            .iter()
            .all(|p| queue_text(p) == "flaky-1")
    );

    // --- a function that always fails: maxDequeueCount (3) invocations, then the message is in doomed-poison.
    rest.create("doomed").await;
    rest.put_base64("doomed", "doom-1").await;
    let poisoned = base64_encode(b"doom-1");
    wait_until(
        "the poison queue to get the message",
        Duration::from_secs(10),
        &host,
        || async { rest.peek("doomed-poison").await.contains(&poisoned) },
    )
    .await;
    assert_eq!(dequeue_counts(&host, "/doomed"), vec![1, 2, 3]);
    wait_until(
        "doomed to be empty",
        Duration::from_secs(5),
        &host,
        || async { rest.count("doomed").await == 0 },
    )
    .await;
    assert_eq!(rest.peek("doomed-poison").await, vec![poisoned]);

    // --- the */1 timer fires every second with the timer payload.
    wait_until("three ticks", Duration::from_secs(6), &host, || async {
        host.records("/tick").len() >= 3
    })
    .await;
    let tick = host.payloads("/tick").pop().unwrap();
    assert_eq!(
        tick["Data"]["timer"]["Schedule"],
        json!({"AdjustForDST": true})
    );
    assert_eq!(tick["Data"]["timer"]["IsPastDue"], false);
    for k in ["Last", "Next", "LastUpdated"] {
        assert!(
            tick["Data"]["timer"]["ScheduleStatus"][k].is_string(),
            "{tick}"
        );
    }
    assert_eq!(tick["Metadata"]["sys"]["MethodName"], "tick");

    // --- routing: literal segments win, constraints filter, 404 and 405 are problem+json.
    let called = |resp: reqwest::Response| async move {
        assert_eq!(resp.status().as_u16(), 200);
        resp.json::<Value>().await.unwrap()
    };
    let v = called(
        http.get(host.url("v1/pipelines/p1/status"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        v,
        json!({"function": "pipeline-status", "params": {"id": "p1"}})
    );
    let v = called(
        http.post(host.url("v1/pipelines/p1/pause"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        v,
        json!({"function": "pipeline-actions", "params": {"id": "p1", "action": "pause"}})
    );
    expect_problem(
        http.post(host.url("v1/pipelines/p1/explode"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let resp = http
        .get(host.url("v1/pipelines/p1/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    expect_problem(resp, 405).await;
    let guid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let v = called(
        http.get(host.url(&format!("items/{guid}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["function"], "item-guid");
    let v = called(http.get(host.url("items/12")).send().await.unwrap()).await;
    assert_eq!(v, json!({"function": "item-int", "params": {"n": "12"}}));
    expect_problem(http.get(host.url("items/abc")).send().await.unwrap(), 404).await;
    let v = called(http.get(host.url("things")).send().await.unwrap()).await;
    assert_eq!(v, json!({"function": "things", "params": {}}));
    let v = called(http.delete(host.url("things/5")).send().await.unwrap()).await;
    assert_eq!(v, json!({"function": "things", "params": {"id": "5"}}));
    let v = called(http.get(host.url("noroute")).send().await.unwrap()).await;
    assert_eq!(v["function"], "noroute");
    expect_problem(
        http.get(host.url("nothing/here")).send().await.unwrap(),
        404,
    )
    .await;
    expect_problem(
        http.get(host.root_url("/elsewhere")).send().await.unwrap(),
        404,
    )
    .await;
    // A body that is not {Outputs, Logs, ReturnValue} is a failed invocation.
    let body = expect_problem(http.get(host.url("bad")).send().await.unwrap(), 500).await;
    assert!(body["invocationId"].is_string(), "{body}");
    let resp = http.get(host.url("ret")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 203);
    assert_eq!(resp.text().await.unwrap(), "from ReturnValue");

    // The handler's Logs are logged with the invocation id.
    assert!(
        host.log_text().contains("order 7 accepted"),
        "{}",
        host.log_text()
    );

    // --- SIGTERM: orderly exit with status 0.
    let status = host.terminate();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        host.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_storage_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let mut azurite = Azurite::start(&dir.path().join("azurite"));
    write_app(
        &app,
        host_json(json!({"maxPollingInterval": "00:00:00.500", "maxDequeueCount": 5})),
        &[
            (
                "orders",
                json!({"bindings": [
                    {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post"], "route": "orders/{id:int}"},
                    {"type": "http", "direction": "out", "name": "res"},
                    {"type": "queue", "direction": "out", "name": "outMsg", "queueName": "work", "connection": "Storage"}]}),
            ),
            ("work", queue_fn("work")),
        ],
    );
    let mut host = Host::start(&app, &[("Storage", azurite.connection_string())]);
    let http = reqwest::Client::new();
    let orders_seen = |host: &Host| -> Vec<i64> {
        host.payloads("/work")
            .iter()
            .map(|p| {
                serde_json::from_str::<Value>(&queue_text(p)).unwrap()["order"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };

    assert_eq!(
        http.post(host.url("orders/1"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        202
    );
    wait_until("order 1", Duration::from_secs(10), &host, || async {
        orders_seen(&host).contains(&1)
    })
    .await;

    azurite.stop();
    // Long enough for several polls to fail.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = http
        .get(host.root_url("/admin/host/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.status().as_u16(),
        200,
        "runtime still serving during the outage"
    );
    expect_problem(http.post(host.url("orders/2")).send().await.unwrap(), 500).await;

    azurite.launch();
    let mut accepted = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !accepted && Instant::now() < deadline {
        accepted = http
            .post(host.url("orders/3"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
            == 202;
        if !accepted {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        accepted,
        "orders never succeeded again after the restart\n{}",
        host.log_text()
    );
    wait_until(
        "order 3 after the restart",
        Duration::from_secs(10),
        &host,
        || async { orders_seen(&host).contains(&3) },
    )
    .await;

    let log = host.log_text();
    assert_eq!(
        log.matches("retrying until it is back").count(),
        1,
        "outage logged once\n{log}"
    );
    assert!(log.contains("storage service reachable again"), "{log}");
    assert!(host.terminate().success());
}

fn run_to_exit(app: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_culvert-functions-host"))
        .args(["--app-root"])
        .arg(app)
        .args(["--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .env("TEST_HANDLER_RECORD", app.join("records.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("runtime did not exit");
    });
    (status, reader.join().unwrap())
}

#[test]
fn invalid_apps_and_dying_handlers_exit_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let hello = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req"},
        {"type": "http", "direction": "out", "name": "res"}]});

    let app = dir.path().join("badversion");
    std::fs::create_dir_all(&app).unwrap();
    let mut host = host_json(json!({}));
    host["version"] = json!("1.0");
    write_app(&app, host, &[("hello", hello.clone())]);
    let (status, err) = run_to_exit(&app, &[]);
    assert!(!status.success());
    assert!(
        err.contains("host.json") && err.contains("field `version`"),
        "{err}"
    );

    let app = dir.path().join("badroute");
    std::fs::create_dir_all(&app).unwrap();
    write_app(
        &app,
        host_json(json!({})),
        &[("bad", http_fn(Some("a/{id:nope}"), &[], false))],
    );
    let (status, err) = run_to_exit(&app, &[]);
    assert!(!status.success());
    assert!(
        err.contains("bad/function.json")
            && err.contains("field `bindings[0].route`")
            && err.contains("nope"),
        "{err}"
    );

    let app = dir.path().join("noconnection");
    std::fs::create_dir_all(&app).unwrap();
    write_app(&app, host_json(json!({})), &[("q", queue_fn("jobs"))]);
    let (status, err) = run_to_exit(&app, &[]);
    assert!(!status.success());
    assert!(
        err.contains("connection setting `Storage` is not set"),
        "{err}"
    );

    let app = dir.path().join("nohandler");
    std::fs::create_dir_all(&app).unwrap();
    let mut host = host_json(json!({}));
    host["customHandler"]["description"]["defaultExecutablePath"] = json!("missing-handler");
    write_app(&app, host, &[("hello", hello.clone())]);
    let (status, err) = run_to_exit(&app, &[]);
    assert!(!status.success());
    assert!(
        err.contains("cannot start handler") && err.contains("missing-handler"),
        "{err}"
    );

    let app = dir.path().join("dies");
    std::fs::create_dir_all(&app).unwrap();
    write_app(&app, host_json(json!({})), &[("hello", hello)]);
    let (status, err) = run_to_exit(&app, &[("TEST_HANDLER_EXIT_AFTER_MS", "1500")]);
    assert!(!status.success());
    assert!(err.contains("handler exited (exit code 3)"), "{err}");
}

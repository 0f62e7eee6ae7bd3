//! The API on a real control store, through the real `culvert-functions` binary, speaking
//! both ways the Functions host calls it: forwarded HTTP and invocation payloads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use culvert_tests::Cluster;
use culvert_tests::cluster::free_port;
use serde_json::{Value, json};

struct Handler {
    child: Child,
    base: String,
    client: reqwest::Client,
    admin: String,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records what the provision job asks of compute.
struct FakeCompute {
    url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn compute_server() -> FakeCompute {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                seen.lock().unwrap().push(v);
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    FakeCompute { url, requests }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_culvert-functions")
}

fn store_url(pg: &Cluster, db: &str) -> String {
    format!("host=127.0.0.1 port={} user=postgres dbname={db}", pg.port)
}

/// The settings that give a handler its master keys from a local key file.
fn key_file_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![(
        "CULVERT_MASTER_KEY_FILE",
        dir.join("master-keys.json").display().to_string(),
    )]
}

fn start(pg: &Cluster, compute: &str, dir: &Path) -> Handler {
    start_with(&store_url(pg, "control"), compute, dir, &key_file_env(dir))
}

/// Create an admin key and serve on `store` with `keys` (the master key settings and identity).
fn start_with(store: &str, compute: &str, dir: &Path, keys: &[(&str, String)]) -> Handler {
    std::fs::create_dir_all(dir).unwrap();
    let key = culvert_sealing::OpeningKey::generate();
    let public = dir.join("sealing.pub.pem");
    std::fs::write(&public, key.public_pem()).unwrap();
    let port = free_port();
    let admin_file = dir.join("admin.key");
    let out = Command::new(bin())
        .args(["create-admin-key", "--out"])
        .arg(&admin_file)
        .env("CULVERT_CONTROL_STORE", store)
        .envs(keys.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = Command::new(bin())
        .arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("CULVERT_CONTROL_STORE", store)
        .envs(keys.iter().map(|(k, v)| (k, v)))
        .env("CULVERT_SEALING_PUBLIC_KEY", &public)
        .env("CULVERT_LOCAL_COMPUTE_URL", compute)
        .env("CULVERT_HEARTBEAT_SECONDS", "1")
        .env("CULVERT_LEASE_SECONDS", "3")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let h = Handler {
        child,
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        admin: std::fs::read_to_string(&admin_file)
            .unwrap()
            .trim()
            .to_string(),
    };
    culvert_tests::wait_until(20, "the handler to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    h
}

type Reply = (u16, Value, Option<String>);

impl Handler {
    /// A forwarded request: `(status, body, etag)`.
    async fn http(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}/api{path}", self.base);
        let mut req = self.client.request(method.parse().unwrap(), url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (ctype, etag) = (header("content-type"), header("etag"));
        let text = resp.text().await.unwrap();
        if status >= 400 {
            assert_eq!(
                ctype.as_deref(),
                Some("application/problem+json"),
                "{status} {text}"
            );
        }
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, value, etag)
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let key = self.admin.clone();
        self.http(method, path, Some(&key), body, &[]).await
    }

    /// POST an invocation payload to `/{function}`.
    async fn invoke(&self, function: &str, data: Value, metadata: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/{function}", self.base))
            .header(
                "X-Azure-Functions-InvocationId",
                "7f1d8a4c-0000-4000-8000-000000000001",
            )
            .json(&json!({"Data": data, "Metadata": metadata}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// An HTTP-triggered payload function: `(status, body, queue outputs)`.
    async fn invoke_http(
        &self,
        function: &str,
        method: &str,
        params: Value,
        body: Option<Value>,
        key: &str,
    ) -> (u16, Value, Value) {
        let mut req = json!({
            "Url": format!("http://127.0.0.1:7071/api/{function}"),
            "Method": method,
            "Query": "{}",
            "Headers": {"Authorization": [format!("Bearer {key}")], "Content-Type": ["application/json"]},
            "Params": params,
            "Identities": [],
        });
        if let Some(b) = body {
            req["Body"] = Value::String(b.to_string());
        }
        let meta = json!({"sys": {"MethodName": function}});
        let (status, out) = self.invoke(function, json!({"req": req}), meta).await;
        assert_eq!(status, 200, "{out}");
        let res = &out["Outputs"]["res"];
        let body: Value =
            serde_json::from_str(res["body"].as_str().unwrap()).unwrap_or(Value::Null);
        let mut queues = out["Outputs"].clone();
        queues.as_object_mut().unwrap().remove("res");
        (res["statusCode"].as_u64().unwrap() as u16, body, queues)
    }

    /// A queue-triggered invocation with the message JSON-encoded once more, as the host does.
    async fn invoke_queue(&self, function: &str, msg: &Value, dequeue_count: u32) -> u16 {
        let data = json!({"msg": Value::String(Value::String(msg.to_string()).to_string())});
        let meta = json!({"DequeueCount": dequeue_count.to_string(), "Id": "\"m1\"", "sys": {"MethodName": function}});
        self.invoke(function, data, meta).await.0
    }

    async fn heartbeat(&self, agent: &str, body: Value) -> Reply {
        self.http("POST", "/v1/agent/heartbeat", Some(agent), Some(body), &[])
            .await
    }
}

fn control_store_text(pg: &Cluster) -> String {
    pg.sql(
        "control",
        "select string_agg(t, E'\\n') from (
           select row_to_json(c)::text t from connectors c
           union all select row_to_json(a)::text from api_keys a
           union all select row_to_json(g)::text from agents g
           union all select row_to_json(i)::text from idempotency_keys i) x",
    )
}

fn running(pid: &str, epoch: i64) -> Value {
    json!({"running": [{"pipeline_id": pid, "epoch": epoch, "progress": {
        "phase": "streaming", "rows_read": 5, "rows_applied": 5, "bytes_applied": 100, "lag_bytes": 0,
        "lag_seconds": 0.2, "buffer_bytes": 0, "tables_total": 1, "tables_started": 1,
        "tables": [{"table": "public.t", "state": "streaming", "rows": 5}]}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_a_real_store() {
    let pg = Cluster::start(&[]);
    pg.create_db("control");
    let compute = compute_server();
    let dir = culvert_tests::workdir("functions-api");
    let h = start(&pg, &compute.url, &dir);
    let admin = h.admin.clone();

    // Readiness, the document, authentication.
    assert_eq!(h.client.get(&h.base).send().await.unwrap().status(), 200);
    let (s, doc, _) = h.http("GET", "/openapi.json", None, None, &[]).await;
    assert_eq!((s, doc["openapi"].as_str()), (200, Some("3.1.0")));
    let (s, p, _) = h.http("GET", "/v1/pipelines", None, None, &[]).await;
    assert_eq!(s, 401, "{p}");
    let bad_key = format!("cvk_{}_nope", uuid_like());
    assert_eq!(
        h.http("GET", "/v1/pipelines", Some(&bad_key), None, &[])
            .await
            .0,
        401
    );

    // Environments go through the payload path and send a provision message.
    let env_body = json!({"name": "dev", "provider": "local"});
    let (s, env, queues) = h
        .invoke_http(
            "environments",
            "POST",
            json!({}),
            Some(env_body.clone()),
            &admin,
        )
        .await;
    assert_eq!(s, 201, "{env}");
    assert_eq!(env["state"], "registering");
    let env_id = env["id"].as_str().unwrap().to_string();
    assert_eq!(queues["provision"][0]["environment_id"], env_id.as_str());
    let (s, p, _) = h
        .invoke_http("environments", "POST", json!({}), Some(env_body), &admin)
        .await;
    assert_eq!(s, 409, "{p}");
    let azure = json!({"name": "x", "provider": "azure", "azure": {"subscription_id": "nope",
        "location": "eastus2", "resource_group": "rg", "vnet_id": "/x", "subnet_ids": []}});
    let (s, p, _) = h
        .invoke_http("environments", "POST", json!({}), Some(azure), &admin)
        .await;
    assert_eq!(s, 422);
    assert_eq!(p["errors"][0]["pointer"], "/azure/subscription_id", "{p}");

    // The provision job hands compute a registration token; a malformed message fails.
    let msg = json!({"environment_id": env_id, "action": "ensure"});
    assert_eq!(h.invoke_queue("provision", &msg, 1).await, 200);
    let token = compute.requests.lock().unwrap()[0]["registration_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(token.starts_with("cvt_"));
    let bad = json!({"environment_id": "not-a-uuid"});
    assert_eq!(h.invoke_queue("provision", &bad, 1).await, 500);

    // Connectors: spec validation points at the field; secrets are sealed, never returned.
    let bad = json!({"name": "src", "environment_id": env_id, "type": "postgres-source",
        "config": {"host": "127.0.0.1", "user": "postgres", "database": "app", "port": 99999, "password": "hunter2-secret"}});
    let (s, p, _) = h.admin("POST", "/v1/connectors", Some(bad)).await;
    assert_eq!(s, 422);
    let pointers = p["errors"].as_array().unwrap();
    assert!(
        pointers.iter().any(|e| e["pointer"] == "/config/port"),
        "{p}"
    );
    assert!(!p.to_string().contains("hunter2"));
    let good = json!({"name": "src", "environment_id": env_id, "type": "postgres-source",
        "config": {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "app", "password": "hunter2-secret"}});
    let idem = [("Idempotency-Key", "create-src-1")];
    let (s, src, etag) = h
        .http(
            "POST",
            "/v1/connectors",
            Some(&admin),
            Some(good.clone()),
            &idem,
        )
        .await;
    assert_eq!(s, 201, "{src}");
    assert_eq!(src["secrets"], json!(["password"]));
    assert!(!src.to_string().contains("hunter2"));
    assert_eq!(etag.as_deref(), Some("\"1\""));
    let (s, again, _) = h
        .http(
            "POST",
            "/v1/connectors",
            Some(&admin),
            Some(good.clone()),
            &idem,
        )
        .await;
    assert_eq!(
        (s, &again["id"]),
        (201, &src["id"]),
        "a replay returns the first answer"
    );
    let mut other = good.clone();
    other["name"] = json!("src2");
    let (s, _, _) = h
        .http("POST", "/v1/connectors", Some(&admin), Some(other), &idem)
        .await;
    assert_eq!(s, 409, "a reused key with another body is refused");
    let src_id = src["id"].as_str().unwrap().to_string();
    let tgt = json!({"name": "dst", "environment_id": env_id, "type": "postgres-target",
        "config": {"host": "127.0.0.1", "port": 5433, "user": "postgres", "database": "replica"}});
    let (s, tgt, _) = h.admin("POST", "/v1/connectors", Some(tgt)).await;
    assert_eq!(s, 201, "{tgt}");
    let tgt_id = tgt["id"].as_str().unwrap().to_string();

    // Optimistic concurrency.
    let path = format!("/v1/connectors/{src_id}");
    let patch = json!({"config": {"port": 6543}});
    let stale = [("If-Match", "\"7\"")];
    let (s, _, _) = h
        .http("PATCH", &path, Some(&admin), Some(patch.clone()), &stale)
        .await;
    assert_eq!(s, 412);
    let current = [("If-Match", "\"1\"")];
    let (s, updated, etag) = h
        .http("PATCH", &path, Some(&admin), Some(patch), &current)
        .await;
    assert_eq!(
        (s, updated["config"]["port"].as_i64()),
        (200, Some(6543)),
        "{updated}"
    );
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(
        updated["secrets"],
        json!(["password"]),
        "a patch without the secret keeps it"
    );

    // Paging.
    for n in 0..3 {
        let c = json!({"name": format!("extra-{n}"), "environment_id": env_id, "type": "postgres-target",
            "config": {"host": "h", "user": "u", "database": "d"}});
        assert_eq!(h.admin("POST", "/v1/connectors", Some(c)).await.0, 201);
    }
    let (_, page1, _) = h.admin("GET", "/v1/connectors?limit=2", None).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let next = |p: &Value| p["next_cursor"].as_str().unwrap().to_string();
    let (_, page2, _) = h
        .admin(
            "GET",
            &format!("/v1/connectors?limit=2&cursor={}", next(&page1)),
            None,
        )
        .await;
    let (_, page3, _) = h
        .admin(
            "GET",
            &format!("/v1/connectors?limit=2&cursor={}", next(&page2)),
            None,
        )
        .await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert!(page3.get("next_cursor").is_none());
    assert_eq!(h.admin("GET", "/v1/connectors?limit=0", None).await.0, 400);

    // Pipelines.
    let swapped =
        json!({"name": "orders", "source_id": tgt_id, "target_id": src_id, "tables": ["public.*"]});
    let (s, p, _) = h.admin("POST", "/v1/pipelines", Some(swapped)).await;
    assert_eq!(s, 422, "{p}");
    let pipe =
        json!({"name": "orders", "source_id": src_id, "target_id": tgt_id, "tables": ["public.*"]});
    let (s, pipe, _) = h.admin("POST", "/v1/pipelines", Some(pipe)).await;
    assert_eq!(s, 201, "{pipe}");
    let pid = pipe["id"].as_str().unwrap().to_string();
    let (s, p, _) = h
        .admin("DELETE", &format!("/v1/connectors/{src_id}"), None)
        .await;
    assert_eq!(s, 409, "{p}");
    let (s, p, _) = h
        .admin("POST", &format!("/v1/pipelines/{pid}/deploy"), None)
        .await;
    assert_eq!((s, p["state"].as_str()), (200, Some("running")));
    let status_path = format!("/v1/pipelines/{pid}/status");
    let (_, st, _) = h.admin("GET", &status_path, None).await;
    assert_eq!(st["phase"], "waiting_for_agent", "{st}");

    // Agents register with the token, then heartbeat for a lease with sealed secrets.
    let mut agents = Vec::new();
    for name in ["a1", "a2"] {
        let body = json!({"environment_id": env_id, "name": name, "version": "test"});
        let (s, r, _) = h
            .http("POST", "/v1/agent/register", Some(&token), Some(body), &[])
            .await;
        assert_eq!(s, 201, "{r}");
        agents.push(r["agent_key"].as_str().unwrap().to_string());
    }
    let (a1, a2) = (agents[0].clone(), agents[1].clone());
    let (s, _, _) = h
        .admin("POST", "/v1/agent/heartbeat", Some(json!({"running": []})))
        .await;
    assert_eq!(s, 403, "API keys do not speak the agent protocol");
    assert_eq!(
        h.http("GET", "/v1/pipelines", Some(&a1), None, &[]).await.0,
        403
    );
    let (s, beat, _) = h.heartbeat(&a1, json!({"running": []})).await;
    assert_eq!(s, 200, "{beat}");
    let lease = &beat["assignments"][0];
    assert_eq!(lease["pipeline_id"], pid.as_str());
    assert_eq!(lease["epoch"], 1);
    let sealed = lease["source"]["sealed_secrets"]["password"]
        .as_str()
        .unwrap();
    assert!(sealed.contains("RSA-OAEP-256"));
    assert!(!beat.to_string().contains("hunter2"));
    assert_eq!(h.heartbeat(&a1, running(&pid, 1)).await.0, 200);
    let (_, st, _) = h.admin("GET", &status_path, None).await;
    assert_eq!(st["phase"], "streaming", "{st}");
    assert_eq!(st["progress"]["rows_applied"], 5);

    // The second agent does not get the pipeline while the first holds it...
    let (_, beat2, _) = h.heartbeat(&a2, json!({"running": []})).await;
    assert_eq!(beat2["assignments"], json!([]));
    // ...but gets it with a higher epoch once the first stops heartbeating.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let timer = json!({"timer": {"IsPastDue": false}});
    assert_eq!(h.invoke("housekeeping", timer, json!({})).await.0, 200);
    let (_, beat2, _) = h.heartbeat(&a2, json!({"running": []})).await;
    assert_eq!(beat2["assignments"][0]["epoch"], 2, "{beat2}");
    // The stale holder's reports no longer count.
    assert_eq!(h.heartbeat(&a1, running(&pid, 1)).await.0, 200);
    let (_, st, _) = h.admin("GET", &status_path, None).await;
    assert_eq!(
        (st["epoch"].as_i64(), st["phase"].as_str()),
        (Some(2), Some("starting")),
        "{st}"
    );
    let (_, listed, _) = h.admin("GET", "/v1/agents", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    // Pause revokes the lease: the next heartbeat carries no assignment.
    let (s, _, _) = h
        .admin("POST", &format!("/v1/pipelines/{pid}/pause"), None)
        .await;
    assert_eq!(s, 200);
    let (_, beat2, _) = h.heartbeat(&a2, json!({"running": []})).await;
    assert_eq!(beat2["assignments"], json!([]));

    // Validation: queued through the payload path, claimed by an agent, reported.
    let (s, v, queues) = h
        .invoke_http(
            "connector-validate",
            "POST",
            json!({"id": src_id}),
            None,
            &admin,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let vid = v["id"].as_str().unwrap().to_string();
    assert_eq!(queues["validate"][0]["validation_id"], vid.as_str());
    assert_eq!(
        h.invoke_queue("validate", &json!({"validation_id": vid}), 1)
            .await,
        200
    );
    let (_, beat2, _) = h.heartbeat(&a2, json!({"running": []})).await;
    assert_eq!(
        beat2["validations"][0]["validation_id"],
        vid.as_str(),
        "{beat2}"
    );
    let report = json!({"validations": [{"validation_id": vid, "checks": [
        {"name": "connect", "ok": false, "message": "password authentication failed"}]}]});
    let (s, _, _) = h
        .http("POST", "/v1/agent/reports", Some(&a2), Some(report), &[])
        .await;
    assert_eq!(s, 200);
    let (_, c, _) = h.admin("GET", &path, None).await;
    assert_eq!(c["validation"]["state"], "failed", "{c}");

    // No credential in plaintext anywhere in the store.
    let text = control_store_text(&pg);
    assert!(!text.contains("hunter2"), "a secret is stored in plaintext");
    assert!(!text.contains(&admin), "an API key is stored in plaintext");
    assert!(!text.contains(&a1), "an agent key is stored in plaintext");
}

fn uuid_like() -> &'static str {
    "0123456789abcdef0123456789abcdef"
}

/// The whole control store as `pg_dump` writes it: schema and every row of every table.
fn pg_dump(pg: &Cluster, db: &str) -> String {
    let out = Command::new(pg.program("pg_dump"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-p"])
        .arg(pg.port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `culvert-functions rotate-master-key ARGS` on `store` with `keys`: (success, stdout, stderr).
fn rotate(store: &str, keys: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("rotate-master-key")
        .args(args)
        .env("CULVERT_CONTROL_STORE", store)
        .envs(keys.iter().map(|(k, v)| (k, v)))
        .env("CULVERT_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The master key version a sealed column of a row names.
fn stored_version(pg: &Cluster, db: &str, table: &str, column: &str, id: &str) -> String {
    pg.sql(
        db,
        &format!("select split_part({column}, ':', 2) from {table} where id = '{id}'"),
    )
}

const CANARY_HOST: &str = "db-canary-4412.internal";
const CANARY_SUBSCRIPTION: &str = "5eed1e55-0000-4000-8000-00000000ca11";
const CANARY_GROUP: &str = "rg-canary-7731";

fn canary_azure_environment() -> Value {
    let vnet = format!(
        "/subscriptions/{CANARY_SUBSCRIPTION}/resourceGroups/{CANARY_GROUP}/providers/Microsoft.Network/virtualNetworks/vnet-canary-7731"
    );
    json!({"name": "prod", "provider": "azure", "azure": {
        "subscription_id": CANARY_SUBSCRIPTION, "location": "eastus2", "resource_group": CANARY_GROUP,
        "vnet_id": vnet, "subnet_ids": [format!("{vnet}/subnets/agents")]}})
}

fn assert_no_canary(dump: &str) {
    for canary in [
        CANARY_HOST,
        CANARY_SUBSCRIPTION,
        CANARY_GROUP,
        "vnet-canary-7731",
    ] {
        assert!(
            !dump.contains(canary),
            "{canary} is stored in plaintext:\n{}",
            dump.lines()
                .filter(|l| l.contains(canary))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_is_sealed_at_rest_and_survives_rotation() {
    let pg = Cluster::start(&[]);
    pg.create_db("control");
    let compute = compute_server();
    let dir = culvert_tests::workdir("functions-at-rest");
    let h = start(&pg, &compute.url, &dir);
    let admin = h.admin.clone();

    let (s, az, _) = h
        .invoke_http(
            "environments",
            "POST",
            json!({}),
            Some(canary_azure_environment()),
            &admin,
        )
        .await;
    assert_eq!(s, 201, "{az}");
    assert_eq!(az["azure"]["resource_group"], CANARY_GROUP);
    assert_eq!(
        az["reason"].as_str().unwrap(),
        format!(
            "apply the bootstrap bundle in subscription {CANARY_SUBSCRIPTION} resource group {CANARY_GROUP}"
        )
    );
    let az_id = az["id"].as_str().unwrap().to_string();
    let (s, env, _) = h
        .invoke_http(
            "environments",
            "POST",
            json!({}),
            Some(json!({"name": "dev", "provider": "local"})),
            &admin,
        )
        .await;
    assert_eq!(s, 201, "{env}");
    let env_id = env["id"].as_str().unwrap().to_string();
    let create = json!({"name": "src", "environment_id": env_id, "type": "postgres-source",
        "config": {"host": CANARY_HOST, "port": 5432, "user": "postgres", "database": "app", "password": "hunter2-secret"}});
    let idem = [("Idempotency-Key", "create-canary")];
    let (s, c, _) = h
        .http(
            "POST",
            "/v1/connectors",
            Some(&admin),
            Some(create.clone()),
            &idem,
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["config"]["host"], CANARY_HOST);
    let id = c["id"].as_str().unwrap().to_string();
    let path = format!("/v1/connectors/{id}");

    // Nothing the user configured is readable in the store, and no plaintext column is left.
    let dump = pg_dump(&pg, "control");
    assert_no_canary(&dump);
    assert!(!dump.contains("hunter2"));
    assert!(
        dump.contains("config_sealed"),
        "the dump has the sealed columns"
    );
    let columns = pg.sql(
        "control",
        "select string_agg(table_name || '.' || column_name, ',') from information_schema.columns
         where table_schema = 'public' and (table_name, column_name) in
           (('connectors', 'config'), ('environments', 'azure'), ('idempotency_keys', 'body'))",
    );
    assert_eq!(columns, "", "plaintext columns remain");
    let sealed = pg.sql(
        "control",
        &format!("select config_sealed from connectors where id = '{id}'"),
    );
    assert!(sealed.starts_with("v1:1:"), "{sealed}");
    // A sealed value moved to another row does not open: the row id is bound in.
    let (s, other, _) = h
        .admin(
            "POST",
            "/v1/connectors",
            Some(
                json!({"name": "other", "environment_id": env_id, "type": "postgres-target",
                "config": {"host": "h", "user": "u", "database": "d"}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{other}");
    let other_id = other["id"].as_str().unwrap().to_string();
    let other_sealed = pg.sql(
        "control",
        &format!("select config_sealed from connectors where id = '{other_id}'"),
    );
    pg.sql(
        "control",
        &format!("update connectors set config_sealed = '{sealed}' where id = '{other_id}'"),
    );
    let (s, p, _) = h
        .admin("GET", &format!("/v1/connectors/{other_id}"), None)
        .await;
    assert_eq!(s, 500, "{p}");
    assert!(!p.to_string().contains(CANARY_HOST), "{p}");
    pg.sql(
        "control",
        &format!("update connectors set config_sealed = '{other_sealed}' where id = '{other_id}'"),
    );

    // Every read path opens it: get, list, an idempotent replay, a patch.
    let (_, got, _) = h.admin("GET", &path, None).await;
    assert_eq!(got["config"]["host"], CANARY_HOST, "{got}");
    let (_, listed, _) = h
        .admin(
            "GET",
            &format!("/v1/connectors?environment_id={env_id}"),
            None,
        )
        .await;
    assert_eq!(
        listed["items"][0]["config"]["host"], CANARY_HOST,
        "{listed}"
    );
    let (s, replay, _) = h
        .http("POST", "/v1/connectors", Some(&admin), Some(create), &idem)
        .await;
    assert_eq!((s, &replay["config"]["host"]), (201, &json!(CANARY_HOST)));
    let (_, envs, _) = h
        .invoke_http("environments", "GET", json!({}), None, &admin)
        .await;
    assert!(envs.to_string().contains(CANARY_GROUP), "{envs}");
    let (s, patched, _) = h
        .http(
            "PATCH",
            &path,
            Some(&admin),
            Some(json!({"config": {"port": 6543}})),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!(
        (s, patched["config"]["host"].as_str()),
        (200, Some(CANARY_HOST))
    );
    assert_no_canary(&pg_dump(&pg, "control"));

    // Rotation: a new version, every row re-encrypted under it, the running handler (which
    // loaded version 1 only) reloads the keys when it meets version 2.
    let store = store_url(&pg, "control");
    let keys = key_file_env(&dir);
    let (ok, out, err) = rotate(&store, &keys, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.starts_with("re-encrypted 4 row(s) under master key version 2 ("),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(
        stored_version(&pg, "control", "connectors", "config_sealed", &id),
        "2"
    );
    assert_eq!(
        stored_version(&pg, "control", "environments", "azure_sealed", &az_id),
        "2"
    );
    assert_eq!(
        pg.sql(
            "control",
            "select string_agg(distinct split_part(body_sealed, ':', 2), ',') from idempotency_keys"
        ),
        "2"
    );
    let (s, got, etag) = h.admin("GET", &path, None).await;
    assert_eq!((s, &got["config"]["port"]), (200, &json!(6543)), "{got}");
    assert_eq!(got["config"]["host"], CANARY_HOST);
    assert_eq!(
        etag.as_deref(),
        Some("\"2\""),
        "re-encryption is not a change"
    );
    let (_, az, _) = h
        .invoke_http("environments", "GET", json!({"id": az_id}), None, &admin)
        .await;
    assert_eq!(az["azure"]["subscription_id"], CANARY_SUBSCRIPTION, "{az}");
    assert_no_canary(&pg_dump(&pg, "control"));

    // Running it again to finish an interrupted rotation finds nothing left to do.
    let (ok, out, err) = rotate(&store, &keys, &["--no-new-version"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("re-encrypted 0 row(s) under master key version 2 "),
        "{out}"
    );
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.join("master-keys.json")).unwrap()).unwrap();
    assert_eq!(file["current"], "2");
    assert_eq!(file["versions"].as_object().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_rows_from_before_the_migration_are_sealed_on_start() {
    let pg = Cluster::start(&[]);
    pg.create_db("legacy");
    // A store as the release before sealing left it: migration 1 only, configuration in plaintext.
    pg.sql(
        "legacy",
        include_str!("../migrations/0001_control_store.sql"),
    );
    pg.sql(
        "legacy",
        "create table schema_migrations (version integer primary key, name text not null,
             applied_at timestamptz not null default now());
         insert into schema_migrations (version, name) values (1, '0001_control_store.sql')",
    );
    let az = canary_azure_environment();
    let az_id = "11111111-1111-4111-8111-111111111111";
    let local_id = "22222222-2222-4222-8222-222222222222";
    let conn_id = "33333333-3333-4333-8333-333333333333";
    let legacy_rows = format!(
        "insert into environments (id, name, provider, azure, agents, state, reason) values
           ('{az_id}', 'prod', 'azure', '{azure}', 1, 'pending_bootstrap',
            'apply the bootstrap bundle in subscription {CANARY_SUBSCRIPTION} resource group {CANARY_GROUP}'),
           ('{local_id}', 'dev', 'local', null, 1, 'registering', 'starting agents');
         insert into connectors (id, environment_id, name, connector_type, kind, config) values
           ('{conn_id}', '{local_id}', 'src', 'postgres-source', 'source',
            '{{\"host\": \"{CANARY_HOST}\", \"port\": 5432, \"user\": \"app\", \"database\": \"app\"}}');
         insert into idempotency_keys (principal, key, request_hash, status, body) values
           ('key:legacy', 'k1', '\\x00', 201, '{{\"config\": {{\"host\": \"{CANARY_HOST}\"}}}}')",
        azure = az["azure"]
    );
    pg.sql("legacy", &legacy_rows);
    assert!(pg_dump(&pg, "legacy").contains(CANARY_HOST));

    let compute = compute_server();
    let dir = culvert_tests::workdir("functions-legacy");
    // create-admin-key applies migration 2 without sealing; the handler's first request seals.
    let h = start_with(
        &store_url(&pg, "legacy"),
        &compute.url,
        &dir,
        &key_file_env(&dir),
    );
    let (s, c, _) = h
        .admin("GET", &format!("/v1/connectors/{conn_id}"), None)
        .await;
    assert_eq!((s, &c["config"]["host"]), (200, &json!(CANARY_HOST)), "{c}");
    let (s, e, _) = h
        .invoke_http("environments", "GET", json!({"id": az_id}), None, &h.admin)
        .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["azure"]["resource_group"], CANARY_GROUP);
    assert!(e["reason"].as_str().unwrap().contains(CANARY_GROUP), "{e}");
    assert_no_canary(&pg_dump(&pg, "legacy"));
    assert_eq!(
        stored_version(&pg, "legacy", "connectors", "config_sealed", conn_id),
        "1"
    );
    assert_eq!(
        pg.sql(
            "legacy",
            "select count(*) from idempotency_keys where body_sealed like 'v1:1:%'"
        ),
        "1"
    );
}

#[test]
fn serve_without_master_key_settings_fails_at_start_naming_both() {
    let out = Command::new(bin())
        .arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", free_port().to_string())
        .env(
            "CULVERT_CONTROL_STORE",
            "host=127.0.0.1 port=1 user=postgres dbname=control",
        )
        .env_remove("CULVERT_MASTER_KEY_FILE")
        .env_remove("CULVERT_MASTER_KEY_SECRET_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    for name in ["CULVERT_MASTER_KEY_SECRET_URL", "CULVERT_MASTER_KEY_FILE"] {
        assert!(lines[0].contains(name), "{stderr}");
    }
}

/// A local stand-in for the managed identity endpoint and Key Vault, in this process.
struct LocalVault {
    identity_endpoint: String,
    /// The vault over HTTPS, for the Key Vault client.
    vault: String,
    /// The same vault over plain HTTP, for the fault controls.
    vault_http: String,
    /// The CA its HTTPS certificate chains to.
    ca: String,
}

const IDENTITY_HEADER: &str = "functions-test-identity-header";
/// May read the master key secret (what the control plane holds on Azure).
const READER: &str = "aaaaaaaa-0000-4000-8000-00000000f001";
/// May also add versions (what rotation needs).
const ROTATOR: &str = "aaaaaaaa-0000-4000-8000-00000000f002";
/// Holds no secret permission.
const STRANGER: &str = "aaaaaaaa-0000-4000-8000-00000000f003";

async fn local_vault(dir: &Path) -> LocalVault {
    let object = |client: &str| client.replace("aaaaaaaa", "bbbbbbbb");
    let config = json!({
        "tenant_id": "11111111-2222-4333-8444-555555555555",
        "identities": [
            {"name": "reader", "client_id": READER, "object_id": object(READER)},
            {"name": "rotator", "client_id": ROTATOR, "object_id": object(ROTATOR)},
            {"name": "stranger", "client_id": STRANGER, "object_id": object(STRANGER)}
        ],
        "token_endpoint": {"listen": "127.0.0.1:0", "header": IDENTITY_HEADER},
        "vaults": [{"name": "culvert-kv", "listen": "127.0.0.1:0", "access_policies": [
            {"object_id": object(READER), "secrets": ["get", "list"]},
            {"object_id": object(ROTATOR), "secrets": ["get", "list", "set"]}
        ]}]
    });
    let config = culvert_azure_local::config::Config::parse(&config.to_string())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let server = culvert_azure_local::server::start(&config, &dir.join("azure-local"))
        .await
        .unwrap();
    let endpoints = server.endpoints().clone();
    tokio::spawn(server.run_until(std::future::pending()));
    LocalVault {
        identity_endpoint: endpoints.identity_endpoint,
        vault: endpoints.vaults_https["culvert-kv"]
            .trim_end_matches('/')
            .to_string(),
        vault_http: endpoints.vaults["culvert-kv"]
            .trim_end_matches('/')
            .to_string(),
        ca: endpoints.ca_certificate,
    }
}

impl LocalVault {
    /// The settings of a process whose managed identity is `client_id`.
    fn env(&self, client_id: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "CULVERT_MASTER_KEY_SECRET_URL",
                format!("{}/secrets/culvert-master-key", self.vault),
            ),
            ("CULVERT_AZURE_CREDENTIAL", "managed-identity".into()),
            ("CULVERT_AZURE_CLIENT_ID", client_id.into()),
            ("IDENTITY_ENDPOINT", self.identity_endpoint.clone()),
            ("IDENTITY_HEADER", IDENTITY_HEADER.into()),
            ("CULVERT_AZURE_CA_FILE", self.ca.clone()),
        ]
    }

    async fn faults(&self, method: &str, rule: Option<Value>) {
        let client = reqwest::Client::new();
        let mut req = client.request(
            method.parse().unwrap(),
            format!("{}/_local/faults", self.vault_http),
        );
        if let Some(r) = rule {
            req = req.json(&r);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_keys_in_key_vault_and_their_failures_are_explained() {
    let pg = Cluster::start(&[]);
    pg.create_db("control");
    let compute = compute_server();
    let dir = culvert_tests::workdir("functions-vault-keys");
    let kv = local_vault(&dir).await;
    let store = store_url(&pg, "control");
    let secret = format!("{}/secrets/culvert-master-key", kv.vault);

    // No secret yet: a 503 that says how to create it.
    let h = start_with(&store, &compute.url, &dir.join("h1"), &kv.env(READER));
    let (s, p, _) = h.admin("GET", "/v1/connectors", None).await;
    assert_eq!(s, 503, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(&secret) && detail.contains("rotate-master-key"),
        "{detail}"
    );

    // The serving identity may not add versions: the error names the secret and the permission.
    let (ok, out, err) = rotate(&store, &kv.env(READER), &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&secret) && err.contains("`set` secret permission"),
        "{err}"
    );

    // An identity that may: the first version. The running handler answers on its next request.
    let (ok, out, err) = rotate(&store, &kv.env(ROTATOR), &[]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("re-encrypted 0 row(s) under master key version "),
        "{out}"
    );
    let first = out.split_whitespace().nth(7).unwrap().to_string();
    let (s, p, _) = h.admin("GET", "/v1/connectors", None).await;
    assert_eq!(s, 200, "{p}");
    let (s, env, _) = h
        .invoke_http(
            "environments",
            "POST",
            json!({}),
            Some(json!({"name": "dev", "provider": "local"})),
            &h.admin,
        )
        .await;
    assert_eq!(s, 201, "{env}");
    let create = json!({"name": "src", "environment_id": env["id"], "type": "postgres-target",
        "config": {"host": CANARY_HOST, "user": "postgres", "database": "app"}});
    let (s, c, _) = h.admin("POST", "/v1/connectors", Some(create)).await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        stored_version(&pg, "control", "connectors", "config_sealed", &id),
        first
    );

    // An identity without the read permissions: the error names the secret and `list`.
    let h2 = start_with(&store, &compute.url, &dir.join("h2"), &kv.env(STRANGER));
    let (s, p, _) = h2.admin("GET", "/v1/connectors", None).await;
    assert_eq!(s, 503, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(&secret) && detail.contains("`list` secret permission"),
        "{detail}"
    );
    drop(h2);

    // The vault failing at start: a 503 asking to retry, and the next request tries again.
    kv.faults(
        "POST",
        Some(json!({"status": 503, "count": 1000, "operations": ["list_secret_versions"]})),
    )
    .await;
    let h3 = start_with(&store, &compute.url, &dir.join("h3"), &kv.env(READER));
    let (s, p, _) = h3.admin("GET", &format!("/v1/connectors/{id}"), None).await;
    assert_eq!(s, 503, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("retry in a moment"),
        "{p}"
    );
    kv.faults("DELETE", None).await;
    let (s, c, _) = h3.admin("GET", &format!("/v1/connectors/{id}"), None).await;
    assert_eq!((s, &c["config"]["host"]), (200, &json!(CANARY_HOST)), "{c}");

    // A rotation sets a new secret version; both running handlers reload when they meet it.
    let (ok, out, err) = rotate(&store, &kv.env(ROTATOR), &[]);
    assert!(ok, "{err}");
    let second = out.split_whitespace().nth(7).unwrap().to_string();
    assert_ne!(second, first);
    assert!(out.starts_with("re-encrypted 1 row(s)"), "{out}");
    assert_eq!(
        stored_version(&pg, "control", "connectors", "config_sealed", &id),
        second
    );
    for handler in [&h, &h3] {
        let (s, c, _) = handler
            .admin("GET", &format!("/v1/connectors/{id}"), None)
            .await;
        assert_eq!((s, &c["config"]["host"]), (200, &json!(CANARY_HOST)), "{c}");
    }
    assert_no_canary(&pg_dump(&pg, "control"));
}

/// A component the agent build compiled (connectors-wasm, built by agent-host's build script
/// into `<target>/wasm-connectors`).
fn built_component(file: &str) -> Vec<u8> {
    // The test binary is <target>/<profile>/deps/api-HASH.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let path = target
        .join("wasm-connectors/wasm32-wasip2/release")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the agent first (cargo build --release -p culvert-agent-host) so its build script compiles the connectors",
            path.display()
        )
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Handler {
    /// `PUT /v1/components/{digest}` with `bytes`: `(status, body)`.
    async fn put_component(&self, digest: &str, bytes: &[u8], content_type: &str) -> (u16, Value) {
        let resp = self
            .client
            .put(format!("{}/api/v1/components/{digest}", self.base))
            .bearer_auth(&self.admin)
            .header("Content-Type", content_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_registry_on_a_real_store() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use ed25519_dalek::Signer;

    let pg = Cluster::start(&[]);
    pg.create_db("control");
    let compute = compute_server();
    let dir = culvert_tests::workdir("functions-registry");
    let h = start(&pg, &compute.url, &dir);
    let admin = h.admin.clone();
    let wasm = "application/wasm";

    // Components: the bytes must hash to the path's digest and be a connector component.
    let source = built_component("postgres_source.wasm");
    let misbehave = built_component("test_misbehave.wasm");
    let target = built_component("postgres_target.wasm");
    let (ds, dm, dt) = (
        sha256_hex(&source),
        sha256_hex(&misbehave),
        sha256_hex(&target),
    );
    let (s, p) = h.put_component(&dm, &source, wasm).await;
    assert_eq!(s, 400, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(&dm) && detail.contains(&ds), "{detail}");
    let core = b"\0asm\x01\0\0\0".to_vec();
    let (s, p) = h.put_component(&sha256_hex(&core), &core, wasm).await;
    assert_eq!(s, 400, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{p}"
    );
    assert!(
        p["detail"].as_str().unwrap().contains("wasm32-wasip2"),
        "{p}"
    );
    assert_eq!(h.put_component("not-a-digest", &source, wasm).await.0, 400);
    assert_eq!(
        h.put_component(&ds, &source, "application/json").await.0,
        415
    );
    let (s, c) = h.put_component(&ds, &source, wasm).await;
    assert_eq!((s, c["kind"].as_str()), (201, Some("source")), "{c}");
    assert_eq!(c["size"], source.len() as u64);
    let (s, _) = h.put_component(&ds, &source, wasm).await;
    assert_eq!(s, 200, "storing the same bytes again changes nothing");
    assert_eq!(h.put_component(&dm, &misbehave, wasm).await.0, 201);
    let (s, c) = h.put_component(&dt, &target, wasm).await;
    assert_eq!((s, c["kind"].as_str()), (201, Some("target")), "{c}");
    let (s, c, _) = h.admin("GET", &format!("/v1/components/{ds}"), None).await;
    assert_eq!((s, c["digest"].as_str()), (200, Some(ds.as_str())));

    // Versions: immutable, kind from the component, spec and egress checked.
    let spec = |extra: Value| {
        let mut props = json!({
            "url": {"type": "string", "x-culvert-egress": true},
            "token": {"type": "string", "writeOnly": true, "x-culvert-secret": true}});
        props
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"type": "object", "required": ["url"], "additionalProperties": false, "properties": props})
    };
    let v1 = json!({"version": "1.0.0", "digest": ds, "spec": spec(json!({})),
        "egress": ["auth.example.com:443"], "limits": {"memory_mib": 128}, "description": "first"});
    let versions = "/v1/connector-types/acme-source/versions";
    let (s, v, _) = h.admin("POST", versions, Some(v1.clone())).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["kind"], "source");
    assert_eq!(v["size"], source.len() as u64);
    assert_eq!(v["egress"], json!(["auth.example.com:443"]));
    assert_eq!(v["limits"], json!({"memory_mib": 128}));
    assert!(v.get("signed_by").is_none(), "{v}");
    let (s, again, _) = h.admin("POST", versions, Some(v1.clone())).await;
    assert_eq!(
        (s, &again["created_at"]),
        (200, &v["created_at"]),
        "an identical republish is a no-op"
    );
    let mut other = v1.clone();
    other["digest"] = json!(dm);
    let (s, p, _) = h.admin("POST", versions, Some(other)).await;
    assert_eq!(s, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("immutable"), "{p}");
    let mut other = v1.clone();
    other["egress"] = json!(["evil.example.com:443"]);
    assert_eq!(h.admin("POST", versions, Some(other)).await.0, 409);
    let mut wrong_kind = v1.clone();
    wrong_kind["version"] = json!("0.9.0");
    wrong_kind["digest"] = json!(dt);
    let (s, p, _) = h.admin("POST", versions, Some(wrong_kind)).await;
    assert_eq!(
        s, 409,
        "a target component cannot become a version of a source type: {p}"
    );
    let (s, p, _) = h
        .admin(
            "POST",
            "/v1/connector-types/postgres-source/versions",
            Some(v1.clone()),
        )
        .await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(
        h.admin(
            "POST",
            "/v1/connector-types/Acme/versions",
            Some(v1.clone())
        )
        .await
        .0,
        400
    );
    for (field, value, pointer) in [
        ("digest", json!("ab".repeat(32)), "/digest"),
        ("version", json!("1.0"), "/version"),
        (
            "spec",
            json!({"type": "object", "properties": {"a": {"type": "nope"}}}),
            "/spec",
        ),
        ("egress", json!(["no-port"]), "/egress/0"),
        ("limits", json!({"memory_mib": 1}), "/limits/memory_mib"),
        ("description", json!("nul\u{0}byte"), "/description"),
        (
            "spec",
            json!({"type": "object", "title": "nul\u{0}"}),
            "/spec",
        ),
    ] {
        let mut bad = v1.clone();
        bad["version"] = json!("3.0.0");
        bad[field] = value;
        let (s, p, _) = h.admin("POST", versions, Some(bad)).await;
        assert_eq!(
            (s, p["errors"][0]["pointer"].as_str()),
            (422, Some(pointer)),
            "{p}"
        );
    }
    let v11 = json!({"version": "1.1.0", "digest": ds, "spec": spec(json!({"region": {"type": "string"}}))});
    assert_eq!(h.admin("POST", versions, Some(v11)).await.0, 201);
    let (_, types, _) = h.admin("GET", "/v1/connector-types", None).await;
    let types = types.as_array().unwrap();
    let pg_type = types
        .iter()
        .find(|t| t["name"] == "postgres-source")
        .unwrap();
    assert_eq!(pg_type["first_party"], true);
    let acme = types.iter().find(|t| t["name"] == "acme-source").unwrap();
    assert_eq!(acme["latest_version"], "1.1.0", "{acme}");
    assert!(
        acme["spec"]["properties"]["region"].is_object(),
        "the latest version's spec"
    );
    let (_, t, _) = h
        .admin("GET", "/v1/connector-types/acme-source", None)
        .await;
    assert_eq!(t["versions"].as_array().unwrap().len(), 2, "{t}");
    assert_eq!(t["versions"][0]["digest"], ds.as_str());
    assert_eq!(t["versions"][0]["egress"], json!(["auth.example.com:443"]));
    let (s, one, _) = h.admin("GET", &format!("{versions}/1.0.0"), None).await;
    assert_eq!(
        (s, one["spec"]["required"].clone()),
        (200, json!(["url"])),
        "{one}"
    );
    assert_eq!(
        h.admin("GET", &format!("{versions}/9.9.9"), None).await.0,
        404
    );
    assert_eq!(
        h.admin("GET", "/v1/connector-types/nope/versions", None)
            .await
            .0,
        404
    );
    let nul = "/v1/connector-types/a%00b/versions/1.0.0";
    assert_eq!(h.admin("GET", nul, None).await.0, 404);

    // Signing keys: once one exists, every publication needs a valid signature by one.
    let signer = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let public = B64.encode(signer.verifying_key().to_bytes());
    let key_path = "/v1/signing-keys/release";
    let (s, k, _) = h
        .admin("PUT", key_path, Some(json!({"public_key": public})))
        .await;
    assert_eq!(
        (s, k["public_key"].as_str()),
        (201, Some(public.as_str())),
        "{k}"
    );
    assert_eq!(
        h.admin("PUT", key_path, Some(json!({"public_key": public})))
            .await
            .0,
        200
    );
    let other_key = B64.encode(
        ed25519_dalek::SigningKey::from_bytes(&[1u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    assert_eq!(
        h.admin("PUT", key_path, Some(json!({"public_key": other_key})))
            .await
            .0,
        409
    );
    let (s, p, _) = h
        .admin(
            "PUT",
            "/v1/signing-keys/bad",
            Some(json!({"public_key": "c2hvcnQ="})),
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["pointer"].as_str()),
        (422, Some("/public_key")),
        "{p}"
    );
    let (_, keys, _) = h.admin("GET", "/v1/signing-keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    let sign = |version: &str| {
        let msg = format!("culvert-connector:v1:acme-source:{version}:{ds}");
        B64.encode(signer.sign(msg.as_bytes()).to_bytes())
    };
    let v12 = json!({"version": "1.2.0", "digest": ds, "spec": spec(json!({}))});
    let (s, p, _) = h.admin("POST", versions, Some(v12.clone())).await;
    assert_eq!(s, 403, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("release") && detail.contains("--sign-key"),
        "{detail}"
    );
    let mut forged = v12.clone();
    forged["signature"] = json!({"key_id": "release", "value": sign("1.1.9")});
    let (s, p, _) = h.admin("POST", versions, Some(forged)).await;
    assert_eq!(
        s, 403,
        "a signature over another version does not verify: {p}"
    );
    let mut unknown = v12.clone();
    unknown["signature"] = json!({"key_id": "someone", "value": sign("1.2.0")});
    let (s, p, _) = h.admin("POST", versions, Some(unknown)).await;
    assert_eq!(s, 403, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("accepted keys are release"),
        "{p}"
    );
    let mut signed = v12.clone();
    signed["signature"] = json!({"key_id": "release", "value": sign("1.2.0")});
    let (s, v, _) = h.admin("POST", versions, Some(signed)).await;
    assert_eq!((s, v["signed_by"].as_str()), (201, Some("release")), "{v}");
    let (s, _, _) = h.admin("DELETE", key_path, None).await;
    assert_eq!(s, 204);
    assert_eq!(h.admin("DELETE", key_path, None).await.0, 404);

    // Connectors pin a version and are validated against its spec.
    let (s, env, _) = h
        .invoke_http(
            "environments",
            "POST",
            json!({}),
            Some(json!({"name": "reg", "provider": "local"})),
            &admin,
        )
        .await;
    assert_eq!(s, 201, "{env}");
    let env_id = env["id"].as_str().unwrap().to_string();
    let connector = |name: &str, ty: &str, config: Value| json!({"name": name, "environment_id": env_id, "type": ty, "config": config});
    let cfg = json!({"url": "https://auth.example.com/api", "token": "tok-secret-77"});
    let (s, c, _) = h
        .admin(
            "POST",
            "/v1/connectors",
            Some(connector("acme", "acme-source@1.0.0", cfg.clone())),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(
        (
            c["type"].as_str(),
            c["type_version"].as_str(),
            c["digest"].as_str()
        ),
        (Some("acme-source"), Some("1.0.0"), Some(ds.as_str()))
    );
    assert_eq!(c["secrets"], json!(["token"]));
    assert!(!c.to_string().contains("tok-secret-77"));
    let acme_id = c["id"].as_str().unwrap().to_string();
    let mut with_region = cfg.clone();
    with_region["region"] = json!("eu");
    let (s, p, _) = h
        .admin(
            "POST",
            "/v1/connectors",
            Some(connector("acme2", "acme-source@1.0.0", with_region.clone())),
        )
        .await;
    assert_eq!(s, 422, "1.0.0's spec has no region: {p}");
    assert!(
        p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["pointer"] == "/config/region"),
        "{p}"
    );
    let (s, c, _) = h
        .admin(
            "POST",
            "/v1/connectors",
            Some(connector("acme-latest", "acme-source", cfg.clone())),
        )
        .await;
    assert_eq!(
        (s, c["type_version"].as_str()),
        (201, Some("1.2.0")),
        "the latest version: {c}"
    );
    for (ty, why) in [
        ("acme-source@7.0.0", "its versions are 1.0.0, 1.1.0, 1.2.0"),
        ("nope-source", "unknown connector type"),
        ("postgres-source@1.0.0", "has no versions"),
    ] {
        let (s, p, _) = h
            .admin(
                "POST",
                "/v1/connectors",
                Some(connector("x", ty, cfg.clone())),
            )
            .await;
        assert_eq!(s, 422, "{ty}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(why), "{ty}: {p}");
    }
    let acme_path = format!("/v1/connectors/{acme_id}");
    let (s, c, _) = h
        .admin(
            "PATCH",
            &acme_path,
            Some(json!({"type_version": "1.1.0", "config": {"region": "eu"}})),
        )
        .await;
    assert_eq!((s, c["type_version"].as_str()), (200, Some("1.1.0")), "{c}");
    assert_eq!(c["secrets"], json!(["token"]), "the sealed secret is kept");
    let (s, p, _) = h
        .admin("PATCH", &acme_path, Some(json!({"type_version": "1.0.0"})))
        .await;
    assert_eq!(s, 422, "going back re-validates against 1.0.0's spec: {p}");
    let (s, c, _) = h
        .admin(
            "PATCH",
            &acme_path,
            Some(json!({"type_version": "1.0.0", "config": {"region": null}})),
        )
        .await;
    assert_eq!((s, c["type_version"].as_str()), (200, Some("1.0.0")), "{c}");
    let tgt = connector(
        "dst",
        "postgres-target",
        json!({"host": "127.0.0.1", "user": "postgres", "database": "replica"}),
    );
    let (s, tgt, _) = h.admin("POST", "/v1/connectors", Some(tgt)).await;
    assert_eq!(s, 201, "{tgt}");

    // A pipeline shows what it runs; agents get the component reference, egress and limits,
    // and fetch the bytes by digest.
    let pipe = json!({"name": "acme_orders", "source_id": acme_id, "target_id": tgt["id"], "tables": ["demo.*"]});
    let (s, pipe, _) = h.admin("POST", "/v1/pipelines", Some(pipe)).await;
    assert_eq!(s, 201, "{pipe}");
    assert_eq!(
        pipe["connectors"]["source"]["type_version"], "1.0.0",
        "{pipe}"
    );
    assert_eq!(pipe["connectors"]["source"]["digest"], ds.as_str());
    assert_eq!(pipe["connectors"]["target"]["type"], "postgres-target");
    let pid = pipe["id"].as_str().unwrap().to_string();
    assert_eq!(
        h.admin("POST", &format!("/v1/pipelines/{pid}/deploy"), None)
            .await
            .0,
        200
    );
    let msg = json!({"environment_id": env_id, "action": "ensure"});
    assert_eq!(h.invoke_queue("provision", &msg, 1).await, 200);
    let token = compute.requests.lock().unwrap().last().unwrap()["registration_token"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"environment_id": env_id, "name": "reg-agent", "version": "test"});
    let (s, r, _) = h
        .http("POST", "/v1/agent/register", Some(&token), Some(body), &[])
        .await;
    assert_eq!(s, 201, "{r}");
    let agent = r["agent_key"].as_str().unwrap().to_string();
    let (s, beat, _) = h.heartbeat(&agent, json!({"running": []})).await;
    assert_eq!(s, 200, "{beat}");
    let src = &beat["assignments"][0]["source"];
    assert_eq!(
        src["component"],
        json!({"digest": ds, "size": source.len()}),
        "{beat}"
    );
    assert_eq!(src["type_version"], "1.0.0");
    assert_eq!(src["egress"], json!(["auth.example.com:443"]));
    assert_eq!(src["limits"], json!({"memory_mib": 128}));
    assert!(beat["assignments"][0]["target"].get("component").is_none());
    let (_, st, _) = h
        .admin("GET", &format!("/v1/pipelines/{pid}/status"), None)
        .await;
    assert_eq!(st["connectors"]["source"]["type_version"], "1.0.0", "{st}");

    let fetch = |key: String, digest: String| {
        let (client, base) = (h.client.clone(), h.base.clone());
        async move {
            let resp = client
                .get(format!("{base}/api/v1/agent/components/{digest}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            (status, ctype, resp.bytes().await.unwrap().to_vec())
        }
    };
    let (s, ctype, bytes) = fetch(agent.clone(), ds.clone()).await;
    assert_eq!((s, ctype.as_deref()), (200, Some("application/wasm")));
    assert_eq!(
        sha256_hex(&bytes),
        ds,
        "the agent receives exactly the published bytes"
    );
    assert_eq!(fetch(admin.clone(), ds.clone()).await.0, 403, "agents only");
    assert_eq!(fetch(agent.clone(), "ab".repeat(32)).await.0, 404);

    // Validations carry the component too.
    let (s, v, _) = h
        .invoke_http(
            "connector-validate",
            "POST",
            json!({"id": acme_id}),
            None,
            &admin,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let (_, beat, _) = h.heartbeat(&agent, json!({"running": []})).await;
    assert_eq!(
        beat["validations"][0]["connector"]["component"]["digest"],
        ds.as_str(),
        "{beat}"
    );
}

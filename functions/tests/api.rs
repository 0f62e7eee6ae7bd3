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

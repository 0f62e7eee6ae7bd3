//! Shared test harness: a config with three identities, and the real binary run as a child
//! process on free loopback ports.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const TENANT: &str = "11111111-2222-4333-8444-555555555555";
pub const HEADER: &str = "local-identity-header-value";
pub const VAULT: &str = "culvert-kv";
pub const OTHER_VAULT: &str = "culvert-kv-2";

/// A configured managed identity.
pub struct Ident {
    pub name: &'static str,
    pub client_id: &'static str,
    pub object_id: &'static str,
}

/// Full rights on keys and secrets: used to set up keys.
pub const ADMIN: Ident = Ident {
    name: "admin",
    client_id: "aaaaaaaa-0000-4000-8000-000000000001",
    object_id: "bbbbbbbb-0000-4000-8000-000000000001",
};
/// The agent: may use keys to decrypt/unwrap and read secrets.
pub const AGENT: Ident = Ident {
    name: "agent",
    client_id: "aaaaaaaa-0000-4000-8000-000000000002",
    object_id: "bbbbbbbb-0000-4000-8000-000000000002",
};
/// The control plane: only get/list/encrypt on keys.
pub const CONTROL: Ident = Ident {
    name: "control-plane",
    client_id: "aaaaaaaa-0000-4000-8000-000000000003",
    object_id: "bbbbbbbb-0000-4000-8000-000000000003",
};

pub fn config() -> Value {
    let ident =
        |i: &Ident| json!({"name": i.name, "client_id": i.client_id, "object_id": i.object_id});
    json!({
        "tenant_id": TENANT,
        "identities": [ident(&ADMIN), ident(&AGENT), ident(&CONTROL)],
        "token_endpoint": {"listen": "127.0.0.1:0", "header": HEADER},
        "vaults": [
            {"name": VAULT, "listen": "127.0.0.1:0", "access_policies": [
                {"object_id": ADMIN.object_id, "keys": ["all"], "secrets": ["all"]},
                {"object_id": AGENT.object_id, "keys": ["get", "decrypt", "unwrapKey"], "secrets": ["get", "list"]},
                {"object_id": CONTROL.object_id, "keys": ["get", "list", "encrypt"]}
            ]},
            {"name": OTHER_VAULT, "listen": "127.0.0.1:0", "access_policies": []}
        ]
    })
}

/// The binary, running.
pub struct LocalAzure {
    child: Option<Child>,
    pub dir: PathBuf,
    pub identity_endpoint: String,
    pub vaults: serde_json::Map<String, Value>,
    pub vaults_https: serde_json::Map<String, Value>,
    pub ca_certificate: PathBuf,
    log: PathBuf,
}

impl LocalAzure {
    /// Starts the binary with [`config`] and a state dir under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &config())
    }

    /// Starts the binary with `config` and a state dir under `dir`; waits for the ready file.
    pub fn start_with(dir: &Path, config: &Value) -> Self {
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_culvert-azure-local"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn culvert-azure-local");
        let mut me = Self {
            child: Some(child),
            dir: dir.to_owned(),
            identity_endpoint: String::new(),
            vaults: Default::default(),
            vaults_https: Default::default(),
            ca_certificate: PathBuf::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(bytes) = std::fs::read(&ready) {
                let v: Value = serde_json::from_slice(&bytes).expect("ready file is complete JSON");
                me.identity_endpoint = v["identity_endpoint"].as_str().unwrap().to_owned();
                me.vaults = v["vaults"].as_object().unwrap().clone();
                me.vaults_https = v["vaults_https"].as_object().unwrap().clone();
                me.ca_certificate = PathBuf::from(v["ca_certificate"].as_str().unwrap());
                return me;
            }
            if let Some(status) = me.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited early with {status}: {}", me.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
                me.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The plain-HTTP URL of a vault.
    pub fn vault_url(&self, name: &str) -> String {
        self.vaults[name].as_str().unwrap().to_owned()
    }

    /// The HTTPS URL of a vault (same port).
    pub fn vault_https_url(&self, name: &str) -> String {
        self.vaults_https[name].as_str().unwrap().to_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        terminate(&child);
        wait_bounded(&mut child, Duration::from_secs(15))
    }
}

impl Drop for LocalAzure {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn terminate(child: &Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("send SIGTERM");
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gets a token the way the SDK does, over plain HTTP.
pub async fn token(server: &LocalAzure, who: &Ident, resource: &str) -> String {
    let resp = reqwest::Client::new()
        .get(&server.identity_endpoint)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", resource),
            ("client_id", who.client_id),
        ])
        .header("X-IDENTITY-HEADER", HEADER)
        .header("metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Re-run this test binary with only `entry` selected, as `who`'s managed identity (the SDK
/// reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` from the process environment, which a test
/// cannot set for itself), plus `envs`; returns the `{prefix} key=value` lines it printed.
pub fn run_child(
    server: &LocalAzure,
    who: &Ident,
    entry: &str,
    prefix: &str,
    envs: &[(&str, &str)],
) -> std::collections::BTreeMap<String, String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            entry,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("IDENTITY_ENDPOINT", &server.identity_endpoint)
        .env("IDENTITY_HEADER", HEADER)
        // Any of these would make the credential pick another managed-identity source.
        .env_remove("IDENTITY_SERVER_THUMBPRINT")
        .env_remove("IMDS_ENDPOINT")
        .env_remove("MSI_ENDPOINT")
        .env_remove("MSI_SECRET")
        .envs(envs.iter().copied())
        .output()
        .expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {entry} as {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- server log\n{}",
        who.name,
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let marker = format!("{prefix} ");
    stdout
        .lines()
        // libtest prints "test NAME ... " without a newline before the test's own output.
        .filter_map(|l| l.split_once(marker.as_str()).map(|(_, rest)| rest))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

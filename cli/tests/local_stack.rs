//! `culvert local up/down` end to end: the whole control plane on this machine, an environment
//! with a local agent, and a restart that loses nothing.
//!
//! Needs PostgreSQL server binaries, Azurite (both installed by scripts/setup.sh) and the
//! workspace's binaries next to `culvert` (`cargo build --release --workspace`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn culvert() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_culvert"))
}

/// Fail loudly, naming the fix, when something the stack runs is missing.
fn check_prerequisites() {
    let dir = culvert().parent().expect("target dir").to_path_buf();
    for bin in [
        "culvert-functions",
        "culvert-functions-host",
        "culvert-agent",
    ] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} is missing from {}; build everything first: cargo build --release --workspace",
            dir.display()
        );
    }
    let pg = std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .map(|d| d.join("initdb").is_file())
        .unwrap_or(false)
        || std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.path().join("bin/initdb").is_file())
            })
            .unwrap_or(false);
    assert!(
        pg,
        "PostgreSQL server binaries are missing (no /usr/lib/postgresql/*/bin/initdb, no PG_BIN); run scripts/setup.sh"
    );
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("azurite").is_file()))
        .unwrap_or(false);
    let cached = std::env::var_os("HOME")
        .map(|h| {
            Path::new(&h)
                .join(".cache/culvert/npm/node_modules/.bin/azurite")
                .is_file()
        })
        .unwrap_or(false);
    let pinned = std::env::var_os("AZURITE_BIN")
        .map(|p| Path::new(&p).is_file())
        .unwrap_or(false);
    assert!(
        pinned || on_path || cached,
        "Azurite is missing (AZURITE_BIN, PATH, ~/.cache/culvert/npm); run scripts/setup.sh"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Stack {
    state: tempfile::TempDir,
    port: u16,
}

impl Stack {
    fn cmd(&self, args: &[&str]) -> Output {
        let out = Command::new(culvert())
            .arg("--state-dir")
            .arg(self.state.path())
            .args(args)
            // Only this stack's recorded URL and admin key count.
            .env_remove("CULVERT_API_URL")
            .env_remove("CULVERT_API_KEY")
            .env_remove("CULVERT_API_KEY_FILE")
            .env_remove("CULVERT_HOME")
            .output()
            .expect("run culvert");
        eprintln!(
            "$ culvert {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        if !out.status.success() {
            let logs = self.state.path().join("logs");
            let mut tails = String::new();
            for name in ["supervisor", "functions", "azurite"] {
                let text =
                    std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                tails.push_str(&format!(
                    "--- {name}.log\n{}\n",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                ));
            }
            panic!(
                "culvert {} failed ({})\n{tails}",
                args.join(" "),
                out.status
            );
        }
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    fn up(&self) {
        let port = self.port.to_string();
        self.ok(&["local", "up", "--port", &port]);
    }

    /// The agents of `env` that heartbeated after `since` (RFC 3339), polled for up to `timeout`.
    fn wait_for_healthy_agents(
        &self,
        env: &str,
        since: chrono::DateTime<chrono::Utc>,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let agents = self.json(&["agent", "list", "--env", env]);
            let fresh: Vec<Value> = agents["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["health"] == "healthy")
                .filter(|a| {
                    a["last_heartbeat_at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t >= since)
                })
                .cloned()
                .collect();
            if !fresh.is_empty() || Instant::now() >= deadline {
                return fresh;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Never leave a stack running behind a failed assertion.
        let _ = self.cmd(&["local", "down"]);
    }
}

#[test]
fn local_stack_survives_down_and_up() {
    check_prerequisites();
    let stack = Stack {
        state: tempfile::tempdir().unwrap(),
        port: free_port(),
    };

    stack.up();
    let admin_key = stack.state.path().join("admin.key");
    assert!(admin_key.is_file(), "up writes the admin key");
    let identities =
        std::fs::read_to_string(stack.state.path().join("azure/identities.json")).unwrap();

    let envs = stack.json(&["env", "list"]);
    assert_eq!(
        envs["items"],
        Value::Array(vec![]),
        "a new stack has no environments"
    );

    let created = stack.json(&["env", "create", "demo", "--local"]);
    let env_id = created["id"].as_str().unwrap().to_string();
    stack.ok(&["env", "wait", "demo", "--state", "ready", "--timeout", "90"]);

    let agents = stack.wait_for_healthy_agents(
        "demo",
        chrono::DateTime::<chrono::Utc>::MIN_UTC,
        Duration::from_secs(10),
    );
    assert_eq!(agents.len(), 1, "one healthy agent: {agents:?}");
    assert_eq!(agents[0]["environment_id"], env_id.as_str());
    let agent_id = agents[0]["id"].clone();

    stack.ok(&["local", "down"]);
    let status = stack.cmd(&["local", "status"]);
    assert_eq!(
        status.status.code(),
        Some(7),
        "status of a stopped stack exits 7"
    );

    let restarted = chrono::Utc::now();
    stack.up();
    let envs = stack.json(&["env", "list"]);
    let items = envs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{envs}");
    assert_eq!(
        items[0]["id"],
        env_id.as_str(),
        "the environment survived the restart"
    );
    stack.ok(&["env", "wait", "demo", "--state", "ready", "--timeout", "90"]);
    let agents = stack.wait_for_healthy_agents("demo", restarted, Duration::from_secs(90));
    assert_eq!(
        agents.len(),
        1,
        "the agent heartbeats again after the restart: {agents:?}"
    );
    assert_eq!(
        agents[0]["id"], agent_id,
        "the same agent (its state dir survived) came back"
    );
    assert_eq!(
        std::fs::read_to_string(stack.state.path().join("azure/identities.json")).unwrap(),
        identities,
        "the stand-ins' identities are kept"
    );

    // Exit codes scripts rely on.
    assert_eq!(
        stack.cmd(&["env", "get", "no-such-env"]).status.code(),
        Some(3)
    );
    assert_eq!(
        stack
            .cmd(&["env", "create", "demo", "--local"])
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        stack
            .cmd(&["env", "create", "Bad_Name", "--local"])
            .status
            .code(),
        Some(5)
    );

    stack.ok(&["local", "down"]);
    let again = stack.ok(&["local", "down"]);
    assert!(again.contains("nothing was running"), "{again}");
}

//! The local compute provider: keeps each `local` environment's agents running as processes,
//! the way VM Scale Sets keep instances for `azure` environments.
//!
//! It answers exactly what `culvert-functions` calls (`functions/src/compute.rs`):
//! `PUT /environments/{id}` with `{"agents", "control_plane_url", "registration_token"}` and
//! `DELETE /environments/{id}`, both 204 and idempotent.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use culvert_control_api::client::Client;
use culvert_control_api::environments::Environment;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::process::{MakeCommand, Supervised};
use super::state::{StackFile, StateDir, write_atomic};

/// Most agents one environment may ask for.
pub const MAX_AGENTS: u32 = 64;
/// How long an agent gets to stop after SIGTERM before SIGKILL.
pub const AGENT_GRACE: Duration = Duration::from_secs(20);

/// What runs agents and where they find things.
pub struct AgentSettings {
    /// The state directory.
    pub state: StateDir,
    /// `culvert-agent`.
    pub agent_bin: PathBuf,
    /// The API base URL agents of restored pools call (it may differ from the recorded one
    /// when the stack moved to another port).
    pub api_url: String,
    /// `stack.json`, where agent pids are recorded.
    pub stack: Arc<StackFile>,
    /// Extra arguments of every agent (its Key Vault, its buffer location).
    pub agent_args: Vec<String>,
    /// Environment of every agent (its managed identity).
    pub agent_env: Vec<(String, String)>,
}

/// One environment's pool as `compute.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolSpec {
    /// Agents to keep running.
    pub agents: u32,
    /// API base URL the agents call.
    pub control_plane_url: String,
    /// Environment name, for log file names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Body of `PUT /environments/{id}`.
#[derive(Debug, Deserialize)]
pub struct EnsureBody {
    /// Agents to keep running.
    pub agents: u32,
    /// API base URL the agents call.
    pub control_plane_url: String,
    /// Registration token for new agents.
    pub registration_token: String,
}

struct Pool {
    spec: PoolSpec,
    slots: Vec<Supervised>,
}

/// The provider: pools by environment.
pub struct Compute {
    cfg: AgentSettings,
    pools: Mutex<BTreeMap<Uuid, Pool>>,
    retiring: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// Read `compute.json` (empty when absent).
pub fn load_specs(path: &std::path::Path) -> Result<BTreeMap<Uuid, PoolSpec>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The log name of agent `i` of an environment: its name when known, else its id.
pub fn log_name(env: Uuid, spec: &PoolSpec, i: u32) -> String {
    let label: String = spec
        .name
        .as_deref()
        .unwrap_or(&env.to_string())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("agent-{label}-{i}")
}

/// The `stack.json` pid key of agent `i` of an environment.
pub fn pid_key(env: Uuid, i: u32) -> String {
    format!("agent:{env}:{i}")
}

impl Compute {
    /// A provider with no pools yet.
    pub fn new(cfg: AgentSettings) -> Arc<Compute> {
        Arc::new(Compute {
            cfg,
            pools: Mutex::new(BTreeMap::new()),
            retiring: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn env_dir(&self, env: Uuid) -> PathBuf {
        self.cfg.state.agents_dir().join(env.to_string())
    }

    fn token_file(&self, env: Uuid) -> PathBuf {
        self.env_dir(env).join("token")
    }

    fn start_agent(&self, env: Uuid, spec: &PoolSpec, i: u32) -> Result<Supervised> {
        let state_dir = self.env_dir(env).join(i.to_string());
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700))?;
        let bin = self.cfg.agent_bin.clone();
        let url = spec.control_plane_url.clone();
        let token = self.token_file(env);
        let (args, envs) = (self.cfg.agent_args.clone(), self.cfg.agent_env.clone());
        // Distinct names so `culvert agent list` tells the local agents apart.
        let name = format!("local-{}-{i}", &env.simple().to_string()[..8]);
        let make: MakeCommand = Box::new(move || {
            let mut c = tokio::process::Command::new(&bin);
            c.arg("agent")
                .arg("--control-plane")
                .arg(&url)
                .arg("--environment")
                .arg(env.to_string())
                .arg("--token-file")
                .arg(&token)
                .arg("--state-dir")
                .arg(&state_dir)
                .args(&args)
                .arg("--name")
                .arg(&name)
                .envs(envs.iter().map(|(k, v)| (k, v)));
            Ok(c)
        });
        let name = log_name(env, spec, i);
        let stack = self.cfg.stack.clone();
        let key = pid_key(env, i);
        Ok(Supervised::start(
            &name,
            make,
            self.cfg.state.log(&name),
            AGENT_GRACE,
            Box::new(move |pid| stack.set_pid(&key, pid)),
        ))
    }

    /// Stop `slot` in the background: SIGTERM now, SIGKILL after the grace period.
    fn retire(&self, slot: Supervised) {
        let h = tokio::spawn(slot.stop());
        let mut r = self.retiring.lock().expect("retiring lock");
        r.retain(|h| !h.is_finished());
        r.push(h);
    }

    fn resize(&self, env: Uuid, pool: &mut Pool) -> Result<()> {
        while pool.slots.len() > pool.spec.agents as usize {
            let slot = pool.slots.pop().expect("a slot");
            self.retire(slot);
        }
        while pool.slots.len() < pool.spec.agents as usize {
            let i = pool.slots.len() as u32;
            pool.slots.push(self.start_agent(env, &pool.spec, i)?);
        }
        Ok(())
    }

    fn save(&self, pools: &BTreeMap<Uuid, Pool>) -> Result<()> {
        let specs: BTreeMap<&Uuid, &PoolSpec> = pools.iter().map(|(k, p)| (k, &p.spec)).collect();
        let text = serde_json::to_string_pretty(&specs)?;
        write_atomic(&self.cfg.state.compute_json(), &format!("{text}\n"), 0o600)
    }

    async fn lookup_name(&self, env: Uuid, url: &str) -> Option<String> {
        let key = fs::read_to_string(self.cfg.state.admin_key())
            .ok()?
            .trim()
            .to_string();
        let client = Client::new(url, Some(key));
        let got = tokio::time::timeout(
            Duration::from_secs(3),
            client.get::<Environment>(&format!("/v1/environments/{env}")),
        )
        .await;
        got.ok()?.ok().map(|t| t.body.name)
    }

    /// Keep `body.agents` agents of `env` running with `body`'s token and URL (idempotent).
    pub async fn ensure(&self, env: Uuid, body: EnsureBody) -> Result<()> {
        anyhow::ensure!(
            body.agents <= MAX_AGENTS,
            "at most {MAX_AGENTS} agents per environment"
        );
        let dir = self.env_dir(env);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(
            &self.token_file(env),
            &format!("{}\n", body.registration_token),
            0o600,
        )?;
        let mut pools = self.pools.lock().await;
        let name = match pools.get(&env).and_then(|p| p.spec.name.clone()) {
            Some(n) => Some(n),
            None => self.lookup_name(env, &body.control_plane_url).await,
        };
        let spec = PoolSpec {
            agents: body.agents,
            control_plane_url: body.control_plane_url,
            name,
        };
        let pool = pools.entry(env).or_insert_with(|| Pool {
            spec: spec.clone(),
            slots: Vec::new(),
        });
        if pool.spec.control_plane_url != spec.control_plane_url {
            // Running agents keep the URL they started with: restart them on the new one.
            for slot in pool.slots.drain(..) {
                self.retire(slot);
            }
        }
        pool.spec = spec;
        self.resize(env, pool)?;
        tracing::info!(environment = %env, agents = pool.spec.agents, "agent pool ensured");
        self.save(&pools)
    }

    /// Stop every agent of `env` and forget its token; its agents' state directories stay.
    pub async fn remove(&self, env: Uuid) -> Result<()> {
        let mut pools = self.pools.lock().await;
        if let Some(pool) = pools.remove(&env) {
            for slot in pool.slots {
                self.retire(slot);
            }
        }
        match fs::remove_file(self.token_file(env)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot remove the registration token"),
        }
        tracing::info!(environment = %env, "agent pool removed");
        self.save(&pools)
    }

    /// Start the pools `compute.json` records, on the current API URL.
    pub async fn restore(&self) -> Result<usize> {
        let specs = load_specs(&self.cfg.state.compute_json())?;
        let mut pools = self.pools.lock().await;
        let mut started = 0;
        for (env, mut spec) in specs {
            if pools.contains_key(&env) {
                continue;
            }
            if !self.token_file(env).exists() {
                tracing::warn!(environment = %env, "no registration token recorded; agents that never registered cannot start");
            }
            spec.control_plane_url = self.cfg.api_url.clone();
            let mut pool = Pool {
                spec,
                slots: Vec::new(),
            };
            self.resize(env, &mut pool)?;
            started += pool.slots.len();
            pools.insert(env, pool);
        }
        self.save(&pools)?;
        Ok(started)
    }

    /// Stop every agent (in parallel) and wait for them.
    pub async fn stop_all(&self) {
        let mut pools = self.pools.lock().await;
        for (_, pool) in std::mem::take(&mut *pools) {
            for slot in pool.slots {
                self.retire(slot);
            }
        }
        let handles: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.retiring.lock().expect("retiring lock"));
        for h in handles {
            let _ = h.await;
        }
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

async fn ensure_route(
    State(c): State<Arc<Compute>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(env) = Uuid::try_parse(&id) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an environment id"),
        );
    };
    let body: EnsureBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid body: {e}"),
            );
        }
    };
    match c.ensure(env, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!(environment = %env, "cannot start agents: {e:#}");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
        }
    }
}

async fn remove_route(State(c): State<Arc<Compute>>, Path(id): Path<String>) -> Response {
    let Ok(env) = Uuid::try_parse(&id) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an environment id"),
        );
    };
    match c.remove(env).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// The provider's HTTP routes.
pub fn router(compute: Arc<Compute>) -> Router {
    Router::new()
        .route("/environments/{id}", put(ensure_route).delete(remove_route))
        .with_state(compute)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_agent(dir: &std::path::Path) -> PathBuf {
        // Records its arguments, then runs until signalled.
        let p = dir.join("fake-agent");
        fs::write(&p, "#!/bin/sh\necho \"$@\"\nexec sleep 60\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn compute(dir: &std::path::Path) -> Arc<Compute> {
        let state = StateDir::new(dir.join("state"));
        state.create().unwrap();
        let stack = Arc::new(StackFile::open(&state).unwrap());
        Compute::new(AgentSettings {
            agent_bin: fake_agent(dir),
            api_url: "http://127.0.0.1:1/api".into(),
            stack,
            state,
            agent_args: vec!["--key-vault".into(), "https://127.0.0.1:1".into()],
            agent_env: Vec::new(),
        })
    }

    fn body(n: u32) -> EnsureBody {
        EnsureBody {
            agents: n,
            control_plane_url: "http://127.0.0.1:1/api".into(),
            registration_token: format!("cvt_token{n}"),
        }
    }

    #[test]
    fn log_names_prefer_the_environment_name() {
        let env = Uuid::from_u128(7);
        let mut spec = PoolSpec {
            agents: 1,
            control_plane_url: String::new(),
            name: Some("demo".into()),
        };
        assert_eq!(log_name(env, &spec, 0), "agent-demo-0");
        spec.name = None;
        assert_eq!(log_name(env, &spec, 2), format!("agent-{env}-2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pools_scale_persist_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let c = compute(dir.path());
        let env = Uuid::from_u128(1);
        c.ensure(env, body(2)).await.unwrap();
        c.ensure(env, body(2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let running = |c: &Compute| {
            let pids = c.cfg.stack.get().pids;
            pids.keys().filter(|k| k.starts_with("agent:")).count()
        };
        assert_eq!(running(&c), 2);
        let token = c.token_file(env);
        assert_eq!(fs::read_to_string(&token).unwrap(), "cvt_token2\n");
        assert_eq!(
            fs::metadata(&token).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let log = c.cfg.state.log(&format!("agent-{env}-1"));
        let args = fs::read_to_string(&log).unwrap();
        assert!(
            args.contains(&format!(
                "agent --control-plane http://127.0.0.1:1/api --environment {env} --token-file"
            )),
            "{args}"
        );
        assert!(args.contains("--key-vault https://127.0.0.1:1"), "{args}");
        let pid1 = c.cfg.stack.get().pids[&pid_key(env, 1)];

        c.ensure(env, body(1)).await.unwrap();
        assert!(super::super::process::wait_gone(pid1, Duration::from_secs(5)).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(running(&c), 1);
        let specs = load_specs(&c.cfg.state.compute_json()).unwrap();
        assert_eq!(specs[&env].agents, 1);
        c.stop_all().await;

        // A restarted supervisor starts the same pools again.
        let again = Compute::new(AgentSettings {
            agent_bin: c.cfg.agent_bin.clone(),
            api_url: "http://127.0.0.1:2/api".into(),
            stack: c.cfg.stack.clone(),
            state: c.cfg.state.clone(),
            agent_args: Vec::new(),
            agent_env: Vec::new(),
        });
        assert_eq!(again.restore().await.unwrap(), 1);
        assert_eq!(
            load_specs(&c.cfg.state.compute_json()).unwrap()[&env].control_plane_url,
            "http://127.0.0.1:2/api"
        );
        again.remove(env).await.unwrap();
        assert!(!token.exists());
        assert!(
            c.cfg
                .state
                .agents_dir()
                .join(env.to_string())
                .join("0")
                .is_dir()
        );
        assert!(load_specs(&c.cfg.state.compute_json()).unwrap().is_empty());
        again.stop_all().await;
        assert!(c.cfg.stack.get().pids.is_empty());
    }
}

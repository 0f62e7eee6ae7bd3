//! Child processes behind scale-set instances and container groups, when `arm.agent_binary` is
//! configured. Handlers record the desired state in the store and return [`Effect`]s; after the
//! change is committed, [`Processes::apply`] reconciles the running processes with it.
//!
//! # Scale-set instance contract
//!
//! Each running instance `{i}` of scale set `{name}` is a directory
//! `{state-dir}/vmss/{name}/{i}/` whose `root/` plays the VM's `/`:
//! 1. The instance's model `properties.virtualMachineProfile.osProfile.customData` is decoded
//!    (base64, a `#cloud-config` document) and its `write_files` entries with `encoding: b64`
//!    are written to `root{path}` with their `permissions` (see [`super::cloudinit`]). Files are
//!    written when the instance is created and again when `manualUpgrade` moves it to a new
//!    model; a restart keeps them.
//! 2. An instance runs a process only if that wrote `/etc/culvert/agent.env`; otherwise it is a
//!    VM without an agent and just reports its power state.
//! 3. The process is `{agent_binary} agent` with working directory `root/` (so relative paths
//!    in the file, like `CULVERT_STATE_DIR=var/lib/culvert`, land inside the instance), no flags,
//!    and an environment of exactly: `PATH` (the stand-in's), `HOME` (= `root/`), `TMPDIR`
//!    (= `root/tmp/`), `CULVERT_AZURE_CA_FILE` (the local CA), `IDENTITY_ENDPOINT` and
//!    `IDENTITY_HEADER` (the token endpoint, when the scale set has an `identity`), then every
//!    `KEY=VALUE` line of `/etc/culvert/agent.env`, re-read at each start (it wins over the
//!    variables above).
//!    This mirrors the systemd unit the real cloud-init installs
//!    (`WorkingDirectory=/`, `EnvironmentFile=/etc/culvert/agent.env`, `ExecStart=... agent`).
//! 4. stdout and stderr are appended to `{state-dir}/vmss/{name}/{i}/agent.log`.
//! 5. `deallocate`, `powerOff`, deleting the instance (scale-in) or the scale set stop it
//!    (SIGTERM, SIGKILL after 5 s); `start` starts it; `restart` and `manualUpgrade` (to a new
//!    model) restart it. If it exits by itself the instance reports `ProvisioningState/failed`
//!    and it is started again after 1 s, doubling up to 30 s while it keeps failing (systemd's
//!    `Restart=always`).
//!
//! # Container group contract
//!
//! A group whose first container's `command[0]` is a file named `culvert-agent` runs
//! `{agent_binary} {command[1..]}` once, in `{state-dir}/aci/{group name}/`, with `PATH`, `HOME`,
//! `TMPDIR` (its `tmp/`: the container's own filesystem), `CULVERT_AZURE_CA_FILE`, the identity
//! variables (when the group has an `identity`) and the container's `environmentVariables`
//! (`value` or `secureValue`); stdout and stderr go to
//! `{state-dir}/aci/{group name}/{container}.log` (the `logs` answer). Its exit code becomes the
//! container's `exitCode`. Deleting the group kills a process still running. A process cut off
//! by a restart of the stand-in is reported as exit code 137.
//!
//! Processes are not restarted across a SIGKILL of the stand-in itself; on the next start,
//! scale-set instances start again and interrupted container groups report 137.

use super::ProcessEnv;
use super::cloudinit;
use super::ids;
use super::providers::{compute, containers};
use super::runner::{self, Spec};
use super::store::{ArmStore, Record};
use crate::state::StateError;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The environment file a scale-set instance must have for its agent to run.
pub const AGENT_ENV_PATH: &str = "/etc/culvert/agent.env";
const GRACE: Duration = Duration::from_secs(5);
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// A change to reconcile once committed; each names a record by its lowercase id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A scale set's instances or power states changed (or it was deleted).
    ScaleSet(String),
    /// A container group was created, changed or deleted.
    ContainerGroup(String),
}

/// What a supervised process is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcStatus {
    /// Waiting for a predecessor to stop, or writing files.
    Starting,
    /// Running.
    Running,
    /// Exited by itself with this code.
    Exited(i32),
    /// Could not be started.
    FailedToStart(String),
    /// Stopped on request.
    Stopped,
}

struct Supervised {
    generation: String,
    stop: watch::Sender<bool>,
    status: Arc<Mutex<ProcStatus>>,
    task: JoinHandle<()>,
}

/// The supervisor of every child process.
pub struct Processes {
    agent_binary: Option<PathBuf>,
    state_dir: PathBuf,
    env: ProcessEnv,
    store: Arc<ArmStore>,
    running: Mutex<HashMap<String, Supervised>>,
}

impl Processes {
    /// A supervisor that runs `agent_binary` (nothing when `None`).
    pub fn new(
        agent_binary: Option<PathBuf>,
        state_dir: PathBuf,
        env: ProcessEnv,
        store: Arc<ArmStore>,
    ) -> Self {
        Self {
            agent_binary,
            state_dir,
            env,
            store,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// After a restart: marks interrupted container runs as ended and starts scale-set instances.
    pub fn resume(self: &Arc<Self>) -> Result<(), StateError> {
        self.store.update(|d| {
            for (k, r) in d.resources.iter_mut() {
                if is_type(k, "microsoft.containerinstance/containergroups") && containers::interrupt(r) {
                    tracing::warn!(group = %k, "container group was running when the stand-in stopped");
                }
            }
            Ok::<_, StateError>(())
        })?;
        let scale_sets: Vec<String> = self.store.read(|d| {
            d.resources
                .keys()
                .filter(|k| is_type(k, "microsoft.compute/virtualmachinescalesets"))
                .cloned()
                .collect()
        });
        for k in scale_sets {
            self.reconcile_scale_set(&k);
        }
        Ok(())
    }

    /// Reconciles the processes the effects name.
    pub fn apply(self: &Arc<Self>, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::ScaleSet(k) => self.reconcile_scale_set(&k),
                Effect::ContainerGroup(k) => self.reconcile_container(&k),
            }
        }
    }

    /// The status of instance `index` of the scale set `key`, if it has a process.
    pub fn instance_status(&self, key: &str, index: u32) -> Option<ProcStatus> {
        let running = self.lock();
        let s = running.get(&format!("{}#{index}", ids::key(key)))?;
        let status = s.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(status)
    }

    /// The log file of container `container` in group `group`.
    pub fn container_log(&self, group: &str, container: &str) -> PathBuf {
        self.state_dir
            .join("aci")
            .join(group)
            .join(format!("{container}.log"))
    }

    /// Stops every process and waits for them (bounded).
    pub async fn shutdown(&self) {
        let all: Vec<Supervised> = self.lock().drain().map(|(_, s)| s).collect();
        for s in &all {
            let _ = s.stop.send(true);
        }
        let waited = tokio::time::timeout(GRACE + Duration::from_secs(2), async {
            for s in all {
                let _ = s.task.await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!("child processes did not stop in time");
        }
    }

    fn reconcile_scale_set(self: &Arc<Self>, key: &str) {
        let Some(bin) = self.agent_binary.clone() else {
            return;
        };
        let (name, plans, identity) = self
            .store
            .read(|d| {
                d.resources.get(key).map(|r| {
                    let name = r.body["name"].as_str().unwrap_or_default().to_owned();
                    (name, compute::plans(r), has_identity(r))
                })
            })
            .unwrap_or_default();
        let desired: HashMap<String, compute::Plan> = plans
            .into_iter()
            .filter(|p| {
                p.custom_data.as_deref().is_some_and(|cd| {
                    cloudinit::files_of_custom_data(cd)
                        .iter()
                        .any(|f| f.path == AGENT_ENV_PATH)
                })
            })
            .map(|p| (format!("{key}#{}", p.index), p))
            .collect();
        let mut running = self.lock();
        let prefix = format!("{key}#");
        let stale: Vec<String> = running
            .iter()
            .filter(|(k, s)| {
                k.starts_with(&prefix)
                    && desired.get(*k).is_none_or(|p| p.generation != s.generation)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut previous = HashMap::new();
        for k in stale {
            if let Some(s) = running.remove(&k) {
                let _ = s.stop.send(true);
                previous.insert(k, s.task);
            }
        }
        for (k, plan) in desired {
            if running.contains_key(&k) {
                continue;
            }
            let dir = self
                .state_dir
                .join("vmss")
                .join(&name)
                .join(plan.index.to_string());
            let (stop, stop_rx) = watch::channel(false);
            let status = Arc::new(Mutex::new(ProcStatus::Starting));
            let generation = plan.generation.clone();
            let instance = Instance {
                bin: bin.clone(),
                dir,
                plan,
                base_env: self.base_env(identity),
            };
            let task =
                tokio::spawn(instance.supervise(stop_rx, status.clone(), previous.remove(&k)));
            running.insert(
                k,
                Supervised {
                    generation,
                    stop,
                    status,
                    task,
                },
            );
        }
    }

    fn reconcile_container(self: &Arc<Self>, key: &str) {
        let Some(bin) = self.agent_binary.clone() else {
            return;
        };
        let found = self.store.read(|d| {
            d.resources.get(key).map(|r| {
                let name = r.body["name"].as_str().unwrap_or_default().to_owned();
                (name, containers::launch(r), has_identity(r))
            })
        });
        let mut running = self.lock();
        let Some((name, Some(launch), identity)) = found else {
            if let Some(s) = running.remove(key) {
                let _ = s.stop.send(true);
            }
            return;
        };
        if running
            .get(key)
            .is_some_and(|s| s.generation == launch.run_id)
        {
            return;
        }
        let previous = running.remove(key).map(|s| {
            let _ = s.stop.send(true);
            s.task
        });
        let (stop, stop_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(ProcStatus::Starting));
        let generation = launch.run_id.clone();
        let mut env = self.base_env(identity);
        env.extend(launch.env.iter().cloned());
        let run = ContainerRun {
            spec: Spec {
                program: bin,
                args: launch.args.clone(),
                env,
                cwd: self.state_dir.join("aci").join(&name),
                log: self.container_log(&name, &launch.container),
                append_log: false,
            },
            store: self.store.clone(),
            key: key.to_owned(),
            run_id: launch.run_id,
        };
        let task = tokio::spawn(run.run(stop_rx, status.clone(), previous));
        running.insert(
            key.to_owned(),
            Supervised {
                generation,
                stop,
                status,
                task,
            },
        );
    }

    fn base_env(&self, identity: bool) -> Vec<(String, String)> {
        let mut env = vec![(
            "CULVERT_AZURE_CA_FILE".to_owned(),
            self.env.ca_file.display().to_string(),
        )];
        if identity {
            env.push((
                "IDENTITY_ENDPOINT".into(),
                self.env.identity_endpoint.clone(),
            ));
            env.push(("IDENTITY_HEADER".into(), self.env.identity_header.clone()));
        }
        env
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Supervised>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn is_type(key: &str, type_key: &str) -> bool {
    ids::parse_resource(key).is_some_and(|r| r.type_key() == type_key)
}

fn has_identity(r: &Record) -> bool {
    r.body["identity"].is_object()
}

fn set(status: &Mutex<ProcStatus>, value: ProcStatus) {
    *status.lock().unwrap_or_else(|p| p.into_inner()) = value;
}

// Resolves when a stop is requested (or the supervisor is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

struct Instance {
    bin: PathBuf,
    dir: PathBuf,
    plan: compute::Plan,
    base_env: Vec<(String, String)>,
}

impl Instance {
    async fn supervise(
        self,
        mut stop: watch::Receiver<bool>,
        status: Arc<Mutex<ProcStatus>>,
        previous: Option<JoinHandle<()>>,
    ) {
        if let Some(p) = previous {
            let _ = p.await;
        }
        let root = self.dir.join("root");
        if let Err(e) = self.prepare_disk(&root) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the instance's files");
            set(&status, ProcStatus::FailedToStart(e.to_string()));
            return;
        }
        let mut delay = FIRST_RESTART_DELAY;
        loop {
            if *stop.borrow() {
                break;
            }
            let mut env = self.base_env.clone();
            let env_file = cloudinit::under_root(&root, AGENT_ENV_PATH).expect("a fixed path");
            env.extend(cloudinit::parse_env(
                &std::fs::read_to_string(env_file).unwrap_or_default(),
            ));
            let spec = Spec {
                program: self.bin.clone(),
                args: vec!["agent".into()],
                env,
                cwd: root.clone(),
                log: self.dir.join("agent.log"),
                append_log: true,
            };
            let started = Instant::now();
            match runner::spawn(&spec) {
                Ok(mut child) => {
                    set(&status, ProcStatus::Running);
                    tokio::select! {
                        res = child.wait() => {
                            let code = res.map(runner::exit_code).unwrap_or(-1);
                            tracing::warn!(dir = %self.dir.display(), code, "instance agent exited");
                            set(&status, ProcStatus::Exited(code));
                        }
                        () = stopped(&mut stop) => {
                            runner::stop(&mut child, GRACE).await;
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot start instance agent");
                    set(&status, ProcStatus::FailedToStart(e.to_string()));
                }
            }
            if started.elapsed() > MAX_RESTART_DELAY {
                delay = FIRST_RESTART_DELAY;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut stop) => break,
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
        }
        set(&status, ProcStatus::Stopped);
    }

    // Writes the model's files unless this disk already holds them.
    fn prepare_disk(&self, root: &std::path::Path) -> std::io::Result<()> {
        let marker = self.dir.join("disk");
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(self.plan.disk.as_str()) {
            return Ok(());
        }
        let files =
            cloudinit::files_of_custom_data(self.plan.custom_data.as_deref().unwrap_or_default());
        std::fs::create_dir_all(root)?;
        cloudinit::install(root, &files)?;
        std::fs::write(marker, &self.plan.disk)
    }
}

struct ContainerRun {
    spec: Spec,
    store: Arc<ArmStore>,
    key: String,
    run_id: String,
}

impl ContainerRun {
    async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        status: Arc<Mutex<ProcStatus>>,
        previous: Option<JoinHandle<()>>,
    ) {
        if let Some(p) = previous {
            let _ = p.await;
        }
        let (code, detail) = match runner::spawn(&self.spec) {
            Ok(mut child) => {
                set(&status, ProcStatus::Running);
                tokio::select! {
                    res = child.wait() => (res.map(runner::exit_code).unwrap_or(-1), None),
                    () = stopped(&mut stop) => {
                        runner::stop(&mut child, GRACE).await;
                        set(&status, ProcStatus::Stopped);
                        return;
                    }
                }
            }
            Err(e) => {
                let message = format!("cannot start {}: {e}", self.spec.program.display());
                let _ = std::fs::write(&self.spec.log, format!("{message}\n"));
                set(&status, ProcStatus::FailedToStart(message.clone()));
                (127, Some(message))
            }
        };
        tracing::info!(group = %self.key, code, "container process ended");
        if !matches!(
            *status.lock().unwrap_or_else(|p| p.into_inner()),
            ProcStatus::FailedToStart(_)
        ) {
            set(&status, ProcStatus::Exited(code));
        }
        let recorded = self.store.update(|d| {
            if let Some(r) = d.resources.get_mut(&self.key) {
                containers::record_exit(r, &self.run_id, code, detail);
            }
            Ok::<_, StateError>(())
        });
        if let Err(e) = recorded {
            tracing::error!(error = %e, "cannot record a container's exit");
        }
    }
}

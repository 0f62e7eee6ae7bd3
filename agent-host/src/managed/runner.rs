//! The pipelines this agent runs: started, restarted and stopped to match the assignments.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use culvert_control_api::agents::{Assignment, PipelineCommand, RunningPipeline};
use culvert_control_api::pipelines::{PipelineProgress, TableProgress};
use culvert_sealing::KeyEncryptionKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::assignment::{self, BufferPlace, ComponentPaths};
use super::components::Components;
use crate::config::PipelineConfig;
use crate::engine::ConnectorEngine;
use crate::metrics::Metrics;
use crate::pipeline::{self, Sides};
use crate::progress::Progress;

/// How long a stopping pipeline may take to finish its batch.
const STOP_GRACE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Shared {
    last_error: Option<String>,
    failed: bool,
    commands_done: Vec<Uuid>,
    /// The configuration, once the secrets are open.
    cfg: Option<PipelineConfig>,
}

struct Running {
    epoch: i64,
    /// The assignment without its commands: a change means a restart.
    definition: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    progress: Arc<Progress>,
    shared: Arc<Mutex<Shared>>,
    commands_started: HashSet<Uuid>,
}

/// The running pipelines.
pub struct Runner {
    engine: ConnectorEngine,
    metrics: Metrics,
    buffers: BufferPlace,
    key: Option<Arc<dyn KeyEncryptionKey>>,
    components: Components,
    pipelines: HashMap<Uuid, Running>,
}

fn definition_of(a: &Assignment) -> String {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("commands");
    }
    v.to_string()
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs((15u64 << failures.min(5)).min(300))
}

/// Fetch the assignment's registered components, open its secrets and build its
/// configuration; a key service or component store that is unavailable (or handed over
/// bytes that do not match their digest) is retried, anything else fails the pipeline
/// until the assignment changes.
async fn configure(
    a: &Assignment,
    key: Option<Arc<dyn KeyEncryptionKey>>,
    buffers: &BufferPlace,
    components: &Components,
    shared: &Mutex<Shared>,
    stop: &mut watch::Receiver<bool>,
) -> Option<PipelineConfig> {
    let mut failures = 0u32;
    loop {
        let built = match ComponentPaths::fetch(a, components).await {
            Ok(paths) => assignment::pipeline_config(a, key.as_deref(), buffers, &paths).await,
            Err(e) => Err(e),
        };
        match built {
            Ok(cfg) => {
                let mut s = shared.lock().expect("runner lock");
                s.cfg = Some(cfg.clone());
                s.failed = false;
                s.last_error = None;
                return Some(cfg);
            }
            Err(e) => {
                let text = format!("{e:#}");
                let transient = assignment::is_transient(&e);
                tracing::error!(pipeline = %a.name, error = %text, transient, "cannot start");
                {
                    let mut s = shared.lock().expect("runner lock");
                    s.last_error = Some(text);
                    s.failed = true;
                }
                if !transient {
                    return None;
                }
                let wait = Duration::from_millis(500u64 << failures.min(6));
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
        }
    }
}

async fn supervise(
    cfg: PipelineConfig,
    engine: ConnectorEngine,
    metrics: Metrics,
    progress: Arc<Progress>,
    shared: Arc<Mutex<Shared>>,
    mut stop: watch::Receiver<bool>,
) {
    let name = cfg.name.clone();
    let mut failures = 0u32;
    loop {
        let outcome = match Sides::load(cfg.clone(), engine.clone(), metrics.clone()) {
            Ok(sides) => {
                pipeline::run(
                    Arc::new(sides),
                    metrics.clone(),
                    progress.clone(),
                    stop.clone(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(pipeline = %name, "stopped");
                return;
            }
            Err(e) => {
                let text = format!("{e:#}");
                tracing::error!(pipeline = %name, error = %text, retry_in = ?backoff(failures), "pipeline failed");
                {
                    let mut s = shared.lock().expect("runner lock");
                    s.last_error = Some(text);
                    s.failed = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                failures += 1;
                shared.lock().expect("runner lock").failed = false;
            }
        }
    }
}

impl Runner {
    /// No pipelines yet.
    pub fn new(
        engine: ConnectorEngine,
        metrics: Metrics,
        buffers: BufferPlace,
        key: Option<Arc<dyn KeyEncryptionKey>>,
        components: Components,
    ) -> Runner {
        Runner {
            engine,
            metrics,
            buffers,
            key,
            components,
            pipelines: HashMap::new(),
        }
    }

    /// The key that opens sealed secrets.
    pub fn key(&self) -> Option<&Arc<dyn KeyEncryptionKey>> {
        self.key.as_ref()
    }

    /// How many pipelines run.
    pub fn running(&self) -> usize {
        self.pipelines.len()
    }

    /// Progress of every pipeline, for the heartbeat.
    pub fn report(&self) -> Vec<RunningPipeline> {
        self.pipelines
            .iter()
            .map(|(id, r)| {
                let p = &r.progress;
                let s = r.shared.lock().expect("runner lock");
                let tables = p
                    .tables()
                    .into_iter()
                    .map(|(table, c)| TableProgress {
                        table,
                        state: if c.copying { "snapshot" } else { "streaming" }.into(),
                        rows: c.rows,
                    })
                    .collect();
                RunningPipeline {
                    pipeline_id: *id,
                    epoch: r.epoch,
                    progress: PipelineProgress {
                        phase: if s.failed {
                            "failed".into()
                        } else {
                            p.phase().replace(' ', "_")
                        },
                        rows_read: p.rows_read.load(Ordering::Relaxed),
                        rows_applied: p.rows_applied.load(Ordering::Relaxed),
                        bytes_applied: p.bytes_applied.load(Ordering::Relaxed),
                        lag_bytes: p.lag_bytes.load(Ordering::Relaxed),
                        lag_seconds: p.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0,
                        buffer_bytes: p.buffer_bytes.load(Ordering::Relaxed),
                        tables_total: p.tables_total.load(Ordering::Relaxed),
                        tables_started: p.tables_started.load(Ordering::Relaxed),
                        tables,
                        last_error: s.last_error.clone(),
                    },
                    commands_done: s.commands_done.clone(),
                }
            })
            .collect()
    }

    /// Start, restart and stop pipelines so exactly `assignments` run.
    pub async fn reconcile(&mut self, assignments: Vec<Assignment>) {
        let wanted: HashSet<Uuid> = assignments.iter().map(|a| a.pipeline_id).collect();
        let gone: Vec<Uuid> = self
            .pipelines
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        for id in gone {
            tracing::info!(pipeline = %id, "no longer assigned; stopping");
            self.stop(id).await;
        }
        for a in assignments {
            let definition = definition_of(&a);
            let changed = self
                .pipelines
                .get(&a.pipeline_id)
                .is_some_and(|r| r.epoch != a.epoch || r.definition != definition);
            if changed {
                tracing::info!(pipeline = %a.name, epoch = a.epoch, "assignment changed; restarting");
                self.stop(a.pipeline_id).await;
            }
            if !self.pipelines.contains_key(&a.pipeline_id) {
                self.start(&a, definition);
            }
            self.run_commands(&a);
        }
    }

    fn start(&mut self, a: &Assignment, definition: String) {
        let (stop, stop_rx) = watch::channel(false);
        let progress = Arc::new(Progress::default());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = {
            let (a, key, buffers) = (a.clone(), self.key.clone(), self.buffers.clone());
            let components = self.components.clone();
            let (engine, metrics) = (self.engine.clone(), self.metrics.clone());
            let (progress, shared) = (progress.clone(), shared.clone());
            let mut stop_rx = stop_rx;
            tokio::spawn(async move {
                let Some(cfg) =
                    configure(&a, key, &buffers, &components, &shared, &mut stop_rx).await
                else {
                    return;
                };
                tracing::info!(pipeline = %a.name, epoch = a.epoch, "starting");
                supervise(cfg, engine, metrics, progress, shared, stop_rx).await;
            })
        };
        self.pipelines.insert(
            a.pipeline_id,
            Running {
                epoch: a.epoch,
                definition,
                stop,
                task,
                progress,
                shared,
                commands_started: HashSet::new(),
            },
        );
    }

    fn run_commands(&mut self, a: &Assignment) {
        let Some(r) = self.pipelines.get_mut(&a.pipeline_id) else {
            return;
        };
        let pending: HashSet<Uuid> = a.commands.iter().map(|c| c.id).collect();
        // Done commands the control plane has recorded no longer come back.
        r.shared
            .lock()
            .expect("runner lock")
            .commands_done
            .retain(|id| pending.contains(id));
        // Commands wait for the configuration (the secrets may still be opening).
        let Some(cfg) = r.shared.lock().expect("runner lock").cfg.clone() else {
            return;
        };
        for cmd in &a.commands {
            if !r.commands_started.insert(cmd.id) {
                continue;
            }
            tokio::spawn(run_command(
                cmd.clone(),
                cfg.clone(),
                self.engine.clone(),
                self.metrics.clone(),
                r.shared.clone(),
            ));
        }
    }

    async fn stop(&mut self, id: Uuid) {
        let Some(r) = self.pipelines.remove(&id) else {
            return;
        };
        let _ = r.stop.send(true);
        let mut task = r.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            tracing::warn!(pipeline = %id, "did not stop in time; aborting");
            task.abort();
        }
    }

    /// Stop every pipeline.
    pub async fn stop_all(&mut self) {
        let ids: Vec<Uuid> = self.pipelines.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

async fn run_command(
    cmd: PipelineCommand,
    cfg: PipelineConfig,
    engine: ConnectorEngine,
    metrics: Metrics,
    shared: Arc<Mutex<Shared>>,
) {
    let name = cfg.name.clone();
    let tables: Vec<(String, String)> = cmd
        .tables
        .iter()
        .filter_map(|t| {
            t.split_once('.')
                .map(|(s, n)| (s.to_string(), n.to_string()))
        })
        .collect();
    let outcome = match cmd.kind.as_str() {
        "resync" => match Sides::load(cfg, engine, metrics) {
            Ok(sides) => sides.resync(tables).await,
            Err(e) => Err(e),
        },
        other => Err(anyhow::anyhow!(
            "unknown command {other}; this agent may be older than the control plane"
        )),
    };
    let mut s = shared.lock().expect("runner lock");
    match outcome {
        Ok(text) => tracing::info!(pipeline = %name, command = %cmd.id, "{text}"),
        Err(e) => {
            let text = format!("{} failed: {e:#}", cmd.kind);
            tracing::error!(pipeline = %name, command = %cmd.id, error = %text);
            s.last_error = Some(text);
        }
    }
    s.commands_done.push(cmd.id);
}

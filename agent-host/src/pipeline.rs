//! Running one pipeline: source and target connectors decoupled by the buffer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::sync::watch;
use wasmtime::component::{Component, ResourceAny};

use crate::batch::{Batch, Kind};
use crate::bindings::{destination, source};
use crate::buffer::Buffer;
use crate::config::{ConnectorSection, PipelineConfig};
use crate::connectors;
use crate::egress::Egress;
use crate::engine::ConnectorEngine;
use crate::metrics::{Metrics, PipelineLabels, StageLabels};
use crate::progress::Progress;
use crate::sandbox::{Instance, Placement, instantiate_destination, instantiate_source};

type SourceError = source::culvert::connector::types::ConnectorError;
type TargetError = destination::culvert::connector::types::ConnectorError;

/// A connector error, with whether retrying may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    /// Operator message.
    pub message: String,
    /// Whether the stage may be retried.
    pub retryable: bool,
}

fn source_error(label: &str, e: SourceError) -> StageError {
    use source::culvert::connector::types::ErrorKind as K;
    StageError {
        retryable: matches!(e.kind, K::Connection),
        message: format!("source `{label}`: {}", e.message),
    }
}

fn target_error(label: &str, e: TargetError) -> StageError {
    use destination::culvert::connector::types::ErrorKind as K;
    StageError {
        retryable: matches!(e.kind, K::Connection),
        message: format!("target `{label}`: {}", e.message),
    }
}

fn sandbox_error(e: crate::sandbox::SandboxError) -> StageError {
    StageError {
        message: e.to_string(),
        retryable: false,
    }
}

fn settings_json(section: &ConnectorSection) -> String {
    Value::Object(section.settings.clone()).to_string()
}

/// Egress of a section: explicit entries, `host` on `port` (or the spec's default port),
/// and every setting the spec marks `"x-culvert-egress": true` (a URL, or a host name on
/// `port`).
pub fn egress_for(section: &ConnectorSection, spec: &str) -> Arc<Egress> {
    let egress = Egress::new(&section.egress);
    let spec: Value = serde_json::from_str(spec).unwrap_or(Value::Null);
    let port = section
        .settings
        .get("port")
        .and_then(Value::as_u64)
        .or_else(|| {
            spec.pointer("/properties/port/default")
                .and_then(Value::as_u64)
        })
        .and_then(|p| u16::try_from(p).ok());
    let mut hosts: Vec<&str> = section
        .settings
        .get("host")
        .and_then(Value::as_str)
        .into_iter()
        .collect();
    if let Some(props) = spec.get("properties").and_then(Value::as_object) {
        for (key, prop) in props {
            if prop.get("x-culvert-egress").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            match section.settings.get(key).and_then(Value::as_str) {
                Some(v) if v.contains("://") => {
                    if let Ok(url) = url::Url::parse(v)
                        && let (Some(h), Some(p)) = (url.host_str(), url.port_or_known_default())
                    {
                        egress.allow(h, p);
                    }
                }
                Some(v) if key != "host" => hosts.push(v),
                _ => {}
            }
        }
    }
    if let Some(port) = port {
        for host in hosts {
            egress.allow(host, port);
        }
    }
    Arc::new(egress)
}

/// The source connector with an open reader.
pub struct SourceSide {
    inst: Instance<source::Source>,
    reader: ResourceAny,
    label: String,
}

/// The destination connector with an open writer.
pub struct TargetSide {
    inst: Instance<destination::Destination>,
    writer: ResourceAny,
    label: String,
}

/// Everything needed to (re)open either side.
pub struct Sides {
    cfg: PipelineConfig,
    engine: ConnectorEngine,
    metrics: Metrics,
    source_component: Arc<Component>,
    target_component: Arc<Component>,
    /// Each side's `spec`, read once: it only depends on the component.
    source_spec: tokio::sync::OnceCell<String>,
    target_spec: tokio::sync::OnceCell<String>,
}

impl Sides {
    /// Load both components.
    pub fn load(cfg: PipelineConfig, engine: ConnectorEngine, metrics: Metrics) -> Result<Sides> {
        let source_component = engine.load(
            &cfg.source.connector,
            &connectors::load(&cfg.source.connector)?,
        )?;
        let target_component = engine.load(
            &cfg.target.connector,
            &connectors::load(&cfg.target.connector)?,
        )?;
        Ok(Sides {
            cfg,
            engine,
            metrics,
            source_component,
            target_component,
            source_spec: tokio::sync::OnceCell::new(),
            target_spec: tokio::sync::OnceCell::new(),
        })
    }

    fn placement(&self, target: bool, egress: Arc<Egress>) -> Placement<'_> {
        let (section, component) = if target {
            (&self.cfg.target, &self.target_component)
        } else {
            (&self.cfg.source, &self.source_component)
        };
        Placement {
            engine: &self.engine,
            component,
            label: &section.connector,
            limits: section.limits,
            egress,
            metrics: self.metrics.connector(&self.cfg.name, &section.connector),
        }
    }

    /// A source instance whose allow-list is derived from its configuration and the port
    /// default its spec declares (read once, from an instance with no network at all).
    async fn source_instance(&self) -> Result<Instance<source::Source>> {
        let spec = self
            .source_spec
            .get_or_try_init(|| async {
                let mut probe = instantiate_source(self.placement(false, Arc::default())).await?;
                probe
                    .call("spec", |s, w| {
                        w.culvert_connector_source_connector().call_spec(s)
                    })
                    .await
                    .map_err(|e| anyhow!(e))
            })
            .await?;
        instantiate_source(self.placement(false, egress_for(&self.cfg.source, spec))).await
    }

    /// A destination instance, set up like [`Sides::source_instance`].
    async fn target_instance(&self) -> Result<Instance<destination::Destination>> {
        let spec = self
            .target_spec
            .get_or_try_init(|| async {
                let mut probe =
                    instantiate_destination(self.placement(true, Arc::default())).await?;
                probe
                    .call("spec", |s, w| {
                        w.culvert_connector_destination_connector().call_spec(s)
                    })
                    .await
                    .map_err(|e| anyhow!(e))
            })
            .await?;
        instantiate_destination(self.placement(true, egress_for(&self.cfg.target, spec))).await
    }

    /// Open the source's reader, resuming after `resume`.
    pub async fn open_source(&self, resume: Option<Vec<u8>>) -> Result<SourceSide, StageError> {
        let label = self.cfg.source.connector.clone();
        let mut inst = self.source_instance().await.map_err(|e| StageError {
            message: format!("{e:#}"),
            retryable: false,
        })?;
        let config = settings_json(&self.cfg.source);
        let selection = self.selection();
        let reader = inst
            .call("open", |s, w| async move {
                w.culvert_connector_source_connector()
                    .reader()
                    .call_open(s, &config, &selection, resume.as_deref())
                    .await
            })
            .await
            .map_err(sandbox_error)?
            .map_err(|e| source_error(&label, e))?;
        Ok(SourceSide {
            inst,
            reader,
            label,
        })
    }

    /// Open the target's writer.
    pub async fn open_target(&self) -> Result<TargetSide, StageError> {
        let label = self.cfg.target.connector.clone();
        let mut inst = self.target_instance().await.map_err(|e| StageError {
            message: format!("{e:#}"),
            retryable: false,
        })?;
        let config = settings_json(&self.cfg.target);
        let name = self.cfg.name.clone();
        let writer = inst
            .call("open", |s, w| async move {
                w.culvert_connector_destination_connector()
                    .writer()
                    .call_open(s, &config, &name)
                    .await
            })
            .await
            .map_err(sandbox_error)?
            .map_err(|e| target_error(&label, e))?;
        Ok(TargetSide {
            inst,
            writer,
            label,
        })
    }

    fn selection(&self) -> Vec<String> {
        self.cfg
            .source
            .settings
            .get("tables")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ask the source to copy `tables` again (all when empty) while changes stream.
    pub async fn resync(&self, tables: Vec<(String, String)>) -> Result<String> {
        let label = self.cfg.source.connector.clone();
        let mut inst = self.source_instance().await?;
        let config = settings_json(&self.cfg.source);
        let selection = self.selection();
        let tables: Vec<source::culvert::connector::types::TableRef> = tables
            .into_iter()
            .map(
                |(namespace, name)| source::culvert::connector::types::TableRef { namespace, name },
            )
            .collect();
        inst.call("resync", |s, w| async move {
            w.culvert_connector_source_connector()
                .call_resync(s, &config, &selection, &tables)
                .await
        })
        .await
        .map_err(|e| anyhow!(e))?
        .map_err(|e| anyhow!(source_error(&label, e).message))
    }

    /// Both sides' `spec` (JSON Schema text): `(source, target)`.
    pub async fn specs(&self) -> Result<(String, String)> {
        // Instantiating reads and caches each spec.
        self.source_instance().await?;
        self.target_instance().await?;
        let get = |c: &tokio::sync::OnceCell<String>| c.get().cloned().unwrap_or_default();
        Ok((get(&self.source_spec), get(&self.target_spec)))
    }

    /// Run the source's `check`: `(name, ok, message)` lines.
    pub async fn check_source(&self) -> Result<Vec<(String, bool, String)>> {
        let mut src = self.source_instance().await?;
        let config = settings_json(&self.cfg.source);
        Ok(src
            .call("check", |s, w| {
                w.culvert_connector_source_connector()
                    .call_check(s, &config)
            })
            .await
            .map_err(|e| anyhow!(e))?
            .into_iter()
            .map(|r| (r.name, r.ok, r.message))
            .collect())
    }

    /// Run the target's `check`: `(name, ok, message)` lines.
    pub async fn check_target(&self) -> Result<Vec<(String, bool, String)>> {
        let mut tgt = self.target_instance().await?;
        let config = settings_json(&self.cfg.target);
        Ok(tgt
            .call("check", |s, w| {
                w.culvert_connector_destination_connector()
                    .call_check(s, &config)
            })
            .await
            .map_err(|e| anyhow!(e))?
            .into_iter()
            .map(|r| (r.name, r.ok, r.message))
            .collect())
    }

    /// Run `check` on both sides and return `(side, name, ok, message)` lines.
    pub async fn check(&self) -> Result<Vec<(String, String, bool, String)>> {
        let mut out = Vec::new();
        for (name, ok, message) in self.check_source().await? {
            out.push(("source".to_string(), name, ok, message));
        }
        for (name, ok, message) in self.check_target().await? {
            out.push(("target".to_string(), name, ok, message));
        }
        Ok(out)
    }
}

impl SourceSide {
    async fn next(&mut self, max_rows: u32) -> Result<Option<Batch>, StageError> {
        let reader = self.reader;
        let label = self.label.clone();
        let batch = self
            .inst
            .call("next", |s, w| async move {
                w.culvert_connector_source_connector()
                    .reader()
                    .call_next(s, reader, max_rows)
                    .await
            })
            .await
            .map_err(sandbox_error)?
            .map_err(|e| source_error(&label, e))?;
        Ok(batch.map(Batch::from))
    }

    async fn ack(&mut self, position: &[u8]) -> Result<(), StageError> {
        let reader = self.reader;
        let label = self.label.clone();
        self.inst
            .call("ack", |s, w| async move {
                w.culvert_connector_source_connector()
                    .reader()
                    .call_ack(s, reader, position)
                    .await
            })
            .await
            .map_err(sandbox_error)?
            .map_err(|e| source_error(&label, e))
    }
}

impl TargetSide {
    async fn committed(&mut self) -> Result<Option<Vec<u8>>, StageError> {
        let writer = self.writer;
        let label = self.label.clone();
        self.inst
            .call("committed", |s, w| async move {
                w.culvert_connector_destination_connector()
                    .writer()
                    .call_committed(s, writer)
                    .await
            })
            .await
            .map_err(sandbox_error)?
            .map_err(|e| target_error(&label, e))
    }

    async fn apply(&mut self, batch: Batch) -> Result<Vec<u8>, StageError> {
        let writer = self.writer;
        let label = self.label.clone();
        let batch: destination::culvert::connector::types::Batch = batch.into();
        self.inst
            .call("apply", |s, w| async move {
                w.culvert_connector_destination_connector()
                    .writer()
                    .call_apply(s, writer, &batch)
                    .await
            })
            .await
            .map_err(sandbox_error)?
            .map_err(|e| target_error(&label, e))
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Shortest time between two `next` calls that both find nothing.
const IDLE_POLL: Duration = Duration::from_millis(250);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(7))).min(MAX_BACKOFF)
}

/// Run the pipeline until `shutdown` turns true or a stage fails for good.
pub async fn run(
    sides: Arc<Sides>,
    metrics: Metrics,
    progress: Arc<Progress>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let cfg = sides.cfg.clone();
    let mut target = sides.open_target().await.map_err(|e| anyhow!(e.message))?;
    let committed = target.committed().await.map_err(|e| anyhow!(e.message))?;
    let buffer = Buffer::open(&cfg.buffer, metrics.buffer(&cfg.name))?;
    let recovered = buffer
        .recover(committed.as_deref())
        .await
        .context("recovering the buffer")?;
    let resume = recovered.last_position.clone().or(committed.clone());
    tracing::info!(
        pipeline = %cfg.name,
        committed = committed.as_ref().map(hex::encode).unwrap_or_default(),
        buffered_segments = recovered.segments,
        "resuming"
    );
    let source = sides
        .open_source(resume.clone())
        .await
        .map_err(|e| anyhow!(e.message))?;
    let (committed_tx, committed_rx) = watch::channel(committed);
    let src = tokio::spawn(source_loop(
        sides.clone(),
        source,
        buffer.clone(),
        resume,
        committed_rx,
        shutdown.clone(),
        metrics.clone(),
        progress.clone(),
    ));
    let tgt = tokio::spawn(target_loop(
        sides.clone(),
        target,
        buffer,
        committed_tx,
        shutdown.clone(),
        metrics,
        progress,
    ));
    let (src, tgt) = (abort_on_drop(src), abort_on_drop(tgt));
    tokio::select! {
        r = flatten(src.0) => { r?; }
        r = flatten(tgt.0) => { r?; }
        _ = shutdown.wait_for(|s| *s) => {}
    }
    Ok(())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn abort_on_drop<T>(h: tokio::task::JoinHandle<T>) -> (AbortOnDrop<T>,) {
    (AbortOnDrop(h),)
}

async fn flatten(h: AbortOnDrop<Result<()>>) -> Result<()> {
    let mut h = h;
    match (&mut h.0).await {
        Ok(r) => r,
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => bail!("pipeline task failed: {e}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn source_loop(
    sides: Arc<Sides>,
    source: SourceSide,
    buffer: Arc<Buffer>,
    mut position: Option<Vec<u8>>,
    mut committed: watch::Receiver<Option<Vec<u8>>>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Metrics,
    progress: Arc<Progress>,
) -> Result<()> {
    let cfg = &sides.cfg;
    let labels = StageLabels {
        pipeline: cfg.name.clone(),
        stage: "source".into(),
    };
    let pipeline = PipelineLabels {
        pipeline: cfg.name.clone(),
    };
    let source_metrics = metrics.connector(&cfg.name, &cfg.source.connector);
    let mut attempt = 0u32;
    let mut last_ack = tokio::time::Instant::now();
    let mut current = Some(source);
    let mut failed_at: Option<tokio::time::Instant> = None;
    // The source answered again after a failure: report how long recovery took.
    let resumed = |failed_at: &mut Option<tokio::time::Instant>| {
        if let Some(at) = failed_at.take() {
            let took = at.elapsed().as_secs_f64();
            metrics.resume_seconds.get_or_create(&pipeline).set(took);
            tracing::info!(pipeline = %cfg.name, seconds = took, "source resumed");
        }
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let mut step: Result<(), StageError> = Ok(());
        if current.is_none() {
            let wait = backoff(attempt);
            attempt += 1;
            progress.set_phase("reconnecting source");
            tokio::time::sleep(wait).await;
            match sides.open_source(position.clone()).await {
                Ok(s) => current = Some(s),
                Err(e) if e.retryable => {
                    tracing::warn!(pipeline = %cfg.name, error = %e.message, retry_in = ?backoff(attempt), "source still unavailable");
                    continue;
                }
                Err(e) => bail!("{}", e.message),
            }
        }
        let source = current.as_mut().expect("opened above");
        buffer.check().context("appending to the buffer")?;
        if !buffer.wait_for_room(Duration::from_secs(1)).await {
            progress.set_phase("waiting for target");
        } else {
            let asked = tokio::time::Instant::now();
            match source.next(cfg.batch_rows).await {
                Ok(Some(batch)) => {
                    match batch.kind {
                        Kind::Snapshot => progress.set_phase("snapshot"),
                        _ => progress.set_phase("streaming"),
                    }
                    buffer
                        .append(&batch)
                        .await
                        .context("appending to the buffer")?;
                    metrics.rows.get_or_create(&labels).inc_by(batch.rows());
                    metrics.bytes.get_or_create(&labels).inc_by(batch.bytes());
                    metrics.batches.get_or_create(&labels).inc();
                    metrics
                        .lag_bytes
                        .get_or_create(&pipeline)
                        .set(batch.lag_bytes as i64);
                    progress
                        .rows_read
                        .fetch_add(batch.rows(), Ordering::Relaxed);
                    progress.lag_bytes.store(batch.lag_bytes, Ordering::Relaxed);
                    position = Some(batch.position);
                    attempt = 0;
                    resumed(&mut failed_at);
                }
                Ok(None) => {
                    attempt = 0;
                    resumed(&mut failed_at);
                    // `next` should wait about a second for data; one that answers "nothing"
                    // at once would otherwise keep a core busy.
                    let waited = asked.elapsed();
                    if waited < IDLE_POLL {
                        tokio::select! {
                            _ = tokio::time::sleep(IDLE_POLL - waited) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
                Err(e) => step = Err(e),
            }
        }
        let total = source_metrics.gauge("snapshot_tables_total");
        if total > 0.0 {
            progress.tables_total.store(total as u64, Ordering::Relaxed);
        }
        let ack_due = committed.has_changed().unwrap_or(false)
            || last_ack.elapsed() >= Duration::from_secs(10);
        if step.is_ok() && ack_due {
            let done = committed.borrow_and_update().clone();
            if let Some(done) = done {
                step = source.ack(&done).await;
            }
            last_ack = tokio::time::Instant::now();
        }
        if let Err(e) = step {
            metrics.errors.get_or_create(&labels).inc();
            if !e.retryable {
                bail!("{}", e.message);
            }
            tracing::warn!(pipeline = %cfg.name, error = %e.message, "source failed; reconnecting");
            current = None;
            failed_at.get_or_insert_with(tokio::time::Instant::now);
            metrics.source_reconnects.get_or_create(&pipeline).inc();
        }
    }
}

async fn target_loop(
    sides: Arc<Sides>,
    target: TargetSide,
    buffer: Arc<Buffer>,
    committed: watch::Sender<Option<Vec<u8>>>,
    shutdown: watch::Receiver<bool>,
    metrics: Metrics,
    progress: Arc<Progress>,
) -> Result<()> {
    let cfg = &sides.cfg;
    let labels = StageLabels {
        pipeline: cfg.name.clone(),
        stage: "target".into(),
    };
    let pipeline = PipelineLabels {
        pipeline: cfg.name.clone(),
    };
    let mut attempt = 0u32;
    let mut current = Some(target);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if current.is_none() {
            let wait = backoff(attempt);
            attempt += 1;
            tokio::time::sleep(wait).await;
            match sides.open_target().await {
                Ok(t) => {
                    current = Some(t);
                    buffer.rewind().await;
                }
                Err(e) if e.retryable => {
                    tracing::warn!(pipeline = %cfg.name, error = %e.message, retry_in = ?backoff(attempt), "target still unavailable");
                    continue;
                }
                Err(e) => bail!("{}", e.message),
            }
        }
        let target = current.as_mut().expect("opened above");
        let bytes = buffer.bytes().await;
        metrics
            .buffer_bytes
            .get_or_create(&pipeline)
            .set(bytes as i64);
        progress.buffer_bytes.store(bytes, Ordering::Relaxed);
        let Some((seq, batch)) = buffer.next(Duration::from_millis(500)).await? else {
            continue;
        };
        let rows = batch.rows();
        let size = batch.bytes();
        let started = batch.tables.iter().filter(|t| t.first_of_table).count() as u64;
        let copying = batch.kind == Kind::Snapshot;
        let per_table: Vec<(String, u64)> = batch
            .tables
            .iter()
            .filter(|t| t.row_count > 0)
            .map(|t| {
                (
                    format!("{}.{}", t.namespace, t.name),
                    u64::from(t.row_count),
                )
            })
            .collect();
        match target.apply(batch).await {
            Ok(position) => {
                if let Some(at) = buffer.appended_at(seq).await {
                    let lag = at.elapsed();
                    metrics
                        .lag_seconds
                        .get_or_create(&pipeline)
                        .set(lag.as_secs_f64());
                    progress
                        .lag_millis
                        .store(lag.as_millis() as u64, Ordering::Relaxed);
                }
                for (table, n) in per_table {
                    progress.add_table_rows(table, n, copying);
                }
                // Snapshot batches all come before the first change batch.
                if !copying {
                    progress.end_snapshot();
                }
                progress.bytes_applied.fetch_add(size, Ordering::Relaxed);
                buffer.release(seq).await?;
                committed.send_replace(Some(position));
                metrics.rows.get_or_create(&labels).inc_by(rows);
                metrics.bytes.get_or_create(&labels).inc_by(size);
                metrics.batches.get_or_create(&labels).inc();
                progress.rows_applied.fetch_add(rows, Ordering::Relaxed);
                progress
                    .tables_started
                    .fetch_add(started, Ordering::Relaxed);
                attempt = 0;
            }
            Err(e) => {
                metrics.errors.get_or_create(&labels).inc();
                if !e.retryable {
                    bail!("{}", e.message);
                }
                tracing::warn!(pipeline = %cfg.name, error = %e.message, "target failed; reconnecting");
                current = None;
            }
        }
    }
}

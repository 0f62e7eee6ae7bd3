//! Validations: run one connector's `check` inside the environment and report the result.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use culvert_control_api::agents::{AgentReport, ValidationReport, ValidationTask};
use culvert_control_api::client::Client;
use culvert_control_api::connectors::CheckOutcome;
use culvert_sealing::KeyEncryptionKey;

use super::assignment;
use super::components::Components;
use crate::engine::ConnectorEngine;
use crate::metrics::Metrics;
use crate::pipeline::Sides;

/// Finished validations waiting to be reported.
pub struct Validations {
    done: Arc<Mutex<Vec<ValidationReport>>>,
    state_dir: PathBuf,
}

async fn check(
    task: &ValidationTask,
    engine: ConnectorEngine,
    key: Option<Arc<dyn KeyEncryptionKey>>,
    dir: PathBuf,
    components: Components,
) -> Vec<CheckOutcome> {
    let failed = |name: &str, message: String| {
        vec![CheckOutcome {
            name: name.into(),
            ok: false,
            message,
        }]
    };
    let component = match assignment::component_path(&task.connector, &components).await {
        Ok(p) => p,
        Err(e) => return failed("component", format!("{e:#}")),
    };
    let cfg =
        match assignment::check_config(&task.connector, key.as_deref(), &dir, component.as_deref())
            .await
        {
            Ok(c) => c,
            Err(e) => return failed("configuration", format!("{e:#}")),
        };
    let sides = match Sides::load(cfg, engine, Metrics::new()) {
        Ok(s) => s,
        Err(e) => return failed("connector", format!("{e:#}")),
    };
    let result = match task.connector.kind {
        culvert_control_api::connectors::ConnectorKind::Source => sides.check_source().await,
        culvert_control_api::connectors::ConnectorKind::Target => sides.check_target().await,
    };
    match result {
        Ok(lines) if lines.is_empty() => failed("check", "the connector reported no checks".into()),
        Ok(lines) => lines
            .into_iter()
            .map(|(name, ok, message)| CheckOutcome { name, ok, message })
            .collect(),
        Err(e) => failed("check", format!("{e:#}")),
    }
}

impl Validations {
    /// Nothing running; scratch files go under `state_dir`.
    pub fn new(state_dir: PathBuf) -> Validations {
        Validations {
            done: Arc::default(),
            state_dir,
        }
    }

    /// Run a validation in the background.
    pub fn start(
        &mut self,
        task: ValidationTask,
        engine: &ConnectorEngine,
        key: Option<&Arc<dyn KeyEncryptionKey>>,
        components: &Components,
    ) {
        let done = self.done.clone();
        let components = components.clone();
        let engine = engine.clone();
        let key = key.cloned();
        let dir = self.state_dir.clone();
        tokio::spawn(async move {
            tracing::info!(validation = %task.validation_id, connector = %task.connector.connector_type, "validating");
            let checks = check(&task, engine, key, dir, components).await;
            done.lock()
                .expect("validations lock")
                .push(ValidationReport {
                    validation_id: task.validation_id,
                    checks,
                });
        });
    }

    /// Send finished validations; keep them for the next try when the call fails.
    pub async fn report(&mut self, client: &Client) {
        let batch: Vec<ValidationReport> =
            std::mem::take(&mut *self.done.lock().expect("validations lock"));
        if batch.is_empty() {
            return;
        }
        let body = AgentReport {
            validations: batch.clone(),
        };
        match client
            .post::<_, serde_json::Value>("/v1/agent/reports", &body)
            .await
        {
            Ok(_) => {}
            // Refused (the validation was reassigned or deleted): retrying cannot help.
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                tracing::warn!(error = %e, "validation results refused");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot report validations yet");
                self.done.lock().expect("validations lock").extend(batch);
            }
        }
    }
}

/// Run one validation on its own (a validation container): fetch it with its one-time
/// token, check, report. Returns whether every check passed.
pub async fn run_once(
    control_plane: &str,
    validation: uuid::Uuid,
    token: String,
    key: Option<Arc<dyn KeyEncryptionKey>>,
    state_dir: PathBuf,
    engine: ConnectorEngine,
) -> anyhow::Result<bool> {
    use anyhow::Context;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let client = Client::new(control_plane, Some(token));
    let path = format!("/v1/agent/validations/{validation}");
    let task: ValidationTask = client
        .get(&path)
        .await
        .with_context(|| format!("fetching validation {validation}"))?
        .body;
    let components = Components::new(&state_dir, client.clone());
    let checks = check(&task, engine, key, state_dir, components).await;
    let passed = checks.iter().all(|c| c.ok);
    for c in &checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        println!("{mark} {:<24} {}", c.name, c.message);
    }
    let report = ValidationReport {
        validation_id: validation,
        checks,
    };
    client
        .post::<_, serde_json::Value>(&path, &report)
        .await
        .with_context(|| format!("reporting validation {validation}"))?;
    Ok(passed)
}

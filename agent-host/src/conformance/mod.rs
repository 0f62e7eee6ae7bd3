//! The conformance kit: loads a connector component in the agent's own sandbox and checks
//! the connector contract of `wit/connector.wit`, producing a readable report.

mod common;
mod destination;
pub mod model;
mod report;
mod source;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Map, Value};
use wasmtime::component::Component;

pub use report::{Line, Outcome, Report};

use crate::bindings::{destination as dst, source as src};
use crate::config::ConnectorSection;
use crate::egress::Egress;
use crate::engine::{self, ConnectorEngine};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pipeline::egress_for;
use crate::sandbox::{Instance, Placement, instantiate_destination, instantiate_source};

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Exports `culvert:connector/source-connector`.
    Source,
    /// Exports `culvert:connector/destination-connector`.
    Destination,
}

impl Role {
    /// `source` or `destination`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }
}

const SOURCE_EXPORT: &str = "culvert:connector/source-connector@0.1.0";
const DESTINATION_EXPORT: &str = "culvert:connector/destination-connector@0.1.0";

/// What to run and how far to go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The component file.
    pub component: PathBuf,
    /// The configuration the connector should work with.
    pub config: Map<String, Value>,
    /// Limits the connector runs under (as a pipeline would give it).
    pub limits: Limits,
    /// Endpoints allowed besides those the configuration names.
    pub egress: Vec<(String, u16)>,
    /// Table selection handed to a source.
    pub selection: Vec<String>,
    /// `max-rows` passed to every `next`.
    pub max_rows: u32,
    /// A source's read stops after this many rows...
    pub read_rows: u64,
    /// ...or after this long...
    pub read_time: Duration,
    /// ...or once this many `next` calls in a row returned nothing.
    pub idle_polls: u32,
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
}

impl Options {
    /// Defaults for `component` and `config`.
    pub fn new(component: PathBuf, config: Map<String, Value>, cache_dir: PathBuf) -> Options {
        Options {
            component,
            config,
            limits: Limits::default(),
            egress: Vec::new(),
            selection: Vec::new(),
            max_rows: 1000,
            read_rows: 200_000,
            read_time: Duration::from_secs(120),
            idle_polls: 2,
            cache_dir,
        }
    }
}

/// The component under test, ready to instantiate.
pub(crate) struct Subject {
    engine: ConnectorEngine,
    component: Arc<Component>,
    label: String,
    limits: Limits,
    egress: Arc<Egress>,
    metrics: Metrics,
}

impl Subject {
    fn placement(&self, egress: Arc<Egress>) -> Placement<'_> {
        Placement {
            engine: &self.engine,
            component: &self.component,
            label: &self.label,
            limits: self.limits,
            egress,
            metrics: self.metrics.connector("conformance", &self.label),
        }
    }

    /// A fresh source instance with the configuration's egress.
    pub(crate) async fn source(&self) -> Result<Instance<src::Source>> {
        instantiate_source(self.placement(self.egress.clone())).await
    }

    /// A fresh destination instance with the configuration's egress.
    pub(crate) async fn destination(&self) -> Result<Instance<dst::Destination>> {
        instantiate_destination(self.placement(self.egress.clone())).await
    }
}

/// Which world `component` exports, if it is a Culvert connector at all.
pub fn role_of(engine: &ConnectorEngine, component: &Component) -> Option<Role> {
    let ty = component.component_type();
    if ty.get_export(engine.engine(), SOURCE_EXPORT).is_some() {
        Some(Role::Source)
    } else if ty.get_export(engine.engine(), DESTINATION_EXPORT).is_some() {
        Some(Role::Destination)
    } else {
        None
    }
}

fn not_a_connector(path: &Path) -> anyhow::Error {
    anyhow!(
        "{} exports neither {SOURCE_EXPORT} nor {DESTINATION_EXPORT}; build it against the `source` or `destination` world of wit/connector.wit",
        path.display()
    )
}

/// The kind and `spec` of a component, read in the sandbox with no network.
pub async fn describe(path: &Path, cache_dir: &Path) -> Result<(Role, String)> {
    let wasm = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let engine = ConnectorEngine::new(cache_dir)?;
    let label = path.display().to_string();
    let component = engine.load(&label, &wasm)?;
    let role = role_of(&engine, &component).ok_or_else(|| not_a_connector(path))?;
    let subject = Subject {
        engine,
        component,
        label,
        limits: Limits::default(),
        egress: Arc::default(),
        metrics: Metrics::new(),
    };
    let spec = match role {
        Role::Source => common::source_spec(&mut subject.source().await?).await?,
        Role::Destination => common::destination_spec(&mut subject.destination().await?).await?,
    };
    Ok((role, spec))
}

/// Run every check on the component. `Err` only when the file cannot be read.
pub async fn run(opts: &Options) -> Result<Report> {
    let wasm = std::fs::read(&opts.component)
        .with_context(|| format!("cannot read {}", opts.component.display()))?;
    let mut report = Report {
        component: opts.component.display().to_string(),
        kind: None,
        digest: engine::digest(&wasm),
        size: wasm.len(),
        lines: Vec::new(),
    };
    let engine = ConnectorEngine::new(&opts.cache_dir)?;
    let label = opts
        .component
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "connector".into());
    let started = Instant::now();
    let component = match engine.load(&label, &wasm) {
        Ok(c) => c,
        Err(e) => {
            report.fail("load", format!("{e:#}"));
            return Ok(report);
        }
    };
    let compiled_in = started.elapsed();
    let Some(role) = role_of(&engine, &component) else {
        report.fail("load", format!("{:#}", not_a_connector(&opts.component)));
        return Ok(report);
    };
    report.kind = Some(role.as_str().to_string());
    let mut subject = Subject {
        engine,
        component,
        label: label.clone(),
        limits: opts.limits,
        egress: Arc::default(),
        metrics: Metrics::new(),
    };
    let started = Instant::now();
    let spec = match role {
        Role::Source => match subject.source().await {
            Ok(mut i) => common::source_spec(&mut i).await,
            Err(e) => Err(e),
        },
        Role::Destination => match subject.destination().await {
            Ok(mut i) => common::destination_spec(&mut i).await,
            Err(e) => Err(e),
        },
    };
    let spec = match spec {
        Ok(s) => s,
        Err(e) => {
            report.fail("load", format!("{e:#}"));
            return Ok(report);
        }
    };
    report.pass(
        "load",
        format!(
            "a {} component; compiled or loaded from cache in {:.2} s, instantiated and answered `spec` in {} ms",
            role.as_str(),
            compiled_in.as_secs_f64(),
            started.elapsed().as_millis()
        ),
    );
    let section = ConnectorSection {
        connector: label,
        settings: opts.config.clone(),
        egress: opts.egress.clone(),
        limits: opts.limits,
    };
    subject.egress = egress_for(&section, &spec);
    let Some(validator) = common::check_spec(&mut report, &spec) else {
        return Ok(report);
    };
    common::check_config(&mut report, &validator, &opts.config);
    match role {
        Role::Source => source::run(&mut report, &subject, opts, &validator).await,
        Role::Destination => destination::run(&mut report, &subject, opts, &validator).await,
    }
    Ok(report)
}

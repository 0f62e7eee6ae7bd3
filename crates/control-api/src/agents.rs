//! Agents and the metadata protocol they speak: register, heartbeat, report.
//!
//! Agents call out to the control plane only. Every heartbeat renews the leases of the
//! pipelines the agent runs and returns the current assignments; a pipeline is run only
//! under a lease whose epoch (fencing token) is also checked by the target on every commit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::connectors::{CheckOutcome, ConnectorKind};
use crate::pipelines::PipelineProgress;
use crate::registry::{ComponentRef, ConnectorLimits};

/// Health of an agent.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentHealth {
    /// Heartbeating.
    Healthy,
    /// Missed heartbeats for longer than the lease; its pipelines moved elsewhere.
    Unhealthy,
}

/// An agent as users see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    /// Id.
    pub id: Uuid,
    /// Environment.
    pub environment_id: Uuid,
    /// Host name the agent reported.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Health.
    pub health: AgentHealth,
    /// Pipelines it holds leases for.
    pub pipelines: Vec<Uuid>,
    /// Registered.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Body of `POST /v1/agent/register`, authenticated by the environment's agent token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentRegister {
    /// The environment the agent was started for.
    pub environment_id: Uuid,
    /// Host name.
    pub name: String,
    /// Agent version.
    pub version: String,
}

/// Reply to a registration: the agent's own credential, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRegistered {
    /// The agent's id.
    pub agent_id: Uuid,
    /// Bearer key for every later call.
    pub agent_key: String,
    /// Seconds between heartbeats.
    pub heartbeat_seconds: u32,
    /// Seconds a lease lasts without renewal.
    pub lease_seconds: u32,
}

/// A pipeline an agent runs, with what it reports about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningPipeline {
    /// Pipeline.
    pub pipeline_id: Uuid,
    /// Epoch of the lease it runs under.
    pub epoch: i64,
    /// Progress.
    pub progress: PipelineProgress,
    /// Commands finished since the last heartbeat.
    #[serde(default)]
    pub commands_done: Vec<Uuid>,
}

/// Body of `POST /v1/agent/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Pipelines running now.
    #[serde(default)]
    pub running: Vec<RunningPipeline>,
    /// The agent is shutting down: release every lease it does not list in `running`.
    #[serde(default)]
    pub draining: bool,
}

/// One connector of an assignment, with its secrets still sealed for the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectorDefinition {
    /// Connector type.
    #[serde(rename = "type")]
    pub connector_type: String,
    /// Source or target.
    pub kind: ConnectorKind,
    /// Configuration without secret fields.
    pub config: serde_json::Map<String, Value>,
    /// Each secret field, sealed for the environment's agents (see `culvert-sealing`).
    #[serde(default)]
    pub sealed_secrets: std::collections::BTreeMap<String, String>,
    /// The pinned version of a registered type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_version: Option<String>,
    /// A registered type's component: fetch it with `GET /v1/agent/components/{digest}` and
    /// refuse bytes that do not hash to the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentRef>,
    /// Static `host:port` endpoints the version needs besides those its configuration names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// The version's resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ConnectorLimits>,
}

/// A command for a running pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PipelineCommand {
    /// Id, reported back in `commands_done`.
    pub id: Uuid,
    /// `resync`.
    pub kind: String,
    /// Tables (`schema.name`) it concerns; empty means all.
    pub tables: Vec<String>,
}

/// A pipeline leased to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    /// Pipeline.
    pub pipeline_id: Uuid,
    /// Pipeline name (slot and publication default to it).
    pub name: String,
    /// Fencing epoch: the target refuses commits from a lower epoch.
    pub epoch: i64,
    /// Pipeline definition version; a change restarts the pipeline.
    pub version: i64,
    /// Source.
    pub source: ConnectorDefinition,
    /// Target.
    pub target: ConnectorDefinition,
    /// Table globs.
    pub tables: Vec<String>,
    /// Rows per change batch.
    pub batch_rows: u32,
    /// Commands to run.
    #[serde(default)]
    pub commands: Vec<PipelineCommand>,
}

/// A validation for the agent to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationTask {
    /// Validation id, reported back.
    pub validation_id: Uuid,
    /// The connector to check.
    pub connector: ConnectorDefinition,
}

/// Reply to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatReply {
    /// Every pipeline the agent should run now; anything else it must stop.
    pub assignments: Vec<Assignment>,
    /// Validations to run.
    pub validations: Vec<ValidationTask>,
    /// Seconds until the next heartbeat.
    pub heartbeat_seconds: u32,
    /// Seconds a lease lasts without renewal.
    pub lease_seconds: u32,
}

/// Result of one validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationReport {
    /// Validation id.
    pub validation_id: Uuid,
    /// Checks.
    pub checks: Vec<CheckOutcome>,
}

/// Body of `POST /v1/agent/reports`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// Finished validations.
    #[serde(default)]
    pub validations: Vec<ValidationReport>,
}

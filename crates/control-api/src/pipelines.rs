//! Pipelines: a source, a target, a table selection, and where they run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Body of `POST /v1/pipelines`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PipelineCreate {
    /// Unique name: lowercase letters, digits and `_`, starting with a letter, up to 48
    /// characters (it names the replication slot and publication).
    pub name: String,
    /// Source connector.
    pub source_id: Uuid,
    /// Target connector (same environment as the source).
    pub target_id: Uuid,
    /// Schema-qualified table globs, for example `public.*` or `sales.orders`.
    pub tables: Vec<String>,
    /// Rows per change batch (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_rows: Option<u32>,
}

/// Body of `PATCH /v1/pipelines/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PipelineUpdate {
    /// New table selection; added tables are copied while changes keep streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// New rows per change batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_rows: Option<u32>,
}

/// Body of `POST /v1/pipelines/{id}/resync`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResyncRequest {
    /// Tables to copy again (`schema.name`); empty means every selected table.
    #[serde(default)]
    pub tables: Vec<String>,
}

/// What the user wants a pipeline to do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Created, never deployed.
    Draft,
    /// Deployed: an agent runs it.
    Running,
    /// Stopped by the user; the slot keeps its place.
    Paused,
}

impl DesiredState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Draft => "draft",
            DesiredState::Running => "running",
            DesiredState::Paused => "paused",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<DesiredState> {
        Some(match s {
            "draft" => DesiredState::Draft,
            "running" => DesiredState::Running,
            "paused" => DesiredState::Paused,
            _ => return None,
        })
    }
}

/// A pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pipeline {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Environment (of both connectors).
    pub environment_id: Uuid,
    /// Source connector.
    pub source_id: Uuid,
    /// Target connector.
    pub target_id: Uuid,
    /// Table globs.
    pub tables: Vec<String>,
    /// Rows per change batch.
    pub batch_rows: u32,
    /// What the user asked for.
    pub state: DesiredState,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Version for `If-Match` (also the `ETag`).
    pub version: i64,
    /// The connector types and versions the pipeline runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectors: Option<PipelineConnectors>,
}

/// The connector type and version one side of a pipeline runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectorRun {
    /// Connector.
    pub connector_id: Uuid,
    /// Connector type.
    #[serde(rename = "type")]
    pub connector_type: String,
    /// Pinned version of a registered type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_version: Option<String>,
    /// SHA-256 of that version's component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// What each side of a pipeline runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PipelineConnectors {
    /// Source.
    pub source: ConnectorRun,
    /// Target.
    pub target: ConnectorRun,
}

/// Progress of one table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TableProgress {
    /// `schema.name`.
    pub table: String,
    /// `snapshot` while its initial copy runs, `streaming` after.
    pub state: String,
    /// Rows applied at the target.
    pub rows: u64,
}

/// What the agent running a pipeline last reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PipelineProgress {
    /// `starting`, `snapshot`, `streaming`, `stopped` or `failed`.
    pub phase: String,
    /// Rows the source produced.
    pub rows_read: u64,
    /// Rows the target committed.
    pub rows_applied: u64,
    /// Bytes of Arrow data the target committed.
    pub bytes_applied: u64,
    /// WAL bytes between the source's current position and the target's commit.
    pub lag_bytes: u64,
    /// Seconds between a change being read and committed, for the last batch.
    pub lag_seconds: f64,
    /// Bytes held in the buffer.
    pub buffer_bytes: u64,
    /// Tables known to the snapshot.
    pub tables_total: u64,
    /// Tables whose copy has started.
    pub tables_started: u64,
    /// Per-table progress.
    #[serde(default)]
    pub tables: Vec<TableProgress>,
    /// The last error, when the pipeline failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `GET /v1/pipelines/{id}/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PipelineStatus {
    /// Pipeline.
    pub pipeline_id: Uuid,
    /// What the user asked for.
    pub state: DesiredState,
    /// `draft`, `waiting_for_agent`, `starting`, `snapshot`, `streaming`, `pausing` (the agent
    /// is stopping it), `paused` or `failed`.
    pub phase: String,
    /// The agent holding the pipeline's lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    /// Fencing epoch of the current lease.
    pub epoch: i64,
    /// The agent's last report.
    pub progress: PipelineProgress,
    /// When the agent last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<DateTime<Utc>>,
    /// The connector types and versions the pipeline runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectors: Option<PipelineConnectors>,
}

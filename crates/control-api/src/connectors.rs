//! Connectors: one configured source or target, and its validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Which end of a pipeline a connector is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// Reads a database.
    Source,
    /// Writes a database.
    Target,
}

impl ConnectorKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Source => "source",
            ConnectorKind::Target => "target",
        }
    }
}

/// A kind of connector the platform can run, with its configuration schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectorType {
    /// Name, for example `postgres-source`.
    pub name: String,
    /// Source or target.
    pub kind: ConnectorKind,
    /// JSON Schema (2020-12) of the configuration; secret fields carry `"x-culvert-secret": true`.
    /// For a registered type, the spec of its latest version.
    pub spec: Value,
    /// Built into the agent (no versions) rather than registered.
    #[serde(default = "yes")]
    pub first_party: bool,
    /// A registered type's latest version: the highest release, else the highest pre-release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    /// A registered type's versions, oldest first (without their specs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<crate::registry::ConnectorTypeVersion>,
}

fn yes() -> bool {
    true
}

/// Body of `POST /v1/connectors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectorCreate {
    /// Unique name within the environment: lowercase letters, digits and `-`.
    pub name: String,
    /// The environment whose agents reach this database.
    pub environment_id: Uuid,
    /// Connector type, for example `postgres-source` (see `GET /v1/connector-types`). A
    /// registered type may be pinned to a version as `name@1.2.0`; without one, its latest
    /// version is pinned.
    #[serde(rename = "type")]
    pub connector_type: String,
    /// Configuration, validated against the type's spec. Secret fields are encrypted for the
    /// environment's agents and never returned.
    pub config: serde_json::Map<String, Value>,
}

/// Body of `PATCH /v1/connectors/{id}`: a JSON merge patch of the configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectorUpdate {
    /// Fields to set; `null` removes a field. Secret fields given here replace the stored ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Map<String, Value>>,
    /// Pin another version of a registered type; the configuration is checked against its spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_version: Option<String>,
}

/// Outcome of a validation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ValidationState {
    /// Waiting for an agent of the environment.
    Queued,
    /// Handed to an agent.
    Running,
    /// Every check passed.
    Passed,
    /// At least one check failed; see `checks`.
    Failed,
}

impl ValidationState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationState::Queued => "queued",
            ValidationState::Running => "running",
            ValidationState::Passed => "passed",
            ValidationState::Failed => "failed",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<ValidationState> {
        Some(match s {
            "queued" => ValidationState::Queued,
            "running" => ValidationState::Running,
            "passed" => ValidationState::Passed,
            "failed" => ValidationState::Failed,
            _ => return None,
        })
    }
}

/// One check run by the connector inside the environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckOutcome {
    /// What was checked, for example `connect` or `replication-role`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found and, on failure, how to fix it.
    pub message: String,
}

/// A validation of a connector from inside its environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validation {
    /// Id.
    pub id: Uuid,
    /// State.
    pub state: ValidationState,
    /// Checks, once finished.
    pub checks: Vec<CheckOutcome>,
    /// Requested.
    pub requested_at: DateTime<Utc>,
    /// Finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A connector as the API returns it: never with its secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connector {
    /// Id.
    pub id: Uuid,
    /// Name, unique within the environment.
    pub name: String,
    /// Environment.
    pub environment_id: Uuid,
    /// Connector type.
    #[serde(rename = "type")]
    pub connector_type: String,
    /// The pinned version of a registered type (first-party types have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_version: Option<String>,
    /// SHA-256 of the pinned version's component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Source or target.
    pub kind: ConnectorKind,
    /// Configuration without secret fields.
    pub config: serde_json::Map<String, Value>,
    /// Names of the secret fields that are set (their values are never returned).
    pub secrets: Vec<String>,
    /// The latest validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Version for `If-Match` (also the `ETag`).
    pub version: i64,
}

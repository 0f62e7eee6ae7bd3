//! Environments: where agents run (an Azure subscription's VNet, or this machine).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who provides compute for an environment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Agents on VM Scale Sets in the customer's Azure subscription.
    Azure,
    /// Agents as processes on the machine running `culvert local up`.
    Local,
}

impl Provider {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Azure => "azure",
            Provider::Local => "local",
        }
    }
}

/// The bootstrap inputs of a BYOC environment on Azure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    /// Subscription id (a GUID).
    pub subscription_id: String,
    /// Region, for example `eastus2`.
    pub location: String,
    /// Resource group Culvert deploys into.
    pub resource_group: String,
    /// Resource id of the VNet the agents join.
    pub vnet_id: String,
    /// Resource ids of the subnets agents run in (at least one, in `vnet_id`).
    pub subnet_ids: Vec<String>,
    /// Resource id of an existing Key Vault for credentials; a new one is created when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_id: Option<String>,
}

/// Body of `POST /v1/environments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvironmentCreate {
    /// Unique name: lowercase letters, digits and `-`, up to 48 characters.
    pub name: String,
    /// `azure` or `local`.
    pub provider: Provider,
    /// Required for `azure`, absent for `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
    /// How many agents to run (1 to 32, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<u32>,
}

/// Body of `PATCH /v1/environments/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvironmentUpdate {
    /// New agent count (1 to 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<u32>,
}

/// Lifecycle state of an environment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentState {
    /// Waiting for the customer to apply the bootstrap bundle.
    PendingBootstrap,
    /// Bootstrapped; agents are being started or are registering.
    Registering,
    /// At least one healthy agent; connectors can be validated and pipelines run.
    Ready,
    /// Something is missing; `reason` says what.
    Error,
}

impl EnvironmentState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentState::PendingBootstrap => "pending_bootstrap",
            EnvironmentState::Registering => "registering",
            EnvironmentState::Ready => "ready",
            EnvironmentState::Error => "error",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<EnvironmentState> {
        Some(match s {
            "pending_bootstrap" => EnvironmentState::PendingBootstrap,
            "registering" => EnvironmentState::Registering,
            "ready" => EnvironmentState::Ready,
            "error" => EnvironmentState::Error,
            _ => return None,
        })
    }
}

/// An environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environment {
    /// Id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Compute provider.
    pub provider: Provider,
    /// Azure bootstrap inputs (for `azure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
    /// Agents wanted.
    pub agents: u32,
    /// Agents heartbeating now.
    pub healthy_agents: u32,
    /// Lifecycle state.
    pub state: EnvironmentState,
    /// Why the state is `error` (or what registration waits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Version for `If-Match` (also the `ETag`).
    pub version: i64,
}

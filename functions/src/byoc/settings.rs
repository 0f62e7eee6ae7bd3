//! App settings of Azure (bring-your-own-cloud) environments.

use std::time::Duration;

use crate::settings::SettingsError;

/// Culvert's side of every Azure environment: its identity, its Private Link Service, its
/// registry, and how agents are deployed.
#[derive(Debug, Clone)]
pub struct ByocSettings {
    /// `CULVERT_ARM_ENDPOINT` (default `https://management.azure.com`).
    pub arm_endpoint: String,
    /// `CULVERT_AZURE_TENANT_ID`: Culvert's Entra tenant.
    pub tenant_id: String,
    /// `CULVERT_AZURE_APP_ID`: Culvert's multi-tenant application.
    pub app_id: String,
    /// `CULVERT_AZURE_PRINCIPAL_ID`: object id of Culvert's service principal in customer tenants.
    pub principal_id: String,
    /// `CULVERT_METADATA_SERVICE_ID`: resource id of Culvert's metadata Private Link Service.
    pub metadata_service_id: String,
    /// `CULVERT_CONTAINER_REGISTRY_ID`: resource id of the registry agent images come from.
    pub container_registry_id: String,
    /// `CULVERT_AGENT_IMAGE`: agent image without tag, e.g. `culvertacr.azurecr.io/culvert-agent`.
    pub agent_image: String,
    /// `CULVERT_AGENT_VERSION`: the agent version new scale sets run (default: this build's).
    pub agent_version: String,
    /// `CULVERT_AGENT_DOWNLOAD_URL`: where instances fetch `culvert-agent`; `{version}` is replaced.
    pub agent_download_url: String,
    /// `CULVERT_CONTROL_PLANE_IP_RANGES`: comma-separated ranges the customer's Key Vault must admit.
    pub control_plane_ip_ranges: Vec<String>,
    /// `CULVERT_AGENT_VM_SIZE` (default `Standard_D2s_v5`).
    pub vm_size: String,
    /// `CULVERT_VALIDATION_TIMEOUT_SECONDS` (default 300): how long a validation container may run.
    pub validation_timeout: Duration,
    /// `CULVERT_ARM_POLL_MILLIS` (default: Azure's `Retry-After`): floor of operation polling.
    pub poll_interval: Option<Duration>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl ByocSettings {
    /// The settings, or `None` when this control plane is not set up for Azure environments
    /// (no `CULVERT_AZURE_PRINCIPAL_ID`).
    pub fn from_env() -> Result<Option<ByocSettings>, SettingsError> {
        let Some(principal_id) = var("CULVERT_AZURE_PRINCIPAL_ID") else {
            return Ok(None);
        };
        let required = |name: &'static str, why: &'static str| {
            var(name).ok_or(SettingsError::Missing(name, why))
        };
        let timeout = match var("CULVERT_VALIDATION_TIMEOUT_SECONDS") {
            None => 300,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (5..=3600).contains(n))
                .ok_or_else(|| {
                    SettingsError::Invalid(
                        "CULVERT_VALIDATION_TIMEOUT_SECONDS",
                        format!("{v:?} is not a number of seconds from 5 to 3600"),
                    )
                })?,
        };
        let poll_interval = match var("CULVERT_ARM_POLL_MILLIS") {
            None => None,
            Some(v) => Some(Duration::from_millis(
                v.parse()
                    .ok()
                    .filter(|n| (10..=60_000).contains(n))
                    .ok_or_else(|| {
                        SettingsError::Invalid(
                            "CULVERT_ARM_POLL_MILLIS",
                            format!("{v:?} is not a number of milliseconds from 10 to 60000"),
                        )
                    })?,
            )),
        };
        Ok(Some(ByocSettings {
            arm_endpoint: var("CULVERT_ARM_ENDPOINT")
                .unwrap_or_else(|| "https://management.azure.com".into()),
            tenant_id: required(
                "CULVERT_AZURE_TENANT_ID",
                "set it to the Entra tenant of Culvert's application",
            )?,
            app_id: required(
                "CULVERT_AZURE_APP_ID",
                "set it to the application (client) id customers grant access to",
            )?,
            principal_id,
            metadata_service_id: required(
                "CULVERT_METADATA_SERVICE_ID",
                "set it to the resource id of the metadata Private Link Service",
            )?,
            container_registry_id: required(
                "CULVERT_CONTAINER_REGISTRY_ID",
                "set it to the resource id of the registry agent images come from",
            )?,
            agent_image: required(
                "CULVERT_AGENT_IMAGE",
                "set it to the agent image without a tag, e.g. REGISTRY.azurecr.io/culvert-agent",
            )?,
            agent_version: var("CULVERT_AGENT_VERSION")
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
            agent_download_url: required(
                "CULVERT_AGENT_DOWNLOAD_URL",
                "set it to the URL instances download culvert-agent from ({version} is replaced)",
            )?,
            control_plane_ip_ranges: var("CULVERT_CONTROL_PLANE_IP_RANGES")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            vm_size: var("CULVERT_AGENT_VM_SIZE").unwrap_or_else(|| "Standard_D2s_v5".into()),
            validation_timeout: Duration::from_secs(timeout),
            poll_interval,
        }))
    }
}

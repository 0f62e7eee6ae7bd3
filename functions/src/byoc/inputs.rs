//! What the bootstrap bundle is rendered from, and the resources it creates.

use culvert_byoc::bootstrap::{BootstrapInputs, ExpectedResources};
use culvert_control_api::environments::{AzureSettings, Environment};

use super::ByocSettings;
use crate::error::{ApiError, ApiResult};

/// An Azure environment's settings, or a 409 for a local one.
pub fn azure(env: &Environment) -> ApiResult<&AzureSettings> {
    env.azure.as_ref().ok_or_else(|| {
        ApiError::Conflict(format!(
            "environment {} is a local environment; bootstrap, discovery and network steps are for Azure environments",
            env.name
        ))
    })
}

/// The bundle's inputs for `env`.
pub fn bootstrap_inputs(
    settings: &ByocSettings,
    env: &Environment,
    external_id: &str,
) -> ApiResult<BootstrapInputs> {
    let a = azure(env)?;
    Ok(BootstrapInputs {
        environment_id: env.id.to_string(),
        environment_name: env.name.clone(),
        subscription_id: a.subscription_id.clone(),
        location: a.location.clone(),
        resource_group: a.resource_group.clone(),
        vnet_id: a.vnet_id.clone(),
        subnet_ids: a.subnet_ids.clone(),
        key_vault_id: a.key_vault_id.clone(),
        external_id: external_id.to_string(),
        culvert_tenant_id: settings.tenant_id.clone(),
        culvert_app_id: settings.app_id.clone(),
        culvert_principal_id: settings.principal_id.clone(),
        metadata_service_id: settings.metadata_service_id.clone(),
        container_registry_id: settings.container_registry_id.clone(),
        control_plane_ip_ranges: settings.control_plane_ip_ranges.clone(),
    })
}

/// The resources the bundle creates for `env`.
pub fn expected(
    settings: &ByocSettings,
    env: &Environment,
    external_id: &str,
) -> ApiResult<ExpectedResources> {
    Ok(culvert_byoc::bootstrap::resource_names(&bootstrap_inputs(
        settings,
        env,
        external_id,
    )?))
}

/// The resource group scope of an Azure environment.
pub fn resource_group_id(a: &AzureSettings) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}",
        a.subscription_id, a.resource_group
    )
}

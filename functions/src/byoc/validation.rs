//! Validation on Azure Container Instances: a container group in the agent subnet, with the
//! validation identity, runs `culvert-agent validate` for one validation and reports back.
//! The group is deleted afterwards, whether the check passed, failed or timed out.

use std::time::{Duration, Instant};

use culvert_arm::{ArmClient, operations as ops};
use culvert_control_api::environments::Environment;
use serde_json::{Value, json};
use uuid::Uuid;

use super::registration::Found;
use super::{Byoc, arm_error, inputs};
use crate::error::ApiResult;

/// How a validation container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code; the tail of its log.
    Exited { code: i64, log: String },
    /// It ran past the timeout and was stopped.
    TimedOut { log: String },
}

/// Name of the container group of validation `id`.
pub fn group_name(id: Uuid) -> String {
    format!("culvert-validate-{}", &id.simple().to_string()[..12])
}

fn group_id(env: &Environment, id: Uuid) -> ApiResult<String> {
    let a = inputs::azure(env)?;
    Ok(format!(
        "{}/providers/Microsoft.ContainerInstance/containerGroups/{}",
        inputs::resource_group_id(a),
        group_name(id)
    ))
}

/// The container group of validation `id`.
pub fn model(
    byoc: &Byoc,
    env: &Environment,
    found: &Found,
    id: Uuid,
    token: &str,
) -> ApiResult<Value> {
    let a = inputs::azure(env)?;
    let subnet = a.subnet_ids.first().cloned().unwrap_or_default();
    let vault = found
        .key_vault_id
        .rsplit('/')
        .next()
        .map(|name| format!("https://{name}.vault.azure.net"))
        .unwrap_or_default();
    let image = format!(
        "{}:{}",
        byoc.settings.agent_image, byoc.settings.agent_version
    );
    let registry = image.split('/').next().unwrap_or_default().to_string();
    Ok(json!({
        "location": a.location,
        "tags": {"culvert:environment-id": env.id.to_string(), "culvert:validation-id": id.to_string()},
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {found.validation_identity.id.clone(): {}}},
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "sku": "Standard",
            "subnetIds": [{"id": subnet}],
            "ipAddress": {"type": "Private", "ports": [{"protocol": "TCP", "port": 443}]},
            "imageRegistryCredentials": [{"server": registry, "identity": found.validation_identity.id}],
            "containers": [{
                "name": "validate",
                "properties": {
                    "image": image,
                    "command": ["culvert-agent", "validate", "--control-plane", byoc.public_url, "--validation", id.to_string()],
                    "environmentVariables": [
                        {"name": "CULVERT_VALIDATION_TOKEN", "secureValue": token},
                        {"name": "CULVERT_KEY_VAULT", "value": vault},
                        {"name": "CULVERT_AZURE_CLIENT_ID", "value": found.validation_identity.client_id},
                        {"name": "CULVERT_ENVIRONMENT", "value": env.id.to_string()}
                    ],
                    "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}}
                }
            }]
        }
    }))
}

async fn logs(arm: &ArmClient, group: &str) -> String {
    let text = match arm
        .get(
            &ops::container_groups::LOGS,
            &format!("{group}/containers/validate/logs"),
        )
        .await
    {
        Ok(Some(v)) => v["content"].as_str().unwrap_or_default().to_string(),
        _ => String::new(),
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn wait(arm: &ArmClient, group: &str, timeout: Duration, poll: Duration) -> ApiResult<Ended> {
    let started = Instant::now();
    loop {
        if let Some(g) = arm
            .get(&ops::container_groups::GET, group)
            .await
            .map_err(arm_error)?
        {
            let current =
                &g["properties"]["containers"][0]["properties"]["instanceView"]["currentState"];
            if current["state"].as_str() == Some("Terminated") {
                let code = current["exitCode"].as_i64().unwrap_or(-1);
                return Ok(Ended::Exited {
                    code,
                    log: logs(arm, group).await,
                });
            }
        }
        if started.elapsed() >= timeout {
            return Ok(Ended::TimedOut {
                log: logs(arm, group).await,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Run validation `id` in a container group and wait for it; the group is always deleted.
pub async fn run(
    byoc: &Byoc,
    env: &Environment,
    found: &Found,
    id: Uuid,
    token: &str,
) -> ApiResult<Ended> {
    let arm = byoc.arm().await?;
    let group = group_id(env, id)?;
    let body = model(byoc, env, found, id, token)?;
    let poll = byoc
        .settings
        .poll_interval
        .unwrap_or(Duration::from_secs(3));
    let outcome = async {
        arm.put(&ops::container_groups::CREATE, &group, &body)
            .await
            .map_err(arm_error)?;
        wait(&arm, &group, byoc.settings.validation_timeout, poll).await
    }
    .await;
    let deleted = arm
        .delete(&ops::container_groups::DELETE, &group)
        .await
        .map_err(arm_error);
    let ended = outcome?;
    deleted?;
    Ok(ended)
}

/// Delete the container group of validation `id` (after a crash of an earlier attempt).
pub async fn clean_up(byoc: &Byoc, env: &Environment, id: Uuid) -> ApiResult<()> {
    let arm = byoc.arm().await?;
    arm.delete(&ops::container_groups::DELETE, &group_id(env, id)?)
        .await
        .map_err(arm_error)
}

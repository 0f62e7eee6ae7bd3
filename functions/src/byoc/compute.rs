//! The agents of an Azure environment: one VM Scale Set in the customer's VNet, running
//! `culvert-agent` as a systemd service that cloud-init installs.
//!
//! Instances read `/etc/culvert/agent.env`; every path in it is relative to `/`, the
//! service's working directory.

use base64::Engine;
use culvert_arm::operations as ops;
use culvert_control_api::environments::Environment;
use serde_json::{Value, json};

use super::registration::Found;
use super::{Byoc, arm_error, inputs};
use crate::error::ApiResult;

/// What to do with the scale set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Create it, or update its model and capacity.
    Ensure,
    /// Deallocate every instance (no compute cost; disks kept).
    Pause,
    /// Start deallocated instances.
    Resume,
    /// Move every instance to the current model (a new agent version).
    Upgrade,
}

/// Name of an environment's scale set.
pub fn scale_set_name(env: &Environment) -> String {
    format!("culvert-agents-{}", &env.id.simple().to_string()[..12])
}

/// Resource id of an environment's scale set.
pub fn scale_set_id(env: &Environment) -> ApiResult<String> {
    let a = inputs::azure(env)?;
    Ok(format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/{}",
        inputs::resource_group_id(a),
        scale_set_name(env)
    ))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The `#cloud-config` that installs and starts the agent.
pub fn cloud_init(agent_env: &str, download_url: &str) -> String {
    let unit = "[Unit]\nDescription=Culvert agent\nAfter=network-online.target\nWants=network-online.target\n\n\
[Service]\nWorkingDirectory=/\nEnvironmentFile=/etc/culvert/agent.env\nExecStart=/usr/local/bin/culvert-agent agent\n\
Restart=always\nRestartSec=2\nUser=root\n\n[Install]\nWantedBy=multi-user.target\n";
    format!(
        "#cloud-config\nwrite_files:\n  - path: /etc/culvert/agent.env\n    permissions: '0600'\n    encoding: b64\n    content: {}\n  \
- path: /etc/systemd/system/culvert-agent.service\n    permissions: '0644'\n    encoding: b64\n    content: {}\n\
runcmd:\n  - [sh, -c, \"mkdir -p /var/lib/culvert && curl -fsSL --retry 5 -o /usr/local/bin/culvert-agent '{download_url}' && chmod 0755 /usr/local/bin/culvert-agent && systemctl daemon-reload && systemctl enable --now culvert-agent\"]\n",
        b64(agent_env),
        b64(unit)
    )
}

/// The agent's settings on an instance.
pub fn agent_env(
    byoc: &Byoc,
    env: &Environment,
    found: &Found,
    registration_token: &str,
    version: &str,
) -> String {
    let vault = found
        .key_vault_id
        .rsplit('/')
        .next()
        .map(|name| format!("https://{name}.vault.azure.net"))
        .unwrap_or_default();
    let lines = [
        ("CULVERT_CONTROL_PLANE", byoc.public_url.clone()),
        ("CULVERT_ENVIRONMENT", env.id.to_string()),
        ("CULVERT_REGISTRATION_TOKEN", registration_token.to_string()),
        ("CULVERT_STATE_DIR", "var/lib/culvert".to_string()),
        ("CULVERT_KEY_VAULT", vault),
        (
            "CULVERT_AZURE_CLIENT_ID",
            found.agent_identity.client_id.clone(),
        ),
        ("CULVERT_AGENT_VERSION", version.to_string()),
    ];
    lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// The scale set's model.
pub fn model(
    byoc: &Byoc,
    env: &Environment,
    found: &Found,
    registration_token: &str,
    version: &str,
) -> ApiResult<Value> {
    let a = inputs::azure(env)?;
    let subnet = a.subnet_ids.first().cloned().unwrap_or_default();
    let download = byoc
        .settings
        .agent_download_url
        .replace("{version}", version);
    let custom_data = b64(&cloud_init(
        &agent_env(byoc, env, found, registration_token, version),
        &download,
    ));
    Ok(json!({
        "location": a.location,
        "tags": {"culvert:environment-id": env.id.to_string(), "culvert:agent-version": version, "culvert:managed": "true"},
        "sku": {"name": byoc.settings.vm_size, "tier": "Standard", "capacity": env.agents},
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {found.agent_identity.id.clone(): {}}},
        "properties": {
            "orchestrationMode": "Uniform",
            "overprovision": false,
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "osProfile": {
                    "computerNamePrefix": "culvert",
                    "adminUsername": "culvert",
                    "customData": custom_data,
                    "linuxConfiguration": {"disablePasswordAuthentication": true, "provisionVMAgent": true,
                        "ssh": {"publicKeys": []}}
                },
                "storageProfile": {
                    "imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
                    "osDisk": {"createOption": "FromImage", "caching": "ReadWrite", "managedDisk": {"storageAccountType": "Premium_LRS"}}
                },
                "networkProfile": {"networkInterfaceConfigurations": [{
                    "name": "culvert-nic",
                    "properties": {
                        "primary": true,
                        "networkSecurityGroup": {"id": found.agent_nsg_id},
                        "ipConfigurations": [{"name": "culvert-ip", "properties": {"subnet": {"id": subnet}}}]
                    }
                }]}
            }
        }
    }))
}

/// Apply `change` to the environment's scale set; `model` is needed for `Ensure` and `Upgrade`.
pub async fn apply(
    byoc: &Byoc,
    env: &Environment,
    change: Change,
    model: Option<&Value>,
) -> ApiResult<()> {
    let arm = byoc.arm().await?;
    let id = scale_set_id(env)?;
    match change {
        Change::Ensure => {
            let model = model.expect("ensure needs the model");
            arm.put(&ops::vmss::CREATE_OR_UPDATE, &id, model)
                .await
                .map_err(arm_error)?;
        }
        Change::Upgrade => {
            let model = model.expect("upgrade needs the model");
            arm.put(&ops::vmss::CREATE_OR_UPDATE, &id, model)
                .await
                .map_err(arm_error)?;
            arm.post(
                &ops::vmss::MANUAL_UPGRADE,
                &format!("{id}/manualUpgrade"),
                Some(&json!({"instanceIds": ["*"]})),
            )
            .await
            .map_err(arm_error)?;
        }
        Change::Pause => {
            arm.post(&ops::vmss::DEALLOCATE, &format!("{id}/deallocate"), None)
                .await
                .map_err(arm_error)?;
        }
        Change::Resume => {
            arm.post(&ops::vmss::START, &format!("{id}/start"), None)
                .await
                .map_err(arm_error)?;
        }
    }
    Ok(())
}

/// Delete the scale set `id` (gone already is fine).
pub async fn remove(byoc: &Byoc, id: &str) -> ApiResult<()> {
    let arm = byoc.arm().await?;
    arm.delete(&ops::vmss::DELETE, id).await.map_err(arm_error)
}

//! Registration: find what the bootstrap bundle created, through ARM with Culvert's role,
//! approve the private endpoint to the metadata service, and turn the environment ready
//! (or `error`, naming what is missing).

use culvert_arm::{ArmClient, ArmError, operations as ops};
use culvert_control_api::environments::Environment;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Byoc, inputs};
use crate::error::ApiResult;

/// An identity the bundle created, as registration found it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FoundIdentity {
    /// Resource id.
    pub id: String,
    /// Client (application) id.
    pub client_id: String,
    /// Object (principal) id.
    pub principal_id: String,
    /// Tenant the identity lives in.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// What registration found; kept with the environment for provisioning and validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Found {
    /// The agents' identity.
    pub agent_identity: FoundIdentity,
    /// The validation containers' identity.
    pub validation_identity: FoundIdentity,
    /// The agents' network security group.
    pub agent_nsg_id: String,
    /// The private endpoint to the metadata service.
    pub private_endpoint_id: String,
    /// The Key Vault holding connector credentials.
    pub key_vault_id: String,
    /// The private endpoint's address (agents reach the metadata service there).
    #[serde(default)]
    pub metadata_endpoint_ip: Option<String>,
    /// The customer's Entra tenant (where the identities live).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// The outcome of one registration attempt.
#[derive(Debug)]
pub enum Outcome {
    /// Everything is in place.
    Ready(Box<Found>),
    /// Something is missing; one line each, saying what to do.
    Missing(Vec<String>),
}

fn identity(v: &Value, id: &str) -> Option<FoundIdentity> {
    let p = &v["properties"];
    Some(FoundIdentity {
        id: v["id"].as_str().unwrap_or(id).to_string(),
        client_id: p["clientId"].as_str()?.to_string(),
        principal_id: p["principalId"].as_str()?.to_string(),
        tenant_id: p["tenantId"].as_str().map(str::to_string),
    })
}

/// The private address of an endpoint: its static IP configuration, else its DNS records.
fn endpoint_ip(pe: &Value) -> Option<String> {
    let p = &pe["properties"];
    p["ipConfigurations"][0]["properties"]["privateIPAddress"]
        .as_str()
        .or_else(|| p["customDnsConfigs"][0]["ipAddresses"][0].as_str())
        .map(str::to_string)
}

/// Why a read failed, as advice for the customer.
fn refused(what: &str, e: &ArmError, rg: &str) -> String {
    match e {
        ArmError::Authorization { action, .. } => format!(
            "Culvert may not read the {what} ({action} is not granted in resource group {rg}): apply the bootstrap bundle, or wait a few minutes for its role assignment to take effect"
        ),
        other => format!("reading the {what} failed: {other}"),
    }
}

async fn find_identity(
    arm: &ArmClient,
    what: &str,
    id: &str,
    rg: &str,
    missing: &mut Vec<String>,
) -> Option<FoundIdentity> {
    match arm.get(&ops::identities::GET, id).await {
        Ok(Some(v)) => {
            let found = identity(&v, id);
            if found.is_none() {
                missing.push(format!("the {what} {id} has no client or principal id yet"));
            }
            found
        }
        Ok(None) => {
            missing.push(format!(
                "the {what} {id} does not exist: apply the bootstrap bundle"
            ));
            None
        }
        Err(e) => {
            missing.push(refused(what, &e, rg));
            None
        }
    }
}

/// Look for everything the bundle creates; approve the environment's pending private
/// endpoint connection on the metadata service.
pub async fn register(byoc: &Byoc, env: &Environment, external_id: &str) -> ApiResult<Outcome> {
    let arm = byoc.arm().await?;
    let a = inputs::azure(env)?;
    let rg = &a.resource_group;
    let want = inputs::expected(&byoc.settings, env, external_id)?;
    let mut missing = Vec::new();

    let scope = inputs::resource_group_id(a);
    let filter = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{}'",
        byoc.settings.principal_id
    );
    match arm.list(&ops::role_assignments::LIST, &filter).await {
        Ok(list) if list.is_empty() => missing.push(format!(
            "Culvert's role is not assigned in resource group {rg}: apply the bootstrap bundle"
        )),
        Ok(_) => {}
        Err(e) => missing.push(refused("role assignments", &e, rg)),
    }
    let agent = find_identity(
        &arm,
        "agent identity",
        &want.agent_identity_id,
        rg,
        &mut missing,
    )
    .await;
    let validation = find_identity(
        &arm,
        "validation identity",
        &want.validation_identity_id,
        rg,
        &mut missing,
    )
    .await;
    match arm.get(&ops::nsg::GET, &want.agent_nsg_id).await {
        Ok(Some(_)) => {}
        Ok(None) => missing.push(format!(
            "the agents' network security group {} does not exist: apply the bootstrap bundle",
            want.agent_nsg_id
        )),
        Err(e) => missing.push(refused("agents' network security group", &e, rg)),
    }
    approve_endpoint(&arm, byoc, &want.private_endpoint_id, &mut missing).await;
    let metadata_endpoint_ip = match arm
        .get(&ops::private_endpoints::GET, &want.private_endpoint_id)
        .await
    {
        Ok(Some(pe)) => endpoint_ip(&pe),
        _ => None,
    };

    Ok(match (agent, validation) {
        (Some(agent_identity), Some(validation_identity)) if missing.is_empty() => {
            let tenant_id = agent_identity.tenant_id.clone();
            Outcome::Ready(Box::new(Found {
                tenant_id,
                agent_identity,
                validation_identity,
                agent_nsg_id: want.agent_nsg_id,
                private_endpoint_id: want.private_endpoint_id,
                key_vault_id: want.key_vault_id,
                metadata_endpoint_ip,
            }))
        }
        _ => Outcome::Missing(missing),
    })
}

/// Find the connection of `endpoint` on the metadata Private Link Service and approve it.
async fn approve_endpoint(arm: &ArmClient, byoc: &Byoc, endpoint: &str, missing: &mut Vec<String>) {
    let pls = &byoc.settings.metadata_service_id;
    let connections = match arm
        .list(
            &ops::pls::CONNECTIONS_LIST,
            &format!("{pls}/privateEndpointConnections"),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            // Culvert's own side: not the customer's to fix.
            missing.push(format!(
                "the metadata service's endpoint connections could not be read: {e}"
            ));
            return;
        }
    };
    let ours = connections.iter().find(|c| {
        c["properties"]["privateEndpoint"]["id"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(endpoint))
    });
    let Some(conn) = ours else {
        missing.push(format!(
            "the private endpoint {endpoint} to the metadata service does not exist: apply the bootstrap bundle"
        ));
        return;
    };
    let state = &conn["properties"]["privateLinkServiceConnectionState"];
    match state["status"].as_str().unwrap_or_default() {
        "Approved" => {}
        "Pending" => {
            let id = conn["id"].as_str().unwrap_or_default();
            let body = json!({
                "properties": {
                    "privateLinkServiceConnectionState": {
                        "status": "Approved",
                        "description": "approved by Culvert registration",
                        "actionsRequired": "None"
                    }
                }
            });
            if let Err(e) = arm.put(&ops::pls::CONNECTIONS_APPROVE, id, &body).await {
                missing.push(format!(
                    "approving the private endpoint connection {id} failed: {e}"
                ));
            }
        }
        other => missing.push(format!(
            "the private endpoint connection of {endpoint} is {other}: delete the private endpoint and apply the bootstrap bundle again"
        )),
    }
}

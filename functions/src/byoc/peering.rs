//! VNet peering between an environment's agent VNet and a database's VNet in another
//! subscription or tenant, advanced by a poller through ARM:
//!
//! `APPROVED` (recorded; Culvert creates its side) → `PENDING_PEER` (Culvert's side is
//! `Initiated`; the peer runs the steps and creates theirs) → `ACTIVE` (`Connected`).
//! `INVALID_SPECIFICATION`: the peer VNet does not exist. `REJECTED_BY_PEER`: the peer has
//! not granted Culvert's application `peer/action` on it. Both say why in `reason`.

use culvert_arm::{ArmError, operations as ops};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Byoc, arm_error};
use crate::error::ApiResult;

/// The states of a network connection.
pub const STATES: &[&str] = &[
    "APPROVED",
    "PENDING_PEER",
    "ACTIVE",
    "INVALID_SPECIFICATION",
    "REJECTED_BY_PEER",
    "DELETING",
];

/// The peer's side, as the peering guide names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Peer {
    /// Subscription holding the peer VNet.
    pub subscription_id: String,
    /// The peer's Entra tenant.
    pub tenant_id: String,
    /// Resource group of the peer VNet.
    pub resource_group: String,
    /// Name of the peer VNet.
    pub vnet: String,
    /// The peer's application id (the one that creates their side).
    pub app_id: String,
}

impl Peer {
    /// The peer of a `network_connections` row selected as `id, name, peer_subscription_id,
    /// peer_tenant_id, peer_resource_group, peer_vnet, peer_app_id, …`.
    pub fn from_row(r: &tokio_postgres::Row) -> Peer {
        Peer {
            subscription_id: r.get(2),
            tenant_id: r.get(3),
            resource_group: r.get(4),
            vnet: r.get(5),
            app_id: r.get(6),
        }
    }

    /// Resource id of the peer VNet.
    pub fn vnet_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}",
            self.subscription_id, self.resource_group, self.vnet
        )
    }
}

/// Resource id of Culvert's side of connection `name` on `agent_vnet_id`.
pub fn our_peering_id(agent_vnet_id: &str, name: &str) -> String {
    format!("{agent_vnet_id}/virtualNetworkPeerings/culvert-{name}")
}

/// Where a poll leaves a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// New state.
    pub state: &'static str,
    /// Why, for the states that need one.
    pub reason: Option<String>,
}

fn step(state: &'static str, reason: Option<String>) -> Step {
    Step { state, reason }
}

/// Advance a connection in `state` by one poll.
pub async fn poll(
    byoc: &Byoc,
    agent_vnet_id: &str,
    name: &str,
    peer: &Peer,
    state: &str,
) -> ApiResult<Step> {
    let arm = byoc.arm().await?;
    let ours = our_peering_id(agent_vnet_id, name);
    match state {
        "APPROVED" => {
            let body = json!({"properties": {
                "allowVirtualNetworkAccess": true,
                "allowForwardedTraffic": false,
                "allowGatewayTransit": false,
                "useRemoteGateways": false,
                "remoteVirtualNetwork": {"id": peer.vnet_id()}
            }});
            match arm.put(&ops::peerings::CREATE, &ours, &body).await {
                Ok(v) => Ok(from_peering_state(
                    v["properties"]["peeringState"].as_str(),
                    peer,
                )),
                Err(ArmError::Authorization { action, .. }) if action.contains("peer/action") => {
                    Ok(step(
                        "REJECTED_BY_PEER",
                        Some(format!(
                            "the peer has not granted Culvert's application {action} on {}: run the peer steps 7 to 9 (service principal, custom role, role assignment), then delete and create this connection again",
                            peer.vnet_id()
                        )),
                    ))
                }
                Err(e @ (ArmError::BadRequest { .. } | ArmError::NotFound { .. })) => Ok(step(
                    "INVALID_SPECIFICATION",
                    Some(format!(
                        "the peer VNet {} cannot be peered: {e}; check the subscription, resource group and VNet name (lower case), then delete and create this connection again",
                        peer.vnet_id()
                    )),
                )),
                Err(e) => Err(arm_error(e)),
            }
        }
        "PENDING_PEER" | "ACTIVE" => match arm
            .get(&ops::peerings::GET, &ours)
            .await
            .map_err(arm_error)?
        {
            None => Ok(step(
                "APPROVED",
                Some("Culvert's side of the peering is gone; creating it again".into()),
            )),
            Some(v) => Ok(from_peering_state(
                v["properties"]["peeringState"].as_str(),
                peer,
            )),
        },
        other => Ok(step(
            STATES
                .iter()
                .find(|s| **s == other)
                .copied()
                .unwrap_or("INVALID_SPECIFICATION"),
            None,
        )),
    }
}

fn from_peering_state(state: Option<&str>, peer: &Peer) -> Step {
    match state {
        Some("Connected") => step("ACTIVE", None),
        Some("Disconnected") => step(
            "PENDING_PEER",
            Some(format!(
                "the peering from {} was removed: run the last peer step (az network vnet peering create) again",
                peer.vnet_id()
            )),
        ),
        _ => step(
            "PENDING_PEER",
            Some("waiting for the peer to create its side: run the peer steps".into()),
        ),
    }
}

/// Delete Culvert's side (gone already is fine).
pub async fn remove(byoc: &Byoc, agent_vnet_id: &str, name: &str) -> ApiResult<()> {
    let arm = byoc.arm().await?;
    arm.delete(&ops::peerings::DELETE, &our_peering_id(agent_vnet_id, name))
        .await
        .map_err(arm_error)
}

//! Virtual networks, subnets, network security groups and VNet peerings.
//!
//! Subnets are stored as child resources (`{vnet}/subnets/{name}`); a VNet PUT that carries
//! `properties.subnets` makes that list the VNet's subnets, and a VNet GET lists the current
//! children, so both views always agree. Peerings likewise appear in the VNet's
//! `properties.virtualNetworkPeerings`.
//!
//! A peering is "Initiated" until the remote VNet (in any configured subscription) has a
//! peering back to this one; then both are "Connected". Deleting either side leaves the other
//! "Disconnected" (it must be deleted and created again, as in Azure).

use super::PutCx;
use crate::arm::error::ArmError;
use crate::arm::ids;
use crate::arm::store::{ArmData, Record};
use serde_json::{Value, json};

const SUBNETS: &str = "microsoft.network/virtualnetworks/subnets";
const PEERINGS: &str = "microsoft.network/virtualnetworks/virtualnetworkpeerings";

/// Creates, replaces and removes child subnets to match `properties.subnets` when present.
pub fn prepare_vnet(
    _cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    let vnet_id = record.id().to_owned();
    let props = record.body["properties"]
        .as_object_mut()
        .expect("properties is an object");
    props.remove("virtualNetworkPeerings");
    let Some(subnets) = props.remove("subnets") else {
        return Ok(());
    };
    let items = subnets.as_array().cloned().unwrap_or_default();
    let mut keep = Vec::new();
    for item in items {
        let name = item["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ArmError::invalid_content("Every subnet in properties.subnets needs a name.")
            })?;
        let id = format!("{vnet_id}/subnets/{name}");
        let id = data.get(&id).map(|r| r.id().to_owned()).unwrap_or(id);
        let mut properties = match &item["properties"] {
            Value::Object(_) => item["properties"].clone(),
            _ => json!({}),
        };
        properties["provisioningState"] = json!("Succeeded");
        keep.push(ids::key(&id));
        data.insert(Record::new(json!({
            "id": id,
            "name": name,
            "type": "Microsoft.Network/virtualNetworks/subnets",
            "properties": properties,
        })));
    }
    let stale: Vec<String> = data
        .children(&vnet_id, SUBNETS)
        .map(|(k, _)| k.clone())
        .filter(|k| !keep.contains(k))
        .collect();
    for k in stale {
        data.remove_tree(&k);
    }
    Ok(())
}

/// The VNet with its current subnets and peerings.
pub fn view_vnet(data: &ArmData, record: &Record) -> Value {
    let mut body = record.body.clone();
    let children = |t: &str| -> Vec<Value> {
        data.children(record.id(), t)
            .map(|(_, r)| r.body.clone())
            .collect()
    };
    body["properties"]["subnets"] = json!(children(SUBNETS));
    body["properties"]["virtualNetworkPeerings"] = json!(children(PEERINGS));
    body
}

/// Gives every security rule its id, type and provisioning state.
pub fn prepare_nsg(record: &mut Record) -> Result<(), ArmError> {
    let nsg_id = record.id().to_owned();
    let Some(rules) = record.body["properties"]["securityRules"].as_array_mut() else {
        return Ok(());
    };
    for rule in rules {
        let name = rule["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ArmError::invalid_content("Every security rule needs a name."))?
            .to_owned();
        rule["id"] = json!(format!("{nsg_id}/securityRules/{name}"));
        rule["type"] = json!("Microsoft.Network/networkSecurityGroups/securityRules");
        if !rule["properties"].is_object() {
            rule["properties"] = json!({});
        }
        rule["properties"]["provisioningState"] = json!("Succeeded");
    }
    Ok(())
}

/// Works out the peering state, connecting the remote side's peering back to this VNet.
pub fn prepare_peering(
    cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    let vnet = cx.id.parent().expect("a peering is nested in a VNet").id();
    let remote = remote_of(record).ok_or_else(|| {
        ArmError::invalid_content("properties.remoteVirtualNetwork.id is required.")
    })?;
    if let Some(old) = cx.old
        && let Some(old_remote) = remote_of(old)
        && !old_remote.eq_ignore_ascii_case(&remote)
    {
        set_back_state(data, &old_remote, &vnet, "Disconnected", None);
    }
    let back_state = peering_back(data, &remote, &vnet).and_then(|k| {
        data.resources[&k].body["properties"]["peeringState"]
            .as_str()
            .map(str::to_owned)
    });
    let state = match back_state.as_deref() {
        Some("Initiated" | "Connected") => "Connected",
        _ => "Initiated",
    };
    if state == "Connected" {
        let ours = data
            .get(&vnet)
            .map(|v| v.body["properties"]["addressSpace"].clone())
            .unwrap_or(Value::Null);
        set_back_state(data, &remote, &vnet, "Connected", Some(ours));
    }
    let remote_space = data
        .get(&remote)
        .map(|v| v.body["properties"]["addressSpace"].clone())
        .unwrap_or(Value::Null);
    let props = &mut record.body["properties"];
    props["peeringState"] = json!(state);
    props["peeringSyncLevel"] = json!(sync_level(state));
    props["remoteAddressSpace"] = remote_space.clone();
    props["remoteVirtualNetworkAddressSpace"] = remote_space;
    Ok(())
}

/// The other side of a deleted peering becomes "Disconnected".
pub fn on_delete_peering(data: &mut ArmData, record: &Record) {
    let Some(vnet) = ids::parse_resource(record.id()).and_then(|p| p.parent()) else {
        return;
    };
    if let Some(remote) = remote_of(record) {
        set_back_state(data, &remote, &vnet.id(), "Disconnected", None);
    }
}

fn remote_of(record: &Record) -> Option<String> {
    record.body["properties"]["remoteVirtualNetwork"]["id"]
        .as_str()
        .map(str::to_owned)
}

fn sync_level(state: &str) -> &'static str {
    if state == "Connected" {
        "FullyInSync"
    } else {
        "RemoteNotInSync"
    }
}

// The key of `remote`'s peering whose remote is `vnet`.
fn peering_back(data: &ArmData, remote: &str, vnet: &str) -> Option<String> {
    data.children(remote, PEERINGS)
        .find(|(_, r)| remote_of(r).is_some_and(|id| ids::key(&id) == ids::key(vnet)))
        .map(|(k, _)| k.clone())
}

fn set_back_state(data: &mut ArmData, remote: &str, vnet: &str, state: &str, space: Option<Value>) {
    if let Some(k) = peering_back(data, remote, vnet)
        && let Some(r) = data.resources.get_mut(&k)
    {
        let props = &mut r.body["properties"];
        props["peeringState"] = json!(state);
        props["peeringSyncLevel"] = json!(sync_level(state));
        if let Some(space) = space {
            props["remoteAddressSpace"] = space.clone();
            props["remoteVirtualNetworkAddressSpace"] = space;
        }
    }
}

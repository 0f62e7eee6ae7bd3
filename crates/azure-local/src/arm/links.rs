//! References a PUT body makes to other resources, and the linked action each one needs on the
//! referenced resource (Azure's "linked authorization"):
//!
//! | reference                                   | linked action                                                     |
//! |---------------------------------------------|-------------------------------------------------------------------|
//! | `identity.userAssignedIdentities` keys      | `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action` |
//! | any `subnet.id`, any `subnetIds[].id`        | `Microsoft.Network/virtualNetworks/subnets/join/action`          |
//! | any `networkSecurityGroup.id`                | `Microsoft.Network/networkSecurityGroups/join/action`            |
//! | any `remoteVirtualNetwork.id`                | `Microsoft.Network/virtualNetworks/peer/action`                  |
//!
//! Every referenced resource must exist (400 `InvalidResourceReference` otherwise).

use serde_json::{Map, Value};

/// Assigning a user-assigned identity to a resource.
pub const ASSIGN_IDENTITY: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";
/// Placing something in a subnet.
pub const JOIN_SUBNET: &str = "Microsoft.Network/virtualNetworks/subnets/join/action";
/// Attaching a network security group.
pub const JOIN_NSG: &str = "Microsoft.Network/networkSecurityGroups/join/action";
/// Peering with a virtual network.
pub const PEER_VNET: &str = "Microsoft.Network/virtualNetworks/peer/action";

/// One reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The action needed on the referenced resource.
    pub action: &'static str,
    /// The referenced resource id, as written.
    pub id: String,
}

/// The references in `body`, each once.
pub fn references(body: &Map<String, Value>) -> Vec<Link> {
    let mut out = Vec::new();
    if let Some(ids) = body
        .get("identity")
        .and_then(|i| i.get("userAssignedIdentities"))
        .and_then(Value::as_object)
    {
        for id in ids.keys() {
            push(&mut out, ASSIGN_IDENTITY, id);
        }
    }
    for (k, v) in body {
        if k != "identity" {
            walk(k, v, &mut out);
        }
    }
    out
}

fn walk(key: &str, value: &Value, out: &mut Vec<Link>) {
    let id_of = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_owned);
    match key.to_ascii_lowercase().as_str() {
        "subnet" => id_of(value)
            .into_iter()
            .for_each(|id| push(out, JOIN_SUBNET, &id)),
        "subnetids" => value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(id_of)
            .for_each(|id| push(out, JOIN_SUBNET, &id)),
        "networksecuritygroup" => id_of(value)
            .into_iter()
            .for_each(|id| push(out, JOIN_NSG, &id)),
        "remotevirtualnetwork" => id_of(value)
            .into_iter()
            .for_each(|id| push(out, PEER_VNET, &id)),
        _ => {}
    }
    match value {
        Value::Object(m) => m.iter().for_each(|(k, v)| walk(k, v, out)),
        Value::Array(a) => a.iter().for_each(|v| walk("", v, out)),
        _ => {}
    }
}

fn push(out: &mut Vec<Link>, action: &'static str, id: &str) {
    if !out
        .iter()
        .any(|l| l.action == action && l.id.eq_ignore_ascii_case(id))
    {
        out.push(Link {
            action,
            id: id.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_identity_subnet_nsg_and_peer_references_once() {
        let body = json!({
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/u/1": {}}},
            "properties": {
                "virtualMachineProfile": {"networkProfile": {"networkInterfaceConfigurations": [{
                    "properties": {
                        "networkSecurityGroup": {"id": "/nsg"},
                        "ipConfigurations": [
                            {"properties": {"subnet": {"id": "/s/1"}}},
                            {"properties": {"subnet": {"id": "/S/1"}}}
                        ]
                    }
                }]}},
                "subnetIds": [{"id": "/s/2"}],
                "remoteVirtualNetwork": {"id": "/v"}
            }
        });
        let links = references(body.as_object().unwrap());
        let mut got: Vec<(&str, &str)> = links.iter().map(|l| (l.action, l.id.as_str())).collect();
        got.sort();
        let mut want = vec![
            (ASSIGN_IDENTITY, "/u/1"),
            (JOIN_NSG, "/nsg"),
            (JOIN_SUBNET, "/s/1"),
            (JOIN_SUBNET, "/s/2"),
            (PEER_VNET, "/v"),
        ];
        want.sort();
        assert_eq!(got, want);
    }
}

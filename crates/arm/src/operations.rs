//! The catalogue of every ARM request the control plane makes, each with the RBAC action it
//! needs. The customer's custom role is derived from it ([`customer_role_actions`]), so a call
//! that is not in the catalogue cannot be made and a permission cannot be forgotten in the role.

/// An HTTP method of an ARM request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Read a resource or a collection.
    Get,
    /// Create or update a resource (idempotent in ARM).
    Put,
    /// Delete a resource (idempotent in ARM).
    Delete,
    /// Invoke an action on a resource.
    Post,
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Post => "POST",
        }
    }

    /// The last segment of the RBAC action a request with this method needs.
    pub fn rbac_verb(self) -> &'static str {
        match self {
            Method::Get => "read",
            Method::Put => "write",
            Method::Delete => "delete",
            Method::Post => "action",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose resources an operation touches, which decides which role must grant it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The customer's environment resource group and VNet: granted by the Culvert custom role.
    Customer,
    /// Culvert's own subscription: granted to the control plane directly.
    ControlPlane,
}

/// One kind of ARM request the control plane makes, with the RBAC action it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// Stable name, e.g. `vmss.create_or_update`.
    pub name: &'static str,
    /// HTTP method.
    pub method: Method,
    /// RBAC action on the target, e.g. `Microsoft.Compute/virtualMachineScaleSets/write`.
    pub action: &'static str,
    /// Actions needed on resources the request references (subnets joined, identities assigned).
    pub linked_actions: &'static [&'static str],
    /// The `api-version` the request is sent with.
    pub api_version: &'static str,
    /// Whose resources the request touches.
    pub scope: Scope,
}

const ASSIGN_IDENTITY: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";
const JOIN_SUBNET: &str = "Microsoft.Network/virtualNetworks/subnets/join/action";
const JOIN_NSG: &str = "Microsoft.Network/networkSecurityGroups/join/action";
/// Linked action of a peering on the peer's VNet; the peer grants it, so it is not in our role.
pub const PEER_VNET: &str = "Microsoft.Network/virtualNetworks/peer/action";

const fn customer(
    name: &'static str,
    method: Method,
    action: &'static str,
    linked_actions: &'static [&'static str],
    api_version: &'static str,
) -> Operation {
    Operation {
        name,
        method,
        action,
        linked_actions,
        api_version,
        scope: Scope::Customer,
    }
}

/// User-assigned managed identities in the customer's resource group.
pub mod identities {
    use super::*;
    /// Read an identity (its principal and client ids).
    pub const GET: Operation = customer(
        "identities.get",
        Method::Get,
        "Microsoft.ManagedIdentity/userAssignedIdentities/read",
        &[],
        "2023-01-31",
    );
}

/// Role assignments at the customer's resource group, to check the bootstrap was applied.
pub mod role_assignments {
    use super::*;
    /// List assignments at a resource group, filtered by `principalId eq '{id}'`.
    pub const LIST: Operation = customer(
        "role_assignments.list",
        Method::Get,
        "Microsoft.Authorization/roleAssignments/read",
        &[],
        "2022-04-01",
    );
}

/// Virtual machine scale sets running agents.
pub mod vmss {
    use super::*;
    const V: &str = "2024-07-01";
    /// Read a scale set.
    pub const GET: Operation = customer(
        "vmss.get",
        Method::Get,
        "Microsoft.Compute/virtualMachineScaleSets/read",
        &[],
        V,
    );
    /// Create or update a scale set; it joins a subnet and NSG and carries an identity.
    pub const CREATE_OR_UPDATE: Operation = customer(
        "vmss.create_or_update",
        Method::Put,
        "Microsoft.Compute/virtualMachineScaleSets/write",
        &[ASSIGN_IDENTITY, JOIN_SUBNET, JOIN_NSG],
        V,
    );
    /// Delete a scale set.
    pub const DELETE: Operation = customer(
        "vmss.delete",
        Method::Delete,
        "Microsoft.Compute/virtualMachineScaleSets/delete",
        &[],
        V,
    );
    /// Stop and release a scale set's machines.
    pub const DEALLOCATE: Operation = customer(
        "vmss.deallocate",
        Method::Post,
        "Microsoft.Compute/virtualMachineScaleSets/deallocate/action",
        &[],
        V,
    );
    /// Start a deallocated scale set.
    pub const START: Operation = customer(
        "vmss.start",
        Method::Post,
        "Microsoft.Compute/virtualMachineScaleSets/start/action",
        &[],
        V,
    );
    /// Read the scale set's instance view (power and provisioning states).
    pub const INSTANCE_VIEW: Operation = customer(
        "vmss.instance_view",
        Method::Get,
        "Microsoft.Compute/virtualMachineScaleSets/instanceView/read",
        &[],
        V,
    );
    /// Bring instances to the scale set's latest model.
    pub const MANUAL_UPGRADE: Operation = customer(
        "vmss.manual_upgrade",
        Method::Post,
        "Microsoft.Compute/virtualMachineScaleSets/manualUpgrade/action",
        &[],
        V,
    );
}

/// Container groups running one-off jobs.
pub mod container_groups {
    use super::*;
    const V: &str = "2023-05-01";
    /// Read a container group.
    pub const GET: Operation = customer(
        "container_groups.get",
        Method::Get,
        "Microsoft.ContainerInstance/containerGroups/read",
        &[],
        V,
    );
    /// Create a container group; it carries an identity and joins a subnet.
    pub const CREATE: Operation = customer(
        "container_groups.create",
        Method::Put,
        "Microsoft.ContainerInstance/containerGroups/write",
        &[ASSIGN_IDENTITY, JOIN_SUBNET],
        V,
    );
    /// Delete a container group.
    pub const DELETE: Operation = customer(
        "container_groups.delete",
        Method::Delete,
        "Microsoft.ContainerInstance/containerGroups/delete",
        &[],
        V,
    );
    /// Read a container's logs.
    pub const LOGS: Operation = customer(
        "container_groups.logs",
        Method::Get,
        "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
        &[],
        V,
    );
}

/// Network security groups.
pub mod nsg {
    use super::*;
    /// Read an NSG.
    pub const GET: Operation = customer(
        "nsg.get",
        Method::Get,
        "Microsoft.Network/networkSecurityGroups/read",
        &[],
        "2024-05-01",
    );
}

/// The private endpoint to Culvert's metadata service (its address goes into NSG rules).
pub mod private_endpoints {
    use super::*;
    /// Read a private endpoint.
    pub const GET: Operation = customer(
        "private_endpoints.get",
        Method::Get,
        "Microsoft.Network/privateEndpoints/read",
        &[],
        "2024-05-01",
    );
}

/// Subnets of the customer's VNet.
pub mod subnets {
    use super::*;
    /// Read a subnet.
    pub const GET: Operation = customer(
        "subnets.get",
        Method::Get,
        "Microsoft.Network/virtualNetworks/subnets/read",
        &[],
        "2024-05-01",
    );
}

/// The customer's VNets.
pub mod vnets {
    use super::*;
    /// Read a VNet.
    pub const GET: Operation = customer(
        "vnets.get",
        Method::Get,
        "Microsoft.Network/virtualNetworks/read",
        &[],
        "2024-05-01",
    );
}

/// Peerings from the customer's VNet to a peer's VNet.
pub mod peerings {
    use super::*;
    const V: &str = "2024-05-01";
    /// Read a peering.
    pub const GET: Operation = customer(
        "peerings.get",
        Method::Get,
        "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/read",
        &[],
        V,
    );
    /// Create a peering; the peer's VNet must grant `peer/action` (see [`PEER_VNET`]).
    pub const CREATE: Operation = customer(
        "peerings.create",
        Method::Put,
        "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/write",
        &[PEER_VNET],
        V,
    );
    /// Delete a peering.
    pub const DELETE: Operation = customer(
        "peerings.delete",
        Method::Delete,
        "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/delete",
        &[],
        V,
    );
}

/// Database servers listed to offer them as sources.
pub mod discovery {
    use super::*;
    /// List PostgreSQL flexible servers.
    pub const POSTGRES_FLEXIBLE: Operation = customer(
        "discovery.postgres_flexible",
        Method::Get,
        "Microsoft.DBforPostgreSQL/flexibleServers/read",
        &[],
        "2024-08-01",
    );
    /// List PostgreSQL single servers.
    pub const POSTGRES_SINGLE: Operation = customer(
        "discovery.postgres_single",
        Method::Get,
        "Microsoft.DBforPostgreSQL/servers/read",
        &[],
        "2017-12-01",
    );
    /// List Azure SQL servers.
    pub const SQL: Operation = customer(
        "discovery.sql",
        Method::Get,
        "Microsoft.Sql/servers/read",
        &[],
        "2023-08-01",
    );
    /// List MySQL flexible servers.
    pub const MYSQL_FLEXIBLE: Operation = customer(
        "discovery.mysql_flexible",
        Method::Get,
        "Microsoft.DBforMySQL/flexibleServers/read",
        &[],
        "2023-12-30",
    );
    /// List MySQL single servers.
    pub const MYSQL_SINGLE: Operation = customer(
        "discovery.mysql_single",
        Method::Get,
        "Microsoft.DBforMySQL/servers/read",
        &[],
        "2017-12-01",
    );
    /// List MariaDB servers.
    pub const MARIADB: Operation = customer(
        "discovery.mariadb",
        Method::Get,
        "Microsoft.DBforMariaDB/servers/read",
        &[],
        "2018-06-01",
    );
}

/// Culvert's own Private Link Service; granted in Culvert's subscription, not by the customer.
pub mod pls {
    use super::*;
    /// List the private endpoint connections waiting on the service.
    pub const CONNECTIONS_LIST: Operation = Operation {
        name: "pls.connections.list",
        method: Method::Get,
        action: "Microsoft.Network/privateLinkServices/privateEndpointConnections/read",
        linked_actions: &[],
        api_version: "2024-05-01",
        scope: Scope::ControlPlane,
    };
    /// Approve (or reject) a private endpoint connection.
    pub const CONNECTIONS_APPROVE: Operation = Operation {
        name: "pls.connections.approve",
        method: Method::Put,
        action: "Microsoft.Network/privateLinkServices/privateEndpointConnections/write",
        linked_actions: &[],
        api_version: "2024-05-01",
        scope: Scope::ControlPlane,
    };
}

/// Every operation the control plane makes.
pub const ALL: &[&Operation] = &[
    &identities::GET,
    &role_assignments::LIST,
    &vmss::GET,
    &vmss::CREATE_OR_UPDATE,
    &vmss::DELETE,
    &vmss::DEALLOCATE,
    &vmss::START,
    &vmss::INSTANCE_VIEW,
    &vmss::MANUAL_UPGRADE,
    &container_groups::GET,
    &container_groups::CREATE,
    &container_groups::DELETE,
    &container_groups::LOGS,
    &nsg::GET,
    &private_endpoints::GET,
    &subnets::GET,
    &vnets::GET,
    &peerings::GET,
    &peerings::CREATE,
    &peerings::DELETE,
    &discovery::POSTGRES_FLEXIBLE,
    &discovery::POSTGRES_SINGLE,
    &discovery::SQL,
    &discovery::MYSQL_FLEXIBLE,
    &discovery::MYSQL_SINGLE,
    &discovery::MARIADB,
    &pls::CONNECTIONS_LIST,
    &pls::CONNECTIONS_APPROVE,
];

/// The operation with this name.
pub fn by_name(name: &str) -> Option<&'static Operation> {
    ALL.iter().copied().find(|op| op.name == name)
}

/// The actions of the Culvert custom role: every action and linked action of the customer-scope
/// operations, sorted and deduplicated, without `peer/action`, which the peer grants.
pub fn customer_role_actions() -> Vec<&'static str> {
    let mut actions: Vec<&'static str> = ALL
        .iter()
        .filter(|op| op.scope == Scope::Customer)
        .flat_map(|op| std::iter::once(op.action).chain(op.linked_actions.iter().copied()))
        .filter(|a| *a != PEER_VNET)
        .collect();
    actions.sort_unstable();
    actions.dedup();
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_action_matches_its_method() {
        for op in ALL {
            let suffix = format!("/{}", op.method.rbac_verb());
            assert!(
                op.action.ends_with(&suffix),
                "{}: {} {} does not end with {suffix}",
                op.name,
                op.method,
                op.action
            );
            // A provider namespace, at least one type, then the verb.
            let parts: Vec<&str> = op.action.split('/').collect();
            assert!(parts.len() >= 3, "{}: {}", op.name, op.action);
            assert!(parts[0].starts_with("Microsoft."), "{}", op.name);
            for linked in op.linked_actions {
                assert!(linked.ends_with("/action"), "{}: {linked}", op.name);
            }
        }
    }

    #[test]
    fn names_are_unique_and_prefixed_by_their_group() {
        let mut seen = HashSet::new();
        for op in ALL {
            assert!(seen.insert(op.name), "duplicate name {}", op.name);
            assert!(op.name.contains('.'), "{}", op.name);
            assert_eq!(by_name(op.name), Some(*op));
        }
        assert_eq!(by_name("vmss.nope"), None);
    }

    #[test]
    fn api_versions_are_dates() {
        for op in ALL {
            let v = op.api_version;
            let date = v.strip_suffix("-preview").unwrap_or(v);
            let fields: Vec<&str> = date.split('-').collect();
            assert_eq!(fields.len(), 3, "{}: {v}", op.name);
            assert_eq!(
                fields.iter().map(|f| f.len()).collect::<Vec<_>>(),
                [4, 2, 2],
                "{}: {v}",
                op.name
            );
            assert!(
                fields.iter().all(|f| f.bytes().all(|b| b.is_ascii_digit())),
                "{}: {v}",
                op.name
            );
            let year: u32 = fields[0].parse().unwrap();
            let month: u32 = fields[1].parse().unwrap();
            let day: u32 = fields[2].parse().unwrap();
            assert!((2014..=2100).contains(&year), "{}: {v}", op.name);
            assert!((1..=12).contains(&month), "{}: {v}", op.name);
            assert!((1..=31).contains(&day), "{}: {v}", op.name);
        }
    }

    #[test]
    fn the_customer_role_is_exactly_the_customer_operations() {
        assert_eq!(
            customer_role_actions(),
            [
                "Microsoft.Authorization/roleAssignments/read",
                "Microsoft.Compute/virtualMachineScaleSets/deallocate/action",
                "Microsoft.Compute/virtualMachineScaleSets/delete",
                "Microsoft.Compute/virtualMachineScaleSets/instanceView/read",
                "Microsoft.Compute/virtualMachineScaleSets/manualUpgrade/action",
                "Microsoft.Compute/virtualMachineScaleSets/read",
                "Microsoft.Compute/virtualMachineScaleSets/start/action",
                "Microsoft.Compute/virtualMachineScaleSets/write",
                "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
                "Microsoft.ContainerInstance/containerGroups/delete",
                "Microsoft.ContainerInstance/containerGroups/read",
                "Microsoft.ContainerInstance/containerGroups/write",
                "Microsoft.DBforMariaDB/servers/read",
                "Microsoft.DBforMySQL/flexibleServers/read",
                "Microsoft.DBforMySQL/servers/read",
                "Microsoft.DBforPostgreSQL/flexibleServers/read",
                "Microsoft.DBforPostgreSQL/servers/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                "Microsoft.Network/networkSecurityGroups/join/action",
                "Microsoft.Network/networkSecurityGroups/read",
                "Microsoft.Network/privateEndpoints/read",
                "Microsoft.Network/virtualNetworks/read",
                "Microsoft.Network/virtualNetworks/subnets/join/action",
                "Microsoft.Network/virtualNetworks/subnets/read",
                "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/delete",
                "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/read",
                "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/write",
                "Microsoft.Sql/servers/read",
            ]
        );
    }

    #[test]
    fn control_plane_actions_stay_out_of_the_customer_role() {
        let role = customer_role_actions();
        assert!(!role.contains(&PEER_VNET));
        for op in ALL.iter().filter(|op| op.scope == Scope::ControlPlane) {
            assert!(!role.contains(&op.action), "{}", op.name);
        }
        // The peering still declares what it needs on the peer's side.
        assert_eq!(peerings::CREATE.linked_actions, &[PEER_VNET]);
    }
}

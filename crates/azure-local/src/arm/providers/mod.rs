//! Type-specific behaviour, dispatched by resource type. Types not listed here are plain
//! resources: stored as given, `provisioningState` "Succeeded" at once (database servers of
//! every kind, key vaults, storage accounts, ...).

pub mod authorization;
pub mod compute;
pub mod containers;
pub mod identity;
pub mod network;
pub mod privatelink;

use super::error::ArmError;
use super::ids::{Collection, ResourceId};
use super::processes::Effect;
use super::store::{ArmData, Record};
use super::{Reply, Request};
use serde_json::Value;

/// The resource types with their own behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Microsoft.Compute/virtualMachineScaleSets`
    ScaleSet,
    /// `Microsoft.ContainerInstance/containerGroups`
    ContainerGroup,
    /// `Microsoft.Network/virtualNetworks`
    VirtualNetwork,
    /// `Microsoft.Network/virtualNetworks/subnets`
    Subnet,
    /// `Microsoft.Network/virtualNetworks/virtualNetworkPeerings`
    Peering,
    /// `Microsoft.Network/networkSecurityGroups`
    SecurityGroup,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`
    Identity,
    /// `Microsoft.Network/privateLinkServices`
    PrivateLinkService,
    /// `Microsoft.Network/privateLinkServices/privateEndpointConnections`
    EndpointConnection,
    /// `Microsoft.Network/privateEndpoints`
    PrivateEndpoint,
    /// `Microsoft.Authorization/roleDefinitions`
    RoleDefinition,
    /// `Microsoft.Authorization/roleAssignments`
    RoleAssignment,
    /// Everything else.
    Plain,
}

impl Kind {
    /// The kind of a lowercase resource type.
    pub fn of(type_key: &str) -> Self {
        match type_key {
            "microsoft.compute/virtualmachinescalesets" => Self::ScaleSet,
            "microsoft.containerinstance/containergroups" => Self::ContainerGroup,
            "microsoft.network/virtualnetworks" => Self::VirtualNetwork,
            "microsoft.network/virtualnetworks/subnets" => Self::Subnet,
            "microsoft.network/virtualnetworks/virtualnetworkpeerings" => Self::Peering,
            "microsoft.network/networksecuritygroups" => Self::SecurityGroup,
            "microsoft.managedidentity/userassignedidentities" => Self::Identity,
            "microsoft.network/privatelinkservices" => Self::PrivateLinkService,
            "microsoft.network/privatelinkservices/privateendpointconnections" => {
                Self::EndpointConnection
            }
            "microsoft.network/privateendpoints" => Self::PrivateEndpoint,
            "microsoft.authorization/roledefinitions" => Self::RoleDefinition,
            "microsoft.authorization/roleassignments" => Self::RoleAssignment,
            _ => Self::Plain,
        }
    }

    /// Whether a PUT is long-running (the types Culvert waits on).
    pub fn is_lro(self) -> bool {
        matches!(
            self,
            Self::ScaleSet | Self::ContainerGroup | Self::Peering | Self::EndpointConnection
        )
    }

    /// Whether the body carries `properties.provisioningState` (role objects do not).
    pub fn has_provisioning_state(self) -> bool {
        !matches!(self, Self::RoleDefinition | Self::RoleAssignment)
    }

    /// Whether DELETE answers 200 with the deleted body instead of starting an operation.
    pub fn deletes_synchronously(self) -> bool {
        matches!(self, Self::RoleDefinition | Self::RoleAssignment)
    }
}

/// What a provider's PUT hook gets.
pub struct PutCx<'r, 'a> {
    /// The request.
    pub req: &'r Request<'a>,
    /// The resource being written.
    pub id: &'r ResourceId,
    /// The record before this PUT, if it existed.
    pub old: Option<&'r Record>,
    /// Process changes to make once the change is committed.
    pub effects: Vec<Effect>,
}

/// Finds the stored record `id` names.
pub fn lookup<'d>(kind: Kind, data: &'d ArmData, id: &ResourceId) -> Option<&'d Record> {
    match kind {
        Kind::RoleDefinition => super::rbac::find_definition(data, id.name()),
        _ => data.get(&id.id()),
    }
}

/// Validates the new record and sets server-owned fields; may change other records.
pub fn prepare(
    kind: Kind,
    cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    match kind {
        Kind::ScaleSet => compute::prepare(cx, data, record),
        Kind::ContainerGroup => containers::prepare(cx, data, record),
        Kind::VirtualNetwork => network::prepare_vnet(cx, data, record),
        Kind::SecurityGroup => network::prepare_nsg(record),
        Kind::Peering => network::prepare_peering(cx, data, record),
        Kind::Identity => identity::prepare(cx, record),
        Kind::PrivateLinkService => privatelink::prepare_service(record),
        Kind::PrivateEndpoint => privatelink::prepare_endpoint(cx, data, record),
        Kind::EndpointConnection => privatelink::prepare_connection(cx, record),
        Kind::RoleDefinition => authorization::prepare_definition(cx, data, record),
        Kind::RoleAssignment => authorization::prepare_assignment(cx, data, record),
        Kind::Subnet | Kind::Plain => Ok(()),
    }
}

/// The body GET returns for a stored record.
pub fn view(kind: Kind, data: &ArmData, record: &Record) -> Value {
    match kind {
        Kind::VirtualNetwork => network::view_vnet(data, record),
        Kind::PrivateLinkService => privatelink::view_service(data, record),
        Kind::PrivateEndpoint => privatelink::view_endpoint(data, record),
        Kind::ContainerGroup => containers::view(record),
        _ => record.body.clone(),
    }
}

/// Reacts to a record being deleted (after it left the store).
pub fn on_delete(kind: Kind, data: &mut ArmData, record: &Record, effects: &mut Vec<Effect>) {
    match kind {
        Kind::ScaleSet => effects.push(Effect::ScaleSet(super::ids::key(record.id()))),
        Kind::ContainerGroup => effects.push(Effect::ContainerGroup(super::ids::key(record.id()))),
        Kind::Peering => network::on_delete_peering(data, record),
        Kind::PrivateEndpoint => privatelink::on_delete_endpoint(data, record),
        _ => {}
    }
}

/// Applies `POST {owner}/{name}`.
pub fn action(
    kind: Kind,
    req: &Request<'_>,
    data: &mut ArmData,
    owner: &ResourceId,
    name: &str,
    body: &Value,
    effects: &mut Vec<Effect>,
) -> Result<(), ArmError> {
    match kind {
        Kind::ScaleSet => compute::action(data, owner, name, body, &req.api_version, effects),
        _ => Err(unknown_action(owner, name, &req.api_version)),
    }
}

/// A provider view or list under a resource, or `None` for the generic list.
pub fn collection(
    req: &Request<'_>,
    data: &ArmData,
    c: &Collection,
) -> Option<Result<Reply, ArmError>> {
    match c.type_key().as_str() {
        "microsoft.compute/virtualmachinescalesets/instanceview" => {
            Some(compute::instance_view(req, data, &c.owner()?))
        }
        "microsoft.compute/virtualmachinescalesets/virtualmachines" => {
            Some(compute::list_instances(req, data, c))
        }
        "microsoft.containerinstance/containergroups/containers/logs" => {
            Some(containers::logs(req, data, c))
        }
        "microsoft.authorization/roleassignments" => {
            Some(authorization::list_assignments(req, data, c))
        }
        "microsoft.authorization/roledefinitions" => {
            Some(authorization::list_definitions(req, data, c))
        }
        _ => None,
    }
}

/// 400 for a POST action the type does not have.
pub fn unknown_action(owner: &ResourceId, name: &str, api_version: &str) -> ArmError {
    ArmError::bad_request(
        "InvalidResourceType",
        format!(
            "The resource type '{}/{name}' could not be found in the namespace '{}' for api version '{api_version}'.",
            owner.types.join("/"),
            owner.namespace
        ),
    )
}

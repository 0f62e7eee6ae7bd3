//! Per-connector network steps: the NSG rules that let the agents reach a connector's
//! database, as a pre-filled script and as rules checked through ARM before validation.

use culvert_arm::operations as ops;
use culvert_byoc::network_steps::{self, NetworkStepInputs, NetworkSteps};
use culvert_control_api::connectors::Connector;
use culvert_control_api::environments::Environment;
use serde::{Deserialize, Serialize};

use super::registration::Found;
use super::{Byoc, arm_error, inputs};
use crate::error::{ApiError, ApiResult};

/// Where a connector's database sits: recorded with `PUT /v1/connectors/{id}/network`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseNetwork {
    /// Resource id of the network security group in front of the database.
    pub db_nsg_id: String,
    /// Address prefix of the database's subnet, e.g. `10.0.2.0/24`.
    pub db_subnet_prefix: String,
}

/// Check a [`DatabaseNetwork`] body.
pub fn check(n: &DatabaseNetwork) -> ApiResult<()> {
    let parts: Vec<&str> = n.db_nsg_id.split('/').collect();
    if parts.len() != 9
        || !parts[1].eq_ignore_ascii_case("subscriptions")
        || !parts[6].eq_ignore_ascii_case("Microsoft.Network")
        || !parts[7].eq_ignore_ascii_case("networkSecurityGroups")
    {
        return Err(ApiError::field(
            "/db_nsg_id",
            "must be a resource id like /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/networkSecurityGroups/NAME",
        ));
    }
    let ok = n.db_subnet_prefix.split_once('/').is_some_and(|(ip, len)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
    });
    if !ok {
        return Err(ApiError::field(
            "/db_subnet_prefix",
            "must be an IPv4 prefix like 10.0.2.0/24",
        ));
    }
    Ok(())
}

fn last(id: &str) -> String {
    id.rsplit('/').next().unwrap_or_default().to_string()
}

fn segment(id: &str, after: &str) -> String {
    let parts: Vec<&str> = id.split('/').collect();
    parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case(after))
        .and_then(|i| parts.get(i + 1))
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The database port of a connector: its `port` setting, else the engine's default.
fn db_port(c: &Connector) -> u16 {
    c.config
        .get("port")
        .and_then(|v| v.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(5432)
}

/// A required rule as the API shows it.
pub fn rule_json(r: &network_steps::RequiredRule) -> serde_json::Value {
    serde_json::json!({
        "nsg": r.nsg_id_or_name,
        "name": r.name,
        "direction": r.direction,
        "access": r.access,
        "protocol": r.protocol,
        "destination_port": r.destination_port,
        "source_prefix": r.source_prefix,
        "destination_prefix": r.destination_prefix,
        "priority": r.priority,
    })
}

/// The steps for `connector`, with the agent subnet's prefix read through ARM. `priority`
/// is the connector's slot in the agent NSG ([`network_steps::priorities`]).
pub async fn steps(
    byoc: &Byoc,
    env: &Environment,
    found: &Found,
    connector: &Connector,
    net: &DatabaseNetwork,
    priority: u16,
) -> ApiResult<NetworkSteps> {
    let a = inputs::azure(env)?;
    let subnet_id = a.subnet_ids.first().cloned().unwrap_or_default();
    let arm = byoc.arm().await?;
    let subnet = arm
        .get(&ops::subnets::GET, &subnet_id)
        .await
        .map_err(arm_error)?
        .ok_or_else(|| {
            ApiError::Conflict(format!("the agent subnet {subnet_id} does not exist"))
        })?;
    let agent_subnet_prefix = subnet["properties"]["addressPrefix"]
        .as_str()
        .or_else(|| subnet["properties"]["addressPrefixes"][0].as_str())
        .unwrap_or_default()
        .to_string();
    Ok(network_steps::render(
        &NetworkStepInputs {
            resource_group: a.resource_group.clone(),
            connector_name: connector.name.clone(),
            connector_id: connector.id.to_string(),
            agent_nsg_name: last(&found.agent_nsg_id),
            db_nsg_resource_group: segment(&net.db_nsg_id, "resourceGroups"),
            db_nsg_name: last(&net.db_nsg_id),
            vnet_resource_group: segment(&a.vnet_id, "resourceGroups"),
            vnet_name: last(&a.vnet_id),
            agent_subnet_name: last(&subnet_id),
            agent_subnet_prefix,
            db_subnet_prefix: net.db_subnet_prefix.clone(),
            db_port: db_port(connector),
            metadata_endpoint_ip: found.metadata_endpoint_ip.clone().unwrap_or_default(),
            location: a.location.clone(),
        },
        priority,
    ))
}

/// The agent-NSG priority of `connector`: connectors of an environment take slots in the
/// order they were created, so adding one never moves another's rules.
pub async fn priority(
    conn: &impl deadpool_postgres::GenericClient,
    connector: &Connector,
) -> ApiResult<u16> {
    use crate::store::Sql;
    let ids: Vec<String> = conn
        .q(
            "select id::text from connectors where environment_id = $1 order by seq",
            &[&connector.environment_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let slots = network_steps::priorities(&refs);
    let me = connector.id.to_string();
    Ok(ids
        .iter()
        .position(|i| *i == me)
        .map(|i| slots[i])
        .unwrap_or_else(|| network_steps::priority_for(&me, &slots)))
}

/// What is missing of `steps` on Azure, one readable line each (empty: all in place).
pub async fn missing(
    byoc: &Byoc,
    env: &Environment,
    found: &Found,
    steps: &NetworkSteps,
    net: &DatabaseNetwork,
) -> ApiResult<Vec<String>> {
    let a = inputs::azure(env)?;
    let arm = byoc.arm().await?;
    let mut out = Vec::new();
    for nsg_id in [&found.agent_nsg_id, &net.db_nsg_id] {
        let required: Vec<_> = steps
            .rules
            .iter()
            .filter(|r| {
                r.nsg_id_or_name.eq_ignore_ascii_case(nsg_id)
                    || r.nsg_id_or_name.eq_ignore_ascii_case(&last(nsg_id))
            })
            .cloned()
            .collect();
        if required.is_empty() {
            continue;
        }
        match arm.get(&ops::nsg::GET, nsg_id).await.map_err(arm_error)? {
            None => out.push(format!(
                "the network security group {nsg_id} does not exist"
            )),
            Some(nsg) => out.extend(network_steps::missing_rules(&required, &nsg)),
        }
    }
    let subnet_id = a.subnet_ids.first().cloned().unwrap_or_default();
    if let Some(subnet) = arm
        .get(&ops::subnets::GET, &subnet_id)
        .await
        .map_err(arm_error)?
        && let Some(m) = network_steps::subnet_association_missing(&subnet, &found.agent_nsg_id)
    {
        out.push(m);
    }
    Ok(out)
}

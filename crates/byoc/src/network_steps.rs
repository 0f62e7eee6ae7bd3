//! Per-connector network steps: the rules that let agents reach a database, as an `az`
//! script the customer runs, and checks of ARM bodies that say what is still missing.
//!
//! A subnet has one network security group, so a connector gets rules in the agents' NSG
//! the bootstrap created (never an NSG of its own), plus one inbound rule in the database's
//! NSG. Rule names carry the connector id; priorities come from it too (see
//! [`priority_for`]), two per connector, in 200–3999 (the bootstrap's own rules sit below 200).

use serde_json::Value;

use crate::quote::{one_line, shell_word};

/// Lowest priority a connector rule takes.
pub const FIRST_PRIORITY: u16 = 200;
/// Highest priority a connector rule takes.
pub const LAST_PRIORITY: u16 = 3999;
/// Priorities per connector: the metadata rule at the base, the database rule at base + 1.
const STRIDE: u16 = 2;
const SLOTS: u16 = (LAST_PRIORITY - FIRST_PRIORITY + 1) / STRIDE;

/// What the network steps of one connector need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStepInputs {
    /// Resource group of the agents' NSG (the environment's resource group).
    pub resource_group: String,
    /// The connector's name, for descriptions.
    pub connector_name: String,
    /// The connector's id; rule names and priorities derive from it.
    pub connector_id: String,
    /// Name of the agents' NSG (`culvert-agent-nsg-RG`).
    pub agent_nsg_name: String,
    /// Resource group of the database's NSG.
    pub db_nsg_resource_group: String,
    /// Name of the database's NSG.
    pub db_nsg_name: String,
    /// Resource group of the agents' VNet.
    pub vnet_resource_group: String,
    /// Name of the agents' VNet.
    pub vnet_name: String,
    /// Name of the agent subnet.
    pub agent_subnet_name: String,
    /// CIDR of the agent subnet.
    pub agent_subnet_prefix: String,
    /// CIDR of the database's subnet.
    pub db_subnet_prefix: String,
    /// The database's TCP port.
    pub db_port: u16,
    /// Private IP of the metadata service's endpoint in the VNet.
    pub metadata_endpoint_ip: String,
    /// Region of the agents and the database.
    pub location: String,
}

/// One security rule the connector needs, as ARM would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredRule {
    /// The NSG the rule belongs in (its name).
    pub nsg_id_or_name: String,
    /// Rule name.
    pub name: String,
    /// `Inbound` or `Outbound`.
    pub direction: String,
    /// Always `Allow`.
    pub access: String,
    /// Always `Tcp`.
    pub protocol: String,
    /// One port.
    pub destination_port: String,
    /// Source address prefix.
    pub source_prefix: String,
    /// Destination address prefix.
    pub destination_prefix: String,
    /// Rule priority.
    pub priority: u16,
}

/// The script and the rules it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSteps {
    /// A bash script (`set -euo pipefail`), values at the top, safe to run again.
    pub script: String,
    /// Every rule the script creates, for [`missing_rules`].
    pub rules: Vec<RequiredRule>,
}

/// 32-bit FNV-1a: small, stable across releases and platforms, unlike `DefaultHasher`.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The base priority of `connector_id`'s rules: its hash's slot, or the next slot whose two
/// priorities are not in `taken`. Deterministic for the same id and `taken`.
pub fn priority_for(connector_id: &str, taken: &[u16]) -> u16 {
    let start = (fnv1a(&connector_id.to_ascii_lowercase()) % u32::from(SLOTS)) as u16;
    for step in 0..SLOTS {
        let base = FIRST_PRIORITY + ((start + step) % SLOTS) * STRIDE;
        if !(base..base + STRIDE).any(|p| taken.contains(&p)) {
            return base;
        }
    }
    // More connectors than slots: share the hash's slot rather than fail; NSGs take at most
    // 1000 rules anyway, far fewer than the slots.
    FIRST_PRIORITY + start * STRIDE
}

/// Base priorities for `connector_ids`, one each, distinct. Assigned in the order given, so
/// passing connectors in creation order keeps every earlier connector's priority when one is
/// added.
pub fn priorities(connector_ids: &[&str]) -> Vec<u16> {
    let mut taken = Vec::new();
    connector_ids
        .iter()
        .map(|id| {
            let base = priority_for(id, &taken);
            taken.extend(base..base + STRIDE);
            base
        })
        .collect()
}

/// `id` reduced to what NSG rule names allow (letters, digits, `_`, `.`, `-`).
fn rule_token(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Names of the connector's three rules: metadata (agent NSG), database out (agent NSG),
/// database in (database NSG).
pub fn rule_names(connector_id: &str) -> [String; 3] {
    let t = rule_token(connector_id);
    [
        format!("culvert-{t}-metadata"),
        format!("culvert-{t}-db-out"),
        format!("culvert-{t}-db-in"),
    ]
}

/// The steps of `inputs`' connector, with its rules at base priority `priority` (from
/// [`priority_for`] or [`priorities`]).
pub fn render(inputs: &NetworkStepInputs, priority: u16) -> NetworkSteps {
    let [metadata_rule, db_out_rule, db_in_rule] = rule_names(&inputs.connector_id);
    let port = inputs.db_port.to_string();
    let rules = vec![
        RequiredRule {
            nsg_id_or_name: inputs.agent_nsg_name.clone(),
            name: metadata_rule.clone(),
            direction: "Outbound".into(),
            access: "Allow".into(),
            protocol: "Tcp".into(),
            destination_port: "443".into(),
            source_prefix: inputs.agent_subnet_prefix.clone(),
            destination_prefix: inputs.metadata_endpoint_ip.clone(),
            priority,
        },
        RequiredRule {
            nsg_id_or_name: inputs.agent_nsg_name.clone(),
            name: db_out_rule.clone(),
            direction: "Outbound".into(),
            access: "Allow".into(),
            protocol: "Tcp".into(),
            destination_port: port.clone(),
            source_prefix: inputs.agent_subnet_prefix.clone(),
            destination_prefix: inputs.db_subnet_prefix.clone(),
            priority: priority + 1,
        },
        RequiredRule {
            nsg_id_or_name: inputs.db_nsg_name.clone(),
            name: db_in_rule.clone(),
            direction: "Inbound".into(),
            access: "Allow".into(),
            protocol: "Tcp".into(),
            destination_port: port,
            source_prefix: inputs.agent_subnet_prefix.clone(),
            destination_prefix: inputs.db_subnet_prefix.clone(),
            priority,
        },
    ];
    let q = shell_word;
    let script = format!(
        r#"#!/usr/bin/env bash
# Culvert network steps for connector {name_comment} ({id_comment}).
#
# Lets the Culvert agents reach the database: two outbound rules in the agents' network
# security group (the one the bootstrap associated with the agent subnets; a subnet has only
# one) and one inbound rule in the database's network security group. Every rule has a fixed
# name, so running this again updates the rules instead of adding more.
set -euo pipefail

RESOURCE_GROUP={rg}
CONNECTOR_NAME={connector_name}
CONNECTOR_ID={connector_id}
AGENT_NSG={agent_nsg}
DB_NSG_RESOURCE_GROUP={db_nsg_rg}
DB_NSG={db_nsg}
VNET_RESOURCE_GROUP={vnet_rg}
VNET_NAME={vnet}
AGENT_SUBNET_NAME={subnet}
AGENT_SUBNET_PREFIX={agent_prefix}
DB_SUBNET_PREFIX={db_prefix}
DB_PORT={db_port}
METADATA_ENDPOINT_IP={metadata_ip}
# The agents, their network security group and the database are in this region.
LOCATION={location}

METADATA_RULE={metadata_rule}
DB_OUT_RULE={db_out_rule}
DB_IN_RULE={db_in_rule}
PRIORITY={priority}
DB_OUT_PRIORITY={db_out_priority}

lower() {{ printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }}

# Stop before a rule would clash with another rule's priority in the same direction.
require_free_priority() {{ # resource group, nsg, direction, priority, rule name
  local clash
  clash="$(az network nsg rule list --resource-group "$1" --nsg-name "$2" \
    --query "[?priority==\`$4\` && direction=='$3' && name!='$5'].name" --output tsv)"
  if [ -n "$clash" ]; then
    echo "NSG $2 already has rule '$clash' at $3 priority $4; give rule $5 a free priority and run again." >&2
    exit 1
  fi
}}

echo "Agents' NSG $AGENT_NSG in $LOCATION: HTTPS to the metadata service"
require_free_priority "$RESOURCE_GROUP" "$AGENT_NSG" Outbound "$PRIORITY" "$METADATA_RULE"
az network nsg rule create --resource-group "$RESOURCE_GROUP" --nsg-name "$AGENT_NSG" \
  --name "$METADATA_RULE" --priority "$PRIORITY" --direction Outbound --access Allow --protocol Tcp \
  --source-address-prefixes "$AGENT_SUBNET_PREFIX" --source-port-ranges '*' \
  --destination-address-prefixes "$METADATA_ENDPOINT_IP" --destination-port-ranges 443 \
  --description "Culvert connector $CONNECTOR_NAME: agents to the metadata service" --output none

echo "Agents' NSG $AGENT_NSG: the database on port $DB_PORT"
require_free_priority "$RESOURCE_GROUP" "$AGENT_NSG" Outbound "$DB_OUT_PRIORITY" "$DB_OUT_RULE"
az network nsg rule create --resource-group "$RESOURCE_GROUP" --nsg-name "$AGENT_NSG" \
  --name "$DB_OUT_RULE" --priority "$DB_OUT_PRIORITY" --direction Outbound --access Allow --protocol Tcp \
  --source-address-prefixes "$AGENT_SUBNET_PREFIX" --source-port-ranges '*' \
  --destination-address-prefixes "$DB_SUBNET_PREFIX" --destination-port-ranges "$DB_PORT" \
  --description "Culvert connector $CONNECTOR_NAME: agents to the database" --output none

echo "Database NSG $DB_NSG: the agents on port $DB_PORT"
require_free_priority "$DB_NSG_RESOURCE_GROUP" "$DB_NSG" Inbound "$PRIORITY" "$DB_IN_RULE"
az network nsg rule create --resource-group "$DB_NSG_RESOURCE_GROUP" --nsg-name "$DB_NSG" \
  --name "$DB_IN_RULE" --priority "$PRIORITY" --direction Inbound --access Allow --protocol Tcp \
  --source-address-prefixes "$AGENT_SUBNET_PREFIX" --source-port-ranges '*' \
  --destination-address-prefixes "$DB_SUBNET_PREFIX" --destination-port-ranges "$DB_PORT" \
  --description "Culvert connector $CONNECTOR_NAME: agents to the database" --output none

echo "Agent subnet $AGENT_SUBNET_NAME: uses $AGENT_NSG"
AGENT_NSG_ID="$(az network nsg show --resource-group "$RESOURCE_GROUP" --name "$AGENT_NSG" --query id --output tsv)"
CURRENT_NSG_ID="$(az network vnet subnet show --resource-group "$VNET_RESOURCE_GROUP" --vnet-name "$VNET_NAME" \
  --name "$AGENT_SUBNET_NAME" --query networkSecurityGroup.id --output tsv)"
if [ -z "$CURRENT_NSG_ID" ]; then
  az network vnet subnet update --resource-group "$VNET_RESOURCE_GROUP" --vnet-name "$VNET_NAME" \
    --name "$AGENT_SUBNET_NAME" --network-security-group "$AGENT_NSG_ID" --output none
elif [ "$(lower "$CURRENT_NSG_ID")" != "$(lower "$AGENT_NSG_ID")" ]; then
  # Replacing it would drop whatever that NSG allows or denies for other workloads.
  echo "Subnet $AGENT_SUBNET_NAME uses $CURRENT_NSG_ID, not $AGENT_NSG_ID, so the rules above do not apply to it." >&2
  echo "Associate $AGENT_NSG with the subnet, or add the same rules to the NSG it uses." >&2
  exit 1
fi

echo "Done. The database's NSG, for the Culvert console:"
az network nsg show --resource-group "$DB_NSG_RESOURCE_GROUP" --name "$DB_NSG" --query id --output tsv
"#,
        name_comment = one_line(&inputs.connector_name),
        id_comment = one_line(&inputs.connector_id),
        rg = q(&inputs.resource_group),
        connector_name = q(&inputs.connector_name),
        connector_id = q(&inputs.connector_id),
        agent_nsg = q(&inputs.agent_nsg_name),
        db_nsg_rg = q(&inputs.db_nsg_resource_group),
        db_nsg = q(&inputs.db_nsg_name),
        vnet_rg = q(&inputs.vnet_resource_group),
        vnet = q(&inputs.vnet_name),
        subnet = q(&inputs.agent_subnet_name),
        agent_prefix = q(&inputs.agent_subnet_prefix),
        db_prefix = q(&inputs.db_subnet_prefix),
        db_port = inputs.db_port,
        metadata_ip = q(&inputs.metadata_endpoint_ip),
        location = q(&inputs.location),
        metadata_rule = q(&metadata_rule),
        db_out_rule = q(&db_out_rule),
        db_in_rule = q(&db_in_rule),
        db_out_priority = priority + 1,
    );
    NetworkSteps { script, rules }
}

/// One NSG rule as an ARM GET shows it, singular and plural fields merged.
struct ArmRule {
    name: String,
    priority: Option<u64>,
    direction: String,
    access: String,
    protocol: String,
    sources: Vec<String>,
    destinations: Vec<String>,
    ports: Vec<String>,
}

/// The singular field if set, else the plural one: ARM fills one or the other.
fn singular_or_plural(props: &Value, singular: &str, plural: &str) -> Vec<String> {
    let from_plural: Vec<String> = props
        .get(plural)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    match props.get(singular).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => vec![s.to_string()],
        _ => from_plural,
    }
}

fn arm_rules(nsg_json: &Value) -> Vec<ArmRule> {
    let list = nsg_json
        .pointer("/properties/securityRules")
        .and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|r| {
            let p = r.get("properties").unwrap_or(&Value::Null);
            let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            ArmRule {
                name: r.get("name").and_then(Value::as_str).unwrap_or("").into(),
                priority: p.get("priority").and_then(Value::as_u64),
                direction: text("direction"),
                access: text("access"),
                protocol: text("protocol"),
                sources: singular_or_plural(p, "sourceAddressPrefix", "sourceAddressPrefixes"),
                destinations: singular_or_plural(
                    p,
                    "destinationAddressPrefix",
                    "destinationAddressPrefixes",
                ),
                ports: singular_or_plural(p, "destinationPortRange", "destinationPortRanges"),
            }
        })
        .collect()
}

/// An IPv4 prefix as (network, mask length); a bare address is a /32.
fn cidr(s: &str) -> Option<(u32, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 32)?),
        None => (s, 32),
    };
    let ip = u32::from(addr.trim().parse::<std::net::Ipv4Addr>().ok()?);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((ip & mask, len))
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

fn is_any(s: &str) -> bool {
    matches!(s.trim(), "*" | "0.0.0.0/0" | "Any" | "any")
}

/// Whether `rule` (a prefix of an NSG rule) includes all of `want`.
fn prefix_covers(rule: &str, want: &str) -> bool {
    if is_any(rule) {
        return true;
    }
    match (cidr(rule), cidr(want)) {
        (Some((rn, rl)), Some((wn, wl))) => rl <= wl && (wn & mask(rl)) == rn,
        _ => rule.trim().eq_ignore_ascii_case(want.trim()),
    }
}

fn is_private(net: u32, len: u8) -> bool {
    [(0x0a00_0000, 8), (0xac10_0000, 12), (0xc0a8_0000, 16)]
        .iter()
        .any(|&(n, l)| len >= l && net & mask(l) == n)
}

/// Whether `rule` (a prefix of an NSG rule) may include some of `want`. `VirtualNetwork`
/// covers the VNet's (private) ranges; other service tags name public ranges.
fn prefix_overlaps(rule: &str, want: &str) -> bool {
    if is_any(rule) || is_any(want) {
        return true;
    }
    match (cidr(rule), cidr(want)) {
        (Some((rn, rl)), Some((wn, wl))) => {
            let l = rl.min(wl);
            rn & mask(l) == wn & mask(l)
        }
        (None, Some((wn, wl))) => {
            rule.trim().eq_ignore_ascii_case("VirtualNetwork") && is_private(wn, wl)
        }
        _ => rule.trim().eq_ignore_ascii_case(want.trim()),
    }
}

fn port_range(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    if s == "*" {
        return Some((0, 65535));
    }
    match s.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => s.parse().ok().map(|p| (p, p)),
    }
}

fn port_covered(ranges: &[String], port: &str) -> bool {
    let Ok(p) = port.trim().parse::<u32>() else {
        return ranges.iter().any(|r| r.trim() == port.trim());
    };
    ranges
        .iter()
        .filter_map(|r| port_range(r))
        .any(|(lo, hi)| lo <= p && p <= hi)
}

fn protocol_covers(rule: &str, want: &str) -> bool {
    rule == "*" || rule.eq_ignore_ascii_case(want)
}

/// What keeps `rule` from allowing `want`, one phrase per field; empty when it allows it.
fn differences(rule: &ArmRule, want: &RequiredRule) -> Vec<String> {
    let checks = [
        (
            rule.direction.eq_ignore_ascii_case(&want.direction),
            "direction",
            rule.direction.clone(),
            &want.direction,
        ),
        (
            rule.access.eq_ignore_ascii_case(&want.access),
            "access",
            rule.access.clone(),
            &want.access,
        ),
        (
            protocol_covers(&rule.protocol, &want.protocol),
            "protocol",
            rule.protocol.clone(),
            &want.protocol,
        ),
        (
            port_covered(&rule.ports, &want.destination_port),
            "destination port",
            shown(&rule.ports),
            &want.destination_port,
        ),
        (
            rule.sources
                .iter()
                .any(|s| prefix_covers(s, &want.source_prefix)),
            "source",
            shown(&rule.sources),
            &want.source_prefix,
        ),
        (
            rule.destinations
                .iter()
                .any(|d| prefix_covers(d, &want.destination_prefix)),
            "destination",
            shown(&rule.destinations),
            &want.destination_prefix,
        ),
    ];
    checks
        .into_iter()
        .filter(|(ok, ..)| !ok)
        .map(|(_, field, found, expected)| format!("{field} is {found}, expected {expected}"))
        .collect()
}

fn shown(values: &[String]) -> String {
    if values.is_empty() {
        "(none)".to_string()
    } else {
        values.join(",")
    }
}

/// A Deny rule evaluated before `priority` that may drop `want`'s traffic.
fn blocking_deny<'a>(
    rules: &'a [ArmRule],
    want: &RequiredRule,
    priority: u64,
) -> Option<&'a ArmRule> {
    rules.iter().find(|r| {
        r.access.eq_ignore_ascii_case("Deny")
            && r.direction.eq_ignore_ascii_case(&want.direction)
            && r.priority.is_some_and(|p| p < priority)
            && protocol_covers(&r.protocol, &want.protocol)
            && port_covered(&r.ports, &want.destination_port)
            && r.sources
                .iter()
                .any(|s| prefix_overlaps(s, &want.source_prefix))
            && r.destinations
                .iter()
                .any(|d| prefix_overlaps(d, &want.destination_prefix))
    })
}

fn describe(want: &RequiredRule) -> String {
    format!(
        "{} Allow {} from {} to {} port {}, priority {}",
        want.direction,
        want.protocol,
        want.source_prefix,
        want.destination_prefix,
        want.destination_port,
        want.priority
    )
}

fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// What the NSG in `nsg_json` (an ARM GET body) still lacks of `required`, one readable line
/// per rule. Rules of other NSGs (by `nsg_id_or_name`) are skipped. A rule counts as present
/// when the rule of that name allows its traffic, or any other Allow rule does; either way a
/// Deny rule evaluated first that may drop the traffic is reported.
pub fn missing_rules(required: &[RequiredRule], nsg_json: &Value) -> Vec<String> {
    let nsg_name = nsg_json
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| nsg_json.get("id").and_then(Value::as_str).map(last_segment))
        .unwrap_or("");
    let rules = arm_rules(nsg_json);
    let mut out = Vec::new();
    for want in required {
        if !last_segment(&want.nsg_id_or_name).eq_ignore_ascii_case(nsg_name) {
            continue;
        }
        let named = rules
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(&want.name));
        let problems = named.map(|r| differences(r, want));
        let allowing = match (named, &problems) {
            (Some(r), Some(p)) if p.is_empty() => Some(r),
            _ => rules
                .iter()
                .filter(|r| differences(r, want).is_empty())
                .min_by_key(|r| r.priority.unwrap_or(u64::MAX)),
        };
        match (allowing, named, problems) {
            (Some(allow), _, _) => {
                let at = allow.priority.unwrap_or(u64::MAX);
                if let Some(deny) = blocking_deny(&rules, want, at) {
                    out.push(format!(
                        "NSG {nsg_name}: rule {} (priority {}) denies what {} allows ({}); give {} a lower priority number than {}",
                        deny.name,
                        deny.priority.unwrap_or_default(),
                        allow.name,
                        describe(want),
                        allow.name,
                        deny.name
                    ));
                }
            }
            (None, Some(_), Some(problems)) => out.push(format!(
                "NSG {nsg_name}: rule {} does not allow what it should: {}",
                want.name,
                problems.join("; ")
            )),
            (None, _, _) => out.push(format!(
                "NSG {nsg_name}: rule {} is missing ({})",
                want.name,
                describe(want)
            )),
        }
    }
    out
}

/// `None` when the subnet in `subnet_json` (an ARM GET body) uses NSG `nsg_id`, else why not.
pub fn subnet_association_missing(subnet_json: &Value, nsg_id: &str) -> Option<String> {
    let subnet = subnet_json
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("the subnet");
    match subnet_json
        .pointer("/properties/networkSecurityGroup/id")
        .and_then(Value::as_str)
    {
        Some(id) if id.eq_ignore_ascii_case(nsg_id) => None,
        Some(id) => Some(format!(
            "subnet {subnet} uses network security group {id}, not {nsg_id}: the agents' rules do not apply to it"
        )),
        None => Some(format!(
            "subnet {subnet} has no network security group; associate {nsg_id}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs() -> NetworkStepInputs {
        NetworkStepInputs {
            resource_group: "culvert-rg".into(),
            connector_name: "shop db".into(),
            connector_id: "5f0c7f0e-1d2b-4c4e-9a51-3a3f7d9e2b10".into(),
            agent_nsg_name: "culvert-agent-nsg-culvert-rg".into(),
            db_nsg_resource_group: "db-rg".into(),
            db_nsg_name: "db-nsg".into(),
            vnet_resource_group: "net-rg".into(),
            vnet_name: "main-vnet".into(),
            agent_subnet_name: "agents".into(),
            agent_subnet_prefix: "10.0.1.0/24".into(),
            db_subnet_prefix: "10.0.2.0/24".into(),
            db_port: 5432,
            metadata_endpoint_ip: "10.0.1.4".into(),
            location: "eastus2".into(),
        }
    }

    /// The NSG bodies ARM would return once the script ran: one rule in the plural form.
    fn nsg_bodies(steps: &NetworkSteps) -> (Value, Value) {
        let arm = |r: &RequiredRule, plural: bool| {
            let mut props = json!({
                "priority": r.priority, "direction": r.direction, "access": r.access,
                "protocol": r.protocol, "sourcePortRange": "*",
                "sourceAddressPrefix": r.source_prefix,
                "provisioningState": "Succeeded",
            });
            if plural {
                props["destinationAddressPrefixes"] = json!([r.destination_prefix]);
                props["destinationPortRanges"] = json!([r.destination_port]);
                props["destinationAddressPrefix"] = json!("");
            } else {
                props["destinationAddressPrefix"] = json!(r.destination_prefix);
                props["destinationPortRange"] = json!(r.destination_port);
            }
            json!({"name": r.name, "properties": props})
        };
        let agent = json!({
            "name": "culvert-agent-nsg-culvert-rg",
            "id": "/subscriptions/s/resourceGroups/culvert-rg/providers/Microsoft.Network/networkSecurityGroups/culvert-agent-nsg-culvert-rg",
            "properties": {"securityRules": [arm(&steps.rules[0], false), arm(&steps.rules[1], true)]}
        });
        let db = json!({
            "name": "db-nsg",
            "properties": {"securityRules": [arm(&steps.rules[2], false)]}
        });
        (agent, db)
    }

    #[test]
    fn script_is_prefilled_and_quoted() {
        let i = inputs();
        let steps = render(&i, 1234);
        let s = &steps.script;
        assert!(s.starts_with("#!/usr/bin/env bash\n"));
        assert!(s.contains("\nset -euo pipefail\n"));
        for value in [
            "RESOURCE_GROUP='culvert-rg'",
            "CONNECTOR_NAME='shop db'",
            "CONNECTOR_ID='5f0c7f0e-1d2b-4c4e-9a51-3a3f7d9e2b10'",
            "AGENT_NSG='culvert-agent-nsg-culvert-rg'",
            "DB_NSG_RESOURCE_GROUP='db-rg'",
            "DB_NSG='db-nsg'",
            "VNET_RESOURCE_GROUP='net-rg'",
            "VNET_NAME='main-vnet'",
            "AGENT_SUBNET_NAME='agents'",
            "AGENT_SUBNET_PREFIX='10.0.1.0/24'",
            "DB_SUBNET_PREFIX='10.0.2.0/24'",
            "DB_PORT=5432",
            "METADATA_ENDPOINT_IP='10.0.1.4'",
            "LOCATION='eastus2'",
            "PRIORITY=1234",
            "DB_OUT_PRIORITY=1235",
            "METADATA_RULE='culvert-5f0c7f0e-1d2b-4c4e-9a51-3a3f7d9e2b10-metadata'",
        ] {
            assert!(s.contains(value), "missing {value}");
        }
        // One NSG per subnet: the script never creates one.
        assert!(!s.contains("az network nsg create"));
        assert_eq!(s.matches("az network nsg rule create").count(), 3);
        // A hostile value stays one shell word.
        let mut evil = inputs();
        evil.connector_name = "x'; rm -rf / #".into();
        let s = render(&evil, 200).script;
        assert!(s.contains(r"CONNECTOR_NAME='x'\''; rm -rf / #'"));
    }

    #[test]
    fn rules_match_the_script() {
        let steps = render(&inputs(), 400);
        let r = &steps.rules;
        assert_eq!(r.len(), 3);
        assert_eq!(
            (
                r[0].direction.as_str(),
                r[0].destination_port.as_str(),
                r[0].destination_prefix.as_str(),
                r[0].priority
            ),
            ("Outbound", "443", "10.0.1.4", 400)
        );
        assert_eq!(
            (
                r[1].direction.as_str(),
                r[1].destination_port.as_str(),
                r[1].destination_prefix.as_str(),
                r[1].priority
            ),
            ("Outbound", "5432", "10.0.2.0/24", 401)
        );
        assert_eq!(
            (
                r[2].nsg_id_or_name.as_str(),
                r[2].direction.as_str(),
                r[2].source_prefix.as_str()
            ),
            ("db-nsg", "Inbound", "10.0.1.0/24")
        );
        for rule in r {
            assert!(
                steps.script.contains(&format!("{}'", rule.name)),
                "{}",
                rule.name
            );
        }
    }

    #[test]
    fn priorities_are_in_range_distinct_and_stable_when_appending() {
        let ids: Vec<String> = (0..300).map(|i| format!("connector-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let p = priorities(&refs);
        let mut all: Vec<u16> = p.iter().flat_map(|b| [*b, b + 1]).collect();
        assert!(
            all.iter()
                .all(|x| (FIRST_PRIORITY..=LAST_PRIORITY).contains(x))
        );
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before, "two connectors share a priority");
        // Appending a connector leaves earlier ones where they were.
        let mut more = refs.clone();
        more.push("connector-new");
        assert_eq!(&priorities(&more)[..300], &p[..]);
        // Same id, same priority, whatever the case of the id.
        assert_eq!(priority_for("ABC", &[]), priority_for("abc", &[]));
        // A taken slot moves the connector to the next free one.
        let base = priority_for("abc", &[]);
        let moved = priority_for("abc", &[base + 1]);
        assert_ne!(moved, base);
        assert_eq!(moved % 2, 0);
    }

    #[test]
    fn complete_nsgs_miss_nothing() {
        let steps = render(&inputs(), 300);
        let (agent, db) = nsg_bodies(&steps);
        assert_eq!(missing_rules(&steps.rules, &agent), Vec::<String>::new());
        assert_eq!(missing_rules(&steps.rules, &db), Vec::<String>::new());
    }

    #[test]
    fn a_missing_rule_is_named() {
        let steps = render(&inputs(), 300);
        let (mut agent, _) = nsg_bodies(&steps);
        agent["properties"]["securityRules"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        let missing = missing_rules(&steps.rules, &agent);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].contains(&steps.rules[1].name), "{}", missing[0]);
        assert!(missing[0].contains("missing"), "{}", missing[0]);
        assert!(missing[0].contains("5432"), "{}", missing[0]);
    }

    #[test]
    fn a_wrong_port_says_which() {
        let steps = render(&inputs(), 300);
        let (_, mut db) = nsg_bodies(&steps);
        db["properties"]["securityRules"][0]["properties"]["destinationPortRange"] = json!("5433");
        let missing = missing_rules(&steps.rules, &db);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].contains("destination port is 5433, expected 5432"),
            "{}",
            missing[0]
        );
        assert!(missing[0].contains(&steps.rules[2].name));
    }

    #[test]
    fn wider_rules_and_wildcards_satisfy_and_denies_are_reported() {
        let steps = render(&inputs(), 300);
        // A hand-made rule under another name that allows more (port range, wider prefix, any protocol).
        let db = json!({"name": "db-nsg", "properties": {"securityRules": [
            {"name": "allow-vnet-pg", "properties": {"priority": 150, "direction": "Inbound",
             "access": "Allow", "protocol": "*", "sourceAddressPrefix": "10.0.0.0/16",
             "destinationAddressPrefix": "*", "destinationPortRanges": ["5000-6000"]}}
        ]}});
        assert_eq!(missing_rules(&steps.rules, &db), Vec::<String>::new());
        // The same, but a deny from the VNet is evaluated first.
        let mut denied = db.clone();
        denied["properties"]["securityRules"]
            .as_array_mut()
            .unwrap()
            .push(
                json!({"name": "deny-vnet", "properties": {"priority": 100, "direction": "Inbound",
                "access": "Deny", "protocol": "Tcp", "sourceAddressPrefix": "VirtualNetwork",
                "destinationAddressPrefix": "*", "destinationPortRange": "*"}}),
            );
        let missing = missing_rules(&steps.rules, &denied);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].contains("deny-vnet"), "{}", missing[0]);
        // A deny against the Internet tag does not touch private prefixes.
        let mut internet = db.clone();
        internet["properties"]["securityRules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "deny-internet", "properties": {"priority": 100, "direction": "Inbound",
                "access": "Deny", "protocol": "*", "sourceAddressPrefix": "Internet",
                "destinationAddressPrefix": "*", "destinationPortRange": "*"}}));
        assert_eq!(missing_rules(&steps.rules, &internet), Vec::<String>::new());
        // A rule that is too narrow does not count.
        let narrow = json!({"name": "db-nsg", "properties": {"securityRules": [
            {"name": "culvert-5f0c7f0e-1d2b-4c4e-9a51-3a3f7d9e2b10-db-in", "properties": {"priority": 300,
             "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
             "sourceAddressPrefixes": ["10.0.1.0/25"], "destinationAddressPrefix": "10.0.2.0/24",
             "destinationPortRange": "5432"}}
        ]}});
        let missing = missing_rules(&steps.rules, &narrow);
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].contains("source is 10.0.1.0/25, expected 10.0.1.0/24"),
            "{}",
            missing[0]
        );
    }

    #[test]
    fn metadata_ip_matches_with_or_without_a_32_prefix() {
        assert!(prefix_covers("10.0.1.4/32", "10.0.1.4"));
        assert!(prefix_covers("10.0.1.4", "10.0.1.4/32"));
        assert!(!prefix_covers("10.0.1.5", "10.0.1.4"));
        assert!(prefix_covers("VirtualNetwork", "virtualnetwork"));
    }

    #[test]
    fn subnet_association_is_checked() {
        let nsg = "/subscriptions/s/resourceGroups/culvert-rg/providers/Microsoft.Network/networkSecurityGroups/culvert-agent-nsg-culvert-rg";
        let ok = json!({"name": "agents", "properties": {"networkSecurityGroup": {"id": nsg.to_lowercase()}}});
        assert_eq!(subnet_association_missing(&ok, nsg), None);
        let none = json!({"name": "agents", "properties": {"addressPrefix": "10.0.1.0/24"}});
        let msg = subnet_association_missing(&none, nsg).unwrap();
        assert!(msg.contains("no network security group"), "{msg}");
        let other = json!({"name": "agents", "properties": {"networkSecurityGroup": {"id": "/x/other-nsg"}}});
        let msg = subnet_association_missing(&other, nsg).unwrap();
        assert!(msg.contains("/x/other-nsg"), "{msg}");
    }
}

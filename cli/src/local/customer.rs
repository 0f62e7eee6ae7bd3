//! `culvert local azure ...`: the customer's side of Azure environments on the local
//! Resource Manager, so the whole flow of `docs/byoc-azure.md` runs without Azure. Each
//! command does what the customer does on Azure — `terraform apply` of the bootstrap bundle,
//! a connector's network steps, the peer's `az` commands — as the stack's bootstrap
//! identity, which plays the customer's administrator (an owner there).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use culvert_control_api::environments::AzureSettings;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::azure_local::{self, CUSTOMER_SUBSCRIPTION, Endpoints, Files, Identities};
use super::state::StateDir;
use crate::api::Api;
use crate::commands::byoc::connector_id;
use crate::exit::{Failure, Kind};
use crate::output::{Output, fields, out, outln};
use crate::resolve;

/// API versions of the resource types these commands write.
const GROUPS: &str = "2021-04-01";
const NETWORK: &str = "2024-05-01";
const IDENTITY: &str = "2023-01-31";
const VAULT: &str = "2023-07-01";
const AUTHORIZATION: &str = "2022-04-01";
/// Region of everything the local customer creates.
const LOCATION: &str = "eastus2";
/// The action a peer grants Culvert's application on its VNet (peering guide, step 8).
const PEER_ACTION: &str = "Microsoft.Network/virtualNetworks/peer/action";

/// `culvert local azure ...`.
#[derive(Debug, Subcommand)]
pub enum AzureCommand {
    /// Create a customer network to try Azure environments on: resource groups `rg-data`
    /// and `rg-net`, VNet `vnet1` with subnets `agents` and `db`, and the database's NSG.
    Network,
    /// Do what `terraform apply` of an environment's bootstrap bundle does on Azure.
    ApplyBootstrap {
        /// Environment name or id.
        env: String,
        /// Leave this action out of the control plane's role (to see how a missing
        /// permission is reported); repeatable.
        #[arg(long = "without-action", value_name = "ACTION")]
        without: Vec<String>,
    },
    /// Do what a connector's network steps (`culvert connector network-steps`) do on Azure.
    ApplyNetworkSteps {
        /// Connector name or id.
        name: String,
        /// Environment of the connector (when the name is not unique).
        #[arg(long)]
        env: Option<String>,
    },
    /// Do the peer's side of a VNet peering: the peer VNet (created when missing), Culvert's
    /// application granted peering on it, and the peering back once Culvert's side exists.
    Peer {
        /// Network connection name.
        name: String,
        /// Environment of the connection.
        #[arg(long)]
        env: String,
        /// Address space of the peer VNet when it has to be created.
        #[arg(long, default_value = "10.30.0.0/16")]
        address_space: String,
    },
}

/// A client of the local Resource Manager, authenticated as the stack's bootstrap identity.
pub struct OwnerArm {
    base: String,
    http: reqwest::Client,
    bearer: String,
}

impl OwnerArm {
    /// The Resource Manager of a running stack with these identities and endpoints; `None`
    /// when the stand-ins serve none.
    pub async fn new(ids: &Identities, ep: &Endpoints) -> Result<Option<OwnerArm>> {
        let Some(arm) = &ep.arm_endpoint else {
            return Ok(None);
        };
        let pem = std::fs::read(&ep.ca_certificate)
            .with_context(|| format!("cannot read {}", ep.ca_certificate.display()))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .build()?;
        let token =
            azure_local::bootstrap_token(&http, ids, ep, "https://management.azure.com").await?;
        Ok(Some(OwnerArm {
            base: arm.trim_end_matches('/').to_string(),
            http,
            bearer: format!("Bearer {token}"),
        }))
    }

    /// The Resource Manager of the stack in `state`, which must be up.
    pub async fn of_stack(state: &StateDir) -> Result<OwnerArm> {
        let files = Files::new(state);
        let not_up = || {
            Failure::new(
                Kind::Other,
                "the local stack's Resource Manager is not running: start it with `culvert local up`",
            )
        };
        let ep = azure_local::endpoints(&files).ok_or_else(not_up)?;
        let ids = azure_local::identities(&files)?;
        Ok(OwnerArm::new(&ids, &ep).await?.ok_or_else(not_up)?)
    }

    fn url(&self, id: &str, version: &str) -> String {
        format!("{}{id}?api-version={version}", self.base)
    }

    /// PUT a resource; fails with ARM's message unless it is accepted.
    pub async fn put(&self, id: &str, version: &str, body: &Value) -> Result<Value> {
        let reply = self
            .http
            .put(self.url(id, version))
            .header("Authorization", &self.bearer)
            .json(body)
            .send()
            .await
            .context("the local Resource Manager does not answer")?;
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("creating {id} in the local Resource Manager failed ({status}): {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET a resource; `None` when it does not exist.
    pub async fn get(&self, id: &str, version: &str) -> Result<Option<Value>> {
        let reply = self
            .http
            .get(self.url(id, version))
            .header("Authorization", &self.bearer)
            .send()
            .await
            .context("the local Resource Manager does not answer")?;
        let status = reply.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = reply.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("reading {id} from the local Resource Manager failed ({status}): {text}");
        }
        Ok(Some(serde_json::from_str(&text)?))
    }

    /// PUT `body` at `id` unless something is there already; whether it was created.
    async fn ensure(&self, id: &str, version: &str, body: &Value) -> Result<bool> {
        if self.get(id, version).await?.is_some() {
            return Ok(false);
        }
        self.put(id, version, body).await?;
        Ok(true)
    }

    /// A custom role at `scope` holding `actions`, assigned to `principal` at each of `at`.
    async fn role(&self, role: &Role<'_>, principal: &str) -> Result<()> {
        let def = format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions/{}",
            role.scope,
            guid_of(role.name)
        );
        self.put(
            &def,
            AUTHORIZATION,
            &json!({"properties": {"roleName": role.name, "type": "CustomRole",
                "permissions": [{"actions": role.actions, "notActions": [], "dataActions": [], "notDataActions": []}],
                "assignableScopes": role.assignable}}),
        )
        .await?;
        for scope in role.at {
            let assignment = format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                guid_of(&format!("{}{scope}{principal}", role.name))
            );
            self.put(
                &assignment,
                AUTHORIZATION,
                &json!({"properties": {"roleDefinitionId": def, "principalId": principal, "principalType": "ServicePrincipal"}}),
            )
            .await?;
        }
        Ok(())
    }
}

/// A custom role and where it is assigned.
struct Role<'a> {
    scope: &'a str,
    name: &'a str,
    actions: &'a [String],
    assignable: &'a [String],
    at: &'a [String],
}

/// A stable GUID for `text`: role definitions and assignments are named by GUIDs, and
/// applying twice must update the same ones.
fn guid_of(text: &str) -> uuid::Uuid {
    let digest = Sha256::digest(text.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The local customer network `culvert local azure network` creates.
pub struct SampleNetwork;

impl SampleNetwork {
    /// The resource group Culvert deploys into.
    pub const RESOURCE_GROUP: &str = "rg-data";
    fn group(name: &str) -> String {
        format!("/subscriptions/{CUSTOMER_SUBSCRIPTION}/resourceGroups/{name}")
    }
    fn vnet() -> String {
        format!(
            "{}/providers/Microsoft.Network/virtualNetworks/vnet1",
            Self::group("rg-net")
        )
    }
    fn db_nsg() -> String {
        format!(
            "{}/providers/Microsoft.Network/networkSecurityGroups/db-nsg",
            Self::group(Self::RESOURCE_GROUP)
        )
    }
}

/// Run a `local azure` command against the stack in `state` and its API.
pub async fn run(state: &StateDir, api: &Api, cmd: AzureCommand) -> Result<()> {
    let arm = OwnerArm::of_stack(state).await?;
    match cmd {
        AzureCommand::Network => network(&arm, api.output).await,
        AzureCommand::ApplyBootstrap { env, without } => {
            apply_bootstrap(&arm, api, &env, &without).await
        }
        AzureCommand::ApplyNetworkSteps { name, env } => {
            apply_network_steps(&arm, api, &name, env.as_deref()).await
        }
        AzureCommand::Peer {
            name,
            env,
            address_space,
        } => peer(&arm, api, &name, &env, &address_space).await,
    }
}

async fn network(arm: &OwnerArm, output: Output) -> Result<()> {
    for rg in ["rg-data", "rg-net"] {
        arm.ensure(
            &SampleNetwork::group(rg),
            GROUPS,
            &json!({"location": LOCATION}),
        )
        .await?;
    }
    let vnet = SampleNetwork::vnet();
    let subnets = [("agents", "10.20.1.0/24"), ("db", "10.20.2.0/24")];
    let list: Vec<Value> = subnets
        .iter()
        .map(|(n, p)| json!({"name": n, "properties": {"addressPrefix": p}}))
        .collect();
    arm.ensure(
        &vnet,
        NETWORK,
        &json!({"location": LOCATION, "properties": {"addressSpace": {"addressPrefixes": ["10.20.0.0/16"]}, "subnets": list}}),
    )
    .await?;
    for (n, p) in subnets {
        arm.ensure(
            &format!("{vnet}/subnets/{n}"),
            NETWORK,
            &json!({"properties": {"addressPrefix": p}}),
        )
        .await?;
    }
    let db_nsg = SampleNetwork::db_nsg();
    arm.ensure(
        &db_nsg,
        NETWORK,
        &json!({"location": LOCATION, "properties": {"securityRules": []}}),
    )
    .await?;
    let agents = format!("{vnet}/subnets/agents");
    match output {
        Output::Json => outln!(
            "{}",
            json!({"subscription_id": CUSTOMER_SUBSCRIPTION, "location": LOCATION,
                "resource_group": SampleNetwork::RESOURCE_GROUP, "vnet_id": vnet,
                "agents_subnet_id": agents, "db_subnet_id": format!("{vnet}/subnets/db"),
                "db_subnet_prefix": "10.20.2.0/24", "db_nsg_id": db_nsg})
        ),
        Output::Table => {
            out!(
                "{}",
                fields(&[
                    ("subscription", CUSTOMER_SUBSCRIPTION.to_string()),
                    ("VNet", vnet.clone()),
                    ("agents subnet", agents.clone()),
                    ("database NSG", db_nsg.clone()),
                ])
            );
            outln!(
                "next: culvert env create NAME --azure --subscription {CUSTOMER_SUBSCRIPTION} --location {LOCATION} --resource-group {} --vnet-id {vnet} --subnet-id {agents}",
                SampleNetwork::RESOURCE_GROUP
            );
        }
    }
    Ok(())
}

/// An Azure environment's id, settings and bootstrap answer.
async fn environment(api: &Api, env: &str) -> Result<(uuid::Uuid, AzureSettings, Value)> {
    let id = resolve::environment(api, env).await?;
    let e = api.get::<Value>(&format!("/v1/environments/{id}")).await?;
    let azure: AzureSettings = serde_json::from_value(e.value["azure"].clone()).map_err(|_| {
        Failure::new(
            Kind::Invalid,
            format!("environment {env} is not an Azure environment (create it with --azure)"),
        )
    })?;
    let bootstrap = api
        .get::<Value>(&format!("/v1/environments/{id}/bootstrap"))
        .await?;
    Ok((id, azure, bootstrap.value))
}

fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str()
        .with_context(|| format!("the control plane's answer lacks {what}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn apply_bootstrap(arm: &OwnerArm, api: &Api, env: &str, without: &[String]) -> Result<()> {
    let (_, azure, bootstrap) = environment(api, env).await?;
    let res = &bootstrap["resources"];
    let r = |k: &str| text(&res[k], k);
    let mut created = Vec::new();
    for k in ["agent_identity_id", "validation_identity_id"] {
        if arm
            .ensure(r(k)?, IDENTITY, &json!({"location": azure.location}))
            .await?
        {
            created.push(r(k)?.to_string());
        }
    }
    let simple = [
        (
            "agent_nsg_id",
            NETWORK,
            json!({"location": azure.location, "properties": {"securityRules": []}}),
        ),
        (
            "key_vault_id",
            VAULT,
            json!({"location": azure.location, "properties": {"sku": {"family": "A", "name": "standard"}}}),
        ),
        (
            "private_endpoint_id",
            NETWORK,
            json!({"location": azure.location, "properties": {
                "subnet": {"id": azure.subnet_ids.first().context("the environment has no subnet")?},
                "manualPrivateLinkServiceConnections": [{"name": "culvert-metadata", "properties": {
                    "privateLinkServiceId": r("metadata_service_id")?,
                    "requestMessage": format!("culvert:{}", r("external_id")?)}}]}}),
        ),
    ];
    for (k, version, body) in simple {
        if arm.ensure(r(k)?, version, &body).await? {
            created.push(r(k)?.to_string());
        }
    }
    let role = &bootstrap["role"];
    let actions: Vec<String> = strings(&role["actions"])
        .into_iter()
        .filter(|a| !without.iter().any(|w| w.eq_ignore_ascii_case(a)))
        .collect();
    let assignable = strings(&role["assignable_scopes"]);
    let scope = assignable
        .first()
        .context("the control plane's answer lacks the role's scopes")?;
    arm.role(
        &Role {
            scope,
            name: text(&role["name"], "the role's name")?,
            actions: &actions,
            assignable: &assignable,
            at: &strings(&role["assignment_scopes"]),
        },
        r("culvert_principal_id")?,
    )
    .await?;
    match api.output {
        Output::Json => outln!(
            "{}",
            json!({"created": created, "role_actions": actions.len()})
        ),
        Output::Table => {
            for id in &created {
                outln!("created {id}");
            }
            outln!(
                "Culvert's role holds {} action(s){}; next: culvert env wait {env}",
                actions.len(),
                if without.is_empty() {
                    String::new()
                } else {
                    format!(" (left out: {})", without.join(", "))
                }
            );
        }
    }
    Ok(())
}

async fn apply_network_steps(
    arm: &OwnerArm,
    api: &Api,
    name: &str,
    env: Option<&str>,
) -> Result<()> {
    let id = connector_id(api, name, env).await?;
    let c = api.get::<Value>(&format!("/v1/connectors/{id}")).await?;
    let env_id = text(&c.value["environment_id"], "the connector's environment")?.to_string();
    let (_, azure, bootstrap) = environment(api, &env_id).await?;
    let agent_nsg = text(&bootstrap["resources"]["agent_nsg_id"], "agent_nsg_id")?.to_string();
    let steps = api
        .get::<Value>(&format!("/v1/connectors/{id}/network"))
        .await?
        .value;
    let db_nsg = text(&steps["network"]["db_nsg_id"], "the database's NSG")?.to_string();
    let rules = steps["rules"].as_array().cloned().unwrap_or_default();
    for nsg in [&agent_nsg, &db_nsg] {
        let short = nsg.rsplit('/').next().unwrap_or_default();
        let mine: Vec<&Value> = rules
            .iter()
            .filter(|r| {
                r["nsg"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(short) || n.eq_ignore_ascii_case(nsg))
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut current = arm.get(nsg, NETWORK).await?.ok_or_else(|| {
            Failure::new(
                Kind::NotFound,
                format!("the network security group {nsg} does not exist"),
            )
        })?;
        // Rules are replaced by name, as `az network nsg rule create` does; others stay.
        let names: Vec<&str> = mine.iter().filter_map(|r| r["name"].as_str()).collect();
        let mut security_rules: Vec<Value> = current["properties"]["securityRules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| !r["name"].as_str().is_some_and(|n| names.contains(&n)))
            .collect();
        security_rules.extend(mine.iter().map(|r| json!({"name": r["name"], "properties": {
            "priority": r["priority"], "direction": r["direction"], "access": r["access"], "protocol": r["protocol"],
            "sourceAddressPrefix": r["source_prefix"], "sourcePortRange": "*",
            "destinationAddressPrefix": r["destination_prefix"], "destinationPortRange": r["destination_port"]}})));
        current["properties"]["securityRules"] = Value::Array(security_rules);
        let mut body =
            json!({"location": current["location"], "properties": current["properties"]});
        if current["tags"].is_object() {
            body["tags"] = current["tags"].clone();
        }
        arm.put(nsg, NETWORK, &body).await?;
        outln!("{} rule(s) set on {nsg}", mine.len());
    }
    let subnet_id = azure
        .subnet_ids
        .first()
        .context("the environment has no subnet")?;
    let mut subnet = arm.get(subnet_id, NETWORK).await?.ok_or_else(|| {
        Failure::new(
            Kind::NotFound,
            format!("the agent subnet {subnet_id} does not exist"),
        )
    })?;
    subnet["properties"]["networkSecurityGroup"] = json!({"id": agent_nsg});
    arm.put(
        subnet_id,
        NETWORK,
        &json!({"properties": subnet["properties"]}),
    )
    .await?;
    outln!(
        "{subnet_id} is associated with {agent_nsg}; next: culvert connector validate {name} --wait"
    );
    Ok(())
}

async fn peer(arm: &OwnerArm, api: &Api, name: &str, env: &str, space: &str) -> Result<()> {
    let (env_id, azure, bootstrap) = environment(api, env).await?;
    let c = api
        .get::<Value>(&format!(
            "/v1/environments/{env_id}/network-connections/{name}"
        ))
        .await?
        .value;
    let sub = text(&c["peer_subscription_id"], "the peer subscription")?;
    let rg = format!(
        "/subscriptions/{sub}/resourceGroups/{}",
        text(&c["peer_resource_group"], "the peer resource group")?
    );
    let vnet = format!(
        "{rg}/providers/Microsoft.Network/virtualNetworks/{}",
        text(&c["peer_vnet"], "the peer VNet")?
    );
    arm.ensure(&rg, GROUPS, &json!({"location": azure.location}))
        .await?;
    if arm
        .ensure(
            &vnet,
            NETWORK,
            &json!({"location": azure.location, "properties": {"addressSpace": {"addressPrefixes": [space]}}}),
        )
        .await?
    {
        outln!("created the peer VNet {vnet} ({space})");
    }
    let principal = text(
        &bootstrap["resources"]["culvert_principal_id"],
        "culvert_principal_id",
    )?;
    let role_name = format!(
        "Culvert peering to {}",
        c["peer_vnet"].as_str().unwrap_or(name)
    );
    arm.role(
        &Role {
            scope: &rg,
            name: &role_name,
            actions: &[PEER_ACTION.to_string()],
            assignable: std::slice::from_ref(&rg),
            at: std::slice::from_ref(&vnet),
        },
        principal,
    )
    .await?;
    outln!("Culvert's application may peer with {vnet}");
    let ours = format!("{}/virtualNetworkPeerings/culvert-{name}", azure.vnet_id);
    if arm.get(&ours, NETWORK).await?.is_none() {
        outln!(
            "Culvert's side of {name} does not exist yet: run this again once `culvert peering get {name} --env {env}` says PENDING_PEER"
        );
        return Ok(());
    }
    arm.put(
        &format!("{vnet}/virtualNetworkPeerings/{name}"),
        NETWORK,
        &json!({"properties": {"allowVirtualNetworkAccess": true, "remoteVirtualNetwork": {"id": azure.vnet_id}}}),
    )
    .await?;
    outln!(
        "peered {vnet} back to {}; next: culvert peering get {name} --env {env}",
        azure.vnet_id
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_map_to_stable_distinct_guids() {
        let a = guid_of("role-a");
        assert_eq!(a, guid_of("role-a"));
        assert_ne!(a, guid_of("role-b"));
        assert_eq!(a.get_version_num(), 4);
    }
}

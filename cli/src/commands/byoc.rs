//! Azure environments: `culvert env bootstrap|databases|pause|resume|upgrade`,
//! `culvert connector network|network-steps` and `culvert peering ...`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::api::Api;
use crate::exit::{Failure, Kind};
use crate::output::{Output, Table, fields, outln};
use crate::resolve;

/// `culvert env bootstrap`: write the environment's Terraform bundle.
pub async fn bootstrap(api: &Api, env: &str, out: &PathBuf) -> Result<()> {
    let id = resolve::environment(api, env).await?;
    let a = api
        .get::<Value>(&format!("/v1/environments/{id}/bootstrap"))
        .await?;
    if api.output == Output::Json {
        outln!("{}", a.raw.get());
        return Ok(());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let files = a.value["files"].as_object().cloned().unwrap_or_default();
    for (name, text) in &files {
        if name.contains('/') || name.contains("..") {
            return Err(Failure::new(
                Kind::Other,
                format!("the bundle names an unsafe file {name:?}"),
            )
            .into());
        }
        let path = out.join(name);
        std::fs::write(&path, text.as_str().unwrap_or_default())
            .with_context(|| format!("cannot write {}", path.display()))?;
        outln!("wrote {}", path.display());
    }
    eprintln!(
        "next: cd {} && az login && terraform init && terraform apply; then `culvert env wait {env}`",
        out.display()
    );
    Ok(())
}

fn databases_table(v: &Value) -> String {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no database servers in the environment's resource group\n".into();
    }
    let mut t = Table::new(&[
        "KIND",
        "NAME",
        "HOST",
        "PORT",
        "VERSION",
        "STATE",
        "CONNECTOR TYPE",
    ]);
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for d in &items {
        t.row(vec![
            s(&d["kind"]),
            s(&d["name"]),
            s(&d["host"]),
            d["port"].to_string(),
            s(&d["version"]),
            s(&d["state"]),
            s(&d["connector_type"]),
        ]);
    }
    t.render()
}

/// `culvert env databases`.
pub async fn databases(api: &Api, env: &str) -> Result<()> {
    let id = resolve::environment(api, env).await?;
    let a = api
        .get::<Value>(&format!("/v1/environments/{id}/databases"))
        .await?;
    api.show(&a, databases_table);
    Ok(())
}

/// `culvert env pause|resume|upgrade`.
pub async fn compute(api: &Api, env: &str, action: &str, version: Option<String>) -> Result<()> {
    let id = resolve::environment(api, env).await?;
    let body = match version {
        Some(v) => json!({"version": v}),
        None => json!({}),
    };
    let a = api
        .post::<_, Value>(&format!("/v1/environments/{id}/{action}"), &body)
        .await?;
    api.show(&a, |_| format!("{action} of the agents of {env} queued\n"));
    Ok(())
}

/// `culvert connector network` options.
#[derive(Debug, Args)]
pub struct Network {
    /// Connector name or id.
    pub name: String,
    /// Environment of the connector (when the name is not unique).
    #[arg(long)]
    pub env: Option<String>,
    /// Resource id of the network security group in front of the database.
    #[arg(long)]
    pub db_nsg_id: String,
    /// Address prefix of the database's subnet, e.g. 10.0.2.0/24.
    #[arg(long)]
    pub db_subnet_prefix: String,
}

/// The id of connector `name` (of environment `env` when given).
pub(crate) async fn connector_id(api: &Api, name: &str, env: Option<&str>) -> Result<uuid::Uuid> {
    let env = match env {
        Some(e) => Some(resolve::environment(api, e).await?),
        None => None,
    };
    resolve::connector(api, name, env).await
}

/// `culvert connector network`: record where the database sits.
pub async fn network(api: &Api, n: Network) -> Result<()> {
    let id = connector_id(api, &n.name, n.env.as_deref()).await?;
    let body = json!({"db_nsg_id": n.db_nsg_id, "db_subnet_prefix": n.db_subnet_prefix});
    let a = api
        .call::<_, Value>(
            axum::http::Method::PUT,
            &format!("/v1/connectors/{id}/network"),
            Some(&body),
            Default::default(),
        )
        .await?;
    api.show(&a, |_| {
        format!(
            "recorded; see the steps with `culvert connector network-steps {}`\n",
            n.name
        )
    });
    Ok(())
}

/// `culvert connector network-steps`: the pre-filled script and what is still missing.
pub async fn network_steps(
    api: &Api,
    name: &str,
    env: Option<&str>,
    script_only: bool,
) -> Result<()> {
    let id = connector_id(api, name, env).await?;
    let a = api
        .get::<Value>(&format!("/v1/connectors/{id}/network"))
        .await?;
    if api.output == Output::Json {
        outln!("{}", a.raw.get());
        return Ok(());
    }
    outln!("{}", a.value["script"].as_str().unwrap_or_default());
    if script_only {
        return Ok(());
    }
    let missing = a.value["missing"].as_array().cloned().unwrap_or_default();
    if missing.is_empty() {
        eprintln!("all rules are in place; validate with `culvert connector validate {name}`");
    } else {
        for m in &missing {
            eprintln!("missing: {}", m.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// `culvert peering ...`: VNet peerings between an environment and a database's VNet.
#[derive(Debug, Subcommand)]
pub enum PeeringCommand {
    /// Ask for a peering with a VNet in another subscription or tenant.
    Create(PeeringCreate),
    /// Show a peering connection, its state and the peer's steps.
    Get {
        /// Environment name or id.
        #[arg(long)]
        env: String,
        /// Connection name.
        name: String,
    },
    /// List an environment's peering connections.
    List {
        /// Environment name or id.
        #[arg(long)]
        env: String,
    },
    /// Delete a peering connection (and Culvert's side of the peering).
    Delete {
        /// Environment name or id.
        #[arg(long)]
        env: String,
        /// Connection name.
        name: String,
    },
}

/// `culvert peering create`.
#[derive(Debug, Args)]
pub struct PeeringCreate {
    /// Connection name: lowercase letters, digits and `-`.
    pub name: String,
    /// Environment name or id.
    #[arg(long)]
    pub env: String,
    /// Subscription of the peer VNet.
    #[arg(long)]
    pub peer_subscription: String,
    /// Entra tenant of the peer.
    #[arg(long)]
    pub peer_tenant: String,
    /// Resource group of the peer VNet.
    #[arg(long)]
    pub peer_resource_group: String,
    /// Name of the peer VNet.
    #[arg(long)]
    pub peer_vnet: String,
    /// Application id the peer created (peering guide step 2).
    #[arg(long)]
    pub peer_app_id: String,
}

fn connection_detail(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = fields(&[
        ("name", s("name")),
        ("state", s("state")),
        ("reason", s("reason")),
        ("peer subscription", s("peer_subscription_id")),
        ("peer tenant", s("peer_tenant_id")),
        ("peer resource group", s("peer_resource_group")),
        ("peer vnet", s("peer_vnet")),
        ("peer app id", s("peer_app_id")),
    ]);
    if matches!(
        v["state"].as_str(),
        Some("APPROVED" | "PENDING_PEER" | "REJECTED_BY_PEER")
    ) {
        out.push_str("\nsteps for the peer side:\n");
        out.push_str(v["peer_steps"].as_str().unwrap_or_default());
        out.push('\n');
    }
    out
}

fn connections_table(v: &Value) -> String {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no peering connections; create one with `culvert peering create`\n".into();
    }
    let mut t = Table::new(&["NAME", "STATE", "PEER VNET", "REASON"]);
    for c in &items {
        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
        t.row(vec![
            s("name"),
            s("state"),
            format!(
                "{}/{}/{}",
                s("peer_subscription_id"),
                s("peer_resource_group"),
                s("peer_vnet")
            ),
            s("reason"),
        ]);
    }
    t.render()
}

/// Run a `peering` command.
pub async fn peering(api: &Api, cmd: PeeringCommand) -> Result<()> {
    match cmd {
        PeeringCommand::Create(c) => {
            let id = resolve::environment(api, &c.env).await?;
            let body = json!({
                "name": c.name,
                "peer_subscription_id": c.peer_subscription,
                "peer_tenant_id": c.peer_tenant,
                "peer_resource_group": c.peer_resource_group,
                "peer_vnet": c.peer_vnet,
                "peer_app_id": c.peer_app_id,
            });
            let a = api
                .create::<_, Value>(&format!("/v1/environments/{id}/network-connections"), &body)
                .await?;
            api.show(&a, connection_detail);
        }
        PeeringCommand::Get { env, name } => {
            let id = resolve::environment(api, &env).await?;
            let a = api
                .get::<Value>(&format!("/v1/environments/{id}/network-connections/{name}"))
                .await?;
            api.show(&a, connection_detail);
        }
        PeeringCommand::List { env } => {
            let id = resolve::environment(api, &env).await?;
            let a = api
                .get::<Value>(&format!("/v1/environments/{id}/network-connections"))
                .await?;
            api.show(&a, connections_table);
        }
        PeeringCommand::Delete { env, name } => {
            let id = resolve::environment(api, &env).await?;
            api.delete(&format!("/v1/environments/{id}/network-connections/{name}"))
                .await?;
            if api.output == Output::Table {
                outln!("deleted peering connection {name}");
            }
        }
    }
    Ok(())
}

//! `culvert env`: environments, where agents run.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{ArgGroup, Args, Subcommand};
use culvert_control_api::environments::{
    AzureSettings, Environment, EnvironmentCreate, EnvironmentState, EnvironmentUpdate, Provider,
};

use crate::api::Api;
use crate::exit::{Failure, Kind};
use crate::output::outln;
use crate::output::{self, Output, Table, fields};
use crate::resolve;

/// `culvert env ...`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment: `--local` (agents on this machine) or `--azure` (your subscription).
    Create(Create),
    /// List environments.
    List,
    /// Show one environment.
    Get {
        /// Name or id.
        name: String,
    },
    /// Change how many agents run.
    Scale {
        /// Name or id.
        name: String,
        /// Agents to run (1 to 32).
        agents: u32,
    },
    /// Delete an environment (it must have no connectors).
    Delete {
        /// Name or id.
        name: String,
    },
    /// Write the Terraform bundle that bootstraps an Azure environment.
    Bootstrap {
        /// Name or id.
        name: String,
        /// Directory to write main.tf, terraform.tfvars and README.md into.
        #[arg(long, default_value = "culvert-bootstrap")]
        out: std::path::PathBuf,
    },
    /// List the database servers in an Azure environment's resource group.
    Databases {
        /// Name or id.
        name: String,
    },
    /// Deallocate an Azure environment's agents (no compute cost until resumed).
    Pause {
        /// Name or id.
        name: String,
    },
    /// Start an Azure environment's deallocated agents.
    Resume {
        /// Name or id.
        name: String,
    },
    /// Move an Azure environment's agents to another agent version.
    Upgrade {
        /// Name or id.
        name: String,
        /// Agent version (default: the control plane's current one).
        #[arg(long)]
        version: Option<String>,
    },
    /// Wait until an environment reaches a state.
    Wait {
        /// Name or id.
        name: String,
        /// State to wait for.
        #[arg(long, default_value = "ready", value_parser = parse_state)]
        state: EnvironmentState,
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn parse_state(s: &str) -> Result<EnvironmentState, String> {
    EnvironmentState::parse(s).ok_or_else(|| {
        format!("{s:?} is not a state; use pending_bootstrap, registering, ready or error")
    })
}

/// `culvert env create`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("provider").required(true).args(["local", "azure"])))]
pub struct Create {
    /// Name: lowercase letters, digits and `-`.
    pub name: String,
    /// Agents run as processes on this machine (needs `culvert local up`).
    #[arg(long)]
    pub local: bool,
    /// Agents run in your Azure subscription's VNet.
    #[arg(long)]
    pub azure: bool,
    /// Subscription id (with --azure).
    #[arg(long, conflicts_with = "local", required_if_eq("azure", "true"))]
    pub subscription: Option<String>,
    /// Region, for example eastus2 (with --azure).
    #[arg(long, conflicts_with = "local", required_if_eq("azure", "true"))]
    pub location: Option<String>,
    /// Resource group Culvert deploys into (with --azure).
    #[arg(long, conflicts_with = "local", required_if_eq("azure", "true"))]
    pub resource_group: Option<String>,
    /// Resource id of the VNet the agents join (with --azure).
    #[arg(long, conflicts_with = "local", required_if_eq("azure", "true"))]
    pub vnet_id: Option<String>,
    /// Resource id of a subnet agents run in; repeat for several (with --azure).
    #[arg(
        long = "subnet-id",
        conflicts_with = "local",
        required_if_eq("azure", "true")
    )]
    pub subnet_ids: Vec<String>,
    /// Resource id of an existing Key Vault (with --azure; a new one is created otherwise).
    #[arg(long, conflicts_with = "local")]
    pub key_vault_id: Option<String>,
    /// Agents to run (1 to 32, default 1).
    #[arg(long)]
    pub agents: Option<u32>,
}

impl Create {
    /// The request body.
    pub fn body(&self) -> EnvironmentCreate {
        let azure = self.azure.then(|| AzureSettings {
            subscription_id: self.subscription.clone().unwrap_or_default(),
            location: self.location.clone().unwrap_or_default(),
            resource_group: self.resource_group.clone().unwrap_or_default(),
            vnet_id: self.vnet_id.clone().unwrap_or_default(),
            subnet_ids: self.subnet_ids.clone(),
            key_vault_id: self.key_vault_id.clone(),
        });
        EnvironmentCreate {
            name: self.name.clone(),
            provider: if self.azure {
                Provider::Azure
            } else {
                Provider::Local
            },
            azure,
            agents: self.agents,
        }
    }
}

fn detail(e: &Environment) -> String {
    let mut pairs = vec![
        ("name", e.name.clone()),
        ("id", e.id.to_string()),
        ("provider", e.provider.as_str().to_string()),
        ("state", e.state.as_str().to_string()),
        ("reason", output::or_dash(e.reason.clone())),
        (
            "agents",
            format!("{} healthy of {} wanted", e.healthy_agents, e.agents),
        ),
    ];
    if let Some(a) = &e.azure {
        pairs.push(("subscription", a.subscription_id.clone()));
        pairs.push(("location", a.location.clone()));
        pairs.push(("resource group", a.resource_group.clone()));
        pairs.push(("vnet", a.vnet_id.clone()));
        pairs.push(("subnets", a.subnet_ids.join(", ")));
        pairs.push(("key vault", output::or_dash(a.key_vault_id.clone())));
    }
    pairs.push(("created", output::time(e.created_at)));
    pairs.push(("updated", output::time(e.updated_at)));
    pairs.push(("version", e.version.to_string()));
    fields(&pairs)
}

/// The environments as a table.
pub fn table(envs: &[Environment]) -> String {
    if envs.is_empty() {
        return "no environments; create one with `culvert env create NAME --local`\n".into();
    }
    let now = chrono::Utc::now();
    let mut t = Table::new(&["NAME", "ID", "PROVIDER", "STATE", "AGENTS", "AGE", "REASON"]);
    for e in envs {
        t.row(vec![
            e.name.clone(),
            e.id.to_string(),
            e.provider.as_str().into(),
            e.state.as_str().into(),
            format!("{}/{}", e.healthy_agents, e.agents),
            output::duration((now - e.created_at).num_seconds().max(0) as u64),
            e.reason.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

/// Run an `env` command.
pub async fn run(api: &Api, cmd: EnvCommand) -> Result<()> {
    match cmd {
        EnvCommand::Create(c) => {
            let a = api
                .create::<_, Environment>("/v1/environments", &c.body())
                .await?;
            api.show(&a, detail);
            if api.output == Output::Table && a.value.provider == Provider::Local {
                eprintln!(
                    "wait for its agents: culvert env wait {} --state ready",
                    a.value.name
                );
            }
        }
        EnvCommand::List => {
            let list = api.list_all::<Environment>("/v1/environments", &[]).await?;
            api.show_list(&list, table);
        }
        EnvCommand::Get { name } => {
            let id = resolve::environment(api, &name).await?;
            let a = api
                .get::<Environment>(&format!("/v1/environments/{id}"))
                .await?;
            api.show(&a, detail);
        }
        EnvCommand::Scale { name, agents } => {
            let id = resolve::environment(api, &name).await?;
            let path = format!("/v1/environments/{id}");
            let current = api.get::<Environment>(&path).await?;
            let body = EnvironmentUpdate {
                agents: Some(agents),
            };
            let a = api
                .patch::<_, Environment>(&path, &body, current.etag.as_deref())
                .await?;
            api.show(&a, detail);
        }
        EnvCommand::Delete { name } => {
            let id = resolve::environment(api, &name).await?;
            api.delete(&format!("/v1/environments/{id}")).await?;
            if api.output == Output::Table {
                outln!("deleted environment {name}");
            }
        }
        EnvCommand::Wait {
            name,
            state,
            timeout,
        } => wait(api, &name, state, Duration::from_secs(timeout)).await?,
        EnvCommand::Bootstrap { name, out } => super::byoc::bootstrap(api, &name, &out).await?,
        EnvCommand::Databases { name } => super::byoc::databases(api, &name).await?,
        EnvCommand::Pause { name } => super::byoc::compute(api, &name, "pause", None).await?,
        EnvCommand::Resume { name } => super::byoc::compute(api, &name, "resume", None).await?,
        EnvCommand::Upgrade { name, version } => {
            super::byoc::compute(api, &name, "upgrade", version).await?
        }
    }
    Ok(())
}

async fn wait(api: &Api, name: &str, want: EnvironmentState, timeout: Duration) -> Result<()> {
    let id = resolve::environment(api, name).await?;
    let path = format!("/v1/environments/{id}");
    let deadline = Instant::now() + timeout;
    let mut last_state = None;
    loop {
        let a = api.get::<Environment>(&path).await?;
        let e = &a.value;
        if api.output == Output::Table && last_state != Some(e.state) {
            eprintln!(
                "{}: {} ({}/{} agents healthy){}",
                e.name,
                e.state.as_str(),
                e.healthy_agents,
                e.agents,
                e.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            last_state = Some(e.state);
        }
        if e.state == want {
            api.show(&a, |e| {
                format!("environment {} is {}\n", e.name, e.state.as_str())
            });
            return Ok(());
        }
        if e.state == EnvironmentState::Error {
            return Err(Failure::new(
                Kind::Other,
                format!(
                    "environment {} is in error: {}",
                    e.name,
                    e.reason.as_deref().unwrap_or("no reason given")
                ),
            )
            .into());
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                Kind::Other,
                format!(
                    "environment {} is still {} after {}s, not {}: {}",
                    e.name,
                    e.state.as_str(),
                    timeout.as_secs(),
                    want.as_str(),
                    e.reason.as_deref().unwrap_or("no reason given")
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

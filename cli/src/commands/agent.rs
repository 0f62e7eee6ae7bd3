//! `culvert agent`: the agents of every environment.

use anyhow::Result;
use clap::Subcommand;
use culvert_control_api::agents::{Agent, AgentHealth};

use super::{environment_names, name_or_id};
use crate::api::Api;
use crate::output::{self, Output, Table, fields};
use crate::resolve;

/// `culvert agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List agents.
    List {
        /// Only this environment's (name or id).
        #[arg(long)]
        env: Option<String>,
    },
    /// Show one agent.
    Get {
        /// Id (or name, when unique).
        id: String,
    },
}

fn health(h: AgentHealth) -> &'static str {
    match h {
        AgentHealth::Healthy => "healthy",
        AgentHealth::Unhealthy => "unhealthy",
    }
}

fn list_table(items: &[Agent], envs: &std::collections::HashMap<uuid::Uuid, String>) -> String {
    if items.is_empty() {
        return "no agents\n".into();
    }
    let now = chrono::Utc::now();
    let mut t = Table::new(&[
        "ID",
        "ENVIRONMENT",
        "NAME",
        "HEALTH",
        "PIPELINES",
        "LAST HEARTBEAT",
        "VERSION",
    ]);
    for a in items {
        t.row(vec![
            a.id.to_string(),
            name_or_id(envs, a.environment_id),
            a.name.clone(),
            health(a.health).into(),
            a.pipelines.len().to_string(),
            output::ago(a.last_heartbeat_at, now),
            a.version.clone(),
        ]);
    }
    t.render()
}

fn detail(a: &Agent, env: &str) -> String {
    let now = chrono::Utc::now();
    fields(&[
        ("id", a.id.to_string()),
        ("environment", env.to_string()),
        ("name", a.name.clone()),
        ("version", a.version.clone()),
        ("health", health(a.health).into()),
        (
            "pipelines",
            if a.pipelines.is_empty() {
                "-".into()
            } else {
                a.pipelines
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("registered", output::time(a.registered_at)),
        (
            "last heartbeat",
            format!(
                "{} ({})",
                output::time(a.last_heartbeat_at),
                output::ago(a.last_heartbeat_at, now)
            ),
        ),
    ])
}

/// Run an `agent` command.
pub async fn run(api: &Api, cmd: AgentCommand) -> Result<()> {
    let envs = if api.output == Output::Table {
        environment_names(api).await
    } else {
        Default::default()
    };
    match cmd {
        AgentCommand::List { env } => {
            let filter = match env {
                Some(e) => vec![(
                    "environment_id",
                    resolve::environment(api, &e).await?.to_string(),
                )],
                None => Vec::new(),
            };
            let list = api.list_all::<Agent>("/v1/agents", &filter).await?;
            api.show_list(&list, |items| list_table(items, &envs));
        }
        AgentCommand::Get { id } => {
            let id = resolve::agent(api, &id).await?;
            let a = api.get::<Agent>(&format!("/v1/agents/{id}")).await?;
            api.show(&a, |a| detail(a, &name_or_id(&envs, a.environment_id)));
        }
    }
    Ok(())
}

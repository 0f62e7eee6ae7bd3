//! `culvert`: the command line over the Culvert control plane API, and `culvert local` to run
//! the whole control plane on this machine.

mod api;
mod commands;
mod exit;
mod local;
mod output;
mod resolve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use api::Api;
use commands::agent::AgentCommand;
use commands::api_key::ApiKeyCommand;
use commands::connector::ConnectorCommand;
use commands::env::EnvCommand;
use commands::pipeline::PipelineCommand;
use commands::registry::SigningKeyCommand;
use local::LocalCommand;
use local::state::{Stack, StateDir};
use output::Output;

/// The API a fresh install talks to: `culvert local up`'s default port.
const DEFAULT_API: &str = "http://127.0.0.1:7071/api";

#[derive(Debug, Parser)]
#[command(
    name = "culvert",
    version,
    about = "Culvert: database replication, driven through its control plane"
)]
struct Cli {
    /// API base URL [default: the one `culvert local up` recorded, else http://127.0.0.1:7071/api]
    #[arg(long, global = true, env = "CULVERT_API_URL", value_name = "URL")]
    api: Option<String>,
    /// File holding the API key (CULVERT_API_KEY may hold the key itself) [default: the local stack's admin key]
    #[arg(long, global = true, env = "CULVERT_API_KEY_FILE", value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// State directory of the local stack [default: $HOME/.culvert/local]
    #[arg(long, global = true, env = "CULVERT_HOME", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Environments: where agents run.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Connectors: configured sources and targets.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// VNet peerings between an Azure environment and a database's VNet.
    #[command(subcommand)]
    Peering(commands::byoc::PeeringCommand),
    /// Pipelines: replication from a source to a target.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Agents of the environments.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Keys connector versions must be signed with.
    #[command(subcommand, name = "signing-key")]
    SigningKey(SigningKeyCommand),
    /// Run the control plane on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
}

/// Where the API is and which key to send, from flags, the environment and the local stack.
fn connect(cli: &Cli, state: &StateDir) -> Result<Api> {
    let stack = Stack::load(state).ok().flatten();
    let api = cli
        .api
        .clone()
        .or_else(|| {
            stack
                .as_ref()
                .map(|s| s.api_url.clone())
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_API.to_string());
    let key = if let Some(file) = &cli.api_key_file {
        Some(read_key(file)?)
    } else if let Some(k) = std::env::var("CULVERT_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
    {
        Some(k.trim().to_string())
    } else {
        // The local admin key goes only to the local stack's own API, never to another URL.
        match &stack {
            Some(s)
                if s.api_url.trim_end_matches('/') == api.trim_end_matches('/')
                    && s.admin_key_file.is_file() =>
            {
                Some(read_key(&s.admin_key_file)?)
            }
            _ => None,
        }
    };
    Ok(Api::new(&api, key, cli.output))
}

fn read_key(path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API key file {}", path.display()))?;
    let key = text.trim().to_string();
    if key.is_empty() {
        return Err(exit::Failure::new(
            exit::Kind::Auth,
            format!("the API key file {} is empty", path.display()),
        )
        .into());
    }
    Ok(key)
}

async fn run(cli: Cli) -> (Result<u8>, bool) {
    let state = StateDir::new(cli.state_dir.clone().unwrap_or_else(StateDir::default_root));
    // The customer's side of Azure environments reads the environment through the API.
    if matches!(cli.command, Command::Local(LocalCommand::Azure(_))) {
        let api = match connect(&cli, &state) {
            Ok(a) => a,
            Err(e) => return (Err(e), true),
        };
        let Command::Local(LocalCommand::Azure(cmd)) = cli.command else {
            unreachable!("matched above")
        };
        let result = local::customer::run(&state, &api, cmd).await;
        return (result.map(|_| exit::OK), api.has_key);
    }
    if let Command::Local(cmd) = cli.command {
        return (local::run(state, cmd, cli.output).await, true);
    }
    if let Command::Connector(
        cmd @ (ConnectorCommand::New { .. } | ConnectorCommand::Test { .. }),
    ) = cli.command
    {
        return (connector_dev(cmd, cli.output).await, true);
    }
    let api = match connect(&cli, &state) {
        Ok(a) => a,
        Err(e) => return (Err(e), true),
    };
    let result = match cli.command {
        Command::Env(c) => commands::env::run(&api, c).await,
        Command::Connector(c) => commands::connector::run(&api, c).await,
        Command::Peering(c) => commands::byoc::peering(&api, c).await,
        Command::Pipeline(c) => commands::pipeline::run(&api, c).await,
        Command::Agent(c) => commands::agent::run(&api, c).await,
        Command::ApiKey(c) => commands::api_key::run(&api, c).await,
        Command::SigningKey(c) => commands::registry::run_signing_key(&api, c).await,
        Command::Local(_) => unreachable!("handled above"),
    };
    (result.map(|_| exit::OK), api.has_key)
}

/// `connector new` and `connector test`: local work on a connector project.
async fn connector_dev(cmd: ConnectorCommand, output: Output) -> Result<u8> {
    use commands::connector_dev::{KitArgs, new_project, test_component};
    match cmd {
        ConnectorCommand::New {
            name,
            lang,
            kind,
            dir,
        } => new_project(&name, lang, kind, dir, output).map(|_| exit::OK),
        ConnectorCommand::Test {
            component,
            config,
            max_rows,
            read_rows,
            read_seconds,
            memory_mib,
            cpu_seconds_per_call,
            egress,
            tables,
        } => {
            let args = KitArgs {
                component,
                config,
                max_rows,
                read_rows,
                read_seconds,
                memory_mib,
                cpu_seconds_per_call,
                egress,
                tables,
            };
            let passed = test_component(args, output).await?;
            Ok(if passed { exit::OK } else { exit::OTHER })
        }
        _ => unreachable!("only new and test are local"),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let (result, has_key) = rt.block_on(run(cli));
    // Agents' and children's handles must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code(&e);
            let mut msg = exit::message(&e);
            if code == exit::AUTH && !has_key {
                msg.push_str(
                    "; no API key was given: pass --api-key-file FILE or set CULVERT_API_KEY",
                );
            }
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("culvert").chain(args.iter().copied()))
    }

    #[test]
    fn env_create_needs_exactly_one_provider_and_azure_needs_its_inputs() {
        assert!(parse(&["env", "create", "demo", "--local"]).is_ok());
        assert!(parse(&["env", "create", "demo"]).is_err());
        assert!(parse(&["env", "create", "demo", "--local", "--azure"]).is_err());
        let e = parse(&["env", "create", "demo", "--azure", "--subscription", "s"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(parse(&["env", "create", "demo", "--local", "--vnet-id", "x"]).is_err());
        let ok = parse(&[
            "env",
            "create",
            "prod",
            "--azure",
            "--subscription",
            "s",
            "--location",
            "eastus2",
            "--resource-group",
            "rg",
            "--vnet-id",
            "v",
            "--subnet-id",
            "a",
            "--subnet-id",
            "b",
            "--agents",
            "2",
        ])
        .unwrap();
        let Command::Env(EnvCommand::Create(c)) = ok.command else {
            panic!("not env create")
        };
        let body = c.body();
        assert_eq!(body.azure.unwrap().subnet_ids, vec!["a", "b"]);
        assert_eq!(body.agents, Some(2));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let c = parse(&["env", "list", "--output", "json", "--api", "http://x/api"]).unwrap();
        assert_eq!(c.output, Output::Json);
        assert_eq!(c.api.as_deref(), Some("http://x/api"));
        assert!(parse(&["--output", "yaml", "env", "list"]).is_err());
    }

    #[test]
    fn connector_flags_parse_values() {
        let c = parse(&[
            "connector",
            "create",
            "src",
            "--env",
            "demo",
            "--type",
            "postgres-source",
            "--set",
            "port=5432",
            "--set",
            "host=db",
            "--secret-env",
            "password=PGPASSWORD",
        ])
        .unwrap();
        let Command::Connector(ConnectorCommand::Create {
            set, secret_env, ..
        }) = c.command
        else {
            panic!("not connector create")
        };
        assert_eq!(set[0], ("port".to_string(), serde_json::json!(5432)));
        assert_eq!(
            secret_env[0],
            ("password".to_string(), "PGPASSWORD".to_string())
        );
        assert!(
            parse(&[
                "connector",
                "create",
                "x",
                "--env",
                "e",
                "--type",
                "t",
                "--set",
                "novalue"
            ])
            .is_err()
        );
    }

    #[test]
    fn the_stacks_admin_key_goes_only_to_its_own_api() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf());
        state.create().unwrap();
        std::fs::write(state.admin_key(), "cvk_secret\n").unwrap();
        let stack = Stack {
            api_url: "http://127.0.0.1:7999/api".into(),
            admin_key_file: state.admin_key(),
            ..Stack::default()
        };
        std::fs::write(state.stack_json(), serde_json::to_string(&stack).unwrap()).unwrap();
        // A key in the environment would take precedence; the check below needs none.
        if std::env::var_os("CULVERT_API_KEY").is_some() {
            return;
        }
        let local = parse(&["env", "list"]).unwrap();
        let api = connect(&local, &state).unwrap();
        assert_eq!(api.base(), "http://127.0.0.1:7999/api");
        assert!(api.has_key);
        let remote = parse(&["env", "list", "--api", "https://culvert.example.com/api"]).unwrap();
        let api = connect(&remote, &state).unwrap();
        assert!(!api.has_key);
    }
}

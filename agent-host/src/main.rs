//! `culvert-agent`: run replication pipelines with sandboxed WebAssembly connectors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use culvert_agent_host::config::PipelineConfig;
use culvert_agent_host::connectors;
use culvert_agent_host::engine::ConnectorEngine;
use culvert_agent_host::metrics::{self, Metrics};
use culvert_agent_host::pipeline::{self, Sides};
use culvert_agent_host::progress::{self, Progress};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "culvert-agent",
    version,
    about = "Runs Culvert replication pipelines"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Where compiled components are cached.
    #[arg(long, global = true, env = "CULVERT_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one pipeline until SIGINT or SIGTERM.
    Run {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
        /// Serve Prometheus metrics on this address, for example 127.0.0.1:9187.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Seconds between progress lines on stderr (0 turns them off).
        #[arg(long, default_value_t = 2)]
        progress_every: u64,
    },
    /// Check that both ends of a pipeline are reachable and correctly set up.
    Check {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
    },
    /// Copy tables again while changes keep streaming; rebuilds a lost replication slot.
    Resync {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
        /// Only this table (schema.name); repeat for several. Default: every selected table.
        #[arg(long = "table")]
        tables: Vec<String>,
    },
    /// Run as a managed agent: register with the control plane and run what it assigns.
    Agent {
        /// The control plane's API base URL, for example http://127.0.0.1:7071/api.
        #[arg(long, env = "CULVERT_CONTROL_PLANE")]
        control_plane: String,
        /// The environment this agent belongs to.
        #[arg(long, env = "CULVERT_ENVIRONMENT")]
        environment: uuid::Uuid,
        /// File holding the environment's registration token.
        #[arg(
            long,
            env = "CULVERT_TOKEN_FILE",
            required_unless_present = "registration_token"
        )]
        token_file: Option<PathBuf>,
        /// The environment's registration token itself (instances of a scale set get it in
        /// their environment).
        #[arg(
            long,
            env = "CULVERT_REGISTRATION_TOKEN",
            hide_env_values = true,
            conflicts_with = "token_file"
        )]
        registration_token: Option<String>,
        /// Where the agent keeps its credential and its pipelines' buffers.
        #[arg(long, env = "CULVERT_STATE_DIR")]
        state_dir: PathBuf,
        /// PEM private key that opens connector secrets sealed for this environment.
        #[arg(long, conflicts_with = "key_vault")]
        sealing_key: Option<PathBuf>,
        /// The environment's Key Vault URL (https://NAME.vault.azure.net): opens connector
        /// secrets and wraps buffer keys with this agent's identity (CULVERT_AZURE_CREDENTIAL,
        /// CULVERT_AZURE_CLIENT_ID; a managed identity by default).
        #[arg(long, env = "CULVERT_KEY_VAULT")]
        key_vault: Option<String>,
        /// Base URL of the pipelines' buffers, e.g. https://ACCOUNT.blob.core.windows.net/culvert-buffer
        /// (default: the state directory).
        #[arg(long, env = "CULVERT_BUFFER_URL")]
        buffer_url: Option<String>,
        /// Name shown in the control plane (default: the host name).
        #[arg(long, env = "CULVERT_AGENT_NAME")]
        name: Option<String>,
        /// Serve Prometheus metrics on this address.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Run one connector validation for the control plane and exit (validation containers).
    Validate {
        /// The control plane's API base URL.
        #[arg(long, env = "CULVERT_CONTROL_PLANE")]
        control_plane: String,
        /// The validation to run.
        #[arg(long)]
        validation: uuid::Uuid,
        /// Its one-time token.
        #[arg(long, env = "CULVERT_VALIDATION_TOKEN", hide_env_values = true)]
        token: String,
        /// The environment's Key Vault URL; opens connector secrets with this process's identity.
        #[arg(long, env = "CULVERT_KEY_VAULT")]
        key_vault: Option<String>,
        /// PEM private key that opens connector secrets (local environments).
        #[arg(long, conflicts_with = "key_vault")]
        sealing_key: Option<PathBuf>,
        /// Scratch directory (default: a new temporary directory).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// List the connectors built into this agent.
    Connectors {
        /// Print each connector's configuration schema as JSON (`[{name, kind, spec}]`).
        #[arg(long)]
        specs: bool,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CULVERT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,wasmtime=warn,cranelift=warn,typespec_client_core=warn,azure_core=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn engine(cache_dir: Option<PathBuf>) -> Result<ConnectorEngine> {
    let dir = cache_dir
        .or_else(|| dirs::cache_dir().map(|d| d.join("culvert").join("components")))
        .unwrap_or_else(|| std::env::temp_dir().join("culvert-components"));
    ConnectorEngine::new(&dir)
}

/// Serve Prometheus metrics on `addr` in the background; an address that cannot be bound
/// is an error now rather than a log line later.
fn serve_metrics(metrics: &Metrics, addr: std::net::SocketAddr) -> Result<()> {
    drop(
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for metrics on {addr}"))?,
    );
    let m = metrics.clone();
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(m, addr).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping after the current batch");
    let _ = tx.send(true);
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Connectors { specs } => {
            if !specs {
                for name in connectors::first_party_names() {
                    println!("{name}");
                }
                return Ok(());
            }
            // Both first-party connectors, through the same sandbox path pipelines use.
            let cfg = PipelineConfig::parse(
                "name = \"specs\"\n[source]\nconnector = \"postgres-source\"\n[target]\nconnector = \"postgres-target\"\n[buffer]\nurl = \"file:///nonexistent\"\n",
            )?;
            let sides = Sides::load(cfg, engine(cli.cache_dir)?, Metrics::new())?;
            let (source, target) = sides.specs().await?;
            let parse = |s: &str| {
                serde_json::from_str::<serde_json::Value>(s).context("a spec is not JSON")
            };
            let out = serde_json::json!([
                {"name": "postgres-source", "kind": "source", "spec": parse(&source)?},
                {"name": "postgres-target", "kind": "target", "spec": parse(&target)?},
            ]);
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Agent {
            control_plane,
            environment,
            token_file,
            registration_token,
            state_dir,
            sealing_key,
            key_vault,
            buffer_url,
            name,
            metrics_addr,
        } => {
            let metrics = Metrics::new();
            if let Some(addr) = metrics_addr {
                serve_metrics(&metrics, addr)?;
            }
            let name = name.unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "agent".into())
            });
            let opts = culvert_agent_host::managed::Options {
                control_plane,
                environment,
                token: match (registration_token, token_file) {
                    (Some(t), _) => culvert_agent_host::managed::RegistrationToken::Text(t),
                    (None, Some(f)) => culvert_agent_host::managed::RegistrationToken::File(f),
                    (None, None) => unreachable!("clap requires one of them"),
                },
                state_dir,
                sealing_key,
                key_vault,
                buffer_url,
                name,
            };
            let (tx, rx) = watch::channel(false);
            tokio::spawn(shutdown_signal(tx));
            culvert_agent_host::managed::run(opts, engine(cli.cache_dir)?, metrics, rx).await
        }
        Command::Validate {
            control_plane,
            validation,
            token,
            key_vault,
            sealing_key,
            state_dir,
        } => {
            let key = culvert_agent_host::managed::open_secrets_key(
                key_vault.as_deref(),
                sealing_key.as_deref(),
            )?;
            // Without a state directory the scratch files are this run's alone: removed after.
            let scratch = state_dir.is_none();
            let dir = state_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("culvert-validate-{validation}"))
            });
            let passed = culvert_agent_host::managed::validation::run_once(
                &control_plane,
                validation,
                token,
                key,
                dir.clone(),
                engine(cli.cache_dir)?,
            )
            .await;
            if scratch {
                let _ = std::fs::remove_dir_all(&dir);
            }
            if !passed? {
                anyhow::bail!("some checks failed; the control plane has the details");
            }
            Ok(())
        }
        Command::Check { pipeline } => {
            let cfg = PipelineConfig::load(&pipeline)?;
            let sides = Sides::load(cfg, engine(cli.cache_dir)?, Metrics::new())?;
            let results = sides.check().await?;
            let mut failed = false;
            for (side, name, ok, message) in &results {
                failed |= !ok;
                let mark = if *ok { "ok  " } else { "FAIL" };
                println!("{mark} {side:<6} {name:<24} {message}");
            }
            if failed {
                anyhow::bail!("some checks failed; fix them and run check again");
            }
            Ok(())
        }
        Command::Resync { pipeline, tables } => {
            let cfg = PipelineConfig::load(&pipeline)?;
            let mut refs = Vec::with_capacity(tables.len());
            for t in &tables {
                let Some((ns, name)) = t.split_once('.') else {
                    anyhow::bail!(
                        "--table {t}: write the table as schema.name, for example public.orders"
                    );
                };
                refs.push((ns.to_string(), name.to_string()));
            }
            let sides = Sides::load(cfg, engine(cli.cache_dir)?, Metrics::new())?;
            println!("{}", sides.resync(refs).await?);
            Ok(())
        }
        Command::Run {
            pipeline,
            metrics_addr,
            progress_every,
        } => {
            let cfg = PipelineConfig::load(&pipeline)?;
            let name = cfg.name.clone();
            let metrics = Metrics::new();
            if let Some(addr) = metrics_addr {
                serve_metrics(&metrics, addr)?;
            }
            let sides = Arc::new(Sides::load(cfg, engine(cli.cache_dir)?, metrics.clone())?);
            let progress = Arc::new(Progress::default());
            if progress_every > 0 {
                tokio::spawn(progress::report(
                    name.clone(),
                    progress.clone(),
                    Duration::from_secs(progress_every),
                ));
            }
            let (tx, rx) = watch::channel(false);
            tokio::spawn(shutdown_signal(tx));
            pipeline::run(sides, metrics, progress, rx).await?;
            tracing::info!(pipeline = %name, "stopped");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {text}");
            ExitCode::from(1)
        }
    }
}

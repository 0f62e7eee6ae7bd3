//! `culvert-functions`: the control plane's custom handler, plus store maintenance commands.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use culvert_control_api::keys::Role;
use culvert_functions::app::App;
use culvert_functions::settings::Settings;
use culvert_functions::store::Store;

#[derive(Parser)]
#[command(
    name = "culvert-functions",
    version,
    about = "Culvert control plane (Azure Functions custom handler)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the functions on FUNCTIONS_CUSTOMHANDLER_PORT (what the Functions host runs).
    Serve,
    /// Apply the control store migrations and exit.
    Migrate,
    /// Create an admin API key and write it to a file readable only by its owner.
    CreateAdminKey {
        /// What the key is for.
        #[arg(long, default_value = "bootstrap admin")]
        name: String,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// File to write the key to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a new master key version and re-encrypt all sealed configuration under it.
    ///
    /// Safe to run again after a crash part-way: every value stays readable meanwhile, and rows
    /// already under the new version are skipped. With a Key Vault secret this sets a new
    /// secret version, which needs the `set` secret permission.
    RotateMasterKey {
        /// Add no version: finish an interrupted rotation by re-encrypting under the current one.
        #[arg(long)]
        no_new_version: bool,
    },
}

fn port() -> Result<u16> {
    let raw = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .or_else(|_| std::env::var("FUNCTIONS_HTTPWORKER_PORT"))
        .context("FUNCTIONS_CUSTOMHANDLER_PORT is not set; the Functions host sets it (locally: `culvert local up`)")?;
    raw.parse()
        .with_context(|| format!("FUNCTIONS_CUSTOMHANDLER_PORT={raw:?} is not a port number"))
}

async fn serve() -> Result<()> {
    let settings = Settings::from_env()?;
    // Refused here, not on the first request: a handler without master keys can answer nothing.
    settings.master_key()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port()?));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let app = App::new(settings)?;
    // Migrate in the background: the host's readiness probe must not wait for the store.
    let warm = app.clone();
    tokio::spawn(async move {
        let _ = warm.store().await;
    });
    // Installed before serving, so a SIGTERM right after the first answer still drains.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tracing::info!(%addr, "serving functions");
    axum::serve(listener, culvert_functions::router(app))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Migrate => {
            let settings = Settings::from_env()?;
            let applied = Store::new(&settings.control_store)?.migrate().await?;
            println!("applied migrations: {applied:?}");
            Ok(())
        }
        Command::CreateAdminKey { name, days, out } => {
            if !(1..=365).contains(&days) {
                anyhow::bail!("--days must be from 1 to 365");
            }
            let settings = Settings::from_env()?;
            let store = Store::new(&settings.control_store)?;
            store.migrate().await?;
            let conn = store.conn().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let (key, secret) =
                culvert_functions::auth::create_api_key(&conn, &name, Role::Admin, days).await?;
            write_private(&out, &format!("{secret}\n"))?;
            println!(
                "created API key {} ({}), expires {}; written to {}",
                key.id,
                key.prefix,
                key.expires_at,
                out.display()
            );
            Ok(())
        }
        Command::RotateMasterKey { no_new_version } => rotate_master_key(no_new_version).await,
    }
}

async fn rotate_master_key(no_new_version: bool) -> Result<()> {
    let settings = Settings::from_env()?;
    settings.master_key()?;
    let app = App::new(settings)?;
    let keys = &app.master_keys;
    // The version first: a vault secret without one (a new install) gets its first here.
    let version = if no_new_version {
        keys.reload().await?.current().to_string()
    } else {
        keys.add_version().await?
    };
    // Migrations and the sealing of any plaintext left, as for a request.
    app.store().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let counts = culvert_functions::store::at_rest::reencrypt(&app.store, keys, &version).await?;
    println!(
        "re-encrypted {} row(s) under master key version {version} ({} connector(s), {} environment(s), {} idempotency record(s)) from the {}",
        counts.total(),
        counts.connectors,
        counts.environments,
        counts.idempotency_keys,
        keys.describe()
    );
    Ok(())
}

fn write_private(path: &PathBuf, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CULVERT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,typespec_client_core=warn,azure_core=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

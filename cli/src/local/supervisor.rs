//! `culvert local supervise`: starts the control store, Azurite, the local compute provider and
//! the functions runtime, keeps them running, and stops them in order on SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use culvert_control_api::client::Client;
use tokio::sync::watch;

use super::azure_local::{self, ENV_VAULT, MASTER_KEY_SECRET, PLATFORM_VAULT};
use super::azurite::{self, AzuritePorts};
use super::compute::{self, AgentSettings, Compute};
use super::postgres::{self, Postgres};
use super::process::{self, MakeCommand, Supervised};
use super::state::{StackFile, StateDir, write_atomic};
use super::{api_url, app_root};

/// Grace period of the functions runtime after SIGTERM.
const FUNCTIONS_GRACE: Duration = Duration::from_secs(20);
/// Grace period of Azurite after SIGTERM.
const AZURITE_GRACE: Duration = Duration::from_secs(10);

/// What is running, filled in as it starts so a stop midway stops exactly that.
#[derive(Default)]
struct Running {
    postgres: Option<Postgres>,
    azurite: Option<Supervised>,
    azure: Option<Supervised>,
    compute: Option<Arc<Compute>>,
    compute_server: Option<tokio::task::JoinHandle<()>>,
    functions: Option<Supervised>,
}

impl Running {
    async fn stop(&mut self, stack: &StackFile) {
        if let Some(f) = self.functions.take() {
            tracing::info!("stopping the functions runtime");
            f.stop().await;
        }
        if let Some(c) = self.compute.take() {
            tracing::info!("stopping the agents");
            c.stop_all().await;
        }
        if let Some(s) = self.compute_server.take() {
            s.abort();
        }
        if let Some(a) = self.azure.take() {
            tracing::info!("stopping the Azure stand-ins");
            a.stop().await;
        }
        if let Some(a) = self.azurite.take() {
            tracing::info!("stopping Azurite");
            a.stop().await;
        }
        if let Some(pg) = self.postgres.take() {
            tracing::info!("stopping PostgreSQL");
            pg.stop().await;
            stack.set_pid("postgres", None);
        }
    }
}

/// The binaries the stack runs, found before anything starts so a missing one fails fast.
struct Binaries {
    azure_local: PathBuf,
    functions: PathBuf,
    functions_host: PathBuf,
    agent: PathBuf,
}

fn binaries() -> Result<Binaries> {
    Ok(Binaries {
        azure_local: process::workspace_binary("culvert-azure-local")?,
        functions: process::workspace_binary("culvert-functions")?,
        functions_host: process::workspace_binary("culvert-functions-host")?,
        agent: process::workspace_binary("culvert-agent")?,
    })
}

async fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn api_ready(url: &str) -> bool {
    Client::new(url, None)
        .get::<serde_json::Value>("/openapi.json")
        .await
        .is_ok()
}

async fn start(
    state: &StateDir,
    stack: &Arc<StackFile>,
    port: u16,
    running: &mut Running,
) -> Result<()> {
    let bins = binaries()?;
    let url = api_url(port);
    stack.update(|s| {
        s.state_dir = state.root().to_path_buf();
        s.api_url = url.clone();
        s.admin_key_file = state.admin_key();
        s.log_dir = state.logs_dir();
        s.ports.functions = port;
    });

    // a. The control store.
    let pg = Postgres::prepare(state).await?;
    let recorded = stack.get().ports.postgres;
    let pg_port = match pg.running() {
        Some((_, p)) => p,
        None => process::reuse_or_free(recorded)?,
    };
    if recorded != 0 && pg_port != recorded {
        tracing::warn!("PostgreSQL port {recorded} is taken; using {pg_port}");
    }
    let (pg_pid, pg_port) = pg.start(pg_port).await?;
    running.postgres = Some(pg);
    let control_store = postgres::connection_string(pg_port);
    stack.update(|s| {
        s.ports.postgres = pg_port;
        s.pids.insert("postgres".into(), pg_pid);
        s.control_store = control_store.clone();
    });
    if !Postgres::wait_listening(pg_port, Duration::from_secs(30)).await {
        bail!("PostgreSQL does not accept connections on 127.0.0.1:{pg_port}");
    }
    running
        .postgres
        .as_ref()
        .expect("postgres")
        .ensure_database(pg_port)
        .await?;
    tracing::info!(port = pg_port, "PostgreSQL is up");

    // b. Azurite.
    let azurite_bin = azurite::find()?;
    let recorded = stack.get().ports;
    let mut ports = AzuritePorts {
        blob: process::reuse_or_free(recorded.azurite_blob)?,
        queue: process::reuse_or_free(recorded.azurite_queue)?,
        table: process::reuse_or_free(recorded.azurite_table)?,
    };
    // Three fresh ports from the OS can coincide only if one was freed in between; pick again.
    while ports.queue == ports.blob || ports.table == ports.blob || ports.table == ports.queue {
        ports.queue = process::free_port()?;
        ports.table = process::free_port()?;
    }
    stack.update(|s| {
        s.ports.azurite_blob = ports.blob;
        s.ports.azurite_queue = ports.queue;
        s.ports.azurite_table = ports.table;
    });
    std::fs::create_dir_all(state.azurite_dir())?;
    let args = azurite::args(&state.azurite_dir(), ports);
    let make: MakeCommand = Box::new(move || {
        let mut c = tokio::process::Command::new(&azurite_bin);
        c.args(&args);
        Ok(c)
    });
    let s2 = stack.clone();
    running.azurite = Some(Supervised::start(
        "azurite",
        make,
        state.log("azurite"),
        AZURITE_GRACE,
        Box::new(move |pid| s2.set_pid("azurite", pid)),
    ));
    if !wait_until(Duration::from_secs(60), || {
        process::listening(ports.queue) && process::listening(ports.blob)
    })
    .await
    {
        bail!(
            "Azurite did not listen on ports {} and {} within 60 s; see {}",
            ports.queue,
            ports.blob,
            state.log("azurite").display()
        );
    }
    tracing::info!(queue = ports.queue, blob = ports.blob, "Azurite is up");

    // b2. Managed identities and Key Vaults.
    let files = azure_local::Files::new(state);
    let ids = azure_local::identities(&files)?;
    let recorded = stack.get().ports;
    let token_port = process::reuse_or_free(recorded.identity)?;
    let mut vault_ports = (
        process::reuse_or_free(recorded.vault_platform)?,
        process::reuse_or_free(recorded.vault_env)?,
    );
    let mut arm_port = process::reuse_or_free(recorded.arm)?;
    while vault_ports.0 == vault_ports.1
        || token_port == vault_ports.0
        || token_port == vault_ports.1
        || [token_port, vault_ports.0, vault_ports.1].contains(&arm_port)
    {
        vault_ports = (process::free_port()?, process::free_port()?);
        arm_port = process::free_port()?;
    }
    azure_local::write_config(&files, &ids, token_port, vault_ports, arm_port, &bins.agent)?;
    stack.update(|s| {
        s.ports.identity = token_port;
        s.ports.vault_platform = vault_ports.0;
        s.ports.vault_env = vault_ports.1;
        s.ports.arm = arm_port;
    });
    let _ = std::fs::remove_file(files.ready());
    let azure_bin = bins.azure_local.clone();
    let azure_args: Vec<PathBuf> = vec![
        "--state-dir".into(),
        files.state_dir(),
        "--config".into(),
        files.config(),
        "--ready-file".into(),
        files.ready(),
    ];
    let make: MakeCommand = Box::new(move || {
        let mut c = tokio::process::Command::new(&azure_bin);
        c.args(&azure_args);
        Ok(c)
    });
    let s2 = stack.clone();
    running.azure = Some(Supervised::start(
        "azure stand-ins",
        make,
        state.log("azure"),
        AZURITE_GRACE,
        Box::new(move |pid| s2.set_pid("azure", pid)),
    ));
    if !wait_until(Duration::from_secs(30), || files.ready().exists()).await {
        bail!(
            "the Azure stand-ins did not start within 30 s; see {}",
            state.log("azure").display()
        );
    }
    let endpoints =
        azure_local::endpoints(&files).context("the Azure stand-ins' ready file is unreadable")?;
    azure_local::bootstrap(&ids, &endpoints).await?;
    azure_local::culvert_side(&ids, &endpoints).await?;
    let env_vault = endpoints.vault_https(ENV_VAULT)?;
    let platform_vault = endpoints.vault_https(PLATFORM_VAULT)?;
    tracing::info!(identity = %endpoints.identity_endpoint, %env_vault, %platform_vault, "Azure stand-ins are up");

    // c. The first admin key.
    if !state.admin_key().exists() {
        let out = tokio::process::Command::new(&bins.functions)
            .args(["create-admin-key", "--name", "local admin", "--out"])
            .arg(state.admin_key())
            .env("CULVERT_CONTROL_STORE", &control_store)
            .env(
                "CULVERT_MASTER_KEY_SECRET_URL",
                format!("{platform_vault}/secrets/{MASTER_KEY_SECRET}"),
            )
            .envs(azure_local::identity_env(
                &ids,
                &endpoints,
                &ids.control_plane,
            ))
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("cannot run culvert-functions create-admin-key")?;
        if !out.status.success() {
            bail!(
                "creating the admin key failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tracing::info!("admin key written to {}", state.admin_key().display());
    }

    // d. The local compute provider.
    let compute = Compute::new(AgentSettings {
        state: state.clone(),
        agent_bin: bins.agent.clone(),
        api_url: url.clone(),
        stack: stack.clone(),
        agent_args: vec![
            "--key-vault".into(),
            env_vault.clone(),
            "--buffer-url".into(),
            format!(
                "http://127.0.0.1:{}/{}/culvert-buffers",
                ports.blob,
                azurite::ACCOUNT
            ),
        ],
        agent_env: azure_local::identity_env(&ids, &endpoints, &ids.agent),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen for the local compute provider")?;
    let compute_port = listener.local_addr()?.port();
    let router = compute::router(compute.clone());
    running.compute_server = Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the local compute provider stopped: {e}");
        }
    }));
    running.compute = Some(compute.clone());
    stack.update(|s| s.ports.compute = compute_port);
    tracing::info!(port = compute_port, "local compute provider is up");

    // e. The app root.
    app_root::write(&state.app_dir(), &bins.functions)?;

    // f. The functions runtime.
    if !process::port_free(port) {
        bail!("port {port} is in use; choose another with `culvert local up --port PORT`");
    }
    let host = bins.functions_host.clone();
    let app = state.app_dir();
    let mut env: Vec<(String, String)> = vec![
        (
            "AzureWebJobsStorage".into(),
            azurite::connection_string(ports),
        ),
        ("CULVERT_CONTROL_STORE".into(), control_store.clone()),
        ("CULVERT_PUBLIC_URL".into(), url.clone()),
        ("CULVERT_LOCAL_KEY_VAULT_URL".into(), env_vault.clone()),
        (
            "CULVERT_MASTER_KEY_SECRET_URL".into(),
            format!("{platform_vault}/secrets/{MASTER_KEY_SECRET}"),
        ),
        (
            "CULVERT_LOCAL_COMPUTE_URL".into(),
            format!("http://127.0.0.1:{compute_port}"),
        ),
    ];
    env.extend(azure_local::identity_env(
        &ids,
        &endpoints,
        &ids.control_plane,
    ));
    env.extend(azure_local::byoc_env(&ids, &endpoints, &bins.agent));
    let make: MakeCommand = Box::new(move || {
        let mut c = tokio::process::Command::new(&host);
        c.arg("--app-root")
            .arg(&app)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        // CULVERT_HEARTBEAT_SECONDS and CULVERT_LEASE_SECONDS pass through with the rest of
        // the supervisor's environment.
        c.envs(env.iter().map(|(k, v)| (k, v)));
        Ok(c)
    });
    let s2 = stack.clone();
    running.functions = Some(Supervised::start(
        "functions runtime",
        make,
        state.log("functions"),
        FUNCTIONS_GRACE,
        Box::new(move |pid| s2.set_pid("functions_host", pid)),
    ));
    let ready_by = Instant::now() + Duration::from_secs(120);
    while !api_ready(&url).await {
        if Instant::now() >= ready_by {
            bail!(
                "the functions runtime did not answer {url}/openapi.json within 120 s; see {}",
                state.log("functions").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tracing::info!(%url, "functions runtime is up");

    // Agents last: they register with the API as soon as they start.
    let restored = compute.restore().await?;
    if restored > 0 {
        tracing::info!("restarted {restored} agent(s) of earlier environments");
    }
    Ok(())
}

/// Ends when SIGTERM or SIGINT arrives.
fn shutdown_signal() -> Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Run the stack in the foreground until SIGTERM or SIGINT.
pub async fn run(state: StateDir, port: u16) -> Result<()> {
    // Detach from the terminal of `culvert local up`; fails harmlessly when run by hand in a
    // shell (it is then a process-group leader) and stays in that terminal.
    let _ = nix::unistd::setsid();
    let mut stop = shutdown_signal()?;
    state.create()?;
    let me = std::process::id();
    if let Some(other) = super::running_supervisor(&state)
        && other != me
    {
        bail!(
            "a supervisor (pid {other}) already runs for {}",
            state.root().display()
        );
    }
    write_atomic(&state.pid_file(), &format!("{me}\n"), 0o644)?;
    let stack = Arc::new(StackFile::open(&state)?);
    let recorded = stack.get().pids;
    for component in super::stop_leftovers(&state, &recorded, false).await {
        tracing::warn!("stopped {component} left over from an earlier run");
    }
    for component in recorded
        .keys()
        .filter(|k| !matches!(k.as_str(), "supervisor" | "postgres"))
    {
        stack.set_pid(component, None);
    }
    stack.update(|s| {
        s.ready = false;
        s.pids.insert("supervisor".into(), me);
    });
    tracing::info!(pid = me, state = %state.root().display(), "supervisor starting");

    let mut running = Running::default();
    let outcome = tokio::select! {
        r = start(&state, &stack, port, &mut running) => Some(r),
        _ = stop.changed() => None,
    };
    let result = match outcome {
        Some(Ok(())) => {
            stack.update(|s| s.ready = true);
            tracing::info!("control plane is up at {}", api_url(port));
            supervise(&mut running, &stack, &mut stop).await;
            Ok(())
        }
        Some(Err(e)) => {
            tracing::error!("{e:#}");
            Err(e)
        }
        None => Ok(()),
    };
    stack.update(|s| s.ready = false);
    running.stop(&stack).await;
    stack.set_pid("supervisor", None);
    let _ = std::fs::remove_file(state.pid_file());
    tracing::info!("supervisor stopped");
    result
}

/// Keep PostgreSQL up (Azurite, agents and the functions runtime restart themselves) until stopped.
async fn supervise(running: &mut Running, stack: &StackFile, stop: &mut watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let Some(pg) = running.postgres.as_ref() else {
            continue;
        };
        if pg.running().is_none() {
            let port = stack.get().ports.postgres;
            tracing::warn!("PostgreSQL is not running; starting it again");
            match pg.start(port).await {
                Ok((pid, _)) => stack.set_pid("postgres", Some(pid)),
                Err(e) => tracing::error!("{e:#}"),
            }
        }
    }
}

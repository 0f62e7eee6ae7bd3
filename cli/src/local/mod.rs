//! `culvert local up | down | status`: the whole control plane on this machine, kept in one
//! state directory so `down` then `up` loses nothing.

pub mod app_root;
pub mod azure_local;
pub mod azurite;
pub mod compute;
pub mod customer;
pub mod postgres;
pub mod process;
pub mod state;
pub mod supervisor;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use culvert_control_api::client::Client;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::exit::{self, Failure, Kind};
use crate::output::{Output, Table, fields};
use crate::output::{out, outln};
use state::{Stack, StateDir};

/// `culvert local ...`.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start the control plane here (PostgreSQL, Azurite, the functions runtime, local agents).
    Up {
        /// Port of the API (the functions runtime).
        #[arg(long, default_value_t = 7071)]
        port: u16,
    },
    /// Stop everything `up` started.
    Down,
    /// Show each component and whether it is up.
    Status,
    /// Play the customer's side of Azure environments on the local Resource Manager.
    #[command(subcommand)]
    Azure(customer::AzureCommand),
    /// Run the stack in the foreground (what `up` starts in the background).
    #[command(hide = true)]
    Supervise {
        /// Port of the API.
        #[arg(long, default_value_t = 7071)]
        port: u16,
    },
}

/// The API base URL of a stack whose functions runtime listens on `port`.
pub fn api_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/api")
}

/// The pid of the supervisor of `state`, if one runs.
pub fn running_supervisor(state: &StateDir) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process::ours(pid, "supervise").then_some(pid)
}

/// Stop what a supervisor that was killed left running, recognised by the state directory in
/// their command lines (two Azurites on one data directory would corrupt it); PostgreSQL too
/// when `postgres` is set (a new supervisor reuses it instead). Returns what was stopped.
pub async fn stop_leftovers(
    state: &StateDir,
    pids: &BTreeMap<String, u32>,
    postgres: bool,
) -> Vec<String> {
    let needle = state.root().display().to_string();
    let mut stopped = Vec::new();
    // Agents and the functions runtime before Azurite and PostgreSQL, as in an orderly stop.
    let order = |k: &str| match k {
        "functions_host" => 0,
        "azurite" => 2,
        "postgres" => 3,
        _ => 1,
    };
    let mut recorded: Vec<(&String, &u32)> = pids
        .iter()
        .filter(|(k, _)| k.as_str() != "supervisor")
        .collect();
    recorded.sort_by_key(|(k, _)| order(k));
    for (component, pid) in recorded {
        if component == "postgres" {
            if postgres && process::ours(*pid, &needle) {
                // SIGINT is PostgreSQL's fast shutdown.
                process::send(*pid, Signal::SIGINT);
                if process::wait_gone(*pid, Duration::from_secs(60)).await {
                    stopped.push(component.clone());
                }
            }
            continue;
        }
        if process::ours(*pid, &needle) {
            process::stop_pid(*pid, Duration::from_secs(20)).await;
            stopped.push(component.clone());
        }
    }
    stopped
}

/// Forget the pids of `stopped` components in `stack.json`.
fn forget(state: &StateDir, stopped: &[String]) -> Result<()> {
    if stopped.is_empty() {
        return Ok(());
    }
    let mut stack = Stack::load(state)?.unwrap_or_default();
    for k in stopped {
        stack.pids.remove(k);
    }
    stack.pids.remove("supervisor");
    let text = serde_json::to_string_pretty(&stack)?;
    state::write_atomic(&state.stack_json(), &format!("{text}\n"), 0o600)
}

/// Describe stopped components for people: "the functions runtime, 2 agent(s), Azurite".
fn describe(components: &[String]) -> String {
    let agents = components
        .iter()
        .filter(|k| k.starts_with("agent:"))
        .count();
    let mut parts = Vec::new();
    if components.iter().any(|k| k == "functions_host") {
        parts.push("the functions runtime".to_string());
    }
    if agents > 0 {
        parts.push(format!("{agents} agent(s)"));
    }
    if components.iter().any(|k| k == "azurite") {
        parts.push("Azurite".into());
    }
    if components.iter().any(|k| k == "postgres") {
        parts.push("PostgreSQL".into());
    }
    parts.join(", ")
}

/// Run a `local` command; returns the exit code.
pub async fn run(state: StateDir, cmd: LocalCommand, output: Output) -> Result<u8> {
    let state = state.absolute()?;
    match cmd {
        LocalCommand::Up { port } => up(&state, port, output).await.map(|_| exit::OK),
        LocalCommand::Down => down(&state).await.map(|_| exit::OK),
        LocalCommand::Status => status(&state, output).await,
        LocalCommand::Supervise { port } => {
            init_logging();
            supervisor::run(state, port).await.map(|_| exit::OK)
        }
        LocalCommand::Azure(_) => unreachable!("needs the API: run from main"),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CULVERT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn print_info(stack: &Stack, output: Output, already: bool) {
    match output {
        Output::Json => outln!(
            "{}",
            json!({
                "api_url": stack.api_url,
                "admin_key_file": stack.admin_key_file,
                "log_dir": stack.log_dir,
                "state_dir": stack.state_dir,
            })
        ),
        Output::Table => {
            outln!(
                "{}",
                if already {
                    "the Culvert control plane is already running"
                } else {
                    "the Culvert control plane is running"
                }
            );
            out!(
                "{}",
                fields(&[
                    ("  API", stack.api_url.clone()),
                    (
                        "  admin key file",
                        stack.admin_key_file.display().to_string()
                    ),
                    ("  logs", stack.log_dir.display().to_string()),
                ])
            );
            outln!("try: culvert env create demo --local && culvert env wait demo");
            outln!("stop it with: culvert local down");
        }
    }
}

async fn up(state: &StateDir, port: u16, output: Output) -> Result<()> {
    if running_supervisor(state).is_some() {
        let stack = Stack::load(state)?.unwrap_or_default();
        print_info(&stack, output, true);
        return Ok(());
    }
    state.create()?;
    if let Some(stack) = Stack::load(state)? {
        let stopped = stop_leftovers(state, &stack.pids, false).await;
        if !stopped.is_empty() {
            eprintln!(
                "stopped what an earlier run left behind: {}",
                describe(&stopped)
            );
        }
        forget(state, &stopped)?;
    }
    if !process::port_free(port) {
        return Err(Failure::new(
            Kind::Other,
            format!("port {port} on 127.0.0.1 is in use; choose another with --port"),
        )
        .into());
    }
    let exe = std::env::current_exe().context("cannot find the culvert executable")?;
    let log = state.log("supervisor");
    let (out, err) = process::log_stdio(&log)?;
    let mut child = std::process::Command::new(exe)
        .arg("--state-dir")
        .arg(state.root())
        .args(["local", "supervise", "--port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("cannot start the supervisor")?;
    eprintln!(
        "starting the control plane in {} ...",
        state.root().display()
    );
    let url = api_url(port);
    let client = Client::new(&url, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(failed_start(
                state,
                &format!("the supervisor exited ({status})"),
            ));
        }
        // `ready` is set once everything, agents included, has started.
        let ready = Stack::load(state).ok().flatten().is_some_and(|s| s.ready);
        if ready
            && client
                .get::<serde_json::Value>("/openapi.json")
                .await
                .is_ok()
        {
            break;
        }
        if Instant::now() >= deadline {
            // Half a stack helps nobody: stop what started; the data stays for the next try.
            process::stop_pid(child.id(), Duration::from_secs(60)).await;
            let _ = child.try_wait();
            return Err(failed_start(
                state,
                &format!("{url}/openapi.json did not answer within 120 s"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stack = Stack::load(state)?.unwrap_or_default();
    print_info(&stack, output, false);
    Ok(())
}

fn failed_start(state: &StateDir, why: &str) -> anyhow::Error {
    let log = state.log("supervisor");
    eprintln!(
        "last lines of {}:\n{}",
        log.display(),
        process::tail(&log, 20)
    );
    Failure::new(
        Kind::Other,
        format!(
            "the control plane did not start: {why}; logs are in {}",
            state.logs_dir().display()
        ),
    )
    .into()
}

async fn down(state: &StateDir) -> Result<()> {
    let before = Stack::load(state)?.unwrap_or_default();
    let Some(pid) = running_supervisor(state) else {
        let stopped = stop_leftovers(state, &before.pids, true).await;
        forget(state, &stopped)?;
        if stopped.is_empty() {
            outln!("nothing was running for {}", state.root().display());
        } else {
            outln!(
                "the supervisor was gone; stopped what it left running: {}",
                describe(&stopped)
            );
        }
        let _ = std::fs::remove_file(state.pid_file());
        return Ok(());
    };
    process::send(pid, Signal::SIGTERM);
    eprintln!("stopping the control plane (supervisor pid {pid}) ...");
    if !process::wait_gone(pid, Duration::from_secs(60)).await {
        return Err(Failure::new(
            Kind::Other,
            format!(
                "the supervisor (pid {pid}) is still running after 60 s; see {}",
                state.log("supervisor").display()
            ),
        )
        .into());
    }
    let components: Vec<String> = before.pids.keys().cloned().collect();
    let what = describe(&components);
    if what.is_empty() {
        outln!("stopped the supervisor");
    } else {
        outln!("stopped {what}");
    }
    outln!(
        "data is kept in {}; `culvert local up` starts it again",
        state.root().display()
    );
    Ok(())
}

async fn status(state: &StateDir, output: Output) -> Result<u8> {
    let supervisor = running_supervisor(state);
    let stack = Stack::load(state)?.unwrap_or_default();
    let needle = state.root().display().to_string();
    let pid_up = |key: &str| {
        stack
            .pids
            .get(key)
            .copied()
            .filter(|p| process::ours(*p, &needle))
    };
    let api_up = pid_up("functions_host").is_some()
        && !stack.api_url.is_empty()
        && Client::new(&stack.api_url, None)
            .get::<serde_json::Value>("/openapi.json")
            .await
            .is_ok();
    let pools = compute::load_specs(&state.compute_json()).unwrap_or_default();
    let mut rows: Vec<(String, bool, String)> = vec![
        (
            "supervisor".into(),
            supervisor.is_some(),
            supervisor.map(|p| format!("pid {p}")).unwrap_or_default(),
        ),
        (
            "postgresql".into(),
            pid_up("postgres").is_some() && process::listening(stack.ports.postgres),
            format!("127.0.0.1:{}", stack.ports.postgres),
        ),
        (
            "azurite".into(),
            pid_up("azurite").is_some() && process::listening(stack.ports.azurite_queue),
            format!(
                "blob {} queue {} table {}",
                stack.ports.azurite_blob, stack.ports.azurite_queue, stack.ports.azurite_table
            ),
        ),
        (
            "compute provider".into(),
            supervisor.is_some() && process::listening(stack.ports.compute),
            format!("http://127.0.0.1:{}", stack.ports.compute),
        ),
        ("functions runtime".into(), api_up, stack.api_url.clone()),
    ];
    for (env, spec) in &pools {
        let alive = (0..spec.agents)
            .filter(|i| pid_up(&compute::pid_key(*env, *i)).is_some())
            .count();
        let label = spec.name.clone().unwrap_or_else(|| env.to_string());
        rows.push((
            format!("agents of {label}"),
            alive as u32 == spec.agents,
            format!("{alive}/{} running", spec.agents),
        ));
    }
    match output {
        Output::Json => {
            let components: Vec<_> = rows
                .iter()
                .map(|(n, up, d)| json!({"component": n, "up": up, "detail": d}))
                .collect();
            outln!(
                "{}",
                json!({"state_dir": state.root(), "running": supervisor.is_some(), "components": components})
            );
        }
        Output::Table => {
            let mut t = Table::new(&["COMPONENT", "STATE", "DETAIL"]);
            for (n, up, d) in &rows {
                t.row(vec![
                    n.clone(),
                    if *up { "up" } else { "down" }.into(),
                    d.clone(),
                ]);
            }
            out!("{}", t.render());
            let leftovers = rows.iter().skip(1).any(|(_, up, _)| *up);
            if supervisor.is_none() && leftovers {
                outln!(
                    "the supervisor is gone but some components still run: `culvert local down` stops them, `culvert local up` restarts everything"
                );
            } else if supervisor.is_none() {
                outln!("not running; start it with `culvert local up`");
            } else {
                outln!("logs: {}", state.logs_dir().display());
            }
        }
    }
    Ok(if supervisor.is_some() {
        exit::OK
    } else {
        exit::UNAVAILABLE
    })
}

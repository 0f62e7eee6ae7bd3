//! `culvert-functions-host --app-root DIR [--listen 127.0.0.1:7071]`: runs a custom-handler Functions app locally.

use culvert_functions_host::{Runtime, RuntimeConfig};
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: culvert-functions-host --app-root DIR [--listen 127.0.0.1:7071]

Runs the Azure Functions app at DIR (host.json plus one folder per function) with its custom handler.
App settings are this process's environment variables. Log level: RUST_LOG (default info).";

#[derive(Debug)]
struct Args {
    app_root: PathBuf,
    listen: SocketAddr,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut app_root = None;
    let mut listen: SocketAddr = "127.0.0.1:7071".parse().expect("default address parses");
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--app-root" => app_root = Some(PathBuf::from(value("--app-root")?)),
            "--listen" => {
                let v = value("--listen")?;
                listen = v.parse().map_err(|_| {
                    format!("--listen: `{v}` is not an address like 127.0.0.1:7071")
                })?;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let app_root = app_root.ok_or("--app-root is required")?;
    Ok(Some(Args { app_root, listen }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

async fn run(args: Args) -> Result<(), culvert_functions_host::RuntimeError> {
    // Installed before the handler starts, so a signal during startup still ends in an orderly exit.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let runtime = tokio::select! {
        r = Runtime::start(RuntimeConfig::new(args.app_root, args.listen)) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {}", runtime.api_base_url());
    let _ = stdout.flush();
    runtime.run_until(shutdown).await
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("culvert-functions-host: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                EnvFilter::new("info,typespec_client_core=warn,azure_core=warn")
            }),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("culvert-functions-host: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let a = parse(&["--app-root", "/app"]).unwrap().unwrap();
        assert_eq!(
            (a.app_root, a.listen.to_string()),
            (PathBuf::from("/app"), "127.0.0.1:7071".to_string())
        );
        let a = parse(&["--app-root=/x", "--listen", "127.0.0.1:0"])
            .unwrap()
            .unwrap();
        assert_eq!(a.listen.port(), 0);
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&[]).unwrap_err().contains("--app-root is required"));
        assert!(
            parse(&["--app-root", "/a", "--listen", "nope"])
                .unwrap_err()
                .contains("not an address")
        );
        assert!(
            parse(&["--bogus"])
                .unwrap_err()
                .contains("unknown argument")
        );
    }
}

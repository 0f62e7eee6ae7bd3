//! `culvert-azure-local --state-dir DIR --config FILE [--ready-file FILE]`
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 2 for bad arguments or config, 1 for runtime failures.

use culvert_azure_local::config::Config;
use culvert_azure_local::server;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: culvert-azure-local --state-dir DIR --config FILE [--ready-file FILE]";

#[derive(Debug)]
struct Args {
    state_dir: PathBuf,
    config: PathBuf,
    ready_file: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Args, String> {
    let (mut state_dir, mut config, mut ready_file) = (None, None, None);
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(OsString::from(v))),
            _ => (arg, None),
        };
        let slot = match flag.as_str() {
            "--state-dir" => &mut state_dir,
            "--config" => &mut config,
            "--ready-file" => &mut ready_file,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        };
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        *slot = Some(PathBuf::from(value));
    }
    Ok(Args {
        state_dir: state_dir.ok_or("--state-dir is required")?,
        config: config.ok_or("--config is required")?,
        ready_file,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("culvert-azure-local: {msg} ({USAGE})");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("culvert-azure-local: {e}");
            return ExitCode::from(2);
        }
    };

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("culvert-azure-local: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, config: Config) -> Result<(), server::ServerError> {
    let stop = termination_signal().map_err(|e| server::ServerError::Serve {
        what: "signal handler".into(),
        message: e.to_string(),
    })?;
    let server = server::start(&config, &args.state_dir).await?;
    if let Some(path) = &args.ready_file {
        server.write_ready_file(path)?;
    }
    server.run_until(stop).await?;
    tracing::info!("stopped");
    Ok(())
}

// Installed before binding so a SIGTERM that arrives right after the ready file appears is
// handled, not fatal.
fn termination_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn flags_with_separate_and_inline_values() {
        let a = args(&["--state-dir", "s", "--config=c.json", "--ready-file", "r"]).unwrap();
        assert_eq!(a.state_dir, PathBuf::from("s"));
        assert_eq!(a.config, PathBuf::from("c.json"));
        assert_eq!(a.ready_file, Some(PathBuf::from("r")));
    }

    #[test]
    fn missing_and_unknown_flags_are_errors() {
        assert!(
            args(&["--config", "c"])
                .unwrap_err()
                .contains("--state-dir")
        );
        assert!(
            args(&["--state-dir", "s", "--config", "c", "--x"])
                .unwrap_err()
                .contains("--x")
        );
        assert!(
            args(&["--state-dir"])
                .unwrap_err()
                .contains("needs a value")
        );
    }
}

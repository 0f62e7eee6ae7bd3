//! Starting, probing and stopping the custom handler process.

use crate::app::HandlerDescription;
use crate::handler_client::HandlerClient;
use crate::settings::AppSettings;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

/// A failure to start or keep the handler running.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The executable could not be started.
    #[error("cannot start handler {}: {source}", path.display())]
    Spawn {
        /// Resolved executable path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No free loopback port for the handler.
    #[error("cannot pick a port for the handler: {0}")]
    Port(#[source] std::io::Error),
    /// The handler did not answer `GET /` in time.
    #[error("handler did not answer GET http://127.0.0.1:{port}/ within {timeout:?}")]
    NotReady {
        /// Handler port.
        port: u16,
        /// How long was waited.
        timeout: Duration,
    },
    /// The handler exited.
    #[error("handler exited ({status})")]
    Exited {
        /// Exit status as text.
        status: String,
    },
}

/// A running handler process.
pub struct HandlerProcess {
    pid: Option<u32>,
    port: u16,
    exit: watch::Receiver<Option<String>>,
}

/// Where the handler executable is, as the host resolves `defaultExecutablePath` and `workingDirectory`.
pub fn resolve_paths(app_root: &Path, desc: &HandlerDescription) -> (PathBuf, PathBuf) {
    let workdir = if desc.working_directory.trim().is_empty() {
        app_root.to_path_buf()
    } else {
        app_root.join(&desc.working_directory)
    };
    (workdir.join(&desc.default_executable_path), workdir)
}

/// Asks the OS for a free loopback port; the small race until the handler binds it is accepted, as the host does.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

impl HandlerProcess {
    /// Starts the handler with every app setting plus `FUNCTIONS_CUSTOMHANDLER_PORT` in its environment.
    pub fn spawn(
        app_root: &Path,
        desc: &HandlerDescription,
        settings: &AppSettings,
    ) -> Result<Self, HandlerError> {
        let port = free_port().map_err(HandlerError::Port)?;
        let (exe, workdir) = resolve_paths(app_root, desc);
        let args: Vec<String> = desc
            .arguments
            .iter()
            .map(|a| settings.expand_lenient(a))
            .collect();
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .current_dir(&workdir)
            .env_clear()
            .envs(settings.iter())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| HandlerError::Spawn {
            path: exe.clone(),
            source,
        })?;
        let pid = child.id();
        tracing::info!(path = %exe.display(), ?args, port, pid, "started handler");

        // Handler output goes to the log, as the host records worker output.
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(BufReader::new(out), false));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(BufReader::new(err), true));
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => describe(s),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = tx.send(Some(status));
        });
        Ok(Self {
            pid,
            port,
            exit: rx,
        })
    }

    /// The loopback port the handler listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The exit status text once the process has ended.
    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process ends, with its exit status.
    pub fn exited(&self) -> impl Future<Output = String> + Send + 'static {
        let mut rx = self.exit.clone();
        async move {
            loop {
                if let Some(s) = rx.borrow_and_update().clone() {
                    return s;
                }
                if rx.changed().await.is_err() {
                    return "unknown (watcher ended)".to_owned();
                }
            }
        }
    }

    /// Polls `GET /` until any HTTP answer; socket errors mean "not ready yet".
    pub async fn wait_ready(
        &self,
        client: &HandlerClient,
        timeout: Duration,
    ) -> Result<(), HandlerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(HandlerError::Exited { status });
            }
            if client.probe().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HandlerError::NotReady {
                    port: self.port,
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited within `grace`.
    pub async fn stop(&self, grace: Duration) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let Some(pid) = self
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw)
        else {
            return;
        };
        if self.exit_status().is_some() {
            return;
        }
        let _ = kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.exited()).await.is_err() {
            tracing::warn!("handler did not stop within {grace:?}; killing it");
            let _ = kill(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.exited()).await;
        }
    }
}

impl Drop for HandlerProcess {
    /// An embedder that drops the runtime without `stop` must not leave the handler behind.
    fn drop(&mut self) {
        if self.exit_status().is_none()
            && let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

async fn forward_lines<R: tokio::io::AsyncBufRead + Unpin>(reader: R, is_stderr: bool) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if is_stderr {
            tracing::info!(target: "handler", stream = "stderr", "{line}");
        } else {
            tracing::info!(target: "handler", stream = "stdout", "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_working_directory() {
        let d = |exe: &str, wd: &str| HandlerDescription {
            default_executable_path: exe.into(),
            working_directory: wd.into(),
            arguments: vec![],
        };
        let root = Path::new("/app");
        assert_eq!(
            resolve_paths(root, &d("handler", "")),
            (PathBuf::from("/app/handler"), PathBuf::from("/app"))
        );
        assert_eq!(
            resolve_paths(root, &d("bin/h", "w")),
            (PathBuf::from("/app/w/bin/h"), PathBuf::from("/app/w"))
        );
        assert_eq!(
            resolve_paths(root, &d("/usr/bin/h", "")).0,
            PathBuf::from("/usr/bin/h")
        );
        assert_eq!(
            resolve_paths(root, &d("h", "/srv")).1,
            PathBuf::from("/srv")
        );
    }
}

//! Processes of the local stack: finding binaries, checking and signalling pids, and keeping a
//! child running with restarts.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A binary of the workspace: next to the running `culvert` (same target directory), else on PATH.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(p) = on_path(name) {
        return Ok(p);
    }
    bail!(
        "{name} was not found next to {} nor on PATH; build it with `cargo build --release --workspace`",
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "culvert".into())
    )
}

/// `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // A zombie still answers signal 0; it is dead for every purpose here.
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(rest) = stat.rsplit(')').next()
        && rest.trim_start().starts_with('Z')
    {
        return false;
    }
    signal::kill(Pid::from_raw(raw), None).is_ok()
}

/// Whether `pid` runs and its command line contains `needle`, so a recycled pid is not mistaken
/// for one of ours.
pub fn ours(pid: u32, needle: &str) -> bool {
    if !alive(pid) {
        return false;
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .contains(needle),
        Err(_) => false,
    }
}

/// Send `sig` to `pid`, ignoring a process that is already gone.
pub fn send(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 0
    {
        let _ = signal::kill(Pid::from_raw(raw), sig);
    }
}

/// Wait until `pid` is gone; false when it still runs after `timeout`.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// SIGTERM `pid`, then SIGKILL after `grace`.
pub async fn stop_pid(pid: u32, grace: Duration) {
    send(pid, Signal::SIGTERM);
    if !wait_gone(pid, grace).await {
        send(pid, Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(5)).await;
    }
}

/// SIGTERM a child, then SIGKILL after `grace`; reaps it.
pub async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        send(pid, Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Whether `port` on 127.0.0.1 can be bound now.
pub fn port_free(port: u16) -> bool {
    port != 0 && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// `recorded` when it is still free, else a new free port.
pub fn reuse_or_free(recorded: u16) -> Result<u16> {
    if port_free(recorded) {
        Ok(recorded)
    } else {
        free_port()
    }
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    port != 0
        && TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_millis(500),
        )
        .is_ok()
}

/// Open `path` for appending (created 0600), for a child's stdout and stderr.
pub fn log_stdio(path: &Path) -> Result<(Stdio, Stdio)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open log {}", path.display()))?;
    let g = f.try_clone()?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

fn note(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(
            f,
            "[culvert {}] {line}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The delay before restarting a child that ran for `uptime`, given the previous delay:
/// doubling from 1 s to 30 s, back to 1 s after a minute of good running.
pub fn next_backoff(previous: Duration, uptime: Duration) -> Duration {
    if uptime >= Duration::from_secs(60) {
        Duration::from_secs(1)
    } else {
        (previous * 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// Builds the command of a kept-running child each time it starts.
pub type MakeCommand = Box<dyn Fn() -> Result<tokio::process::Command> + Send + Sync>;
/// Told the child's pid when it starts and `None` when it ends.
pub type OnPid = Box<dyn Fn(Option<u32>) + Send + Sync>;

/// A child kept running by a task: restarted with backoff when it exits, until stopped.
pub struct Supervised {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Start `make()` now with stdout and stderr appended to `log`, and again whenever it exits.
    pub fn start(
        name: &str,
        make: MakeCommand,
        log: PathBuf,
        grace: Duration,
        on_pid: OnPid,
    ) -> Supervised {
        let (stop, mut stop_rx) = watch::channel(false);
        let label = name.to_string();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::ZERO;
            loop {
                if *stop_rx.borrow() {
                    break;
                }
                let started = Instant::now();
                let spawned = make().and_then(|mut cmd| {
                    let (out, err) = log_stdio(&log)?;
                    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
                    // Its own process group: a terminal's Ctrl-C reaches the supervisor only,
                    // which then stops children in order.
                    cmd.process_group(0);
                    cmd.spawn().with_context(|| format!("cannot start {label}"))
                });
                match spawned {
                    Err(e) => {
                        tracing::error!("{e:#}");
                        note(&log, &format!("{e:#}"));
                    }
                    Ok(mut child) => {
                        let id = child.id().unwrap_or(0);
                        on_pid(Some(id));
                        tracing::info!(pid = id, "{label} started");
                        tokio::select! {
                            status = child.wait() => {
                                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                                on_pid(None);
                                backoff = next_backoff(backoff, started.elapsed());
                                tracing::warn!("{label} exited ({status}); restarting in {}s", backoff.as_secs());
                                note(&log, &format!("{label} exited ({status}); restarting in {}s", backoff.as_secs()));
                            }
                            _ = stop_rx.changed() => {
                                terminate(&mut child, grace).await;
                                on_pid(None);
                                tracing::info!("{label} stopped");
                                break;
                            }
                        }
                    }
                }
                if backoff.is_zero() {
                    backoff = Duration::from_secs(1);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop_rx.changed() => break,
                }
            }
        });
        Supervised { stop, task }
    }

    /// Stop it (SIGTERM, SIGKILL after the grace period) and wait until it is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets_after_a_minute() {
        let s = Duration::from_secs;
        assert_eq!(next_backoff(Duration::ZERO, s(0)), s(1));
        assert_eq!(next_backoff(s(1), s(2)), s(2));
        assert_eq!(next_backoff(s(16), s(2)), s(30));
        assert_eq!(next_backoff(s(30), s(2)), s(30));
        assert_eq!(next_backoff(s(30), s(61)), s(1));
    }

    #[test]
    fn own_pid_is_alive_and_ours() {
        let me = std::process::id();
        assert!(alive(me));
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().to_string();
        assert!(ours(me, &name));
        assert!(!ours(me, "definitely-not-in-the-command-line"));
        assert!(!alive(0));
    }

    #[tokio::test]
    async fn a_kept_child_restarts_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let make: MakeCommand = Box::new(|| {
            let mut c = tokio::process::Command::new("sh");
            c.args(["-c", "echo started; exit 3"]);
            Ok(c)
        });
        let s = Supervised::start(
            "x",
            make,
            log.clone(),
            Duration::from_secs(1),
            Box::new(|_| {}),
        );
        tokio::time::sleep(Duration::from_millis(1600)).await;
        s.stop().await;
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.matches("started").count() >= 2, "{text}");
        assert!(text.contains("exited"), "{text}");

        let make: MakeCommand = Box::new(|| {
            let mut c = tokio::process::Command::new("sleep");
            c.arg("30");
            Ok(c)
        });
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let record = seen.clone();
        let s = Supervised::start(
            "sleeper",
            make,
            log,
            Duration::from_secs(5),
            Box::new(move |p| *record.lock().unwrap() = p),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = seen.lock().unwrap().expect("running");
        assert!(alive(pid));
        let t = Instant::now();
        s.stop().await;
        assert!(!alive(pid));
        assert!(seen.lock().unwrap().is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

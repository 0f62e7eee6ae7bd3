//! Starting and stopping one child process: a clean environment, a working directory, stdout
//! and stderr into one log file, and SIGTERM followed by SIGKILL after a grace period.
//!
//! Children also get SIGTERM from the kernel if the stand-in dies without stopping them
//! (SIGKILL from a test harness), so no agent outlives the stand-in that started it.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// How to run a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment besides `PATH` and `HOME` (the stand-in's own is not inherited).
    pub env: Vec<(String, String)>,
    /// Working directory (created if missing); also `HOME`, and its `tmp/` is `TMPDIR` (the
    /// machine's own `/tmp`, so nothing lands in the host's).
    pub cwd: PathBuf,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// Append to the log rather than start it afresh.
    pub append_log: bool,
}

/// Starts the process.
pub fn spawn(spec: &Spec) -> std::io::Result<Child> {
    let tmp = spec.cwd.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(spec.append_log)
        .write(true)
        .truncate(!spec.append_log)
        .open(&spec.log)?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &spec.cwd)
        .env("TMPDIR", &tmp)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // A safety net: if the supervising task is dropped, the child dies with it.
        .kill_on_drop(true);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and makes only two
    // async-signal-safe system calls (prctl and getppid); it allocates nothing and touches no locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The parent may have died before the signal was armed.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::ErrorKind::Other.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Asks the process to stop with SIGTERM, then kills it after `grace`; returns its exit code.
pub async fn stop(child: &mut Child, grace: Duration) -> i32 {
    if let Some(pid) = child.id() {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => exit_code(status),
        _ => {
            let _ = child.kill().await;
            child.wait().await.map(exit_code).unwrap_or(137)
        }
    }
}

/// The exit code, or 128 + the signal number for a process killed by a signal (as a shell reports it).
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, program: &str, args: &[&str]) -> Spec {
        Spec {
            program: PathBuf::from(program),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("CULVERT_X".into(), "1".into())],
            cwd: dir.join("work"),
            log: dir.join("out.log"),
            append_log: false,
        }
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_exit_codes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(&spec(dir.path(), "/usr/bin/env", &[])).unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(exit_code(status), 0);
        let log = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        assert!(log.contains("CULVERT_X=1"), "{log}");
        assert!(log.contains("HOME="), "{log}");
        assert!(
            log.contains(&format!("TMPDIR={}", dir.path().join("work/tmp").display())),
            "{log}"
        );
        assert!(
            !log.contains("CARGO"),
            "the parent's environment leaked: {log}"
        );
    }

    #[tokio::test]
    async fn stop_terminates_a_long_running_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(&spec(dir.path(), "/bin/sleep", &["30"])).unwrap();
        let code = stop(&mut child, Duration::from_secs(5)).await;
        assert_eq!(code, 128 + 15);
    }
}

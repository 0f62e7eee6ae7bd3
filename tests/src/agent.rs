//! The real `culvert-agent` binary running a pipeline file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Path of a workspace binary built next to the tests.
pub fn binary(name: &str) -> PathBuf {
    // Integration tests run from target/<profile>/deps.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not built; run cargo build --release --workspace first",
        bin.display()
    );
    bin
}

/// Path of the agent binary built next to the tests.
pub fn agent_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CULVERT_AGENT") {
        return PathBuf::from(p);
    }
    binary("culvert-agent")
}

/// A running agent; killed when dropped.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    /// Start `culvert-agent run` on the pipeline text written to `dir/pipeline.toml`.
    pub fn run(dir: &Path, pipeline: &str, extra: &[&str]) -> Agent {
        fs::create_dir_all(dir).unwrap();
        let file = dir.join("pipeline.toml");
        fs::write(&file, pipeline).unwrap();
        let log = dir.join(format!(
            "agent-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(agent_binary())
            .arg("run")
            .arg("--pipeline")
            .arg(&file)
            .args(["--progress-every", "1"])
            .args(extra)
            .env(
                "CULVERT_CACHE_DIR",
                std::env::temp_dir().join("culvert-test-cache"),
            )
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }

    /// Everything the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok().and_then(|s| s.code())
    }

    /// Poll `f` until it holds; fails at once, with the log, if the agent exits.
    pub fn wait_until(&mut self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if f() {
                return;
            }
            if let Some(code) = self.exited() {
                panic!(
                    "agent exited with {code} while waiting for {what}:\n{}",
                    self.log()
                );
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out after {secs} s waiting for {what}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Poll `f` until it reports no problem; fails with its last report and the log.
    pub fn wait_clean(&mut self, secs: u64, what: &str, mut f: impl FnMut() -> Option<String>) {
        let mut last = None;
        let mut check = || {
            last = f();
            last.is_none()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !check() {
            if let Some(code) = self.exited() {
                panic!(
                    "agent exited with {code} while waiting for {what} ({last:?}):\n{}",
                    self.log()
                );
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out after {secs} s waiting for {what}: {}\n{}",
                    last.unwrap_or_default(),
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Exit code if the agent has exited.
    pub fn exited(&mut self) -> Option<i32> {
        let c = self.child.as_mut()?;
        c.try_wait().ok().flatten().map(|s| s.code().unwrap_or(-1))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", self.log());
        }
    }
}

/// A pipeline file replicating `tables` from `src` to `dst`.
pub fn pipeline_toml(
    name: &str,
    src_port: u16,
    src_db: &str,
    dst_port: u16,
    dst_db: &str,
    tables: &[&str],
    buffer: &Path,
) -> String {
    let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"name = "{name}"
batch_rows = 5000

[source]
connector = "postgres-source"
host = "127.0.0.1"
port = {src_port}
user = "postgres"
database = "{src_db}"
tables = [{}]
sslmode = "disable"

[target]
connector = "postgres-target"
host = "127.0.0.1"
port = {dst_port}
user = "postgres"
database = "{dst_db}"
sslmode = "disable"

[buffer]
url = "file://{}"
"#,
        tables.join(", "),
        buffer.display()
    )
}

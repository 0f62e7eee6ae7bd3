//! Harness for end-to-end tests: throwaway PostgreSQL clusters on free loopback ports
//! and the real `culvert-agent` binary.

pub mod agent;
pub mod arm;
pub mod azure;
pub mod azurite;
pub mod bundle;
pub mod cluster;
pub mod connectors;
pub mod stack;

pub use agent::Agent;
pub use cluster::Cluster;

/// Poll `f` every 200 ms until it returns true or `secs` pass.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A fresh scratch directory for one test, removed when dropped unless the test failed
/// (then it stays, with the logs in it, and its path is printed).
pub struct Workdir(std::path::PathBuf);

impl std::ops::Deref for Workdir {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for Workdir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kept the work directory of the failed test: {}",
                self.0.display()
            );
        } else {
            // Clusters and stacks in it hold gigabytes over a whole run; CI disks are finite.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh scratch directory for one test (unique within the run, as every end-to-end
/// test shares one process).
pub fn workdir(name: &str) -> Workdir {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("culvert-e2e-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The server runs as `postgres` when the tests run as root and must read files here.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Workdir(dir)
}

/// Start the agent replicating `tables` from database `app` on `src` into `replica` on
/// `dst`; returns the work directory, the pipeline text (to restart with) and the agent.
pub fn replicate(
    name: &str,
    src: &Cluster,
    dst: &Cluster,
    tables: &[&str],
) -> (Workdir, String, Agent) {
    let (work, pipeline) = pipeline_in_workdir(name, src, dst, tables, "");
    let agent = Agent::run(&work, &pipeline, &[]);
    (work, pipeline, agent)
}

/// A work directory and the text of a pipeline from `app` on `src` to `replica` on
/// `dst`, with extra `[source]` settings.
pub fn pipeline_in_workdir(
    name: &str,
    src: &Cluster,
    dst: &Cluster,
    tables: &[&str],
    source_settings: &str,
) -> (Workdir, String) {
    let work = workdir(name);
    let pipeline = agent::pipeline_toml(
        name,
        src.port,
        "app",
        dst.port,
        "replica",
        tables,
        &work.join("buffer"),
    );
    (work, with_source_settings(&pipeline, source_settings))
}

/// `GET path` from `addr` over plain HTTP/1.1; returns the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Columns of `table` as `name type` lines, in table order.
pub fn columns(c: &Cluster, db: &str, table: &str) -> Result<String, String> {
    c.try_sql(
        db,
        &format!(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
               FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
        ),
    )
}

/// The first difference between `table` at the source (`app`) and the target
/// (`replica`): columns, then rows. `None` when both are the same.
pub fn difference(src: &Cluster, dst: &Cluster, table: &str) -> Option<String> {
    let a = columns(src, "app", table);
    let b = columns(dst, "replica", table);
    if a != b {
        return Some(format!(
            "{table}: columns differ: source {a:?}, target {b:?}"
        ));
    }
    let (a, b) = (src.dump("app", table), dst.dump("replica", table));
    (a != b).then(|| {
        let (sa, sb): (std::collections::HashSet<&str>, std::collections::HashSet<&str>) =
            (a.lines().collect(), b.lines().collect());
        let only_src: Vec<&str> = a.lines().filter(|l| !sb.contains(l)).take(3).collect();
        let only_dst: Vec<&str> = b.lines().filter(|l| !sa.contains(l)).take(3).collect();
        format!(
            "{table}: rows differ: source {} rows, target {} rows; only at the source {only_src:?}; only at the target {only_dst:?}",
            a.lines().count(),
            b.lines().count()
        )
    })
}

/// The first difference among `tables` (see [`difference`]), `None` when all are the same.
pub fn first_difference(src: &Cluster, dst: &Cluster, tables: &[&str]) -> Option<String> {
    tables.iter().find_map(|t| difference(src, dst, t))
}

/// Add settings to the `[source]` section of a pipeline file.
pub fn with_source_settings(pipeline: &str, settings: &str) -> String {
    pipeline.replacen("\n[target]", &format!("{settings}\n\n[target]"), 1)
}

/// Run `culvert-agent resync` on the pipeline file in `dir`; returns (success, output).
pub fn resync(dir: &std::path::Path, tables: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(agent::agent_binary());
    cmd.arg("resync")
        .arg("--pipeline")
        .arg(dir.join("pipeline.toml"))
        .env(
            "CULVERT_CACHE_DIR",
            std::env::temp_dir().join("culvert-test-cache"),
        );
    for t in tables {
        cmd.args(["--table", t]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of the first metric line that starts with `name` and contains every
/// one of `labels`.
pub fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

//! The control store: a PostgreSQL cluster in the state directory, run with `pg_ctl`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::state::StateDir;

/// PostgreSQL server binaries: `PG_BIN`, else the highest version under `/usr/lib/postgresql`.
pub fn find_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!("PG_BIN={} has no initdb", dir.display());
        }
        return Ok(dir);
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("bin").join("initdb").is_file())
                .map(|e| {
                    (
                        version_key(&e.file_name().to_string_lossy()),
                        e.path().join("bin"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL server binaries were not found under /usr/lib/postgresql (nor PG_BIN); install them with scripts/setup.sh"
        ),
    }
}

/// `"9.6"` as `[9, 6]`, so `15` sorts above `9.6`.
pub fn version_key(name: &str) -> Vec<u32> {
    name.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Whether this process is root; PostgreSQL refuses to run as root, so its tools then run as `postgres`.
fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A stable short name for a path, for a directory outside it.
fn path_hash(p: &Path) -> String {
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.as_os_str().as_encoded_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The cluster of one state directory.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

impl Postgres {
    /// The cluster under `state/pg`, created with initdb on first use.
    pub async fn prepare(state: &StateDir) -> Result<Postgres> {
        let bin = find_bin()?;
        let as_postgres = is_root();
        let mut pg = Postgres {
            bin,
            dir: state.pg_dir(),
            as_postgres,
        };
        if !pg.data_dir().join("PG_VERSION").exists() {
            pg.create_cluster(state).await?;
        }
        // The real path: `postgres` may not be able to go through the state directory's link.
        pg.dir = fs::canonicalize(&pg.dir)
            .with_context(|| format!("cannot resolve {}", pg.dir.display()))?;
        let link = state.log("postgres");
        if fs::symlink_metadata(&link).is_err() {
            let _ = std::os::unix::fs::symlink(pg.log_file(), &link);
        }
        Ok(pg)
    }

    async fn create_cluster(&mut self, state: &StateDir) -> Result<()> {
        if !self.dir.exists() {
            if self.as_postgres && !self.postgres_can_reach(state.root()).await {
                // An ancestor such as /root (0700) hides the state directory from `postgres`;
                // the cluster then lives where it can reach, linked from the state directory.
                let outside = PathBuf::from("/var/lib/culvert")
                    .join(format!("local-{}", path_hash(state.root())));
                tracing::warn!(
                    "the postgres user cannot reach {}; keeping the cluster in {} (linked as {})",
                    state.root().display(),
                    outside.display(),
                    self.dir.display()
                );
                fs::create_dir_all(&outside)
                    .with_context(|| format!("cannot create {}", outside.display()))?;
                if let Some(parent) = outside.parent() {
                    fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
                }
                std::os::unix::fs::symlink(&outside, &self.dir)
                    .with_context(|| format!("cannot link {}", self.dir.display()))?;
            } else {
                fs::create_dir_all(&self.dir)
                    .with_context(|| format!("cannot create {}", self.dir.display()))?;
            }
        }
        let real = fs::canonicalize(&self.dir)?;
        self.dir = real.clone();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700))?;
        fs::create_dir_all(self.run_dir())?;
        fs::set_permissions(self.run_dir(), fs::Permissions::from_mode(0o700))?;
        if self.as_postgres {
            self.chown_to_postgres(&real)?;
            self.chown_to_postgres(&self.run_dir())?;
        }
        let data = self.data_dir();
        tracing::info!("initdb {}", data.display());
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .await
            .context("cannot run initdb")?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&data);
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    async fn postgres_can_reach(&self, dir: &Path) -> bool {
        tokio::process::Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-x"])
            .arg(dir)
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn chown_to_postgres(&self, path: &Path) -> Result<()> {
        let user = nix::unistd::User::from_name("postgres")?.context(
            "there is no `postgres` user to run PostgreSQL as; create it with scripts/setup.sh",
        )?;
        nix::unistd::chown(path, Some(user.uid), Some(user.gid))
            .with_context(|| format!("cannot chown {} to postgres", path.display()))?;
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            tokio::process::Command::new(path)
        };
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// The postmaster's pid and port while it runs (from `postmaster.pid`).
    pub fn running(&self) -> Option<(u32, u16)> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let mut lines = text.lines();
        let pid: u32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        super::process::alive(pid).then_some((pid, port))
    }

    /// Start the server on `port` unless it runs already; returns its pid and port.
    pub async fn start(&self, port: u16) -> Result<(u32, u16)> {
        if let Some(running) = self.running() {
            return Ok(running);
        }
        let sockets = self.run_dir();
        // A Unix socket path is limited to 107 bytes; beyond that, TCP only.
        let socket_dir = if sockets.as_os_str().len() + 20 < 107 {
            sockets.display().to_string()
        } else {
            String::new()
        };
        if socket_dir.contains('\'') {
            bail!(
                "the state directory must not contain a single quote: {}",
                sockets.display()
            );
        }
        // pg_ctl hands -o to a shell: quote the path.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{socket_dir}'"
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", "60", "start"])
            .output()
            .await
            .context("cannot run pg_ctl")?;
        if !out.status.success() {
            bail!(
                "PostgreSQL did not start: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                super::process::tail(&self.log_file(), 20)
            );
        }
        self.running()
            .context("PostgreSQL started but postmaster.pid does not name a running server")
    }

    /// Create database `culvert` unless it exists.
    pub async fn ensure_database(&self, port: u16) -> Result<()> {
        let psql = |sql: &str| {
            let mut c = tokio::process::Command::new(self.bin.join("psql"));
            c.args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(sql)
            .stdin(std::process::Stdio::null());
            c
        };
        let out = psql("select 1 from pg_database where datname = 'culvert'")
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "cannot query PostgreSQL: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if String::from_utf8_lossy(&out.stdout).trim() == "1" {
            return Ok(());
        }
        let out = psql("create database culvert").output().await?;
        if !out.status.success() {
            bail!(
                "cannot create database culvert: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tracing::info!("created database culvert");
        Ok(())
    }

    /// Stop the server (fast shutdown: sessions are ended, data is flushed).
    pub async fn stop(&self) {
        if self.running().is_none() {
            return;
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => tracing::info!("PostgreSQL stopped"),
            Ok(o) => tracing::warn!("pg_ctl stop failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => tracing::warn!("cannot run pg_ctl stop: {e}"),
        }
    }

    /// Wait up to `timeout` for the server to accept TCP connections.
    pub async fn wait_listening(port: u16, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if super::process::listening(port) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

/// The control store's connection string.
pub fn connection_string(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname=culvert")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut v = [version_key("9.6"), version_key("15"), version_key("13")];
        v.sort();
        assert_eq!(v.last().unwrap(), &vec![15]);
    }

    #[test]
    fn path_hash_is_stable() {
        assert_eq!(
            path_hash(Path::new("/root/.culvert/local")),
            path_hash(Path::new("/root/.culvert/local"))
        );
        assert_ne!(path_hash(Path::new("/a")), path_hash(Path::new("/b")));
        assert_eq!(path_hash(Path::new("/a")).len(), 16);
    }
}

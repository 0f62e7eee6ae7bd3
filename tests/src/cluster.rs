//! A PostgreSQL cluster in a temporary directory, stopped when dropped.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    /// Port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
    options: String,
}

fn find_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql; run scripts/setup.sh",
    )
}

/// Whether the tests run as root (PostgreSQL's tools then run as the `postgres` user).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Start a cluster with `wal_level=logical` plus `extra` server settings.
    pub fn start(extra: &[&str]) -> Cluster {
        Self::start_with_hba(extra, "")
    }

    /// Like [`Cluster::start`], with `hba` lines placed before initdb's trust lines
    /// (pg_hba.conf is first-match), for tests of password authentication.
    pub fn start_with_hba(extra: &[&str], hba: &str) -> Cluster {
        let bin = find_bin_dir();
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "culvert-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of {} failed", dir.display());
        }
        let port = free_port();
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c wal_level=logical -c unix_socket_directories={} -c max_wal_senders=20 -c max_replication_slots=20 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        for e in extra {
            options.push_str(" -c ");
            options.push_str(e);
        }
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
            options,
        };
        let data = cluster.data_dir();
        cluster.run_pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        if !hba.is_empty() {
            let path = data.join("pg_hba.conf");
            let rest = fs::read_to_string(&path).unwrap();
            fs::write(&path, format!("{hba}{rest}")).unwrap();
        }
        cluster.start_server();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start_server(&self) {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &self.options,
                "-w",
                "start",
            ],
        );
    }

    /// Stop the server (fast shutdown).
    pub fn stop(&self) {
        let data = self.data_dir();
        self.run_pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Start the server again after [`Cluster::stop`].
    pub fn restart(&self) {
        self.start_server();
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run_pg(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        if !out.status.success() {
            let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!(
                "{program} failed: {}{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Path of a client program of the same version.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Run SQL in `db` as the superuser; returns unaligned, tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Cluster::sql`] but returns psql's error.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
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
                db,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .env("PGTZ", "UTC")
            .env("PGOPTIONS", "-c extra_float_digits=3")
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "psql failed on {sql:.200}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8(out.stdout)
            .unwrap()
            .trim_end_matches('\n')
            .to_string())
    }

    /// A source cluster with database `app` and a target cluster with database `replica`.
    pub fn pair() -> (Cluster, Cluster) {
        let src = Cluster::start(&[]);
        let dst = Cluster::start(&[]);
        src.create_db("app");
        dst.create_db("replica");
        (src, dst)
    }

    /// Create a database.
    pub fn create_db(&self, db: &str) {
        self.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    /// Every row of a table as text, sorted, for exact comparison across clusters.
    pub fn dump(&self, db: &str, table: &str) -> String {
        self.sql(db, &format!("SELECT t::text FROM {table} t ORDER BY 1"))
    }

    /// Directory of the cluster (logs live there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

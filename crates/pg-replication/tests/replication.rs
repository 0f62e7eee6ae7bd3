//! End-to-end tests against a throwaway PostgreSQL cluster.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use culvert_pg_replication::{
    ConnectParams, Lsn, ReplicationConnection, ReplicationError, ReplicationMessage, format_lsn,
    parse_lsn,
};
use tokio::net::TcpStream;

const SLOT: &str = "culvert_test_slot";

/// A running cluster in a temporary directory; dropping it stops the server even when a test panics.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// initdb and postgres refuse to run as root, so commands then go through `runuser`.
    as_postgres: bool,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let Some(bin) = find_bin_dir() else {
            eprintln!("skipping: initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin");
            return None;
        };
        let as_postgres = is_root();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = PathBuf::from(format!(
            "/tmp/culvert-pg-replication-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        if as_postgres {
            run_checked(Command::new("chown").arg("postgres:postgres").arg(&dir));
        }
        let port = free_port();
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
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
            ],
        );

        // Password users first: pg_hba.conf is first-match, and initdb's trust lines would otherwise win.
        let hba_path = data.join("pg_hba.conf");
        let hba = fs::read_to_string(&hba_path).unwrap();
        let ours = "host all rep 127.0.0.1/32 scram-sha-256\n\
                    host all rep_md5 127.0.0.1/32 md5\n\
                    host all rep_plain 127.0.0.1/32 password\n\
                    host replication all 127.0.0.1/32 trust\n";
        fs::write(&hba_path, format!("{ours}{hba}")).unwrap();

        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c wal_level=logical -c unix_socket_directories={} -c fsync=off",
            cluster.port,
            cluster.dir.display()
        );
        let log = cluster.dir.join("server.log");
        cluster.run_pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        Some(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
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
        let mut cmd = self.command(program);
        cmd.args(args);
        let out = cmd.output().unwrap();
        if !out.status.success() {
            let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!(
                "{program} failed: {}\n{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Runs SQL as the superuser through psql and returns its unaligned output.
    fn psql(&self, sql: &str) -> String {
        let psql = psql_path(&self.bin);
        let out = run_checked(
            Command::new(psql)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-c")
                .arg(sql),
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    async fn connect(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> Result<ReplicationConnection<TcpStream>, ReplicationError> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let params = ConnectParams {
            user: user.to_owned(),
            password: password.map(str::to_owned),
            database: "postgres".to_owned(),
            application_name: "culvert-test".to_owned(),
        };
        ReplicationConnection::connect(stream, &params).await
    }

    fn confirmed_flush(&self) -> Lsn {
        let text = self.psql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
        ));
        parse_lsn(&text).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "stop", "-m", "immediate"])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                return Some(dir);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir)
}

/// psql may live next to initdb (Debian's versioned dirs) or only on PATH.
fn psql_path(bin: &Path) -> PathBuf {
    let beside = bin.join("psql");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("psql")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Receives until a pgoutput Commit arrives, answering keepalives; returns the first byte of each XLogData and the commit's end LSN.
async fn read_transaction(
    conn: &mut ReplicationConnection<TcpStream>,
    insert_payloads: &mut Vec<bytes::Bytes>,
) -> (Vec<u8>, Lsn) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tags = Vec::new();
    while Instant::now() < deadline {
        match conn.recv(Duration::from_millis(500)).await.unwrap() {
            Some(ReplicationMessage::XLogData { data, .. }) => {
                let tag = data[0];
                tags.push(tag);
                if tag == b'I' {
                    insert_payloads.push(data.clone());
                }
                if tag == b'C' {
                    // Commit: flags (1), commit LSN (8), end LSN (8), timestamp (8).
                    let end = u64::from_be_bytes(data[10..18].try_into().unwrap());
                    return (tags, end);
                }
            }
            Some(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: true,
            }) => {
                conn.send_status(wal_end, 0, 0, false).await.unwrap();
            }
            Some(ReplicationMessage::Keepalive { .. }) | None => {}
        }
    }
    panic!("no commit received within 30s; saw {tags:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn logical_replication_end_to_end() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    cluster.psql("CREATE ROLE rep WITH REPLICATION LOGIN PASSWORD 'secret'");
    cluster.psql("CREATE ROLE rep_plain WITH REPLICATION LOGIN PASSWORD 'secret'");
    cluster.psql(
        "SET password_encryption = 'md5'; CREATE ROLE rep_md5 WITH REPLICATION LOGIN PASSWORD 'secret'",
    );
    cluster.psql("CREATE TABLE items (id int PRIMARY KEY, name text)");
    cluster.psql("GRANT SELECT ON items TO rep");
    cluster.psql("CREATE PUBLICATION pub FOR TABLE items");

    // Authentication failures.
    let err = cluster
        .connect("rep", Some("wrong"))
        .await
        .err()
        .expect("wrong password must fail");
    assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
    assert!(err.to_string().contains("SQLSTATE 28P01"), "{err}");

    let err = cluster
        .connect("rep", None)
        .await
        .err()
        .expect("missing password must fail");
    assert!(matches!(err, ReplicationError::PasswordRequired), "{err}");
    assert!(err.to_string().contains("password"));

    // md5 and cleartext methods.
    let md5 = cluster.connect("rep_md5", Some("secret")).await.unwrap();
    md5.close().await.unwrap();
    let plain = cluster.connect("rep_plain", Some("secret")).await.unwrap();
    plain.close().await.unwrap();

    // SCRAM, then ordinary queries on the replication connection.
    let mut conn = cluster.connect("rep", Some("secret")).await.unwrap();
    assert!(conn.parameter("server_version").is_some());
    assert_eq!(conn.parameter("client_encoding"), Some("UTF8"));
    assert_eq!(conn.parameter("TimeZone"), Some("UTC"));
    assert!(conn.server_version_num().unwrap() >= 100000);
    assert!(conn.backend_key().is_some());

    let rows = conn
        .simple_query("SELECT 1 AS a, NULL AS b, 'x''y' AS c")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![Some("1".to_owned()), None, Some("x'y".to_owned())]]
    );

    let identity = conn.identify_system().await.unwrap();
    assert!(identity.timeline >= 1);
    assert!(identity.xlog_pos > 0);
    assert_eq!(identity.dbname.as_deref(), Some("postgres"));

    // A failing command leaves the connection usable.
    let err = conn
        .start_logical("no_such_slot", 0, &[("proto_version", "1")])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42704"), "{err}");
    assert_eq!(
        conn.simple_query("SELECT 2").await.unwrap(),
        vec![vec![Some("2".to_owned())]]
    );

    // Slot with exported snapshot.
    let slot = conn.create_logical_slot(SLOT, true).await.unwrap();
    let snapshot = slot.snapshot_name.clone().expect("snapshot exported");
    assert!(!snapshot.is_empty());
    assert!(slot.consistent_lsn > 0);
    assert_eq!(
        parse_lsn(&format_lsn(slot.consistent_lsn)).unwrap(),
        slot.consistent_lsn
    );
    assert_eq!(cluster.confirmed_flush(), slot.consistent_lsn);

    conn.start_logical(
        SLOT,
        slot.consistent_lsn,
        &[
            ("proto_version", "1"),
            ("publication_names", "pub"),
            ("binary", "true"),
        ],
    )
    .await
    .unwrap();
    assert!(conn.is_streaming());
    assert!(matches!(
        conn.simple_query("SELECT 1").await,
        Err(ReplicationError::InvalidState(_))
    ));

    cluster.psql("INSERT INTO items VALUES (1, 'one'), (2, 'two')");

    let mut inserts = Vec::new();
    let (tags, commit_end) = read_transaction(&mut conn, &mut inserts).await;
    assert_eq!(tags, b"BRIIC".to_vec(), "pgoutput message sequence");
    assert!(commit_end > slot.consistent_lsn);
    // Insert: 'I', relation oid (4), 'N', column count (2), then per column a kind byte; binary mode sends 'b'.
    assert_eq!(inserts[0][5], b'N');
    assert_eq!(u16::from_be_bytes([inserts[0][6], inserts[0][7]]), 2);
    assert_eq!(inserts[0][8], b'b', "binary option honoured");

    // The server only learns the flush position from the status update.
    conn.send_status(commit_end, commit_end, commit_end, false)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let confirmed = cluster.confirmed_flush();
        if confirmed == commit_end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn stayed at {} (expected {})",
            format_lsn(confirmed),
            format_lsn(commit_end)
        );
        // Keep draining so keepalive requests are answered while the server catches up.
        if let Some(ReplicationMessage::Keepalive {
            reply_requested: true,
            ..
        }) = conn.recv(Duration::from_millis(200)).await.unwrap()
        {
            conn.send_status(commit_end, commit_end, commit_end, false)
                .await
                .unwrap();
        }
    }

    // Server-side termination ends the stream.
    cluster.psql(&format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    let end = loop {
        match conn.recv(Duration::from_millis(500)).await {
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => panic!("stream did not end after pg_terminate_backend"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            end,
            ReplicationError::StreamEnded | ReplicationError::Db { .. }
        ),
        "{end}"
    );

    // Clean up the slot over a fresh connection.
    let mut conn = cluster.connect("rep", Some("secret")).await.unwrap();
    conn.drop_slot(SLOT, true).await.unwrap();
    assert_eq!(
        cluster.psql("SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    conn.close().await.unwrap();
}

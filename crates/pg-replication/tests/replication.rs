//! End-to-end tests against a throwaway PostgreSQL cluster.

use std::time::{Duration, Instant};

use culvert_pg_replication::{
    ConnectParams, Lsn, ReplicationConnection, ReplicationError, ReplicationMessage, format_lsn,
    parse_lsn,
};
use tokio::net::TcpStream;

const SLOT: &str = "culvert_test_slot";

/// Password users first: pg_hba.conf is first-match, and initdb's trust lines would otherwise win.
const HBA: &str = "host all rep 127.0.0.1/32 scram-sha-256\n\
                   host all rep_md5 127.0.0.1/32 md5\n\
                   host all rep_plain 127.0.0.1/32 password\n\
                   host replication all 127.0.0.1/32 trust\n";

/// A throwaway cluster from the shared test harness, with this test's password users.
struct Cluster {
    inner: culvert_tests::Cluster,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster {
            inner: culvert_tests::Cluster::start_with_hba(&[], HBA),
        }
    }

    fn psql(&self, sql: &str) -> String {
        self.inner.sql("postgres", sql)
    }

    async fn connect(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> Result<ReplicationConnection<TcpStream>, ReplicationError> {
        let stream = TcpStream::connect(("127.0.0.1", self.inner.port))
            .await
            .unwrap();
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
    let cluster = Cluster::start();
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

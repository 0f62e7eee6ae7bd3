//! TLS between the sandboxed connectors and PostgreSQL: a pipeline over verify-full with a
//! private CA, and the errors an operator sees when TLS is missing or the certificate is
//! not trusted.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use culvert_tests::agent::{agent_binary, pipeline_toml};
use culvert_tests::{Agent, Cluster, workdir};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command line tool is needed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate authority: `NAME.key` and `NAME.crt` in `dir`.
fn make_ca(dir: &Path, name: &str) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3",
            "-subj",
            &format!("/CN=culvert test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap()
}

/// Server key and certificate `NAME.key` / `NAME.crt` signed by the CA `ca`, valid for `san`,
/// with an ECDSA P-256 key or, with `rsa`, an RSA key.
/// Returns the server settings that turn TLS on with them.
fn make_server_cert(dir: &Path, ca: &str, name: &str, san: &str, rsa: bool) -> Vec<String> {
    let key_args: &[&str] = if rsa {
        &["-newkey", "rsa:2048"]
    } else {
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    };
    openssl(
        dir,
        &[
            &["req"],
            key_args,
            &[
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        ]
        .concat(),
    );
    let ext = dir.join(format!("{name}.ext"));
    fs::write(
        &ext,
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            "0x2a",
            "-days",
            "3",
            "-sha256",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    fs::set_permissions(&cert, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    if culvert_tests::cluster::is_root() {
        // The harness runs the server as `postgres`, which must own its private key.
        let ok = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown of {} failed", key.display());
    }
    vec![
        "ssl=on".to_string(),
        format!("ssl_cert_file={}", cert.display()),
        format!("ssl_key_file={}", key.display()),
    ]
}

/// A pg_hba.conf that admits TCP clients only over TLS.
fn tls_only_hba(dir: &Path) -> String {
    let hba = dir.join("pg_hba_tls_only.conf");
    fs::write(
        &hba,
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    fs::set_permissions(&hba, fs::Permissions::from_mode(0o644)).unwrap();
    format!("hba_file={}", hba.display())
}

fn start(settings: &[String]) -> Cluster {
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Cluster::start(&settings)
}

/// The TOML lines replacing `sslmode = "disable"` for one side.
fn tls_lines(sslmode: &str, rootcert: Option<&str>) -> String {
    let mut s = format!("sslmode = \"{sslmode}\"");
    if let Some(pem) = rootcert {
        s.push_str(&format!("\nsslrootcert = '''\n{pem}'''"));
    }
    s
}

/// Replace the source's and the target's `sslmode = "disable"` lines.
fn with_tls(pipeline: &str, source: &str, target: &str) -> String {
    let plain = "sslmode = \"disable\"";
    let at = pipeline.find(plain).expect("source sslmode line");
    let mut text = format!(
        "{}{source}{}",
        &pipeline[..at],
        &pipeline[at + plain.len()..]
    );
    let at = text.rfind(plain).expect("target sslmode line");
    text = format!("{}{target}{}", &text[..at], &text[at + plain.len()..]);
    text
}

fn agent(args: &[&str]) -> Output {
    Command::new(agent_binary())
        .args(args)
        .env(
            "CULVERT_CACHE_DIR",
            std::env::temp_dir().join("culvert-test-cache"),
        )
        .output()
        .unwrap()
}

/// `culvert-agent check`: (success, stdout and stderr together).
fn check(dir: &Path, pipeline: &str) -> (bool, String) {
    let file = dir.join("check.toml");
    fs::write(&file, pipeline).unwrap();
    let out = agent(&["check", "--pipeline", file.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `check` line of `side`'s connect step.
fn connect_line<'a>(text: &'a str, side: &str) -> &'a str {
    text.lines()
        .find(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() >= 3 && words[1] == side && words[2] == "connect"
        })
        .unwrap_or_else(|| panic!("no {side} connect line in:\n{text}"))
}

#[test]
fn pipeline_over_verify_full_replicates_exactly_and_uses_tls() {
    let pki = workdir("tls-pki");
    let ca = make_ca(&pki, "ca");
    let mut settings = make_server_cert(&pki, "ca", "server", "DNS:localhost,IP:127.0.0.1", false);
    settings.push(tls_only_hba(&pki));
    let src = start(&settings);
    let dst = start(&settings);
    src.create_db("app");
    dst.create_db("replica");
    src.sql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[]);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['t' || g % 3] FROM generate_series(1, 500) g;",
    );

    let work = workdir("tls-pipeline");
    let tls = tls_lines("verify-full", Some(&ca));
    let pipeline = with_tls(
        &pipeline_toml(
            "tls",
            src.port,
            "app",
            dst.port,
            "replica",
            &["public.items"],
            &work.join("buffer"),
        ),
        &tls,
        &tls,
    );
    let (ok, text) = check(&work, &pipeline);
    assert!(ok, "check over verify-full fails:\n{text}");

    let same = || {
        dst.try_sql("replica", "SELECT count(*) FROM items").is_ok()
            && src.dump("app", "items") == dst.dump("replica", "items")
    };
    let mut agent = Agent::run(&work, &pipeline, &[]);
    agent.wait_until(120, "snapshot over TLS to match", same);
    src.sql(
        "app",
        "INSERT INTO items VALUES (1000, 'new', 9.99, '{x,y}');
         UPDATE items SET price = price * 2 WHERE id % 7 = 0;
         DELETE FROM items WHERE id BETWEEN 10 AND 20;",
    );
    agent.wait_until(120, "changes over TLS to match", same);
    assert_eq!(src.dump("app", "items"), dst.dump("replica", "items"));

    let sessions = |c: &Cluster, db: &str| {
        c.sql(
            db,
            "SELECT application_name || '=' || ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE application_name LIKE 'culvert%' ORDER BY 1",
        )
    };
    let on_source = sessions(&src, "app");
    assert!(
        on_source.lines().any(|l| l == "culvert replication=true"),
        "no replication session over TLS on the source:\n{on_source}"
    );
    assert!(
        on_source.lines().any(|l| l.starts_with("culvert catalog=")),
        "no catalog session on the source:\n{on_source}"
    );
    assert!(
        on_source.lines().all(|l| l.ends_with("=true")),
        "a source session without TLS:\n{on_source}"
    );
    let on_target = sessions(&dst, "replica");
    assert!(
        !on_target.is_empty() && on_target.lines().all(|l| l.ends_with("=true")),
        "target sessions not all over TLS:\n{on_target}"
    );
    assert!(
        agent.exited().is_none(),
        "agent exited early:\n{}",
        agent.log()
    );
    assert_eq!(agent.stop(), Some(0), "graceful stop:\n{}", agent.log());
}

#[test]
fn require_against_a_server_without_tls_fails_clearly() {
    let pg = Cluster::start(&["ssl=off"]);
    pg.create_db("app");
    pg.create_db("replica");
    pg.sql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let work = workdir("tls-require");
    let pipeline = with_tls(
        &pipeline_toml(
            "tlsrequire",
            pg.port,
            "app",
            pg.port,
            "replica",
            &["public.t"],
            &work.join("buffer"),
        ),
        &tls_lines("require", None),
        "sslmode = \"disable\"",
    );
    let expected = format!(
        "server at 127.0.0.1:{} does not support TLS but sslmode = require",
        pg.port
    );

    let (ok, text) = check(&work, &pipeline);
    assert!(!ok, "check passes without TLS:\n{text}");
    let line = connect_line(&text, "source");
    assert!(
        line.starts_with("FAIL")
            && line.contains(&expected)
            && line.contains("sslmode = \"prefer\""),
        "unclear check message:\n{text}"
    );

    // `run` stops at once (a configuration problem, not something a retry fixes).
    let mut agent = Agent::run(&work, &pipeline, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(code) = agent.exited() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "agent keeps running without TLS:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(code, 0, "agent exits 0:\n{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains(&expected) && log.contains("enable ssl on the server"),
        "stderr lacks the TLS message:\n{log}"
    );
}

#[test]
fn untrusted_or_misnamed_certificates_are_rejected_with_a_reason() {
    let pki = workdir("tls-certs");
    let ca = make_ca(&pki, "ca");
    let other_ca = make_ca(&pki, "other-ca");
    // A certificate that names neither 127.0.0.1 nor localhost.
    let settings = make_server_cert(&pki, "ca", "elsewhere", "DNS:db.example.invalid", false);
    let pg = start(&settings);
    pg.create_db("app");
    pg.create_db("replica");
    let work = workdir("tls-certs-work");
    let base = pipeline_toml(
        "tlscerts",
        pg.port,
        "app",
        pg.port,
        "replica",
        &["public.*"],
        &work.join("buffer"),
    );
    let endpoint = format!("127.0.0.1:{}", pg.port);
    let plain = "sslmode = \"disable\"";

    // The wrong root: rejected before anything is sent in the clear, naming the reason.
    let pipeline = with_tls(&base, &tls_lines("verify-full", Some(&other_ca)), plain);
    let (ok, text) = check(&work, &pipeline);
    assert!(!ok, "check passes with the wrong root:\n{text}");
    let line = connect_line(&text, "source");
    assert!(
        line.starts_with("FAIL")
            && line.contains(&format!("TLS certificate of {endpoint} rejected"))
            && line.contains("not issued by a certificate authority in sslrootcert")
            && line.contains("sslrootcert"),
        "unclear certificate message:\n{text}"
    );

    // No root given: the Mozilla roots do not know a private CA.
    let pipeline = with_tls(&base, &tls_lines("verify-ca", None), plain);
    let (ok, text) = check(&work, &pipeline);
    assert!(!ok, "check passes without a root:\n{text}");
    let line = connect_line(&text, "source");
    assert!(
        line.contains("not issued by a public certificate authority")
            && line.contains("sslmode = \"require\""),
        "unclear certificate message:\n{text}"
    );

    // The right root but a certificate for another name: verify-full refuses, verify-ca and
    // require accept (the target side, over TLS, too).
    let pipeline = with_tls(&base, &tls_lines("verify-full", Some(&ca)), plain);
    let (ok, text) = check(&work, &pipeline);
    assert!(
        !ok,
        "check passes with a certificate for another host:\n{text}"
    );
    let line = connect_line(&text, "source");
    assert!(
        line.contains("not issued for host `127.0.0.1`") && line.contains("verify-ca"),
        "unclear host name message:\n{text}"
    );
    for (source, target) in [
        (
            tls_lines("verify-ca", Some(&ca)),
            tls_lines("require", None),
        ),
        (tls_lines("require", None), tls_lines("prefer", None)),
    ] {
        let pipeline = with_tls(&base, &source, &target);
        let (_, text) = check(&work, &pipeline);
        let source_line = connect_line(&text, "source");
        let target_line = connect_line(&text, "target");
        assert!(
            source_line.starts_with("ok") && target_line.starts_with("ok"),
            "{source} / {target} should connect:\n{text}"
        );
    }

    // TLS 1.2 only, with an RSA server key.
    let mut settings = make_server_cert(&pki, "ca", "rsa-server", "IP:127.0.0.1", true);
    settings.push("ssl_max_protocol_version=TLSv1.2".to_string());
    let pg12 = start(&settings);
    pg12.create_db("app");
    pg12.create_db("replica");
    let pipeline = with_tls(
        &pipeline_toml(
            "tlscerts12",
            pg12.port,
            "app",
            pg12.port,
            "replica",
            &["public.*"],
            &work.join("buffer12"),
        ),
        &tls_lines("verify-full", Some(&ca)),
        &tls_lines("require", None),
    );
    let (_, text) = check(&work, &pipeline);
    assert!(
        connect_line(&text, "source").starts_with("ok")
            && connect_line(&text, "target").starts_with("ok"),
        "TLS 1.2 with an RSA key should connect:\n{text}"
    );
}

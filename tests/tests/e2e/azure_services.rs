//! Azure services through the local stack: connector secrets sealed with the environment's
//! Key Vault key (the control plane may encrypt, never decrypt), the buffer on Blob Storage
//! (Azurite) encrypted under data keys the vault wraps, key rotation while data is buffered,
//! a storage outage mid-stream, and a scan for plaintext afterwards.

use std::path::Path;

use culvert_tests::azure::StandIns;
use culvert_tests::stack::Stack;
use culvert_tests::{Cluster, difference, wait_until, workdir};
use serde_json::{Value, json};

const SECRET: &str = "pw-5d1e77b0-zero-knowledge";
/// A value in every source row: it must never reach storage in plaintext.
const MARKER: &str = "rowmarker-3c9a41";

fn stack_json(state: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(state.join("stack.json")).unwrap()).unwrap()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

fn kill9(pid: u64) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

fn agent_pids(state: &Path) -> Vec<u64> {
    stack_json(state)["pids"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("agent:"))
        .filter_map(|(_, v)| v.as_u64())
        .collect()
}

fn rotate(azure: &StandIns, key: &str) -> String {
    let r = azure.post(
        "culvert-env",
        &format!("/keys/{key}/rotate"),
        "bootstrap",
        &json!({}),
    );
    assert_eq!(r.status, 200, "rotate {key}: {}", r.body);
    let kid = r.body["key"]["kid"].as_str().expect("kid").to_string();
    kid.rsplit('/').next().unwrap().to_string()
}

#[test]
fn zero_knowledge_secrets_and_an_encrypted_blob_buffer() {
    let (src, dst) = Cluster::pair();
    src.sql(
        "app",
        &format!(
            "create table items (id bigint primary key, note text, n int);
             insert into items select g, '{MARKER}-' || g, 0 from generate_series(1, 20000) g;"
        ),
    );
    let state = workdir("azure-services");
    let mut stack = Stack::up(&state);
    let azure = StandIns::of(&state);
    stack.pipeline_between("items", &src, &dst, SECRET);
    wait_until(180, "the snapshot through the blob buffer", || {
        difference(&src, &dst, "items").is_none()
    });

    // The control plane's identity may encrypt with the environment key but not decrypt.
    let store = stack_json(&state)["control_store"]
        .as_str()
        .unwrap()
        .to_string();
    let sealed = psql(
        &src,
        &store,
        "select sealed_secrets from connectors limit 1",
    );
    let sealed: Value = serde_json::from_str(&sealed).expect("sealed secrets map");
    let envelope: Value =
        serde_json::from_str(sealed["password"].as_str().expect("sealed password")).unwrap();
    let kid = envelope["kid"].as_str().unwrap();
    assert!(kid.contains("/keys/culvert-credentials/"), "{kid}");
    let version = kid.rsplit('/').next().unwrap();
    let decrypt = format!("/keys/culvert-credentials/{version}/decrypt");
    let body = json!({"alg": "RSA-OAEP-256", "value": envelope["ek"]});
    let refused = azure.post("culvert-env", &decrypt, "control_plane", &body);
    assert_eq!(refused.status, 403, "{}", refused.body);
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("does not have keys decrypt permission"),
        "{message}"
    );
    let encrypt = json!({"alg": "RSA-OAEP-256", "value": "AAEC"});
    let allowed = azure.post(
        "culvert-env",
        "/keys/culvert-credentials/encrypt",
        "control_plane",
        &encrypt,
    );
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let opened = azure.post("culvert-env", &decrypt, "agent", &body);
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert_eq!(
        opened.body["value"].as_str().map(str::len),
        Some(43),
        "a 32-byte data key"
    );

    // Storage outage mid-stream: Azurite dies (the stack restarts it); nothing is lost.
    let azurite = stack_json(&state)["pids"]["azurite"]
        .as_u64()
        .expect("azurite pid");
    src.sql(
        "app",
        &format!(
            "insert into items select g, '{MARKER}-' || g, 1 from generate_series(30001, 32000) g"
        ),
    );
    kill9(azurite);
    src.sql(
        "app",
        "update items set n = n + 1 where id % 3 = 0; delete from items where id % 11 = 0;",
    );
    wait_until(180, "replication after the storage outage", || {
        difference(&src, &dst, "items").is_none()
    });

    // Key rotation while segments wait in the buffer: they were wrapped by the old version
    // and must still open; what is written after the restart uses the new version.
    let azurite_dir = state.join("azurite");
    dst.stop();
    src.sql(
        "app",
        &format!(
            "insert into items select g, '{MARKER}-' || g, 2 from generate_series(40001, 45000) g"
        ),
    );
    let old_buffer = azure.post(
        "culvert-env",
        "/keys/culvert-buffer/wrapkey",
        "agent",
        &json!({"alg": "RSA-OAEP-256", "value": "AAEC"}),
    );
    let old_version = old_buffer.body["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    wait_until(
        60,
        "segments wrapped by the current key version in Azurite",
        || !files_containing(&azurite_dir, &old_version).is_empty(),
    );
    let new_version = rotate(&azure, "culvert-buffer");
    rotate(&azure, "culvert-credentials");
    assert_ne!(new_version, old_version);
    // The agent dies with those segments unapplied; its successor must open them.
    for pid in agent_pids(&state) {
        kill9(pid);
    }
    src.sql(
        "app",
        "update items set n = n + 10 where id between 40001 and 41000;",
    );
    dst.restart();
    wait_until(180, "replication after the key rotation", || {
        difference(&src, &dst, "items").is_none()
    });
    wait_until(
        60,
        "segments wrapped by the new key version in Azurite",
        || !files_containing(&azurite_dir, &new_version).is_empty(),
    );
    let rotated_secret = "pw-after-rotation-71c2";
    let r = stack.culvert_env(
        &[
            "connector",
            "update",
            "items-src",
            "--secret-env",
            "password=CULVERT_TEST_PW",
        ],
        &[("CULVERT_TEST_PW", rotated_secret)],
    );
    // The source cluster trusts local connections, so a new password keeps working; the new
    // envelope is sealed under the rotated credentials key.
    assert_eq!(r.code, 0, "{}", r.stderr);
    src.sql(
        "app",
        "insert into items values (50001, 'after the secret changed', 3)",
    );
    wait_until(120, "replication with the resealed secret", || {
        difference(&src, &dst, "items").is_none()
    });

    // No credential and no row in plaintext anywhere the product stores or logs.
    let dump = std::process::Command::new(src.program("pg_dump"))
        .args(["--data-only", &store])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(
        dump.contains("culvert-credentials"),
        "the dump holds the sealed secrets"
    );
    for secret in [SECRET, rotated_secret] {
        assert!(!dump.contains(secret), "a password is in the control store");
        let hits = files_containing(&state, secret);
        assert!(hits.is_empty(), "a password is in plaintext in {hits:?}");
    }
    let hits = files_containing(&azurite_dir, MARKER);
    assert!(
        hits.is_empty(),
        "source rows are in plaintext in storage: {hits:?}"
    );
    stack.down();
}

/// Run SQL against the control store with `c`'s psql; tuples only.
fn psql(c: &Cluster, conninfo: &str, sql: &str) -> String {
    let out = std::process::Command::new(c.program("psql"))
        .args(["-X", "-q", "-A", "-t", "-d", conninfo, "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

//! The wire format seen by a raw HTTP client, the process lifecycle, and persistence.

mod common;

use common::{ADMIN, AGENT, CONTROL, HEADER, LocalAzure, OTHER_VAULT, TENANT, VAULT, token};
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const API: &str = "api-version=7.5";
const VAULT_RESOURCE: &str = "https://vault.azure.net";
const CHALLENGE_BODY: &str = r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    json_of(req.send().await.unwrap()).await
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    send(http().get(url).bearer_auth(token)).await
}

async fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    send(http().post(url).bearer_auth(token).json(&body)).await
}

async fn put(url: &str, token: &str, body: Value) -> (u16, Value) {
    send(http().put(url).bearer_auth(token).json(&body)).await
}

fn version_of(kid: &Value) -> String {
    kid.as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn request_without_token_gets_the_key_vault_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let url = format!("{}/keys/k/create?{API}", server.vault_url(VAULT));
    let resp = http().post(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"https://vault.azure.net\""
        )
    );
    assert_eq!(resp.text().await.unwrap(), CHALLENGE_BODY);

    // Same over HTTPS on the same port.
    let ca = std::fs::read(&server.ca_certificate).unwrap();
    let tls = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let url = format!("{}/secrets/s?{API}", server.vault_https_url(VAULT));
    let resp = tls.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.text().await.unwrap(), CHALLENGE_BODY);
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let base = server.vault_url(VAULT);
    let (status, body) = send(http().get(format!("{base}/keys"))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadParameter");
    let (status, _) = send(http().get(format!("{base}/keys?api-version=7.0"))).await;
    assert_eq!(status, 400);
    let t = token(&server, &ADMIN, VAULT_RESOURCE).await;
    for v in ["7.4", "7.5", "7.6", "2025-07-01"] {
        let (status, body) = get(&format!("{base}/keys?api-version={v}"), &t).await;
        assert_eq!(status, 200, "api-version {v}");
        assert_eq!(body, json!({"value": [], "nextLink": null}));
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_akv_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let url = format!("{}/keys?{API}", server.vault_url(VAULT));
    let arm = token(&server, &ADMIN, "https://management.azure.com/").await;
    let resp = http().get(&url).bearer_auth(&arm).send().await.unwrap();
    assert!(resp.headers().contains_key("www-authenticate"));
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com/."
    );

    let good = token(&server, &ADMIN, VAULT_RESOURCE).await;
    // Change one full-value character of the signature (the last one carries padding bits).
    let mut chars: Vec<char> = good.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let forged: String = chars.into_iter().collect();
    let (status, body) = get(&url, &forged).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("AKV10046"),
        "{body}"
    );

    let (status, body) = get(&url, "garbage").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "Unauthorized");

    // A valid token on a vault whose (empty) access policy grants nothing.
    let other = format!("{}/keys?{API}", server.vault_url(OTHER_VAULT));
    let (status, body) = get(&other, &good).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "does not have keys list permission on key vault '{OTHER_VAULT};location=local'"
            ))
    );
}

#[tokio::test]
async fn identity_endpoint_checks_header_identity_and_api_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let ask = |pairs: &[(&str, &str)], header: Option<&str>| {
        let mut req = http()
            .get(&server.identity_endpoint)
            .query(pairs)
            .header("metadata", "true");
        if let Some(h) = header {
            req = req.header("X-IDENTITY-HEADER", h);
        }
        send(req)
    };
    let for_agent = [
        ("api-version", "2019-08-01"),
        ("resource", VAULT_RESOURCE),
        ("client_id", AGENT.client_id),
    ];

    let (status, body) = ask(&for_agent, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = ask(&for_agent, Some("wrong")).await;
    assert_eq!(status, 401);

    let unknown = [
        ("api-version", "2019-08-01"),
        ("resource", VAULT_RESOURCE),
        ("client_id", "no-such-client"),
    ];
    let (status, body) = ask(&unknown, Some(HEADER)).await;
    assert_eq!(status, 400);
    assert_eq!(body["statusCode"], 400);
    assert_eq!(
        body["message"],
        "Unable to load the proper Managed Identity."
    );

    let old_api = [
        ("api-version", "2017-09-01"),
        ("resource", VAULT_RESOURCE),
        ("client_id", AGENT.client_id),
    ];
    let (status, _) = ask(&old_api, Some(HEADER)).await;
    assert_eq!(status, 400);

    // No identity named and no system-assigned identity configured.
    let (status, _) = ask(&for_agent[..2], Some(HEADER)).await;
    assert_eq!(status, 400);

    let by_object = [
        ("api-version", "2019-08-01"),
        ("resource", VAULT_RESOURCE),
        ("object_id", CONTROL.object_id),
    ];
    let (status, body) = ask(&by_object, Some(HEADER)).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], VAULT_RESOURCE);
    assert_eq!(body["client_id"], CONTROL.client_id);
    let expires_on: i64 = body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expires_on - now - 3600).abs() <= 5,
        "{expires_on} vs {now}"
    );
}

#[tokio::test]
async fn access_policy_denial_and_object_errors_have_azure_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let base = server.vault_url(VAULT);
    let admin = token(&server, &ADMIN, VAULT_RESOURCE).await;
    let control = token(&server, &CONTROL, VAULT_RESOURCE).await;

    let (status, created) = post(
        &format!("{base}/keys/seal/create?{API}"),
        &admin,
        json!({"kty": "RSA", "key_size": 2048, "key_ops": ["encrypt", "decrypt"]}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let version = version_of(&created["key"]["kid"]);
    assert_eq!(created["key"]["kid"], format!("{base}/keys/seal/{version}"));
    assert_eq!(version.len(), 32);
    assert_eq!(created["key"]["e"], "AQAB");
    assert_eq!(
        created["attributes"]["recoveryLevel"],
        "Recoverable+Purgeable"
    );

    let oaep = |value: &Value| json!({"alg": "RSA-OAEP-256", "value": value});
    let (status, enc) = post(
        &format!("{base}/keys/seal//encrypt?{API}"),
        &control,
        oaep(&json!("c2VjcmV0")),
    )
    .await;
    assert_eq!(status, 200, "{enc}");
    assert_eq!(enc["kid"], created["key"]["kid"]);

    let decrypt_url = format!("{base}/keys/seal/{version}/decrypt?{API}");
    let (status, denied) = post(&decrypt_url, &control, oaep(&enc["value"])).await;
    assert_eq!(status, 403);
    assert_eq!(denied["error"]["code"], "Forbidden");
    assert_eq!(denied["error"]["innererror"]["code"], "AccessDenied");
    let expected = format!(
        "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{TENANT}/' does not have keys decrypt permission on key vault '{VAULT};location=local'.",
        CONTROL.client_id, CONTROL.object_id
    );
    assert!(
        denied["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&expected)
    );

    let (status, dec) = post(&decrypt_url, &admin, oaep(&enc["value"])).await;
    assert_eq!((status, dec["value"].as_str()), (200, Some("c2VjcmV0")));
    let (status, bad) = post(
        &decrypt_url,
        &admin,
        json!({"alg": "A256GCM", "value": enc["value"]}),
    )
    .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("BadParameter"))
    );
    let (status, bad) = post(&decrypt_url, &admin, oaep(&json!("not base64url!"))).await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("BadParameter"))
    );
    // The key was created without wrapKey in its key_ops.
    let (status, _) = post(
        &format!("{base}/keys/seal//wrapkey?{API}"),
        &admin,
        oaep(&json!("AAAA")),
    )
    .await;
    assert_eq!(status, 403);

    for (url, code) in [
        (format!("{base}/keys/nope?{API}"), "KeyNotFound"),
        (
            format!("{base}/keys/seal/{}?{API}", "0".repeat(32)),
            "KeyNotFound",
        ),
        (format!("{base}/secrets/nope?{API}"), "SecretNotFound"),
    ] {
        let (status, missing) = get(&url, &admin).await;
        assert_eq!(
            (status, missing["error"]["code"].as_str()),
            (404, Some(code)),
            "{url}"
        );
    }

    // Lists never carry secret values, and values never reach the log.
    put(
        &format!("{base}/secrets/pw?{API}"),
        &admin,
        json!({"value": "hunter2", "contentType": "text/plain"}),
    )
    .await;
    let (status, list) = get(&format!("{base}/secrets?{API}"), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(list["value"][0]["id"], format!("{base}/secrets/pw"));
    assert!(list["value"][0].get("value").is_none(), "{list}");
    assert!(!server.log_text().contains("hunter2"));
}

#[tokio::test]
async fn list_paging_follows_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let base = server.vault_url(VAULT);
    let admin = token(&server, &ADMIN, VAULT_RESOURCE).await;
    for i in 0..5 {
        put(
            &format!("{base}/secrets/s{i}?{API}"),
            &admin,
            json!({"value": "v"}),
        )
        .await;
    }
    let mut url = format!("{base}/secrets?{API}&maxresults=2");
    let mut seen = Vec::new();
    loop {
        let (status, page) = get(&url, &admin).await;
        assert_eq!(status, 200, "{page}");
        let ids = page["value"].as_array().unwrap().iter();
        seen.extend(ids.map(|v| v["id"].as_str().unwrap().to_owned()));
        match page["nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn fault_rules_are_validated_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let faults = format!("{}/_local/faults", server.vault_url(VAULT));
    let add = |rule: Value| send(http().post(&faults).json(&rule));
    assert_eq!(add(json!({"status": 404, "count": 1})).await.0, 400);
    let unknown_op = json!({"status": 429, "count": 1, "operations": ["frobnicate"]});
    assert_eq!(add(unknown_op).await.0, 400);
    let rule = json!({"status": 429, "retry_after": 7, "count": 3, "operations": ["list_keys"]});
    assert_eq!(add(rule).await.0, 200);

    let admin = token(&server, &ADMIN, VAULT_RESOURCE).await;
    let keys = format!("{}/keys?{API}", server.vault_url(VAULT));
    let resp = http().get(&keys).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "7");
    let (status, body) = json_of(resp).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("Throttled"))
    );
    let (_, rules) = send(http().get(&faults)).await;
    assert_eq!(rules["rules"][0]["count"], 2);

    assert_eq!(
        http()
            .delete(&faults)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(get(&keys, &admin).await.0, 200);
}

#[tokio::test]
async fn restart_keeps_keys_secrets_signing_key_and_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let base = server.vault_url(VAULT);
    let admin = token(&server, &ADMIN, VAULT_RESOURCE).await;
    let (status, created) = post(
        &format!("{base}/keys/durable/create?{API}"),
        &admin,
        json!({"kty": "RSA-HSM", "key_size": 2048}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(created["key"]["kty"], "RSA-HSM");
    let version = version_of(&created["key"]["kid"]);
    let rsa_oaep = |value: &Value| json!({"alg": "RSA-OAEP", "value": value});
    let (_, wrapped) = post(
        &format!("{base}/keys/durable/{version}/wrapkey?{API}"),
        &admin,
        rsa_oaep(&json!("AAECAwQFBgcICQ")),
    )
    .await;
    put(
        &format!("{base}/secrets/kept?{API}"),
        &admin,
        json!({"value": "still here"}),
    )
    .await;
    let ca_before = std::fs::read(&server.ca_certificate).unwrap();
    assert!(server.stop().success(), "SIGTERM must exit 0");

    let server = LocalAzure::start(dir.path());
    let base = server.vault_url(VAULT);
    // A token issued before the restart still verifies: the signing key was kept.
    let (status, dec) = post(
        &format!("{base}/keys/durable/{version}/unwrapkey?{API}"),
        &admin,
        rsa_oaep(&wrapped["value"]),
    )
    .await;
    assert_eq!(status, 200, "{dec}");
    assert_eq!(dec["value"], "AAECAwQFBgcICQ");
    let (status, secret) = get(&format!("{base}/secrets/kept?{API}"), &admin).await;
    assert_eq!(
        (status, secret["value"].as_str()),
        (200, Some("still here"))
    );
    assert_eq!(std::fs::read(&server.ca_certificate).unwrap(), ca_before);
    assert!(server.stop().success());
}

#[test]
fn ready_file_names_actual_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    assert!(server.identity_endpoint.starts_with("http://127.0.0.1:"));
    assert!(server.identity_endpoint.ends_with("/msi/token"));
    assert!(server.ca_certificate.is_absolute());
    for name in [VAULT, OTHER_VAULT] {
        let http_url = server.vault_url(name);
        let port = http_url.strip_prefix("http://127.0.0.1:").unwrap();
        assert_ne!(port, "0");
        assert_eq!(
            server.vault_https_url(name),
            format!("https://127.0.0.1:{port}")
        );
    }
    let log = server.log_text();
    assert_eq!(log.matches("listening").count(), 3, "{log}");
}

#[test]
fn bad_config_exits_2_with_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config();
    config["token_endpoint"]["port"] = json!(1);
    let path = dir.path().join("bad.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_culvert-azure-local"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown field `port`"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_culvert-azure-local"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigint_also_exits_cleanly() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), common::config().to_string()).unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_culvert-azure-local"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(dir.path().join("config.json"))
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready.exists() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("not ready");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = common::wait_bounded(&mut child, std::time::Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

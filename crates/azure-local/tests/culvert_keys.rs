//! The product's own Key Vault code (`culvert_azure::keyvault::KeyVaultKey`, with the
//! identity chosen by `CULVERT_AZURE_*` settings) against the stand-ins: what each identity
//! may do, how refusals and throttling are reported, and rotation.
//!
//! The managed identity is read from the process environment, so each scenario runs in a
//! child process of this test binary (see `sdk.rs` for why).

mod common;

use common::{ADMIN, AGENT, CONTROL, HEADER, Ident, LocalAzure, TENANT, VAULT};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn config() -> Value {
    let ident =
        |i: &Ident| json!({"name": i.name, "client_id": i.client_id, "object_id": i.object_id});
    json!({
        "tenant_id": TENANT,
        "identities": [ident(&ADMIN), ident(&AGENT), ident(&CONTROL)],
        "token_endpoint": {"listen": "127.0.0.1:0", "header": HEADER},
        "vaults": [{"name": VAULT, "listen": "127.0.0.1:0", "access_policies": [
            {"object_id": ADMIN.object_id, "keys": ["all"], "secrets": ["all"]},
            // The bootstrap's grants: agents open and wrap, the control plane only encrypts.
            {"object_id": AGENT.object_id, "keys": ["get", "decrypt", "wrapKey", "unwrapKey"], "secrets": ["get"]},
            {"object_id": CONTROL.object_id, "keys": ["get", "list", "encrypt"], "secrets": ["set", "list"]}
        ]}]
    })
}

async fn admin(server: &LocalAzure, method: &str, path: &str, body: Value) -> Value {
    let token = common::token(server, &ADMIN, "https://vault.azure.net").await;
    let url = format!("{}{path}?api-version=7.5", server.vault_url(VAULT));
    let req = match method {
        "POST" => reqwest::Client::new().post(url).json(&body),
        _ => reqwest::Client::new().get(url),
    };
    let r = req.bearer_auth(token).send().await.unwrap();
    assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    r.json().await.unwrap()
}

fn child(
    server: &LocalAzure,
    who: &Ident,
    scenario: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let ca = server.ca_certificate.to_string_lossy().into_owned();
    let vault = server.vault_https_url(VAULT);
    let mut envs = vec![
        ("CULVERT_AZURE_CREDENTIAL", "managed-identity"),
        ("CULVERT_AZURE_CLIENT_ID", who.client_id),
        ("CULVERT_AZURE_CA_FILE", ca.as_str()),
        ("KEY_SCENARIO", scenario),
        ("KEY_VAULT", vault.as_str()),
    ];
    envs.extend_from_slice(extra);
    common::run_child(server, who, "key_child", "KEY_OUT", &envs)
}

#[tokio::test]
async fn the_control_plane_seals_agents_open_and_refusals_name_the_permission() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start_with(dir.path(), &config());
    admin(
        &server,
        "POST",
        "/keys/culvert-credentials/create",
        json!({"kty": "RSA", "key_size": 2048}),
    )
    .await;
    let sealed = child(&server, &CONTROL, "seal", &[]);
    assert!(
        sealed["kid"].contains("/keys/culvert-credentials/"),
        "{sealed:?}"
    );
    assert_eq!(sealed["open_error_kind"], "forbidden");
    assert_eq!(sealed["open_error_permission"], "decrypt");
    assert!(
        sealed["open_error"].contains(&sealed["kid"]),
        "the error names the key: {sealed:?}"
    );
    assert!(
        sealed["open_error"].contains("does not have keys decrypt permission"),
        "{sealed:?}"
    );
    let opened = child(&server, &AGENT, "open", &[("SEALED", &sealed["envelope"])]);
    assert_eq!(opened["plain"], "s3cret");
}

#[tokio::test]
async fn data_keys_survive_rotation_and_throttling_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start_with(dir.path(), &config());
    admin(
        &server,
        "POST",
        "/keys/culvert-buffer/create",
        json!({"kty": "RSA", "key_size": 2048}),
    )
    .await;
    let before = child(&server, &AGENT, "wrap", &[]);
    admin(&server, "POST", "/keys/culvert-buffer/rotate", json!({})).await;
    let after = child(&server, &AGENT, "wrap", &[]);
    assert_ne!(before["kid"], after["kid"], "wrapping uses the new version");
    let both = child(
        &server,
        &AGENT,
        "unwrap",
        &[
            ("KIDS", &format!("{} {}", before["kid"], after["kid"])),
            (
                "WRAPPED",
                &format!("{} {}", before["wrapped"], after["wrapped"]),
            ),
        ],
    );
    assert_eq!(both["unwrapped"], "2");
    // More 429s than the client retries: the caller sees a transient fault with the wait.
    let faults = format!("{}/_local/faults", server.vault_url(VAULT));
    let r = reqwest::Client::new()
        .post(faults)
        .json(&json!({"status": 429, "retry_after": 1, "count": 6, "operations": ["wrapkey"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let throttled = child(&server, &AGENT, "wrap", &[]);
    assert_eq!(throttled["error_kind"], "unavailable", "{throttled:?}");
    let recovered = child(&server, &AGENT, "wrap", &[]);
    assert!(recovered.contains_key("kid"), "{recovered:?}");
}

#[test]
#[ignore = "entry point of the child processes above"]
fn key_child() {
    let Ok(scenario) = std::env::var("KEY_SCENARIO") else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(&scenario));
}

async fn run(scenario: &str) {
    use base64::Engine as _;
    use culvert_azure::identity::CredentialSource;
    use culvert_azure::keyvault::{KeyUse, KeyVaultKey};
    use culvert_sealing::{KeyEncryptionKey, KeyError, Wrapped};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let vault = std::env::var("KEY_VAULT").unwrap();
    let credential = CredentialSource::from_env().unwrap().credential().unwrap();
    let out = |k: &str, v: &str| println!("KEY_OUT {k}={v}");
    let kind = |e: &KeyError| match e {
        KeyError::Unavailable { .. } => "unavailable",
        KeyError::Forbidden { .. } => "forbidden",
        KeyError::NotFound { .. } => "not_found",
        KeyError::Invalid(_) => "invalid",
    };
    match scenario {
        "seal" | "open" => {
            let key = KeyVaultKey::new(
                &format!("{vault}/keys/culvert-credentials"),
                credential,
                KeyUse::Secrets,
            )
            .unwrap();
            if scenario == "seal" {
                let envelope = culvert_sealing::seal(&key, b"s3cret").await.unwrap();
                out("kid", &culvert_sealing::sealed_kid(&envelope).unwrap());
                out("envelope", &b64.encode(&envelope));
                let err = culvert_sealing::open(&key, &envelope).await.unwrap_err();
                let culvert_sealing::SealError::Key(k) = &err else {
                    panic!("{err}")
                };
                out("open_error_kind", kind(k));
                if let KeyError::Forbidden { permission, .. } = k {
                    out("open_error_permission", permission);
                }
                out("open_error", &k.to_string().replace('\n', " "));
            } else {
                let envelope =
                    String::from_utf8(b64.decode(std::env::var("SEALED").unwrap()).unwrap())
                        .unwrap();
                let plain = culvert_sealing::open(&key, &envelope).await.unwrap();
                out("plain", &String::from_utf8(plain).unwrap());
            }
        }
        "wrap" => {
            let key = KeyVaultKey::new(
                &format!("{vault}/keys/culvert-buffer"),
                credential,
                KeyUse::DataKeys,
            )
            .unwrap();
            match key.wrap(&[7u8; 32]).await {
                Ok(w) => {
                    out("kid", &w.kid);
                    out("wrapped", &b64.encode(&w.bytes));
                }
                Err(e) => {
                    out("error_kind", kind(&e));
                    out("error", &e.to_string().replace('\n', " "));
                }
            }
        }
        "unwrap" => {
            let key = KeyVaultKey::new(
                &format!("{vault}/keys/culvert-buffer"),
                credential,
                KeyUse::DataKeys,
            )
            .unwrap();
            let kids = std::env::var("KIDS").unwrap();
            let wrapped = std::env::var("WRAPPED").unwrap();
            let mut n = 0;
            for (kid, bytes) in kids.split(' ').zip(wrapped.split(' ')) {
                let w = Wrapped {
                    kid: kid.into(),
                    alg: "RSA-OAEP-256".into(),
                    bytes: b64.decode(bytes).unwrap(),
                };
                assert_eq!(key.unwrap(&w).await.unwrap(), vec![7u8; 32]);
                n += 1;
            }
            out("unwrapped", &n.to_string());
        }
        other => panic!("unknown scenario {other}"),
    }
}

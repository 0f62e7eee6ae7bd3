//! The official Azure SDK for Rust against the local stand-ins, unchanged.
//!
//! `ManagedIdentityCredential` reads `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` from the process
//! environment, which a test cannot set safely (edition 2024 makes `set_var` unsafe and the
//! workspace denies unsafe code). So each SDK scenario runs in a child process: this test binary
//! re-executed with only `sdk_child` selected and the environment set. The child prints
//! `AZL_OUT key=value` lines that the parent checks.

mod common;

use common::{ADMIN, AGENT, CONTROL, Ident, LocalAzure, TENANT, VAULT};
use std::collections::BTreeMap;

fn run_child(
    server: &LocalAzure,
    who: &Ident,
    scenario: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let ca = server.ca_certificate.to_string_lossy().into_owned();
    let mut envs = vec![
        ("AZL_SCENARIO", scenario.to_owned()),
        ("AZL_CLIENT_ID", who.client_id.to_owned()),
        ("AZL_VAULT_URL", server.vault_https_url(VAULT)),
        ("AZL_CA_CERT", ca),
    ];
    envs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::run_child(server, who, "sdk_child", "AZL_OUT", &envs)
}

#[test]
fn managed_identity_credential_gets_a_vault_token_for_the_user_assigned_identity() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let out = run_child(&server, &AGENT, "token", &[]);
    assert_eq!(out["aud"], "https://vault.azure.net");
    assert_eq!(out["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(out["tid"], TENANT);
    assert_eq!(out["oid"], AGENT.object_id);
    assert_eq!(out["appid"], AGENT.client_id);
    assert_eq!(out["alg"], "HS256");
    let lifetime: i64 = out["exp_minus_iat"].parse().unwrap();
    assert_eq!(lifetime, 3600);
    let skew: i64 = out["expires_on_minus_exp"].parse().unwrap();
    assert_eq!(skew, 0, "credential's expires_on must be the token's exp");
    assert!(
        !server.log_text().contains(&out["token_signature"]),
        "token leaked into the log"
    );
}

#[test]
fn key_client_create_get_encrypt_decrypt_wrap_unwrap_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let out = run_child(&server, &ADMIN, "keys_lifecycle", &[]);
    assert_eq!(out["done"], "true");
    assert_ne!(out["v1"], out["v2"]);
    // The SDK's no-version form (`/keys/{name}//wrapkey`) reached the server and was served.
    let log = server.log_text();
    assert!(log.contains("path=/keys/kek//wrapkey"), "{log}");
    assert!(log.contains("path=/keys/kek//encrypt"), "{log}");
}

#[test]
fn control_plane_identity_is_refused_decrypt_but_the_agent_can_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let created = run_child(&server, &ADMIN, "create_key", &[("AZL_KEY", "sealing")]);
    let version = &created["version"];

    let control = run_child(
        &server,
        &CONTROL,
        "control_plane",
        &[("AZL_KEY", "sealing")],
    );
    assert_eq!(&control["encrypt_version"], version);
    assert_eq!(control["decrypt_status"], "403");
    assert_eq!(control["decrypt_code"], "Forbidden");
    assert_eq!(control["decrypt_inner_code"], "AccessDenied");
    let expected = format!(
        "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{TENANT}/' does not have keys decrypt permission on key vault '{VAULT};location=local'.",
        CONTROL.client_id, CONTROL.object_id
    );
    assert!(
        control["decrypt_message"].starts_with(&expected),
        "message was: {}",
        control["decrypt_message"]
    );

    let agent = run_child(
        &server,
        &AGENT,
        "agent_decrypt",
        &[
            ("AZL_KEY", "sealing"),
            ("AZL_VERSION", version),
            ("AZL_CIPHERTEXT", &control["ciphertext"]),
        ],
    );
    assert_eq!(agent["plaintext"], "connector-secret-dek");
    assert_eq!(agent["encrypt_status"], "403");
    assert!(agent["encrypt_message"].contains("does not have keys encrypt permission"));
}

#[test]
fn secret_client_set_get_list_versions_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let out = run_child(&server, &ADMIN, "secrets", &[]);
    assert_eq!(out["done"], "true");
}

#[test]
fn injected_throttling_and_unavailability_are_retried_by_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalAzure::start(dir.path());
    let out = run_child(&server, &ADMIN, "throttled", &[]);
    let elapsed: u64 = out["decrypt_elapsed_ms"].parse().unwrap();
    // Two 429s, each with Retry-After: 1, then success.
    assert!(
        elapsed >= 2000,
        "decrypt took {elapsed} ms; Retry-After was not honoured"
    );
    assert_eq!(out["rules_left"], "0");
    let log = server.log_text();
    assert!(log.matches("op=decrypt").count() >= 3, "{log}");
    assert!(
        log.contains("status=429") && log.contains("status=503"),
        "{log}"
    );
}

/// Entry point of the child processes above; does nothing when run directly.
#[test]
#[ignore = "entry point of the SDK child processes that the other tests spawn"]
fn sdk_child() {
    let Ok(scenario) = std::env::var("AZL_SCENARIO") else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(child::run(&scenario));
}

mod child {
    use azure_core::credentials::TokenCredential;
    use azure_core::http::{ClientOptions, StatusCode, Transport};
    use azure_identity::{
        ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    };
    use azure_security_keyvault_keys::models::{
        CreateKeyParameters, EncryptionAlgorithm, KeyClientEncryptOptions, KeyClientGetKeyOptions,
        KeyClientWrapKeyOptions, KeyOperation, KeyOperationParameters, KeyType,
    };
    use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, ResourceExt as _};
    use azure_security_keyvault_secrets::models::{
        SecretClientGetSecretOptions, SetSecretParameters,
    };
    use azure_security_keyvault_secrets::{ResourceExt as _, SecretClient, SecretClientOptions};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use futures::TryStreamExt as _;
    use serde_json::Value;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Instant;

    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
    }

    fn out(key: &str, value: impl std::fmt::Display) {
        println!("AZL_OUT {key}={value}");
    }

    fn credential() -> Arc<ManagedIdentityCredential> {
        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: Some(UserAssignedId::ClientId(env("AZL_CLIENT_ID"))),
            ..Default::default()
        }))
        .expect("credential")
    }

    /// An HTTP client that trusts the stand-in's CA (and nothing else).
    fn http_client() -> reqwest::Client {
        let pem = std::fs::read(env("AZL_CA_CERT")).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap()
    }

    /// The SDK's client options, with only the transport swapped for one that trusts the local CA.
    fn client_options() -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(http_client()))),
            ..Default::default()
        }
    }

    fn key_client() -> KeyClient {
        KeyClient::new(
            &env("AZL_VAULT_URL"),
            credential(),
            Some(KeyClientOptions {
                verify_challenge_resource: Some(false),
                client_options: client_options(),
                ..Default::default()
            }),
        )
        .expect("key client")
    }

    fn secret_client() -> SecretClient {
        SecretClient::new(
            &env("AZL_VAULT_URL"),
            credential(),
            Some(SecretClientOptions {
                verify_challenge_resource: Some(false),
                client_options: client_options(),
                ..Default::default()
            }),
        )
        .expect("secret client")
    }

    fn oaep256(value: &[u8]) -> KeyOperationParameters {
        KeyOperationParameters {
            algorithm: Some(EncryptionAlgorithm::RsaOaep256),
            value: Some(value.to_vec()),
            ..Default::default()
        }
    }

    /// Status, error code, message and inner code of a failed SDK call.
    fn http_error(err: &azure_core::Error) -> (u16, String, String, String) {
        match err.kind() {
            azure_core::error::ErrorKind::HttpResponse {
                status,
                raw_response: Some(raw),
                ..
            } => {
                let body: Value = serde_json::from_slice(raw.body()).expect("error body is JSON");
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    u16::from(*status),
                    s(&body["error"]["code"]),
                    s(&body["error"]["message"]),
                    s(&body["error"]["innererror"]["code"]),
                )
            }
            other => panic!("expected an HTTP error, got {other:?}: {err}"),
        }
    }

    pub async fn run(scenario: &str) {
        match scenario {
            "token" => token().await,
            "keys_lifecycle" => keys_lifecycle().await,
            "create_key" => create_key().await,
            "control_plane" => control_plane().await,
            "agent_decrypt" => agent_decrypt().await,
            "secrets" => secrets().await,
            "throttled" => throttled().await,
            other => panic!("unknown scenario {other}"),
        }
    }

    async fn token() {
        let token = credential()
            .get_token(&["https://vault.azure.net/.default"], None)
            .await
            .expect("get_token");
        let jwt = token.token.secret();
        let mut parts = jwt.split('.');
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap())
                .unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap())
                .unwrap();
        out("alg", header["alg"].as_str().unwrap());
        for c in ["aud", "iss", "tid", "oid", "appid"] {
            out(c, claims[c].as_str().unwrap());
        }
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        out("exp_minus_iat", exp - iat);
        out(
            "expires_on_minus_exp",
            token.expires_on.unix_timestamp() - exp,
        );
        out("token_signature", jwt.rsplit('.').next().unwrap());
    }

    async fn keys_lifecycle() {
        let client = key_client();
        let params = CreateKeyParameters {
            kty: Some(KeyType::Rsa),
            key_size: Some(2048),
            key_ops: Some(vec![
                KeyOperation::Encrypt,
                KeyOperation::Decrypt,
                KeyOperation::WrapKey,
                KeyOperation::UnwrapKey,
            ]),
            ..Default::default()
        };
        let created = client
            .create_key("kek", params.try_into().unwrap(), None)
            .await
            .expect("create_key")
            .into_model()
            .unwrap();
        let v1 = created.resource_id().unwrap().version.unwrap();
        assert_eq!(v1.len(), 32);
        out("v1", &v1);

        let got = client
            .get_key("kek", None)
            .await
            .expect("get_key")
            .into_model()
            .unwrap();
        let jwk = got.key.as_ref().unwrap();
        assert_eq!(jwk.n.as_ref().unwrap().len(), 256);
        assert_eq!(jwk.e.as_deref(), Some(&[1u8, 0, 1][..]));
        assert_eq!(
            got.resource_id().unwrap().version.as_deref(),
            Some(v1.as_str())
        );
        assert_eq!(got.attributes.as_ref().unwrap().enabled, Some(true));

        // No version: the SDK sends `/keys/kek//encrypt`.
        let enc = client
            .encrypt("kek", oaep256(b"hello vault").try_into().unwrap(), None)
            .await
            .expect("encrypt")
            .into_model()
            .unwrap();
        assert_eq!(
            enc.resource_id().unwrap().version.as_deref(),
            Some(v1.as_str())
        );
        let dec = client
            .decrypt(
                "kek",
                &v1,
                oaep256(enc.result.as_ref().unwrap()).try_into().unwrap(),
                None,
            )
            .await
            .expect("decrypt")
            .into_model()
            .unwrap();
        assert_eq!(dec.result.as_deref(), Some(&b"hello vault"[..]));

        // RSA-OAEP (SHA-1) too.
        let sha1 = |v: &[u8]| KeyOperationParameters {
            algorithm: Some(EncryptionAlgorithm::RsaOaep),
            value: Some(v.to_vec()),
            ..Default::default()
        };
        let enc1 = client
            .encrypt("kek", sha1(b"sha1").try_into().unwrap(), None)
            .await
            .expect("encrypt RSA-OAEP")
            .into_model()
            .unwrap();
        let dec1 = client
            .decrypt(
                "kek",
                &v1,
                sha1(enc1.result.as_ref().unwrap()).try_into().unwrap(),
                None,
            )
            .await
            .expect("decrypt RSA-OAEP")
            .into_model()
            .unwrap();
        assert_eq!(dec1.result.as_deref(), Some(&b"sha1"[..]));

        let dek = [7u8; 32];
        let wrapped = client
            .wrap_key("kek", oaep256(&dek).try_into().unwrap(), None)
            .await
            .expect("wrap_key")
            .into_model()
            .unwrap();
        let wrapped_version = wrapped.resource_id().unwrap().version.unwrap();
        assert_eq!(wrapped_version, v1);
        let unwrapped = client
            .unwrap_key(
                "kek",
                &wrapped_version,
                oaep256(wrapped.result.as_ref().unwrap())
                    .try_into()
                    .unwrap(),
                None,
            )
            .await
            .expect("unwrap_key")
            .into_model()
            .unwrap();
        assert_eq!(unwrapped.result.as_deref(), Some(&dek[..]));

        let rotated = client
            .rotate_key("kek", None)
            .await
            .expect("rotate_key")
            .into_model()
            .unwrap();
        let v2 = rotated.resource_id().unwrap().version.unwrap();
        assert_ne!(v1, v2);
        out("v2", &v2);
        let latest = client
            .get_key("kek", None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(
            latest.resource_id().unwrap().version.as_deref(),
            Some(v2.as_str())
        );
        assert_ne!(
            latest.key.as_ref().unwrap().n,
            jwk.n,
            "rotation must make new key material"
        );
        let old = client
            .get_key(
                "kek",
                Some(KeyClientGetKeyOptions {
                    key_version: Some(v1.clone()),
                    ..Default::default()
                }),
            )
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(old.key.as_ref().unwrap().n, jwk.n);

        // Old ciphertext still decrypts with the version it was made with.
        let old_dec = client
            .unwrap_key(
                "kek",
                &v1,
                oaep256(wrapped.result.as_ref().unwrap())
                    .try_into()
                    .unwrap(),
                None,
            )
            .await
            .expect("unwrap with the old version after rotation")
            .into_model()
            .unwrap();
        assert_eq!(old_dec.result.as_deref(), Some(&dek[..]));
        // ...and not with the new one.
        let err = client
            .unwrap_key(
                "kek",
                &v2,
                oaep256(wrapped.result.as_ref().unwrap())
                    .try_into()
                    .unwrap(),
                None,
            )
            .await
            .expect_err("new version cannot unwrap the old wrapping");
        assert_eq!(http_error(&err).0, 400);

        // Without a version, new operations use the new version.
        let wrapped2 = client
            .wrap_key(
                "kek",
                oaep256(&dek).try_into().unwrap(),
                Some(KeyClientWrapKeyOptions::default()),
            )
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(
            wrapped2.resource_id().unwrap().version.as_deref(),
            Some(v2.as_str())
        );
        let explicit = client
            .encrypt(
                "kek",
                oaep256(b"x").try_into().unwrap(),
                Some(KeyClientEncryptOptions {
                    key_version: Some(v1.clone()),
                    ..Default::default()
                }),
            )
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(
            explicit.resource_id().unwrap().version.as_deref(),
            Some(v1.as_str())
        );

        let versions: Vec<_> = client
            .list_key_properties_versions("kek", None)
            .unwrap()
            .try_collect()
            .await
            .expect("list versions");
        assert_eq!(versions.len(), 2);
        let keys: Vec<_> = client
            .list_key_properties(None)
            .unwrap()
            .try_collect()
            .await
            .expect("list keys");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].resource_id().unwrap().name, "kek");

        let missing = client.get_key("nope", None).await.expect_err("missing key");
        let (status, code, _, _) = http_error(&missing);
        assert_eq!((status, code.as_str()), (404, "KeyNotFound"));

        client.delete_key("kek", None).await.expect("delete_key");
        let gone = client.get_key("kek", None).await.expect_err("deleted key");
        assert_eq!(http_error(&gone).0, 404);
        assert_eq!(StatusCode::NotFound, gone.http_status().unwrap());
        out("done", true);
    }

    async fn create_key() {
        let params = CreateKeyParameters {
            kty: Some(KeyType::Rsa),
            key_size: Some(3072),
            ..Default::default()
        };
        let key = key_client()
            .create_key(&env("AZL_KEY"), params.try_into().unwrap(), None)
            .await
            .expect("create_key")
            .into_model()
            .unwrap();
        assert_eq!(key.key.as_ref().unwrap().n.as_ref().unwrap().len(), 384);
        out("version", key.resource_id().unwrap().version.unwrap());
    }

    async fn control_plane() {
        let client = key_client();
        let name = env("AZL_KEY");
        client
            .get_key(&name, None)
            .await
            .expect("control plane may get the public key");
        let enc = client
            .encrypt(
                &name,
                oaep256(b"connector-secret-dek").try_into().unwrap(),
                None,
            )
            .await
            .expect("control plane may encrypt")
            .into_model()
            .unwrap();
        let version = enc.resource_id().unwrap().version.unwrap();
        out("encrypt_version", &version);
        let ciphertext = enc.result.unwrap();
        out("ciphertext", URL_SAFE_NO_PAD.encode(&ciphertext));
        let err = client
            .decrypt(
                &name,
                &version,
                oaep256(&ciphertext).try_into().unwrap(),
                None,
            )
            .await
            .expect_err("control plane must not decrypt");
        let (status, code, message, inner) = http_error(&err);
        out("decrypt_status", status);
        out("decrypt_code", code);
        out("decrypt_message", message);
        out("decrypt_inner_code", inner);
    }

    async fn agent_decrypt() {
        let client = key_client();
        let name = env("AZL_KEY");
        let ciphertext = URL_SAFE_NO_PAD.decode(env("AZL_CIPHERTEXT")).unwrap();
        let dec = client
            .decrypt(
                &name,
                &env("AZL_VERSION"),
                oaep256(&ciphertext).try_into().unwrap(),
                None,
            )
            .await
            .expect("agent decrypt")
            .into_model()
            .unwrap();
        out("plaintext", String::from_utf8(dec.result.unwrap()).unwrap());
        let err = client
            .encrypt(&name, oaep256(b"x").try_into().unwrap(), None)
            .await
            .expect_err("agent has no encrypt permission");
        let (status, _, message, _) = http_error(&err);
        out("encrypt_status", status);
        out("encrypt_message", message);
    }

    async fn secrets() {
        let client = secret_client();
        let set = |value: &str| SetSecretParameters {
            value: Some(value.to_owned()),
            content_type: Some("text/plain".into()),
            tags: Some(HashMap::from([("owner".to_owned(), "culvert".to_owned())])),
            ..Default::default()
        };
        let first = client
            .set_secret("db-password", set("p1").try_into().unwrap(), None)
            .await
            .expect("set_secret")
            .into_model()
            .unwrap();
        assert_eq!(first.value.as_deref(), Some("p1"));
        let v1 = first.resource_id().unwrap().version.unwrap();
        client
            .set_secret("db-password", set("p2").try_into().unwrap(), None)
            .await
            .expect("set_secret again");
        client
            .set_secret("api-token", set("t").try_into().unwrap(), None)
            .await
            .expect("set another");

        let latest = client
            .get_secret("db-password", None)
            .await
            .expect("get")
            .into_model()
            .unwrap();
        assert_eq!(latest.value.as_deref(), Some("p2"));
        assert_eq!(latest.content_type.as_deref(), Some("text/plain"));
        assert_eq!(latest.tags.as_ref().unwrap()["owner"], "culvert");
        let old = client
            .get_secret(
                "db-password",
                Some(SecretClientGetSecretOptions {
                    secret_version: Some(v1),
                    ..Default::default()
                }),
            )
            .await
            .expect("get version")
            .into_model()
            .unwrap();
        assert_eq!(old.value.as_deref(), Some("p1"));

        let mut names: Vec<String> = client
            .list_secret_properties(None)
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .expect("list")
            .iter()
            .map(|s| s.resource_id().unwrap().name)
            .collect();
        names.sort();
        assert_eq!(names, ["api-token", "db-password"]);
        let versions: Vec<_> = client
            .list_secret_properties_versions("db-password", None)
            .unwrap()
            .try_collect()
            .await
            .expect("list versions");
        assert_eq!(versions.len(), 2);

        client
            .delete_secret("api-token", None)
            .await
            .expect("delete");
        let err = client
            .get_secret("api-token", None)
            .await
            .expect_err("deleted");
        let (status, code, _, _) = http_error(&err);
        assert_eq!((status, code.as_str()), (404, "SecretNotFound"));
        out("done", true);
    }

    async fn throttled() {
        let client = key_client();
        let params = CreateKeyParameters {
            kty: Some(KeyType::Rsa),
            ..Default::default()
        };
        let key = client
            .create_key("busy", params.try_into().unwrap(), None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        let version = key.resource_id().unwrap().version.unwrap();
        let enc = client
            .encrypt("busy", oaep256(b"payload").try_into().unwrap(), None)
            .await
            .unwrap()
            .into_model()
            .unwrap();

        let faults = format!("{}/_local/faults", env("AZL_VAULT_URL"));
        let http = http_client();
        let add = |rule: Value| {
            let (http, faults) = (http.clone(), faults.clone());
            async move {
                let r = http.post(&faults).json(&rule).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
            }
        };
        add(serde_json::json!({"status": 429, "retry_after": 1, "count": 2, "operations": ["decrypt"]})).await;
        add(serde_json::json!({"status": 503, "count": 1, "operations": ["wrapkey"]})).await;

        let start = Instant::now();
        let dec = client
            .decrypt(
                "busy",
                &version,
                oaep256(enc.result.as_ref().unwrap()).try_into().unwrap(),
                None,
            )
            .await
            .expect("decrypt succeeds after the throttling passes")
            .into_model()
            .unwrap();
        out("decrypt_elapsed_ms", start.elapsed().as_millis());
        assert_eq!(dec.result.as_deref(), Some(&b"payload"[..]));
        client
            .wrap_key("busy", oaep256(&[1; 32]).try_into().unwrap(), None)
            .await
            .expect("wrap succeeds after the 503");

        let left: Value = http
            .get(&faults)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out("rules_left", left["rules"].as_array().unwrap().len());
    }
}

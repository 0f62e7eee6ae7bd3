//! The Azure stand-ins of the local stack: a managed-identity token endpoint and two Key
//! Vaults (`culvert-platform` holds the control plane's master key, `culvert-env` holds each
//! environment's credential and buffer keys), with the access policies the BYOC guide
//! grants. The control plane, the agents and the CLI each get their own identity.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use culvert_azure::keyvault::{BUFFER_KEY, CREDENTIALS_KEY};

use super::state::{StateDir, write_atomic};

/// Vault of the control plane's own secrets.
pub const PLATFORM_VAULT: &str = "culvert-platform";
/// Vault of the environments' keys (one per customer subscription on Azure).
pub const ENV_VAULT: &str = "culvert-env";
/// The secret holding the control plane's master key versions.
pub const MASTER_KEY_SECRET: &str = "culvert-master-key";

/// Identities of the local stack, kept between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identities {
    /// Tenant in tokens.
    pub tenant_id: String,
    /// The value every process sends as `X-IDENTITY-HEADER`.
    pub header: String,
    /// The control plane: encrypt-only on environment keys.
    pub control_plane: Identity,
    /// Agents: decrypt, wrap and unwrap.
    pub agent: Identity,
    /// The CLI acting as the bootstrap (creates keys, as Terraform does on Azure).
    pub bootstrap: Identity,
}

/// One managed identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// Client id.
    pub client_id: String,
    /// Object id.
    pub object_id: String,
}

fn new_identity() -> Identity {
    Identity {
        client_id: uuid::Uuid::new_v4().to_string(),
        object_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// Where the stand-ins listen, from their ready file.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    /// `IDENTITY_ENDPOINT`.
    pub identity_endpoint: String,
    /// Vault name → plain-http base URL (for the bootstrap's own calls).
    pub vaults: std::collections::BTreeMap<String, String>,
    /// Vault name → https base URL (the SDK sends tokens over TLS only).
    pub vaults_https: std::collections::BTreeMap<String, String>,
    /// The stand-ins' CA certificate (PEM file).
    pub ca_certificate: PathBuf,
}

impl Endpoints {
    /// Plain-http base URL of a vault.
    pub fn vault(&self, name: &str) -> Result<String> {
        self.vaults
            .get(name)
            .cloned()
            .with_context(|| format!("the Azure stand-ins serve no vault {name}"))
    }

    /// The https base URL of a vault, as clients use it.
    pub fn vault_https(&self, name: &str) -> Result<String> {
        self.vaults_https
            .get(name)
            .cloned()
            .with_context(|| format!("the Azure stand-ins serve no vault {name} over https"))
    }
}

/// Files of the stand-ins under the state directory.
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// The stand-ins' directory in `state`.
    pub fn new(state: &StateDir) -> Files {
        Files {
            dir: state.root().join("azure"),
        }
    }
    /// Persistent state (keys, secrets, token signing key).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
    /// The generated configuration.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// Written by the stand-ins once they listen.
    pub fn ready(&self) -> PathBuf {
        self.dir.join("ready.json")
    }
    fn identities(&self) -> PathBuf {
        self.dir.join("identities.json")
    }
}

/// The stack's identities, created on first use.
pub fn identities(files: &Files) -> Result<Identities> {
    if let Ok(text) = std::fs::read_to_string(files.identities()) {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid", files.identities().display()));
    }
    let ids = Identities {
        tenant_id: uuid::Uuid::new_v4().to_string(),
        header: uuid::Uuid::new_v4().simple().to_string(),
        control_plane: new_identity(),
        agent: new_identity(),
        bootstrap: new_identity(),
    };
    std::fs::create_dir_all(&files.dir)?;
    write_atomic(
        &files.identities(),
        &serde_json::to_string_pretty(&ids)?,
        0o600,
    )?;
    Ok(ids)
}

/// Write the stand-ins' configuration for these ports.
pub fn write_config(
    files: &Files,
    ids: &Identities,
    token_port: u16,
    vault_ports: (u16, u16),
) -> Result<()> {
    let policy = |who: &Identity, keys: &[&str], secrets: &[&str]| serde_json::json!({"object_id": who.object_id, "keys": keys, "secrets": secrets});
    let all_keys = [
        "get",
        "list",
        "create",
        "update",
        "delete",
        "encrypt",
        "decrypt",
        "wrapKey",
        "unwrapKey",
        "rotate",
    ];
    let all_secrets = ["get", "list", "set", "delete"];
    let config = serde_json::json!({
        "tenant_id": ids.tenant_id,
        "identities": [
            {"name": "culvert-control-plane", "client_id": ids.control_plane.client_id, "object_id": ids.control_plane.object_id},
            {"name": "culvert-agent", "client_id": ids.agent.client_id, "object_id": ids.agent.object_id},
            {"name": "culvert-bootstrap", "client_id": ids.bootstrap.client_id, "object_id": ids.bootstrap.object_id},
        ],
        "token_endpoint": {"listen": format!("127.0.0.1:{token_port}"), "header": ids.header},
        "vaults": [
            {
                "name": PLATFORM_VAULT,
                "listen": format!("127.0.0.1:{}", vault_ports.0),
                "access_policies": [
                    policy(&ids.control_plane, &[], &["get", "list", "set"]),
                    policy(&ids.bootstrap, &all_keys, &all_secrets),
                ],
            },
            {
                "name": ENV_VAULT,
                "listen": format!("127.0.0.1:{}", vault_ports.1),
                "access_policies": [
                    // As the BYOC guide's bootstrap grants: the control plane encrypts, never decrypts.
                    policy(&ids.control_plane, &["get", "list", "encrypt"], &["set", "list"]),
                    policy(&ids.agent, &["get", "decrypt", "wrapKey", "unwrapKey"], &["get"]),
                    policy(&ids.bootstrap, &all_keys, &all_secrets),
                ],
            },
        ],
    });
    std::fs::create_dir_all(files.state_dir())?;
    write_atomic(
        &files.config(),
        &serde_json::to_string_pretty(&config)?,
        0o600,
    )
}

/// The endpoints from the ready file, if the stand-ins wrote it.
pub fn endpoints(files: &Files) -> Option<Endpoints> {
    let text = std::fs::read_to_string(files.ready()).ok()?;
    serde_json::from_str(&text).ok()
}

/// The environment a process needs to use `who` as its managed identity.
pub fn identity_env(ids: &Identities, ep: &Endpoints, who: &Identity) -> Vec<(String, String)> {
    vec![
        ("IDENTITY_ENDPOINT".into(), ep.identity_endpoint.clone()),
        ("IDENTITY_HEADER".into(), ids.header.clone()),
        ("CULVERT_AZURE_CREDENTIAL".into(), "managed-identity".into()),
        ("CULVERT_AZURE_CLIENT_ID".into(), who.client_id.clone()),
        (
            "CULVERT_AZURE_CA_FILE".into(),
            ep.ca_certificate.display().to_string(),
        ),
    ]
}

async fn token(http: &reqwest::Client, ids: &Identities, ep: &Endpoints) -> Result<String> {
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    let reply = http
        .get(&ep.identity_endpoint)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", "https://vault.azure.net"),
            ("client_id", ids.bootstrap.client_id.as_str()),
        ])
        .header("X-IDENTITY-HEADER", &ids.header)
        .header("metadata", "true")
        .send()
        .await
        .context("the local token endpoint does not answer")?;
    if !reply.status().is_success() {
        bail!(
            "the local token endpoint refused the bootstrap identity: {}",
            reply.status()
        );
    }
    Ok(reply.json::<Token>().await?.access_token)
}

/// Create what Terraform creates on Azure: the environment keys and the first master key.
pub async fn bootstrap(ids: &Identities, ep: &Endpoints) -> Result<()> {
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token(&http, ids, ep).await?);
    let env_vault = ep.vault(ENV_VAULT)?;
    for key in [CREDENTIALS_KEY, BUFFER_KEY] {
        let url = format!("{env_vault}/keys/{key}?api-version=7.5");
        let exists = http
            .get(&url)
            .header("Authorization", &bearer)
            .send()
            .await?;
        if exists.status().is_success() {
            continue;
        }
        let created = http
            .post(format!("{env_vault}/keys/{key}/create?api-version=7.5"))
            .header("Authorization", &bearer)
            .json(&serde_json::json!({"kty": "RSA", "key_size": 3072,
                "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"]}))
            .send()
            .await?;
        if !created.status().is_success() {
            bail!(
                "creating key {key} in the local vault failed: {}",
                created.text().await.unwrap_or_default()
            );
        }
    }
    let platform = ep.vault(PLATFORM_VAULT)?;
    let url = format!("{platform}/secrets/{MASTER_KEY_SECRET}");
    let exists = http
        .get(format!("{url}?api-version=7.5"))
        .header("Authorization", &bearer)
        .send()
        .await?;
    if !exists.status().is_success() {
        use base64::Engine as _;
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
        let value = base64::engine::general_purpose::STANDARD.encode(key);
        let set = http
            .put(format!("{url}?api-version=7.5"))
            .header("Authorization", &bearer)
            .json(&serde_json::json!({"value": value, "contentType": "application/octet-stream"}))
            .send()
            .await?;
        if !set.status().is_success() {
            bail!(
                "creating the master key in the local vault failed: {}",
                set.status()
            );
        }
    }
    Ok(())
}

//! The Azure stand-ins of the local stack: a managed-identity token endpoint and two Key
//! Vaults (`culvert-platform` holds the control plane's master key, `culvert-env` holds each
//! environment's credential and buffer keys), with the access policies the BYOC guide
//! grants. The control plane, the agents and the CLI each get their own identity.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use culvert_azure::keyvault::{BUFFER_KEY, CREDENTIALS_KEY};

use super::customer::OwnerArm;
use super::state::{StateDir, write_atomic};

/// Vault of the control plane's own secrets.
pub const PLATFORM_VAULT: &str = "culvert-platform";
/// Vault of the environments' keys (one per customer subscription on Azure).
pub const ENV_VAULT: &str = "culvert-env";
/// The secret holding the control plane's master key versions.
pub const MASTER_KEY_SECRET: &str = "culvert-master-key";
/// The customers' subscription of the local Resource Manager (Azure environments name it).
pub const CUSTOMER_SUBSCRIPTION: &str = "5c0f3e1a-7b2d-4c8e-9a61-0d4b2f6e8a10";
/// Culvert's own subscription of the local Resource Manager (the metadata service lives there).
pub const CULVERT_SUBSCRIPTION: &str = "c0a1b2c3-d4e5-4f60-8a71-92b3c4d5e6f7";
/// Culvert's resource group there.
pub const CULVERT_RESOURCE_GROUP: &str = "culvert-control-plane";

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
    /// The Resource Manager stand-in's HTTPS base URL.
    #[serde(default)]
    pub arm_endpoint: Option<String>,
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
    arm_port: u16,
    agent_binary: &std::path::Path,
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
        // The bootstrap identity plays the customer's administrator running Terraform.
        "arm": {
            "listen": format!("127.0.0.1:{arm_port}"),
            "owners": [ids.bootstrap.object_id],
            "subscriptions": [
                {"id": CUSTOMER_SUBSCRIPTION},
                {"id": CULVERT_SUBSCRIPTION},
            ],
            "agent_binary": agent_binary,
        },
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
    bootstrap_token(http, ids, ep, "https://vault.azure.net").await
}

/// A token of the bootstrap identity (the customer's administrator) for `resource`.
pub async fn bootstrap_token(
    http: &reqwest::Client,
    ids: &Identities,
    ep: &Endpoints,
    resource: &str,
) -> Result<String> {
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    let reply = http
        .get(&ep.identity_endpoint)
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", resource),
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

/// Resource id of Culvert's metadata Private Link Service in the local Resource Manager.
pub fn metadata_service_id() -> String {
    format!(
        "/subscriptions/{CULVERT_SUBSCRIPTION}/resourceGroups/{CULVERT_RESOURCE_GROUP}/providers/Microsoft.Network/privateLinkServices/culvert-metadata"
    )
}

/// Create Culvert's side in the local Resource Manager: its resource group and the metadata
/// Private Link Service customers' private endpoints connect to.
pub async fn culvert_side(ids: &Identities, ep: &Endpoints) -> Result<()> {
    let Some(arm) = OwnerArm::new(ids, ep).await? else {
        return Ok(());
    };
    let rg =
        format!("/subscriptions/{CULVERT_SUBSCRIPTION}/resourceGroups/{CULVERT_RESOURCE_GROUP}");
    // The control plane approves endpoint connections on its own service, as its identity's
    // role in Culvert's resource group allows on Azure.
    let role = format!(
        "{rg}/providers/Microsoft.Authorization/roleDefinitions/5e7a0d3c-1b2f-4c6d-8e9f-0a1b2c3d4e5f"
    );
    let assignment = format!(
        "{rg}/providers/Microsoft.Authorization/roleAssignments/6f8b1e4d-2c3a-4d7e-9f0a-1b2c3d4e5f60"
    );
    for (path, version, body) in [
        (
            rg.clone(),
            "2021-04-01",
            serde_json::json!({"location": "eastus2"}),
        ),
        (
            metadata_service_id(),
            "2024-05-01",
            serde_json::json!({"location": "eastus2", "properties": {"visibility": {"subscriptions": ["*"]}}}),
        ),
        (
            role.clone(),
            "2022-04-01",
            serde_json::json!({"properties": {"roleName": "Culvert metadata service operator", "type": "CustomRole",
                "permissions": [{"actions": [
                    "Microsoft.Network/privateLinkServices/read",
                    "Microsoft.Network/privateLinkServices/privateEndpointConnections/read",
                    "Microsoft.Network/privateLinkServices/privateEndpointConnections/write"]}],
                "assignableScopes": [rg]}}),
        ),
        (
            assignment,
            "2022-04-01",
            serde_json::json!({"properties": {"roleDefinitionId": role, "principalId": ids.control_plane.object_id,
                "principalType": "ServicePrincipal"}}),
        ),
    ] {
        arm.put(&path, version, &body).await?;
    }
    Ok(())
}

/// The control plane's settings for Azure environments on the local Resource Manager.
pub fn byoc_env(
    ids: &Identities,
    ep: &Endpoints,
    agent_binary: &std::path::Path,
) -> Vec<(String, String)> {
    let Some(arm) = &ep.arm_endpoint else {
        return Vec::new();
    };
    vec![
        ("CULVERT_ARM_ENDPOINT".into(), arm.clone()),
        ("CULVERT_AZURE_TENANT_ID".into(), ids.tenant_id.clone()),
        (
            "CULVERT_AZURE_APP_ID".into(),
            ids.control_plane.client_id.clone(),
        ),
        (
            "CULVERT_AZURE_PRINCIPAL_ID".into(),
            ids.control_plane.object_id.clone(),
        ),
        ("CULVERT_METADATA_SERVICE_ID".into(), metadata_service_id()),
        (
            "CULVERT_CONTAINER_REGISTRY_ID".into(),
            format!(
                "/subscriptions/{CULVERT_SUBSCRIPTION}/resourceGroups/{CULVERT_RESOURCE_GROUP}/providers/Microsoft.ContainerRegistry/registries/culvertlocal"
            ),
        ),
        (
            "CULVERT_AGENT_IMAGE".into(),
            "culvertlocal.azurecr.io/culvert-agent".into(),
        ),
        (
            "CULVERT_AGENT_DOWNLOAD_URL".into(),
            format!("file://{}", agent_binary.display()),
        ),
        ("CULVERT_ARM_POLL_MILLIS".into(), "100".into()),
    ]
}

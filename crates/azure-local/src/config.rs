//! The JSON config: tenant, identities, the token endpoint, the vaults with their access
//! policies, and the optional Azure Resource Manager stand-in.

use crate::vault::policy::{self, AccessPolicies, Grants};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Entra tenant id that appears in tokens (`tid`, `iss`) and in the vault challenge.
    pub tenant_id: String,
    /// The managed identities the token endpoint can issue tokens for.
    pub identities: Vec<IdentityConfig>,
    /// The App Service style token endpoint.
    pub token_endpoint: TokenEndpointConfig,
    /// The vaults, each served on its own listener.
    #[serde(default)]
    pub vaults: Vec<VaultConfig>,
    /// The Azure Resource Manager stand-in; not served when absent.
    #[serde(default)]
    pub arm: Option<ArmConfig>,
}

/// The Azure Resource Manager stand-in (see [`crate::arm`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// Loopback address to bind; port 0 picks a free port. Serves HTTPS (and plain HTTP) like the vaults.
    pub listen: SocketAddr,
    /// Object ids that bypass role-based access control (whoever plays the customer's administrator).
    #[serde(default)]
    pub owners: Vec<String>,
    /// The subscriptions that exist; requests naming any other get 404 `SubscriptionNotFound`.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Items per list page before a `nextLink` is given.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// How many status polls a long-running operation answers "InProgress" before it succeeds.
    #[serde(default = "default_lro_polls")]
    pub lro_polls: u32,
    /// The `culvert-agent` binary that scale-set instances and container groups run; none when absent.
    #[serde(default)]
    pub agent_binary: Option<PathBuf>,
}

/// One subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// The subscription id (a GUID in Azure; any path-safe text here).
    pub id: String,
    /// Its tenant; the config's `tenant_id` when absent.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

fn default_page_size() -> usize {
    100
}

fn default_lro_polls() -> u32 {
    2
}

/// One user-assigned (or, with `system_assigned`, the system-assigned) managed identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A readable name; also matched against the last segment of a `mi_res_id`.
    pub name: String,
    /// The identity's client (application) id; becomes the token's `appid`.
    pub client_id: String,
    /// The identity's object (principal) id; becomes the token's `oid` and is what access policies name.
    pub object_id: String,
    /// The ARM resource id, matched exactly against `mi_res_id` when set.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Whether a request naming no identity gets this one, as the system-assigned identity.
    #[serde(default)]
    pub system_assigned: bool,
}

/// Where the token endpoint listens and the secret agents must present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEndpointConfig {
    /// Loopback address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The value clients must send in `X-IDENTITY-HEADER` (their `IDENTITY_HEADER` env var).
    pub header: String,
}

/// One vault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// The vault name, as in `https://{name}.vault.azure.net`.
    pub name: String,
    /// Loopback address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The vault's access policies.
    #[serde(default)]
    pub access_policies: Vec<AccessPolicyConfig>,
}

/// One access policy entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicyConfig {
    /// The identity's object id.
    pub object_id: String,
    /// Key permissions (Azure names, case-insensitive, or "all").
    #[serde(default)]
    pub keys: Vec<String>,
    /// Secret permissions (Azure names, case-insensitive, or "all").
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON for this schema (includes unknown fields).
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// The serde error, with line and column.
        source: serde_json::Error,
    },
    /// The JSON parsed but a value is not acceptable.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseFailure::Json(source) => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            ParseFailure::Invalid(message) => ConfigError::Invalid {
                path: path.to_owned(),
                message,
            },
        })
    }

    /// Parses and validates config text; the error is a single readable line.
    pub fn parse(text: &str) -> Result<Self, ParseFailure> {
        let config: Config = serde_json::from_str(text).map_err(ParseFailure::Json)?;
        config.validate().map_err(ParseFailure::Invalid)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.tenant_id.trim().is_empty() {
            return Err("tenant_id must not be empty".into());
        }
        if !self
            .tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "tenant_id '{}' has characters a tenant id cannot have",
                self.tenant_id
            ));
        }
        if self.token_endpoint.header.is_empty() {
            return Err("token_endpoint.header must not be empty".into());
        }
        require_loopback("token_endpoint.listen", self.token_endpoint.listen)?;

        let mut names = BTreeSet::new();
        let mut client_ids = BTreeSet::new();
        let mut object_ids = BTreeSet::new();
        let mut system_assigned = 0;
        for (i, id) in self.identities.iter().enumerate() {
            for (field, value) in [
                ("name", &id.name),
                ("client_id", &id.client_id),
                ("object_id", &id.object_id),
            ] {
                if value.trim().is_empty() {
                    return Err(format!("identities[{i}].{field} must not be empty"));
                }
            }
            if !names.insert(id.name.to_ascii_lowercase()) {
                return Err(format!("identity name '{}' appears twice", id.name));
            }
            if !client_ids.insert(id.client_id.to_ascii_lowercase()) {
                return Err(format!(
                    "identity client_id '{}' appears twice",
                    id.client_id
                ));
            }
            if !object_ids.insert(id.object_id.to_ascii_lowercase()) {
                return Err(format!(
                    "identity object_id '{}' appears twice",
                    id.object_id
                ));
            }
            if id.system_assigned {
                system_assigned += 1;
            }
        }
        if system_assigned > 1 {
            return Err("at most one identity can be system_assigned".into());
        }

        let mut vault_names = BTreeSet::new();
        for vault in &self.vaults {
            validate_vault_name(&vault.name)?;
            if !vault_names.insert(vault.name.to_ascii_lowercase()) {
                return Err(format!("vault name '{}' appears twice", vault.name));
            }
            require_loopback(&format!("vault '{}' listen", vault.name), vault.listen)?;
            for (i, policy) in vault.access_policies.iter().enumerate() {
                if policy.object_id.trim().is_empty() {
                    return Err(format!(
                        "vault '{}' access_policies[{i}].object_id must not be empty",
                        vault.name
                    ));
                }
            }
            vault
                .policies()
                .map_err(|e| format!("vault '{}': {e}", vault.name))?;
        }
        if let Some(arm) = &self.arm {
            arm.validate()?;
        }
        Ok(())
    }
}

impl ArmConfig {
    fn validate(&self) -> Result<(), String> {
        require_loopback("arm.listen", self.listen)?;
        if self.subscriptions.is_empty() {
            return Err("arm.subscriptions must name at least one subscription".into());
        }
        let mut ids = BTreeSet::new();
        for (i, sub) in self.subscriptions.iter().enumerate() {
            let ok = !sub.id.is_empty()
                && sub
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !ok {
                return Err(format!(
                    "arm.subscriptions[{i}].id '{}' must be letters, digits, '-', '_' or '.'",
                    sub.id
                ));
            }
            if !ids.insert(sub.id.to_ascii_lowercase()) {
                return Err(format!("arm subscription '{}' appears twice", sub.id));
            }
        }
        if self.page_size == 0 {
            return Err("arm.page_size must be at least 1".into());
        }
        for (i, owner) in self.owners.iter().enumerate() {
            if owner.trim().is_empty() {
                return Err(format!("arm.owners[{i}] must not be empty"));
            }
        }
        if let Some(bin) = &self.agent_binary
            && !bin.is_file()
        {
            return Err(format!("arm.agent_binary {} is not a file", bin.display()));
        }
        Ok(())
    }
}

impl VaultConfig {
    /// The vault's access policies, with permission names resolved.
    pub fn policies(&self) -> Result<AccessPolicies, policy::UnknownPermission> {
        let mut out = AccessPolicies::default();
        for p in &self.access_policies {
            out.add(
                &p.object_id,
                Grants {
                    keys: policy::parse_key_permissions(&p.keys)?,
                    secrets: policy::parse_secret_permissions(&p.secrets)?,
                },
            );
        }
        Ok(out)
    }
}

/// A config text that failed to parse or validate.
#[derive(Debug, thiserror::Error)]
pub enum ParseFailure {
    /// Not JSON of this schema.
    #[error("{0}")]
    Json(serde_json::Error),
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

// Agents and tests reach these services over loopback only; binding elsewhere would expose
// key material and unauthenticated fault controls to the network.
fn require_loopback(what: &str, addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!("{what} {addr} is not a loopback address"))
    }
}

// Azure's rule: 3-24 characters, letters, digits and hyphens, starting with a letter,
// ending with a letter or digit, no consecutive hyphens.
fn validate_vault_name(name: &str) -> Result<(), String> {
    let ok = (3..=24).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "vault name '{name}' is not a valid Key Vault name (3-24 letters, digits and hyphens, starting with a letter)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "identities": [
            {"name": "agent", "client_id": "c-agent", "object_id": "o-agent"},
            {"name": "control", "client_id": "c-control", "object_id": "o-control"}
        ],
        "token_endpoint": {"listen": "127.0.0.1:0", "header": "secret"},
        "vaults": [
            {"name": "culvert-kv", "listen": "127.0.0.1:0", "access_policies": [
                {"object_id": "o-agent", "keys": ["get", "unwrapKey", "decrypt"], "secrets": ["get"]},
                {"object_id": "o-control", "keys": ["get", "list", "encrypt"]}
            ]}
        ]
    }"#;

    #[test]
    fn good_config_parses() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.identities.len(), 2);
        assert_eq!(c.vaults[0].name, "culvert-kv");
        c.vaults[0].policies().unwrap();
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let text = GOOD.replace(
            "\"header\": \"secret\"",
            "\"header\": \"secret\", \"port\": 1",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn unknown_permission_is_rejected() {
        let text = GOOD.replace("\"encrypt\"]", "\"encrpyt\"]");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("culvert-kv") && err.contains("encrpyt"),
            "{err}"
        );
    }

    #[test]
    fn non_loopback_listen_is_rejected() {
        let text = GOOD.replacen("127.0.0.1:0", "0.0.0.0:0", 1);
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
    }

    #[test]
    fn duplicate_client_id_is_rejected() {
        let text = GOOD.replace("\"c-control\"", "\"c-agent\"");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }

    #[test]
    fn arm_section_parses_with_defaults_and_is_validated() {
        let with_arm = GOOD.replacen(
            "\"vaults\":",
            r#""arm": {"listen": "127.0.0.1:0", "owners": ["o-admin"],
                       "subscriptions": [{"id": "sub-1"}, {"id": "sub-2", "tenant_id": "t2"}]},
               "vaults":"#,
            1,
        );
        let c = Config::parse(&with_arm).unwrap();
        let arm = c.arm.unwrap();
        assert_eq!((arm.page_size, arm.lro_polls), (100, 2));
        assert_eq!(arm.subscriptions[1].tenant_id.as_deref(), Some("t2"));

        let dup = with_arm.replace("\"sub-2\"", "\"SUB-1\"");
        assert!(
            Config::parse(&dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let missing = with_arm.replace(
            "\"owners\"",
            "\"agent_binary\": \"/nonexistent/culvert-agent\", \"owners\"",
        );
        assert!(
            Config::parse(&missing)
                .unwrap_err()
                .to_string()
                .contains("not a file")
        );
    }

    #[test]
    fn bad_vault_name_is_rejected() {
        let text = GOOD.replace("culvert-kv", "9kv");
        assert!(Config::parse(&text).is_err());
    }
}

//! App settings: Azure passes them to the handler as environment variables.

use std::path::PathBuf;
use std::time::Duration;

/// Setting naming the Key Vault secret whose versions are the master keys.
pub const MASTER_KEY_SECRET_VAR: &str = "CULVERT_MASTER_KEY_SECRET_URL";
/// Setting naming a local master key file (development and tests).
pub const MASTER_KEY_FILE_VAR: &str = "CULVERT_MASTER_KEY_FILE";

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A required setting is missing.
    #[error("app setting {0} is not set; {1}")]
    Missing(&'static str, &'static str),
    /// A setting has a bad value.
    #[error("app setting {0} is invalid: {1}")]
    Invalid(&'static str, String),
    /// Neither master key setting is set.
    #[error(
        "app settings {MASTER_KEY_SECRET_VAR} and {MASTER_KEY_FILE_VAR} are both unset; set {MASTER_KEY_SECRET_VAR} to the Key Vault secret holding the master keys that seal configuration at rest (https://VAULT.vault.azure.net/secrets/NAME), or {MASTER_KEY_FILE_VAR} to a local key file for development"
    )]
    NoMasterKey,
}

/// Where the master keys that seal configuration at rest come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySetting {
    /// `CULVERT_MASTER_KEY_SECRET_URL`: every enabled version of a Key Vault secret, read with
    /// the control plane's identity.
    Vault(String),
    /// `CULVERT_MASTER_KEY_FILE`: a local file, created with one key when missing.
    File(PathBuf),
}

/// Where agents of `local` environments are started.
#[derive(Debug, Clone)]
pub enum ComputeSetting {
    /// No local compute provider (on Azure, `local` environments cannot run agents).
    None,
    /// The local compute provider's base URL.
    Local(String),
}

/// Everything the handler reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `CULVERT_CONTROL_STORE`: PostgreSQL connection string of the control store.
    pub control_store: String,
    /// `CULVERT_PUBLIC_URL`: the API base URL agents call (`https://.../api`).
    pub public_url: String,
    /// `CULVERT_SEALING_PUBLIC_KEY`: PEM of the public key connector secrets are sealed with
    /// for `local` environments.
    pub local_sealing_key: Option<String>,
    /// Base URL of the Key Vault (or local stand-in) that seals `local` environments' secrets.
    pub local_key_vault: Option<String>,
    /// `CULVERT_LOCAL_COMPUTE_URL`: the local compute provider.
    pub compute: ComputeSetting,
    /// `CULVERT_HEARTBEAT_SECONDS` (default 5).
    pub heartbeat: Duration,
    /// `CULVERT_LEASE_SECONDS` (default 20): a pipeline's lease without renewal.
    pub lease: Duration,
    /// `CULVERT_MASTER_KEY_SECRET_URL` or `CULVERT_MASTER_KEY_FILE`; commands that never touch
    /// configuration (migrate, create-admin-key) run without.
    pub master_key: Option<MasterKeySetting>,
    /// Culvert's side of Azure environments (`CULVERT_AZURE_PRINCIPAL_ID` and friends).
    pub byoc: Option<crate::byoc::ByocSettings>,
}

fn seconds(name: &'static str, default: u64) -> Result<Duration, SettingsError> {
    match std::env::var(name) {
        Err(_) => Ok(Duration::from_secs(default)),
        Ok(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=3600).contains(n))
            .map(Duration::from_secs)
            .ok_or_else(|| {
                SettingsError::Invalid(
                    name,
                    format!("{v:?} is not a number of seconds from 1 to 3600"),
                )
            }),
    }
}

fn master_key() -> Result<Option<MasterKeySetting>, SettingsError> {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    match (var(MASTER_KEY_SECRET_VAR), var(MASTER_KEY_FILE_VAR)) {
        (Some(_), Some(_)) => Err(SettingsError::Invalid(
            MASTER_KEY_FILE_VAR,
            format!(
                "set only one of {MASTER_KEY_SECRET_VAR} (Azure) and {MASTER_KEY_FILE_VAR} (development)"
            ),
        )),
        (Some(url), None) => Ok(Some(MasterKeySetting::Vault(url.trim().to_string()))),
        (None, Some(path)) => Ok(Some(MasterKeySetting::File(PathBuf::from(path)))),
        (None, None) => Ok(None),
    }
}

impl Settings {
    /// The master key setting, for the commands that seal or open configuration.
    pub fn master_key(&self) -> Result<&MasterKeySetting, SettingsError> {
        self.master_key.as_ref().ok_or(SettingsError::NoMasterKey)
    }

    /// Read the settings from the environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let control_store = std::env::var("CULVERT_CONTROL_STORE").map_err(|_| {
            SettingsError::Missing(
                "CULVERT_CONTROL_STORE",
                "set it to the control store's connection string, for example postgres://culvert@127.0.0.1:5432/culvert",
            )
        })?;
        let public_url = std::env::var("CULVERT_PUBLIC_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:7071/api".into());
        let local_sealing_key = match std::env::var("CULVERT_SEALING_PUBLIC_KEY") {
            Err(_) => None,
            Ok(v) if v.contains("BEGIN PUBLIC KEY") => Some(v),
            Ok(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                SettingsError::Invalid(
                    "CULVERT_SEALING_PUBLIC_KEY",
                    format!("cannot read {path}: {e}"),
                )
            })?),
        };
        let local_key_vault = std::env::var("CULVERT_LOCAL_KEY_VAULT_URL")
            .ok()
            .filter(|v| !v.is_empty());
        let compute = match std::env::var("CULVERT_LOCAL_COMPUTE_URL") {
            Ok(u) if !u.is_empty() => ComputeSetting::Local(u.trim_end_matches('/').to_string()),
            _ => ComputeSetting::None,
        };
        let heartbeat = seconds("CULVERT_HEARTBEAT_SECONDS", 5)?;
        let lease = seconds("CULVERT_LEASE_SECONDS", 20)?;
        if lease < heartbeat * 2 {
            return Err(SettingsError::Invalid(
                "CULVERT_LEASE_SECONDS",
                "must be at least twice CULVERT_HEARTBEAT_SECONDS so one lost heartbeat does not move pipelines".into(),
            ));
        }
        let master_key = master_key()?;
        let byoc = crate::byoc::ByocSettings::from_env()?;
        Ok(Settings {
            byoc,
            control_store,
            public_url,
            local_sealing_key,
            local_key_vault,
            compute,
            heartbeat,
            lease,
            master_key,
        })
    }
}

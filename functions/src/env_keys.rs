//! The key each environment's connector secrets are sealed with.
//!
//! Environments with a Key Vault seal through the vault's `encrypt`, with the control
//! plane's own identity, which holds encrypt but not decrypt. Local environments use the
//! local vault stand-in when one is configured, else a local RSA public key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use culvert_azure::identity::CredentialSource;
use culvert_azure::keyvault::{CREDENTIALS_KEY, KeyUse, KeyVaultKey, key_url};
use culvert_control_api::environments::{Environment, Provider};
use culvert_sealing::{KeyEncryptionKey, KeyError, SealingKey};

use crate::error::{ApiError, ApiResult};

/// Finds (and caches) the sealing key of an environment.
pub struct EnvironmentKeys {
    local_vault: Option<String>,
    local_rsa: Option<SealingKey>,
    identity: CredentialSource,
    credential: Mutex<Option<Arc<dyn TokenCredential>>>,
    vault_keys: Mutex<HashMap<String, Arc<KeyVaultKey>>>,
}

/// The vault URL of a Key Vault resource id (`.../providers/Microsoft.KeyVault/vaults/NAME`).
pub fn vault_url_of(resource_id: &str) -> Option<String> {
    let parts: Vec<&str> = resource_id.trim_end_matches('/').split('/').collect();
    let i = parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("vaults"))?;
    let name = parts.get(i + 1)?;
    Some(format!("https://{name}.vault.azure.net/"))
}

/// The API's answer to a key failure: transient faults are 503, what the user must fix is 409.
pub fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Unavailable { .. } => ApiError::Unavailable(format!("{e}; retry in a moment")),
        KeyError::Forbidden { .. } | KeyError::NotFound { .. } => ApiError::Conflict(e.to_string()),
        KeyError::Invalid(m) => ApiError::Internal(m),
    }
}

impl EnvironmentKeys {
    /// Keys from the settings: the local vault URL, the local public key, the control plane's identity.
    pub fn new(
        local_vault: Option<String>,
        local_rsa: Option<SealingKey>,
        identity: CredentialSource,
    ) -> EnvironmentKeys {
        EnvironmentKeys {
            local_vault: local_vault.map(|v| format!("{}/", v.trim_end_matches('/'))),
            local_rsa,
            identity,
            credential: Mutex::new(None),
            vault_keys: Mutex::new(HashMap::new()),
        }
    }

    fn credential(&self) -> ApiResult<Arc<dyn TokenCredential>> {
        let mut slot = self.credential.lock().expect("credential lock");
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.identity.credential().map_err(|e| {
            ApiError::Unavailable(format!(
                "the control plane has no usable Azure identity: {e}"
            ))
        })?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn vault_key(&self, vault: &str) -> ApiResult<Arc<dyn KeyEncryptionKey>> {
        let url = key_url(vault, CREDENTIALS_KEY);
        if let Some(k) = self.vault_keys.lock().expect("keys lock").get(&url) {
            return Ok(k.clone());
        }
        let key = Arc::new(
            KeyVaultKey::new(&url, self.credential()?, KeyUse::Secrets).map_err(key_error)?,
        );
        self.vault_keys
            .lock()
            .expect("keys lock")
            .insert(url, key.clone());
        Ok(key)
    }

    /// The key that seals `env`'s connector secrets.
    pub fn for_environment(&self, env: &Environment) -> ApiResult<Arc<dyn KeyEncryptionKey>> {
        match env.provider {
            Provider::Local => {
                if let Some(vault) = &self.local_vault {
                    return self.vault_key(vault);
                }
                let key = self.local_rsa.clone().ok_or_else(|| {
                    ApiError::Conflict(
                        "this control plane has no key for local environments (CULVERT_LOCAL_KEY_VAULT_URL or CULVERT_SEALING_PUBLIC_KEY)".into(),
                    )
                })?;
                Ok(Arc::new(key))
            }
            Provider::Azure => {
                let vault = env
                    .azure
                    .as_ref()
                    .and_then(|a| a.key_vault_id.as_deref())
                    .and_then(vault_url_of)
                    .ok_or_else(|| {
                        ApiError::Conflict(format!(
                            "environment {} is {}: credentials are sealed with its Key Vault key, which is known once the environment is bootstrapped",
                            env.name,
                            env.state.as_str()
                        ))
                    })?;
                self.vault_key(&vault)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_urls_come_from_resource_ids() {
        assert_eq!(
            vault_url_of(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-1"
            )
            .as_deref(),
            Some("https://kv-1.vault.azure.net/")
        );
        assert_eq!(vault_url_of("/subscriptions/s"), None);
    }
}

//! A Key Vault key as key-encryption key, through the official Key Vault client.
//!
//! Credentials use `encrypt`/`decrypt` (the control plane may only encrypt); buffer data
//! keys use `wrapkey`/`unwrapkey`. The key is named without a version: wrapping uses the
//! current version, and the versioned kid the service returns is stored, so unwrapping
//! after a rotation still uses the version that wrapped.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ExponentialRetryOptions, RetryOptions, Url};
use azure_security_keyvault_keys::models::{EncryptionAlgorithm, KeyOperationParameters};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use culvert_sealing::{KeyEncryptionKey, KeyError, Wrapped};

use crate::error::{Fault, classify, message};
use crate::transport::is_loopback;

const ALG: &str = "RSA-OAEP-256";

/// Name of the key that seals connector secrets, in every environment's vault.
pub const CREDENTIALS_KEY: &str = "culvert-credentials";
/// Name of the key that wraps buffer data keys, in every environment's vault.
pub const BUFFER_KEY: &str = "culvert-buffer";

/// The URL of key `name` in the vault at `vault` (with or without a trailing slash).
pub fn key_url(vault: &str, name: &str) -> String {
    format!("{}/keys/{name}", vault.trim_end_matches('/'))
}

/// What the key protects, which decides the operations (and permissions) used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Connector secrets: `encrypt` / `decrypt`.
    Secrets,
    /// Buffer data keys: `wrapKey` / `unwrapKey`.
    DataKeys,
}

/// A named key in a vault.
pub struct KeyVaultKey {
    client: KeyClient,
    vault: Url,
    name: String,
    usage: KeyUse,
}

/// The vault base URL, the key name and the version of `https://VAULT/keys/NAME[/VERSION]`.
pub fn parse_key_url(key_url: &str) -> Result<(Url, String, Option<String>), KeyError> {
    let o = crate::vault_url::parse(key_url, "keys").map_err(KeyError::Invalid)?;
    Ok((o.vault, o.name, o.version))
}

impl KeyVaultKey {
    /// The key at `key_url` (`https://VAULT/keys/NAME`), used with `credential` for `usage`.
    pub fn new(
        key_url: &str,
        credential: Arc<dyn TokenCredential>,
        usage: KeyUse,
    ) -> Result<KeyVaultKey, KeyError> {
        let (vault, name, version) = parse_key_url(key_url)?;
        if version.is_some() {
            return Err(KeyError::Invalid(format!(
                "`{key_url}` names a key version; name the key without one so rotation takes effect"
            )));
        }
        if vault.scheme() != "https" {
            return Err(KeyError::Invalid(format!(
                "`{key_url}` must use https: Key Vault clients never send a token over plain http"
            )));
        }
        let mut client_options = crate::transport::client_options_for(&vault)
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        // Callers retry transient faults themselves (the agent until the vault is back, the
        // API by answering 503): a minute of in-client retries would only hold them up.
        client_options.retry = RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(200),
            max_retries: 3,
            max_total_elapsed: azure_core::time::Duration::seconds(15),
            max_delay: azure_core::time::Duration::seconds(5),
        });
        let options = KeyClientOptions {
            // A local stand-in answers the challenge with the public resource, which the host check would refuse.
            verify_challenge_resource: Some(!is_loopback(&vault)),
            client_options,
            ..Default::default()
        };
        let client = KeyClient::new(vault.as_str(), credential, Some(options))
            .map_err(|e| KeyError::Invalid(format!("Key Vault client for {vault}: {e}")))?;
        Ok(KeyVaultKey {
            client,
            vault,
            name,
            usage,
        })
    }

    /// The vault's base URL.
    pub fn vault(&self) -> &Url {
        &self.vault
    }

    fn key_url(&self) -> String {
        format!("{}keys/{}", self.vault, self.name)
    }

    fn operations(&self) -> (&'static str, &'static str) {
        match self.usage {
            KeyUse::Secrets => ("encrypt", "decrypt"),
            KeyUse::DataKeys => ("wrapKey", "unwrapKey"),
        }
    }

    fn fault(&self, resource: String, operation: &str, e: azure_core::Error) -> KeyError {
        let detail = message(&e);
        match classify(&e) {
            Fault::Transient { retry_after } => KeyError::Unavailable {
                resource,
                detail,
                retry_after,
            },
            Fault::Forbidden => KeyError::Forbidden {
                resource,
                operation: operation.to_string(),
                permission: operation.to_string(),
                detail,
            },
            Fault::NotFound => KeyError::NotFound { resource, detail },
            Fault::Permanent => {
                KeyError::Invalid(format!("{resource}: {operation} failed: {detail}"))
            }
        }
    }

    fn parameters(value: &[u8]) -> KeyOperationParameters {
        KeyOperationParameters {
            algorithm: Some(EncryptionAlgorithm::RsaOaep256),
            value: Some(value.to_vec()),
            ..Default::default()
        }
    }

    /// The version a kid names, checked to be this vault's key.
    fn version_of(&self, kid: &str) -> Result<String, KeyError> {
        let (vault, name, version) = parse_key_url(kid)?;
        if vault != self.vault || name != self.name {
            return Err(KeyError::Invalid(format!(
                "the data key was wrapped by {kid}, but this process uses {}; it was sealed for another environment",
                self.key_url()
            )));
        }
        version.ok_or_else(|| KeyError::Invalid(format!("{kid} names no key version")))
    }
}

#[async_trait::async_trait]
impl KeyEncryptionKey for KeyVaultKey {
    fn describe(&self) -> String {
        self.key_url()
    }

    async fn wrap(&self, dek: &[u8]) -> Result<Wrapped, KeyError> {
        let (op, _) = self.operations();
        let params = Self::parameters(dek)
            .try_into()
            .map_err(|e: azure_core::Error| KeyError::Invalid(e.to_string()))?;
        let reply = match self.usage {
            KeyUse::Secrets => self.client.encrypt(&self.name, params, None).await,
            KeyUse::DataKeys => self.client.wrap_key(&self.name, params, None).await,
        }
        .map_err(|e| self.fault(self.key_url(), op, e))?;
        let result = reply.into_model().map_err(|e| {
            KeyError::Invalid(format!("{}: unreadable {op} reply: {e}", self.key_url()))
        })?;
        let kid = result.kid.ok_or_else(|| {
            KeyError::Invalid(format!(
                "{}: the {op} reply names no key version",
                self.key_url()
            ))
        })?;
        let bytes = result.result.ok_or_else(|| {
            KeyError::Invalid(format!("{}: the {op} reply has no value", self.key_url()))
        })?;
        Ok(Wrapped {
            kid,
            alg: ALG.into(),
            bytes,
        })
    }

    async fn unwrap(&self, wrapped: &Wrapped) -> Result<Vec<u8>, KeyError> {
        let (_, op) = self.operations();
        if wrapped.alg != ALG {
            return Err(KeyError::Invalid(format!(
                "unsupported wrapping algorithm {}",
                wrapped.alg
            )));
        }
        let version = self.version_of(&wrapped.kid)?;
        let params = Self::parameters(&wrapped.bytes)
            .try_into()
            .map_err(|e: azure_core::Error| KeyError::Invalid(e.to_string()))?;
        let reply = match self.usage {
            KeyUse::Secrets => {
                self.client
                    .decrypt(&self.name, &version, params, None)
                    .await
            }
            KeyUse::DataKeys => {
                self.client
                    .unwrap_key(&self.name, &version, params, None)
                    .await
            }
        }
        .map_err(|e| self.fault(wrapped.kid.clone(), op, e))?;
        reply
            .into_model()
            .ok()
            .and_then(|r| r.result)
            .ok_or_else(|| {
                KeyError::Invalid(format!("{}: the {op} reply has no value", wrapped.kid))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_urls_parse_and_bad_ones_say_what_to_give() {
        let (vault, name, version) =
            parse_key_url("https://kv1.vault.azure.net/keys/culvert-credentials").unwrap();
        assert_eq!(vault.as_str(), "https://kv1.vault.azure.net/");
        assert_eq!(name, "culvert-credentials");
        assert_eq!(version, None);
        let (_, _, version) =
            parse_key_url("https://127.0.0.1:9000/keys/k/0123456789abcdef0123456789abcdef")
                .unwrap();
        assert_eq!(version.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        for bad in ["not a url", "https://kv/secrets/x", "ftp://kv/keys/x"] {
            let e = parse_key_url(bad).unwrap_err();
            assert!(e.to_string().contains("/keys/NAME"), "{e}");
        }
    }
}

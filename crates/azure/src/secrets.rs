//! A versioned Key Vault secret, through the official Key Vault client.
//!
//! The control plane keeps its master keys as the versions of one secret: reading needs the
//! `list` and `get` secret permissions, adding a version (rotation) needs `set`. The secret is
//! named without a version, so every version stays reachable after a rotation.
//!
//! The client sends tokens over TLS only; a local stand-in on loopback is reached over HTTPS
//! through the shared transport (`crate::transport`).

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ExponentialRetryOptions, RetryOptions, Url};
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions,
    SecretClientListSecretPropertiesVersionsOptions, SetSecretParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;

use crate::error::{Fault, classify, message};
use crate::transport::{client_options_for, is_loopback};

/// Why a secret operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The URL or a reply is not what a Key Vault secret has.
    #[error("{0}")]
    Invalid(String),
    /// The vault is unreachable, throttled or failing: retry later.
    #[error("{resource} is unreachable or throttled ({detail})")]
    Unavailable {
        /// The secret URL.
        resource: String,
        /// The service's message.
        detail: String,
        /// What the service asked for, when it did.
        retry_after: Option<Duration>,
    },
    /// The identity may not do this.
    #[error(
        "the control plane's identity may not {permission} secret {resource}: grant it the `{permission}` secret permission ({role}) ({detail})"
    )]
    Forbidden {
        /// The secret URL.
        resource: String,
        /// The missing secret permission: `get`, `list` or `set`.
        permission: &'static str,
        /// The built-in role that carries it, for vaults that use Azure RBAC.
        role: &'static str,
        /// The service's message.
        detail: String,
    },
    /// No token could be had for the identity.
    #[error("no token for the control plane's identity to reach {resource}: {detail}")]
    NoToken {
        /// The secret URL.
        resource: String,
        /// Why.
        detail: String,
    },
    /// The secret (or version) does not exist.
    #[error("{resource} does not exist ({detail})")]
    NotFound {
        /// The secret URL.
        resource: String,
        /// The service's message.
        detail: String,
    },
}

/// One version of a secret, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    /// The version id.
    pub version: String,
    /// Whether the version may be read.
    pub enabled: bool,
    /// Creation time, seconds since the epoch.
    pub created: Option<i64>,
}

/// The vault base URL, the secret name and the version of `https://VAULT/secrets/NAME[/VERSION]`.
pub fn parse_secret_url(secret_url: &str) -> Result<(Url, String, Option<String>), SecretError> {
    let o = crate::vault_url::parse(secret_url, "secrets").map_err(SecretError::Invalid)?;
    Ok((o.vault, o.name, o.version))
}

/// The service's message, or the error with its causes: the SDK's outer text alone ("will not
/// be retried") does not say what went wrong.
fn detail(e: &azure_core::Error) -> String {
    let mut text = message(e);
    if matches!(e.kind(), ErrorKind::HttpResponse { .. }) {
        return text;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A named secret in a vault, every version of it.
pub struct VaultSecret {
    client: SecretClient,
    vault: Url,
    name: String,
}

impl VaultSecret {
    /// The secret at `secret_url` (`https://VAULT/secrets/NAME`), used with `credential`.
    pub fn new(
        secret_url: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<VaultSecret, SecretError> {
        let (vault, name, version) = parse_secret_url(secret_url)?;
        if version.is_some() {
            return Err(SecretError::Invalid(format!(
                "`{secret_url}` names a secret version; name the secret without one so every version (and rotation) is seen"
            )));
        }
        if vault.scheme() != "https" {
            return Err(SecretError::Invalid(format!(
                "`{secret_url}` must use https: the Key Vault client sends tokens over TLS only (a local stand-in serves https too)"
            )));
        }
        // The shared transport: platform roots, or the local CA for a stand-in on loopback.
        let mut client_options =
            client_options_for(&vault).map_err(|e| SecretError::Invalid(e.to_string()))?;
        // Callers answer "retry later" themselves: a long in-client retry would hold a
        // request (or a start) for a minute on a vault that is down.
        let retry = RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(200),
            max_retries: 2,
            max_total_elapsed: azure_core::time::Duration::seconds(10),
            max_delay: azure_core::time::Duration::seconds(2),
        });
        client_options.retry = retry;
        let options = SecretClientOptions {
            // A local stand-in answers the challenge with the public resource, which the host check would refuse.
            verify_challenge_resource: Some(!is_loopback(&vault)),
            client_options,
            ..Default::default()
        };
        let client = SecretClient::new(vault.as_str(), credential, Some(options))
            .map_err(|e| SecretError::Invalid(format!("Key Vault client for {vault}: {e}")))?;
        Ok(VaultSecret {
            client,
            vault,
            name,
        })
    }

    /// The secret's URL, without a version.
    pub fn url(&self) -> String {
        format!("{}secrets/{}", self.vault, self.name)
    }

    fn fault(
        &self,
        resource: String,
        permission: &'static str,
        e: azure_core::Error,
    ) -> SecretError {
        let detail = detail(&e);
        match classify(&e) {
            Fault::Transient { retry_after } => SecretError::Unavailable {
                resource,
                detail,
                retry_after,
            },
            // The token endpoint said no: no vault permission would help.
            Fault::Forbidden if matches!(e.kind(), ErrorKind::Credential) => {
                SecretError::NoToken { resource, detail }
            }
            Fault::Forbidden => SecretError::Forbidden {
                resource,
                permission,
                role: if permission == "set" {
                    "role Key Vault Secrets Officer"
                } else {
                    "role Key Vault Secrets User"
                },
                detail,
            },
            Fault::NotFound => SecretError::NotFound { resource, detail },
            Fault::Permanent => {
                SecretError::Invalid(format!("{resource}: {permission} failed: {detail}"))
            }
        }
    }

    /// Every version of the secret, enabled or not, without values (`list` permission).
    pub async fn versions(&self) -> Result<Vec<SecretVersion>, SecretError> {
        let options = SecretClientListSecretPropertiesVersionsOptions {
            maxresults: Some(25),
            ..Default::default()
        };
        let mut pager = self
            .client
            .list_secret_properties_versions(&self.name, Some(options))
            .map_err(|e| self.fault(self.url(), "list", e))?;
        let mut out = Vec::new();
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| self.fault(self.url(), "list", e))?
        {
            let version = item
                .resource_id()
                .ok()
                .and_then(|id| id.version)
                .ok_or_else(|| {
                    SecretError::Invalid(format!("{}: a listed version has no id", self.url()))
                })?;
            let attributes = item.attributes.unwrap_or_default();
            out.push(SecretVersion {
                version,
                enabled: attributes.enabled.unwrap_or(true),
                created: attributes.created.map(|t| t.unix_timestamp()),
            });
        }
        Ok(out)
    }

    /// The value of one version (`get` permission).
    pub async fn get(&self, version: &str) -> Result<String, SecretError> {
        let resource = format!("{}/{version}", self.url());
        let options = SecretClientGetSecretOptions {
            secret_version: Some(version.to_string()),
            ..Default::default()
        };
        let secret = self
            .client
            .get_secret(&self.name, Some(options))
            .await
            .map_err(|e| self.fault(resource.clone(), "get", e))?
            .into_model()
            .map_err(|e| SecretError::Invalid(format!("{resource}: unreadable reply: {e}")))?;
        secret
            .value
            .ok_or_else(|| SecretError::Invalid(format!("{resource}: the reply has no value")))
    }

    /// Store `value` as a new, enabled version and return its id (`set` permission).
    pub async fn set(&self, value: &str, content_type: &str) -> Result<String, SecretError> {
        let parameters = SetSecretParameters {
            value: Some(value.to_string()),
            content_type: Some(content_type.to_string()),
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = parameters
            .try_into()
            .map_err(|e: azure_core::Error| SecretError::Invalid(e.to_string()))?;
        let secret = self
            .client
            .set_secret(&self.name, body, None)
            .await
            .map_err(|e| self.fault(self.url(), "set", e))?
            .into_model()
            .map_err(|e| SecretError::Invalid(format!("{}: unreadable reply: {e}", self.url())))?;
        secret
            .resource_id()
            .ok()
            .and_then(|id| id.version)
            .ok_or_else(|| {
                SecretError::Invalid(format!("{}: the set reply names no version", self.url()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_urls_parse_and_bad_ones_say_what_to_give() {
        let (vault, name, version) =
            parse_secret_url("https://kv1.vault.azure.net/secrets/culvert-master-key").unwrap();
        assert_eq!(vault.as_str(), "https://kv1.vault.azure.net/");
        assert_eq!(name, "culvert-master-key");
        assert_eq!(version, None);
        let (vault, _, version) = parse_secret_url("https://127.0.0.1:9000/secrets/k/abc").unwrap();
        assert_eq!(vault.as_str(), "https://127.0.0.1:9000/");
        assert_eq!(version.as_deref(), Some("abc"));
        for bad in ["not a url", "https://kv/keys/x", "ftp://kv/secrets/x"] {
            let e = parse_secret_url(bad).unwrap_err();
            assert!(e.to_string().contains("/secrets/NAME"), "{e}");
        }
    }

    #[test]
    fn versions_and_plain_http_are_refused() {
        #[derive(Debug)]
        struct NoToken;
        #[async_trait::async_trait]
        impl TokenCredential for NoToken {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                Err(ErrorKind::Credential.into_error())
            }
        }
        let cred: Arc<dyn TokenCredential> = Arc::new(NoToken);
        let e = VaultSecret::new("https://kv.vault.azure.net/secrets/k/v1", cred.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("names a secret version"), "{e}");
        let e = VaultSecret::new("http://127.0.0.1:1/secrets/k", cred.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("must use https"), "{e}");
        let s = VaultSecret::new("https://127.0.0.1:1/secrets/k", cred).unwrap();
        assert_eq!(s.url(), "https://127.0.0.1:1/secrets/k");
    }
}

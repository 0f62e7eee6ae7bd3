//! Access tokens: HS256 JWTs shaped like Entra v1 app tokens, issued by the token endpoint and
//! checked by the vaults.
//!
//! Signing uses the `jsonwebtoken` crate with its pure-Rust (`rust_crypto`) backend; the key is
//! a random 32-byte HMAC secret kept in the state file so tokens stay valid across a restart.

use crate::config::IdentityConfig;
use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// How long an issued token lives, as Entra's managed-identity tokens do by default.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;
/// The audience Key Vault accepts.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
// Entra accepts some clock skew between issuer and resource; Key Vault allows five minutes.
const CLOCK_SKEW_SECS: i64 = 300;

/// The token in an `Authorization: Bearer <token>` header (scheme case-insensitive), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
}

/// The claims of an issued token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audience: the requested resource.
    pub aud: String,
    /// Issuer: `https://sts.windows.net/{tenant}/`.
    pub iss: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Tenant id.
    pub tid: String,
    /// Identity object id.
    pub oid: String,
    /// Subject; for app tokens the same as `oid`.
    pub sub: String,
    /// Identity client id.
    pub appid: String,
    /// Identity type; Entra writes "app" for managed identities.
    #[serde(default)]
    pub idtyp: Option<String>,
    /// Token version ("1.0" for resource-style tokens).
    #[serde(default)]
    pub ver: Option<String>,
}

/// A freshly issued token.
pub struct IssuedToken {
    /// The compact JWT. Never logged.
    pub access_token: String,
    /// Expiry, unix seconds.
    pub expires_on: i64,
}

/// Why a presented token is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWT of ours.
    #[error("token is malformed")]
    Malformed,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("token is expired")]
    Expired,
    /// Before `nbf`.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `aud` is not the expected resource.
    #[error("invalid audience {found}")]
    WrongAudience {
        /// The audience in the token.
        found: String,
    },
    /// `iss` is not this tenant's issuer.
    #[error("invalid issuer {found}")]
    WrongIssuer {
        /// The issuer in the token.
        found: String,
    },
    /// Signing failed (should not happen with an HMAC key).
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// Issues and validates tokens for one tenant.
pub struct TokenIssuer {
    tenant_id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenIssuer {
    /// Creates an issuer for `tenant_id` signing with `key`.
    pub fn new(tenant_id: &str, key: &[u8]) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The `iss` value of issued tokens.
    pub fn issuer(&self) -> String {
        format!("https://sts.windows.net/{}/", self.tenant_id)
    }

    /// Issues a token for `identity` with audience `resource`, valid from `now` for an hour.
    pub fn issue(
        &self,
        identity: &IdentityConfig,
        resource: &str,
        now: i64,
    ) -> Result<IssuedToken, TokenError> {
        let claims = Claims {
            aud: resource.to_owned(),
            iss: self.issuer(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME_SECS,
            tid: self.tenant_id.clone(),
            oid: identity.object_id.clone(),
            sub: identity.object_id.clone(),
            appid: identity.client_id.clone(),
            idtyp: Some("app".into()),
            ver: Some("1.0".into()),
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(IssuedToken {
            access_token,
            expires_on: claims.exp,
        })
    }

    /// Verifies signature, lifetime, issuer and that the audience is one of `audiences`.
    pub fn validate(
        &self,
        token: &str,
        audiences: &[&str],
        now: i64,
    ) -> Result<Claims, TokenError> {
        // Time, audience and issuer are checked here rather than by the library so each failure
        // maps to its own Key Vault message, against an injectable clock.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    _ => TokenError::Malformed,
                }
            })?;
        let claims = data.claims;
        if claims.exp + CLOCK_SKEW_SECS <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf - CLOCK_SKEW_SECS > now {
            return Err(TokenError::NotYetValid);
        }
        if !audiences.iter().any(|a| claims.aud == *a) {
            return Err(TokenError::WrongAudience { found: claims.aud });
        }
        if claims.iss != self.issuer() {
            return Err(TokenError::WrongIssuer { found: claims.iss });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> IdentityConfig {
        IdentityConfig {
            name: "agent".into(),
            client_id: "client-1".into(),
            object_id: "object-1".into(),
            resource_id: None,
            system_assigned: false,
        }
    }

    #[test]
    fn issued_token_validates_with_expected_claims() {
        let issuer = TokenIssuer::new("tenant-1", &[7u8; 32]);
        let t = issuer
            .issue(&identity(), VAULT_RESOURCE, 1_000_000)
            .unwrap();
        assert_eq!(t.expires_on, 1_000_000 + 3600);
        let c = issuer
            .validate(&t.access_token, &[VAULT_RESOURCE], 1_000_010)
            .unwrap();
        assert_eq!(c.aud, VAULT_RESOURCE);
        assert_eq!(c.iss, "https://sts.windows.net/tenant-1/");
        assert_eq!(c.tid, "tenant-1");
        assert_eq!(c.oid, "object-1");
        assert_eq!(c.appid, "client-1");
        assert_eq!((c.iat, c.nbf, c.exp), (1_000_000, 1_000_000, 1_003_600));
    }

    #[test]
    fn expired_wrong_audience_wrong_key_and_garbage_are_refused() {
        let issuer = TokenIssuer::new("tenant-1", &[7u8; 32]);
        let t = issuer
            .issue(&identity(), VAULT_RESOURCE, 1_000_000)
            .unwrap();
        assert_eq!(
            issuer.validate(&t.access_token, &[VAULT_RESOURCE], 1_000_000 + 3600 + 301),
            Err(TokenError::Expired)
        );
        let m = issuer
            .issue(&identity(), "https://management.azure.com/", 1_000_000)
            .unwrap();
        assert_eq!(
            issuer.validate(&m.access_token, &[VAULT_RESOURCE], 1_000_000),
            Err(TokenError::WrongAudience {
                found: "https://management.azure.com/".into()
            })
        );
        let other = TokenIssuer::new("tenant-1", &[8u8; 32]);
        assert_eq!(
            other.validate(&t.access_token, &[VAULT_RESOURCE], 1_000_000),
            Err(TokenError::BadSignature)
        );
        let other_tenant = TokenIssuer::new("tenant-2", &[7u8; 32]);
        assert!(matches!(
            other_tenant.validate(&t.access_token, &[VAULT_RESOURCE], 1_000_000),
            Err(TokenError::WrongIssuer { .. })
        ));
        assert_eq!(
            issuer.validate("not-a-jwt", &[VAULT_RESOURCE], 1_000_000),
            Err(TokenError::Malformed)
        );
    }
}

//! Key Vault authentication (bearer challenge, token checks) and access-policy authorization.
//!
//! Message texts: AKV10000, AKV10022, AKV10032 and AKV10046 are Key Vault's own; the expiry and
//! format messages follow their style but their exact wording was not confirmed.

use super::error::VaultError;
use super::policy::{AccessPolicies, Permission};
use crate::token::{TokenError, TokenIssuer, VAULT_RESOURCE, bearer};
use axum::http::HeaderMap;

// Key Vault accepts its resource URI with or without the trailing slash, and its app id.
const AUDIENCES: &[&str] = &[
    VAULT_RESOURCE,
    "https://vault.azure.net/",
    "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
];

/// The authenticated caller, from the token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Client id.
    pub appid: String,
    /// Object id.
    pub oid: String,
    /// Tenant id.
    pub tid: String,
}

/// Checks the `Authorization` header; on failure the error carries the challenge.
pub fn authenticate(
    headers: &HeaderMap,
    issuer: &TokenIssuer,
    now: i64,
) -> Result<Caller, VaultError> {
    let unauthorized = |message: String| VaultError::Unauthorized {
        message,
        tenant: issuer.tenant_id().to_owned(),
    };
    let token = bearer(headers).ok_or_else(|| {
        unauthorized("AKV10000: Request is missing a Bearer or PoP token.".into())
    })?;
    let claims = issuer.validate(token, AUDIENCES, now).map_err(|e| {
        tracing::warn!(reason = %e, "vault request refused: bad token");
        unauthorized(match e {
            TokenError::WrongAudience { found } => {
                format!("AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {found}.")
            }
            TokenError::WrongIssuer { found } => format!(
                "AKV10032: Invalid issuer. Expected one of {}, found {found}.",
                issuer.issuer()
            ),
            TokenError::BadSignature => {
                "AKV10046: Unable to resolve the key used for signature validation.".into()
            }
            TokenError::Expired => "AKV10013: Token is expired.".into(),
            TokenError::NotYetValid => "AKV10013: Token is not yet valid.".into(),
            TokenError::Malformed | TokenError::Sign(_) => "AKV10020: Invalid token format.".into(),
        })
    })?;
    Ok(Caller {
        appid: claims.appid,
        oid: claims.oid,
        tid: claims.tid,
    })
}

/// Refuses the call unless the caller's access policy grants `permission`.
pub fn authorize(
    caller: &Caller,
    policies: &AccessPolicies,
    permission: Permission,
    vault_name: &str,
) -> Result<(), VaultError> {
    if policies.allows(&caller.oid, permission) {
        return Ok(());
    }
    Err(VaultError::Forbidden {
        message: forbidden_message(caller, permission, vault_name),
        inner_code: Some("AccessDenied"),
    })
}

/// Azure's access-policy denial text, naming the permission family and permission.
pub fn forbidden_message(caller: &Caller, permission: Permission, vault_name: &str) -> String {
    format!(
        "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' does not have {} {} permission on key vault '{};location=local'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
        caller.appid,
        caller.oid,
        caller.tid,
        permission.family(),
        permission.name(),
        vault_name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use crate::vault::policy::{Grants, KeyPermission};
    use axum::http::{HeaderValue, header};

    fn issuer() -> TokenIssuer {
        TokenIssuer::new("tenant-1", &[3; 32])
    }

    fn identity() -> IdentityConfig {
        IdentityConfig {
            name: "control".into(),
            client_id: "app-1".into(),
            object_id: "obj-1".into(),
            resource_id: None,
            system_assigned: false,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    fn message(e: VaultError) -> String {
        match e {
            VaultError::Unauthorized { message, tenant } => {
                assert_eq!(tenant, "tenant-1");
                message
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn missing_token_gets_akv10000() {
        let err = authenticate(&HeaderMap::new(), &issuer(), 0).unwrap_err();
        assert_eq!(
            message(err),
            "AKV10000: Request is missing a Bearer or PoP token."
        );
    }

    #[test]
    fn valid_token_yields_caller() {
        let now = 1_700_000_000;
        let t = issuer().issue(&identity(), VAULT_RESOURCE, now).unwrap();
        let caller = authenticate(&bearer(&t.access_token), &issuer(), now).unwrap();
        assert_eq!(
            caller,
            Caller {
                appid: "app-1".into(),
                oid: "obj-1".into(),
                tid: "tenant-1".into()
            }
        );
    }

    #[test]
    fn wrong_audience_gets_akv10022() {
        let now = 1_700_000_000;
        let t = issuer()
            .issue(&identity(), "https://management.azure.com/", now)
            .unwrap();
        let err = authenticate(&bearer(&t.access_token), &issuer(), now).unwrap_err();
        assert_eq!(
            message(err),
            "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com/."
        );
    }

    #[test]
    fn forbidden_message_matches_azure_shape() {
        let caller = Caller {
            appid: "app-1".into(),
            oid: "obj-1".into(),
            tid: "tenant-1".into(),
        };
        let mut policies = AccessPolicies::default();
        let mut g = Grants::default();
        g.keys.insert(KeyPermission::Encrypt);
        policies.add("obj-1", g);
        authorize(
            &caller,
            &policies,
            Permission::Key(KeyPermission::Encrypt),
            "kv",
        )
        .unwrap();
        let err = authorize(
            &caller,
            &policies,
            Permission::Key(KeyPermission::Decrypt),
            "kv",
        )
        .unwrap_err();
        match err {
            VaultError::Forbidden {
                message,
                inner_code,
            } => {
                assert_eq!(inner_code, Some("AccessDenied"));
                assert!(message.starts_with(
                    "The user, group or application 'appid=app-1;oid=obj-1;iss=https://sts.windows.net/tenant-1/' does not have keys decrypt permission on key vault 'kv;location=local'."
                ), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

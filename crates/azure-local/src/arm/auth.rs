//! Bearer authentication for Resource Manager: the token endpoint's JWTs, audience
//! `https://management.azure.com` (with or without the trailing slash, or the classic
//! `https://management.core.windows.net/`).

use super::error::ArmError;
use crate::token::{TokenError, TokenIssuer, bearer};
use axum::http::HeaderMap;

/// The audiences Resource Manager accepts.
pub const AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net",
    "https://management.core.windows.net/",
];

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `appid` (client id).
    pub appid: String,
    /// The token's `oid` (object id): the principal role assignments name.
    pub oid: String,
    /// Whether the caller is a configured owner, exempt from access control.
    pub owner: bool,
}

/// Checks the `Authorization` header.
pub fn authenticate(
    headers: &HeaderMap,
    issuer: &TokenIssuer,
    owners: &[String],
    now: i64,
) -> Result<Caller, ArmError> {
    let tenant = issuer.tenant_id();
    let token = bearer(headers).ok_or_else(|| {
        ArmError::unauthenticated(
            "Authentication failed. The 'Authorization' header is missing.",
            tenant,
        )
    })?;
    let claims = issuer.validate(token, AUDIENCES, now).map_err(|e| {
        tracing::warn!(reason = %e, "resource manager request refused: bad token");
        let message = match e {
            TokenError::WrongAudience { found } => format!(
                "The access token has been obtained for wrong audience or resource '{found}'. It should exactly match with one of the allowed audiences '{}'.",
                AUDIENCES.join("','")
            ),
            TokenError::Expired => "The token is expired.".to_owned(),
            TokenError::WrongIssuer { found } => {
                format!("The access token is from the wrong issuer '{found}'.")
            }
            _ => "The access token is invalid.".to_owned(),
        };
        ArmError::unauthenticated(message, tenant)
    })?;
    let owner = owners.iter().any(|o| o.eq_ignore_ascii_case(&claims.oid));
    Ok(Caller {
        appid: claims.appid,
        oid: claims.oid,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;
    use axum::http::{HeaderValue, header};

    fn issuer() -> TokenIssuer {
        TokenIssuer::new("t", &[5; 32])
    }

    fn headers(resource: &str) -> HeaderMap {
        let id = IdentityConfig {
            name: "n".into(),
            client_id: "c".into(),
            object_id: "O".into(),
            resource_id: None,
            system_assigned: false,
        };
        let t = issuer().issue(&id, resource, 1000).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", t.access_token)).unwrap(),
        );
        h
    }

    #[test]
    fn both_audience_spellings_work_and_owners_are_flagged() {
        for aud in [
            "https://management.azure.com",
            "https://management.azure.com/",
        ] {
            let c = authenticate(&headers(aud), &issuer(), &["o".into()], 1000).unwrap();
            assert_eq!(
                (c.appid.as_str(), c.oid.as_str(), c.owner),
                ("c", "O", true)
            );
        }
        let c = authenticate(
            &headers("https://management.azure.com"),
            &issuer(),
            &[],
            1000,
        )
        .unwrap();
        assert!(!c.owner);
    }

    #[test]
    fn missing_and_vault_tokens_are_refused() {
        let e = authenticate(&HeaderMap::new(), &issuer(), &[], 1000).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (401, "InvalidAuthenticationToken")
        );
        let e =
            authenticate(&headers("https://vault.azure.net"), &issuer(), &[], 1000).unwrap_err();
        assert!(
            e.message
                .contains("wrong audience or resource 'https://vault.azure.net'"),
            "{}",
            e.message
        );
    }
}

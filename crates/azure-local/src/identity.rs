//! The App Service / Functions managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
//!
//! Request (what `azure_identity` 1.0 sends): `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R`
//! plus at most one of `client_id` / `object_id` / `principal_id` / `mi_res_id` / `msi_res_id`,
//! with headers `X-IDENTITY-HEADER: {IDENTITY_HEADER}` and `metadata: true`.
//! Response: `{"access_token","expires_on":"<unix secs as a string>","resource","token_type","client_id"}`.

use crate::config::IdentityConfig;
use crate::state::{new_guid, now_unix};
use crate::token::TokenIssuer;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;

/// The token endpoint path; App Service serves it at the same path.
pub const TOKEN_PATH: &str = "/msi/token";
/// The only api-version of the `IDENTITY_ENDPOINT` protocol.
pub const API_VERSION: &str = "2019-08-01";
const SECRET_HEADER: &str = "x-identity-header";

/// What the token endpoint needs to answer.
pub struct IdentityService {
    header: String,
    identities: Vec<IdentityConfig>,
    issuer: Arc<TokenIssuer>,
}

impl IdentityService {
    /// Creates the service for these identities, requiring `header` from callers.
    pub fn new(header: String, identities: Vec<IdentityConfig>, issuer: Arc<TokenIssuer>) -> Self {
        Self {
            header,
            identities,
            issuer,
        }
    }

    /// The axum router serving [`TOKEN_PATH`].
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(TOKEN_PATH, get(token_handler))
            .with_state(self)
    }

    fn select(&self, query: &[(String, String)]) -> Result<&IdentityConfig, IdentityError> {
        let ids: Vec<(&str, &str)> = query
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "client_id" | "object_id" | "principal_id" | "mi_res_id" | "msi_res_id"
                )
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let found = match ids.as_slice() {
            [] => self.identities.iter().find(|i| i.system_assigned),
            [(kind, value)] => self.identities.iter().find(|i| match *kind {
                "client_id" => i.client_id.eq_ignore_ascii_case(value),
                "object_id" | "principal_id" => i.object_id.eq_ignore_ascii_case(value),
                _ => match &i.resource_id {
                    Some(rid) => rid.eq_ignore_ascii_case(value),
                    // A user-assigned identity's ARM id ends in `/userAssignedIdentities/{name}`.
                    None => value
                        .rsplit('/')
                        .next()
                        .is_some_and(|last| last.eq_ignore_ascii_case(&i.name)),
                },
            }),
            _ => {
                return Err(IdentityError::BadRequest(
                    "Only one of client_id, object_id, principal_id or mi_res_id can be specified."
                        .into(),
                ));
            }
        };
        found.ok_or(IdentityError::UnknownIdentity)
    }
}

/// Why a token request is refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Missing or wrong `X-IDENTITY-HEADER`.
    #[error("missing or wrong X-IDENTITY-HEADER")]
    Unauthorized,
    /// The named identity is not assigned here.
    #[error("Unable to load the proper Managed Identity.")]
    UnknownIdentity,
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Token signing failed.
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnknownIdentity | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            Self::Unauthorized => {
                "Unauthorized. The X-IDENTITY-HEADER header is missing or invalid.".to_owned()
            }
            other => other.to_string(),
        };
        // App Service's identity endpoint answers errors in this shape.
        let body = json!({
            "statusCode": status.as_u16(),
            "message": message,
            "correlationId": new_guid(),
        });
        (status, axum::Json(body)).into_response()
    }
}

async fn token_handler(
    State(svc): State<Arc<IdentityService>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, IdentityError> {
    let presented = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
    if !presented.is_some_and(|p| constant_time_eq(p, svc.header.as_bytes())) {
        tracing::warn!("token request refused: missing or wrong X-IDENTITY-HEADER");
        return Err(IdentityError::Unauthorized);
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match param("api-version") {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(IdentityError::BadRequest(format!(
                "The api-version '{other}' is not supported. Use {API_VERSION}."
            )));
        }
        None => {
            return Err(IdentityError::BadRequest(
                "The api-version query parameter is required.".into(),
            ));
        }
    }
    let resource = match param("resource") {
        Some(r) if !r.is_empty() => r,
        _ => {
            return Err(IdentityError::BadRequest(
                "The resource query parameter is required.".into(),
            ));
        }
    };
    let identity = svc.select(&query).inspect_err(|_| {
        tracing::warn!("token request refused: identity not assigned");
    })?;
    let token = svc
        .issuer
        .issue(identity, resource, now_unix())
        .map_err(|e| IdentityError::Internal(e.to_string()))?;
    tracing::info!(identity = %identity.name, resource, "issued token");
    let body = json!({
        "access_token": token.access_token,
        "expires_on": token.expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    });
    Ok(axum::Json(body).into_response())
}

// The header is a shared secret; compare without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> IdentityService {
        let ids = vec![
            IdentityConfig {
                name: "agent".into(),
                client_id: "c1".into(),
                object_id: "o1".into(),
                resource_id: None,
                system_assigned: false,
            },
            IdentityConfig {
                name: "sys".into(),
                client_id: "c2".into(),
                object_id: "o2".into(),
                resource_id: None,
                system_assigned: true,
            },
        ];
        IdentityService::new("h".into(), ids, Arc::new(TokenIssuer::new("t", &[1; 32])))
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn selects_by_each_id_kind() {
        let s = svc();
        assert_eq!(s.select(&q(&[("client_id", "C1")])).unwrap().name, "agent");
        assert_eq!(s.select(&q(&[("object_id", "o1")])).unwrap().name, "agent");
        assert_eq!(
            s.select(&q(&[("principal_id", "o1")])).unwrap().name,
            "agent"
        );
        let rid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent";
        assert_eq!(s.select(&q(&[("mi_res_id", rid)])).unwrap().name, "agent");
        assert_eq!(s.select(&q(&[])).unwrap().name, "sys");
    }

    #[test]
    fn unknown_and_ambiguous_ids_are_refused() {
        let s = svc();
        assert!(matches!(
            s.select(&q(&[("client_id", "nope")])),
            Err(IdentityError::UnknownIdentity)
        ));
        assert!(matches!(
            s.select(&q(&[("client_id", "c1"), ("object_id", "o1")])),
            Err(IdentityError::BadRequest(_))
        ));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

//! One Key Vault (data plane) served on its own listener.
//!
//! Request pipeline, in Key Vault's order: api-version check, bearer authentication (401 with
//! the challenge), operation routing, injected faults, access policy (403), then the operation.

pub mod auth;
pub mod crypto;
pub mod error;
pub mod keys;
pub mod paging;
pub mod policy;
pub mod routes;
pub mod secrets;

use crate::faults::{FaultRule, Faults};
use crate::listener::Scheme;
use crate::state::{Store, new_guid, now_unix};
use crate::token::TokenIssuer;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use error::VaultError;
use policy::AccessPolicies;
use routes::{Operation, RouteError};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// The api-versions this stand-in accepts, as Key Vault does for its current data plane.
pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", "2025-07-01"];
/// Where the fault-injection controls live on every vault listener.
pub const FAULTS_PATH: &str = "/_local/faults";
// Key Vault refuses request bodies above a few hundred KiB; nothing legitimate here is larger.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The deleted-object recovery level reported in attributes, as a soft-delete-enabled vault does.
pub const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
/// Days a deleted object stays recoverable on such a vault.
pub const RECOVERABLE_DAYS: i64 = 90;

/// One vault: its name, URLs, policies, fault rules, and access to shared state.
pub struct VaultService {
    name: String,
    http_url: String,
    https_url: String,
    policies: AccessPolicies,
    store: Arc<Store>,
    issuer: Arc<TokenIssuer>,
    faults: Faults,
}

impl VaultService {
    /// Creates the vault `name`, reachable at `http_url` and `https_url` (no trailing slash).
    pub fn new(
        name: String,
        http_url: String,
        https_url: String,
        policies: AccessPolicies,
        store: Arc<Store>,
        issuer: Arc<TokenIssuer>,
    ) -> Self {
        Self {
            name,
            http_url,
            https_url,
            policies,
            store,
            issuer,
            faults: Faults::default(),
        }
    }

    /// The vault name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The axum router: every path goes through [`dispatch`].
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }
}

/// A vault as one request sees it: object URLs use the scheme the client connected with.
pub struct Vault<'a> {
    svc: &'a VaultService,
    base_url: &'a str,
}

impl Vault<'_> {
    /// The vault name.
    pub fn name(&self) -> &str {
        &self.svc.name
    }

    /// The vault URL as this client addresses it, e.g. `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        self.base_url
    }

    /// The shared state.
    pub fn store(&self) -> &Store {
        &self.svc.store
    }
}

/// Query parameters of a request, decoded.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn dispatch(State(svc): State<Arc<VaultService>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let params = Params(
        Query::<Vec<(String, String)>>::try_from_uri(req.uri())
            .map(|q| q.0)
            .unwrap_or_default(),
    );
    let headers = req.headers().clone();
    let base_url = match req.extensions().get::<Scheme>() {
        Some(Scheme::Https) => svc.https_url.as_str(),
        _ => svc.http_url.as_str(),
    };
    let vault = Vault {
        svc: &svc,
        base_url,
    };
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await;

    if path == FAULTS_PATH {
        return faults_control(&svc, &method, body.unwrap_or_default());
    }

    let mut op_name = "-";
    let mut caller_appid = String::new();
    let result = async {
        let api_version = check_api_version(&params)?;
        let caller = auth::authenticate(&headers, &svc.issuer, now_unix())?;
        caller_appid.clone_from(&caller.appid);
        let op = routes::parse(&method, &path).map_err(|e| match e {
            RouteError::NotFound => VaultError::NotFound {
                code: "NotFound",
                message: format!("The requested resource {path} was not found."),
            },
            RouteError::MethodNotAllowed => VaultError::MethodNotAllowed,
        })?;
        op_name = op.name();
        if let Some(injected) = svc.faults.take(op.name(), &path) {
            return Err(VaultError::Injected(injected));
        }
        auth::authorize(&caller, &svc.policies, op.permission(), &svc.name)?;
        let body = body.map_err(|_| {
            VaultError::BadParameter("The request body is too large or could not be read.".into())
        })?;
        execute(&vault, op, &params, api_version, body).await
    }
    .await;

    let mut response = match result {
        Ok(value) => (StatusCode::OK, axum::Json(value)).into_response(),
        Err(e) => e.into_response(),
    };
    tracing::debug!(
        vault = %svc.name,
        %method,
        path = %path,
        op = %op_name,
        appid = %caller_appid,
        status = response.status().as_u16(),
        "vault request"
    );
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&new_guid()) {
        headers.insert("x-ms-request-id", id);
    }
    headers.insert("x-ms-keyvault-region", HeaderValue::from_static("local"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

fn check_api_version(params: &Params) -> Result<&str, VaultError> {
    match params.get("api-version") {
        Some(v) if API_VERSIONS.contains(&v) => Ok(v),
        Some(v) => Err(VaultError::BadParameter(format!(
            "The specified version ({v}) is not recognized. Consider using the latest supported version ({}).",
            API_VERSIONS[API_VERSIONS.len() - 1]
        ))),
        None => Err(VaultError::BadParameter(
            "The 'api-version' query parameter is required.".into(),
        )),
    }
}

async fn execute(
    svc: &Vault<'_>,
    op: Operation,
    params: &Params,
    api_version: &str,
    body: Bytes,
) -> Result<Value, VaultError> {
    match op {
        Operation::CreateKey { name } => keys::create(svc, &name, &body).await,
        Operation::GetKey { name, version } => keys::get(svc, &name, version.as_deref()),
        Operation::ListKeys => keys::list(svc, params, api_version),
        Operation::ListKeyVersions { name } => keys::list_versions(svc, &name, params, api_version),
        Operation::RotateKey { name } => keys::rotate(svc, &name).await,
        Operation::DeleteKey { name } => keys::delete(svc, &name),
        Operation::Crypto { op, name, version } => {
            keys::crypto_op(svc, op, &name, version.as_deref(), &body).await
        }
        Operation::SetSecret { name } => secrets::set(svc, &name, &body),
        Operation::GetSecret { name, version } => secrets::get(svc, &name, version.as_deref()),
        Operation::ListSecrets => secrets::list(svc, params, api_version),
        Operation::ListSecretVersions { name } => {
            secrets::list_versions(svc, &name, params, api_version)
        }
        Operation::DeleteSecret { name } => secrets::delete(svc, &name),
    }
}

fn faults_control(svc: &VaultService, method: &Method, body: Bytes) -> Response {
    match *method {
        Method::POST => {
            let rule: FaultRule = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return VaultError::BadParameter(format!("invalid fault rule: {e}"))
                        .into_response();
                }
            };
            match svc.faults.add(rule, routes::OPERATION_NAMES) {
                Ok(()) => {
                    tracing::info!(vault = %svc.name, "fault rule added");
                    (
                        StatusCode::OK,
                        axum::Json(json!({ "rules": svc.faults.snapshot() })),
                    )
                        .into_response()
                }
                Err(e) => VaultError::BadParameter(e.to_string()).into_response(),
            }
        }
        Method::GET => (
            StatusCode::OK,
            axum::Json(json!({ "rules": svc.faults.snapshot() })),
        )
            .into_response(),
        Method::DELETE => {
            svc.faults.clear();
            tracing::info!(vault = %svc.name, "fault rules cleared");
            StatusCode::NO_CONTENT.into_response()
        }
        _ => VaultError::MethodNotAllowed.into_response(),
    }
}

/// Parses a JSON request body; an empty or invalid body is a `BadParameter`.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, VaultError> {
    if body.is_empty() {
        return Err(VaultError::BadParameter(
            "The request body is required.".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| VaultError::BadParameter(format!("The request body is not valid: {e}.")))
}

/// Checks an object name against Key Vault's rule: 1-127 letters, digits and hyphens.
pub fn validate_name(name: &str) -> Result<(), VaultError> {
    if (1..=127).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(())
    } else {
        Err(VaultError::BadParameter(format!(
            "The request URI contains an invalid name: {name}. Names may contain only 0-9, a-z, A-Z and -, up to 127 characters."
        )))
    }
}

/// Base64url without padding, as Key Vault writes binary values.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url with or without padding.
pub fn from_b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// The JSON `attributes` object of a key or secret version.
pub fn attributes_json(a: &crate::state::Attributes) -> Value {
    let mut v = json!({
        "enabled": a.enabled,
        "created": a.created,
        "updated": a.updated,
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    });
    if let Some(nbf) = a.not_before {
        v["nbf"] = json!(nbf);
    }
    if let Some(exp) = a.expires {
        v["exp"] = json!(exp);
    }
    v
}

/// The `deletedDate` / `scheduledPurgeDate` pair of a delete answer.
pub fn deletion_dates() -> (i64, i64) {
    let now = now_unix();
    (now, now + RECOVERABLE_DAYS * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        let p = |v: Option<&str>| {
            Params(
                v.map(|v| vec![("api-version".to_string(), v.to_string())])
                    .unwrap_or_default(),
            )
        };
        for v in API_VERSIONS {
            assert!(check_api_version(&p(Some(v))).is_ok());
        }
        assert!(matches!(
            check_api_version(&p(Some("7.0"))),
            Err(VaultError::BadParameter(_))
        ));
        assert!(matches!(
            check_api_version(&p(None)),
            Err(VaultError::BadParameter(_))
        ));
    }

    #[test]
    fn base64url_accepts_padding_and_writes_none() {
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(from_b64url("-_8="), Some(vec![0xfb, 0xff]));
        assert_eq!(from_b64url("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(from_b64url("+/8"), None);
    }

    #[test]
    fn names() {
        assert!(validate_name("my-key-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a_b").is_err());
        assert!(validate_name(&"a".repeat(128)).is_err());
    }
}

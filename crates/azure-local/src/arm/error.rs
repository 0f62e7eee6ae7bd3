//! Resource Manager errors and their wire form: `{"error":{"code","message"}}`.

use crate::faults::Injected;
use crate::state::StateError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failed request, as Resource Manager reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ArmError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The Azure error code, e.g. `AuthorizationFailed`.
    pub code: &'static str,
    /// The Azure-style message.
    pub message: String,
    /// Seconds for `Retry-After` (throttling).
    pub retry_after: Option<u64>,
    /// The tenant named in a 401 challenge.
    pub challenge_tenant: Option<String>,
}

impl ArmError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            challenge_tenant: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 403 with `code`.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 401 `InvalidAuthenticationToken` with the bearer challenge for `tenant`.
    pub fn unauthenticated(message: impl Into<String>, tenant: &str) -> Self {
        Self {
            challenge_tenant: Some(tenant.to_owned()),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            )
        }
    }

    /// 400 `InvalidRequestContent`.
    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::bad_request("InvalidRequestContent", message)
    }

    /// 400 `InvalidResourceReference`: `reference`, named by `by`, does not exist.
    pub fn invalid_reference(reference: &str, by: &str) -> Self {
        Self::bad_request(
            "InvalidResourceReference",
            format!(
                "Resource {reference} referenced by resource {by} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
            ),
        )
    }

    /// 404 `ResourceGroupNotFound`.
    pub fn resource_group_not_found(rg: &str) -> Self {
        Self::not_found(
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        )
    }

    /// 404 `ResourceNotFound`; `what` is the id's provider part, e.g. `Microsoft.Network/virtualNetworks/v`.
    pub fn resource_not_found(what: &str, rg: Option<&str>) -> Self {
        let place = match rg {
            Some(rg) => format!(" under resource group '{rg}'"),
            None => String::new(),
        };
        Self::not_found(
            "ResourceNotFound",
            format!(
                "The Resource '{what}'{place} was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }

    /// The answer to an injected fault.
    pub fn injected(i: Injected) -> Self {
        let (code, message) = match i.status {
            429 => (
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation type. Please retry after the time in the Retry-After header.",
            ),
            503 => (
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry the request.",
            ),
            _ => (
                "InternalServerError",
                "Encountered internal server error. Please retry the request.",
            ),
        };
        Self {
            retry_after: i.retry_after,
            ..Self::new(
                StatusCode::from_u16(i.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                message,
            )
        }
    }

    /// 500 for failures of this process (such as the state file not being writable).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            message,
        )
    }
}

impl From<StateError> for ArmError {
    fn from(e: StateError) -> Self {
        tracing::error!(error = %e, "cannot persist resource manager state");
        Self::internal("The service could not persist the change.")
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(tenant) = &self.challenge_tenant {
            let challenge = format!(
                "Bearer authorization_uri=\"https://login.windows.net/{tenant}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header or an invalid token.\""
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

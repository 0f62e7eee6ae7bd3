//! Vault errors and their Azure wire form: `{"error":{"code","message"[,"innererror":{"code"}]}}`.

use crate::faults::Injected;
use crate::state::StateError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failed vault request.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// 401 with the authentication challenge.
    #[error("{message}")]
    Unauthorized {
        /// The AKV message.
        message: String,
        /// The tenant named in the challenge.
        tenant: String,
    },
    /// 403: access policy denial (with `innererror`) or an operation the object forbids.
    #[error("{message}")]
    Forbidden {
        /// The message.
        message: String,
        /// `innererror.code`, for access-policy denials.
        inner_code: Option<&'static str>,
    },
    /// 404 with `KeyNotFound`, `SecretNotFound` or `NotFound`.
    #[error("{message}")]
    NotFound {
        /// The error code.
        code: &'static str,
        /// The message.
        message: String,
    },
    /// 405 for a known path with the wrong method.
    #[error("The requested method is not allowed for this resource.")]
    MethodNotAllowed,
    /// 400 `BadParameter`.
    #[error("{0}")]
    BadParameter(String),
    /// 409 `Conflict`.
    #[error("{0}")]
    Conflict(String),
    /// A fault rule fired.
    #[error("injected fault {}", .0.status)]
    Injected(Injected),
    /// 500: something broke here (e.g. the state file could not be written).
    #[error("{0}")]
    Internal(String),
}

impl From<StateError> for VaultError {
    fn from(e: StateError) -> Self {
        tracing::error!(error = %e, "cannot persist state");
        VaultError::Internal("The service could not persist the change.".into())
    }
}

impl VaultError {
    /// 404 for a key name or name/version.
    pub fn key_not_found(id: &str) -> Self {
        Self::NotFound {
            code: "KeyNotFound",
            message: format!(
                "A key with (name/id) {id} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        }
    }

    /// 404 for a secret name or name/version.
    pub fn secret_not_found(id: &str) -> Self {
        Self::NotFound {
            code: "SecretNotFound",
            message: format!(
                "A secret with (name/id) {id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadParameter(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Injected(i) => {
                StatusCode::from_u16(i.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::NotFound { code, .. } => code,
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::BadParameter(_) => "BadParameter",
            Self::Conflict(_) => "Conflict",
            Self::Injected(i) => match i.status {
                429 => "Throttled",
                503 => "ServiceUnavailable",
                _ => "InternalServerError",
            },
            Self::Internal(_) => "InternalServerError",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Injected(i) => match i.status {
                429 => "Request was not processed because too many requests were received. Reason: A generic throttling limit was exceeded.".into(),
                503 => "The service is temporarily unavailable. Please retry the request.".into(),
                _ => "The service encountered an internal error. Please retry the request.".into(),
            },
            other => other.to_string(),
        }
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code(), "message": self.message() });
        if let Self::Forbidden {
            inner_code: Some(inner),
            ..
        } = &self
        {
            error["innererror"] = json!({ "code": inner });
        }
        let mut response = (self.status(), axum::Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized { tenant, .. } => {
                let challenge = format!(
                    "Bearer authorization=\"https://login.microsoftonline.com/{tenant}\", resource=\"https://vault.azure.net\""
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::Injected(Injected {
                retry_after: Some(secs),
                ..
            }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            _ => {}
        }
        response
    }
}

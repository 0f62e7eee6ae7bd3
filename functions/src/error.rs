//! Errors of the API as `application/problem+json` responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use culvert_control_api::{FieldError, PROBLEM_JSON, Problem};

/// An error a request ends with; every variant is a documented status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (not JSON, bad id, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or an invalid credential.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the credential may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route does not take this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with the current state (name taken, in use, wrong state).
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` does not match the current version.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the body is JSON but some fields are wrong.
    #[error("{detail}")]
    Invalid {
        /// Summary.
        detail: String,
        /// The fields.
        errors: Vec<FieldError>,
    },
    /// 503: the control store is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected store error; logged, never detailed to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// 422 for one field.
    pub fn field(pointer: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::Invalid {
            detail: format!("{pointer}: {message}"),
            errors: vec![FieldError {
                pointer: pointer.into(),
                message,
            }],
        }
    }

    /// 404 for a resource kind and id.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> ApiError {
        ApiError::NotFound(format!("no {kind} with id {id}"))
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = match self {
            ApiError::BadRequest(_) => (400, "bad-request", "Bad request"),
            ApiError::Unauthorized(_) => (401, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (403, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (404, "not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => (405, "method-not-allowed", "Method not allowed"),
            ApiError::Conflict(_) => (409, "conflict", "Conflict"),
            ApiError::PreconditionFailed(_) => (412, "precondition-failed", "Precondition failed"),
            ApiError::UnsupportedMediaType(_) => {
                (415, "unsupported-media-type", "Unsupported media type")
            }
            ApiError::Invalid { .. } => (422, "invalid-body", "Invalid request body"),
            ApiError::Unavailable(_) => (503, "unavailable", "Service unavailable"),
            ApiError::Internal(_) => (500, "internal", "Internal error"),
        };
        let detail = match self {
            ApiError::Internal(_) => "an unexpected error happened; it has been logged".to_string(),
            other => other.to_string(),
        };
        let mut p = Problem::new(status, slug, title, detail);
        if let ApiError::Invalid { errors, .. } = self {
            p.errors = errors.clone();
        }
        p
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        if e.is_closed() || e.as_db_error().is_none() && e.to_string().contains("connect") {
            return ApiError::Unavailable(
                "the control store is unreachable; retry in a moment".into(),
            );
        }
        ApiError::Internal(format!("{e:#}"))
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        tracing::warn!(error = %e, "control store connection");
        ApiError::Unavailable("the control store is unreachable; retry in a moment".into())
    }
}

/// Serialize a problem as a response.
pub fn problem_response(p: &Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(p).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        problem_response(&self.problem())
    }
}

/// Result of a request handler.
pub type ApiResult<T> = Result<T, ApiError>;

//! HTTP calls from the host to the handler: readiness probe, payload invocations and forwarded requests.

use crate::invocation::{InvalidResponse, InvocationRequest, InvocationResult};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use std::time::Duration;
use uuid::Uuid;

/// Host version reported to the handler.
pub const HOST_VERSION: &str = "4.x-culvert-local";
/// Header carrying the invocation id.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";
/// Header carrying the host version.
pub const HOST_VERSION_HEADER: &str = "x-azure-functions-hostversion";

/// Why an invocation failed; each kind counts as a function failure.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The handler could not be reached or the connection broke.
    #[error("handler request failed: {0}")]
    Transport(String),
    /// No answer within the function timeout.
    #[error("function timed out after {0:?}")]
    Timeout(Duration),
    /// The handler answered with a non-success status.
    #[error("handler answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body, for the log.
        body: String,
    },
    /// The body is not `{Outputs, Logs, ReturnValue}`.
    #[error(transparent)]
    Invalid(#[from] InvalidResponse),
}

/// Client for the handler at `http://127.0.0.1:{port}`.
#[derive(Clone)]
pub struct HandlerClient {
    base: String,
    http: reqwest::Client,
    timeout: Option<Duration>,
}

impl HandlerClient {
    /// A client for the handler's port; `function_timeout` bounds each invocation.
    pub fn new(port: u16, function_timeout: Option<Duration>) -> Self {
        let mut defaults = HeaderMap::new();
        defaults.insert(HOST_VERSION_HEADER, HeaderValue::from_static(HOST_VERSION));
        let http = reqwest::Client::builder()
            .no_proxy()
            // The host forwards with auto-redirect disabled so the client sees the handler's redirects.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!("Azure-Functions-Host/{HOST_VERSION}"))
            .default_headers(defaults)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client without TLS builds");
        Self {
            base: format!("http://127.0.0.1:{port}"),
            http,
            timeout: function_timeout,
        }
    }

    /// The handler's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One readiness probe: true on any HTTP response.
    pub async fn probe(&self) -> bool {
        self.http
            .get(format!("{}/", self.base))
            .header(INVOCATION_ID_HEADER, Uuid::new_v4().to_string())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok()
    }

    fn map_send_error(&self, e: reqwest::Error) -> InvokeError {
        match (e.is_timeout(), self.timeout) {
            (true, Some(t)) => InvokeError::Timeout(t),
            _ => InvokeError::Transport(error_text(&e)),
        }
    }

    /// POSTs the payload to `/{function}` and parses the result; non-2xx and malformed bodies are failures.
    pub async fn invoke(
        &self,
        function: &str,
        invocation_id: Uuid,
        payload: &InvocationRequest,
    ) -> Result<InvocationResult, InvokeError> {
        let body = serde_json::to_vec(payload).expect("payload serializes");
        let mut req = self
            .http
            .post(format!("{}/{function}", self.base))
            .header(INVOCATION_ID_HEADER, invocation_id.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = self.timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| self.map_send_error(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.map_send_error(e))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let body: String = text.chars().take(500).collect();
            return Err(InvokeError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok(InvocationResult::parse(&bytes)?)
    }

    /// Sends the client's request to the same path on the handler and returns its response as is.
    pub async fn forward(
        &self,
        invocation_id: Uuid,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: bytes::Bytes,
    ) -> Result<reqwest::Response, InvokeError> {
        let mut out = HeaderMap::new();
        for (name, value) in headers {
            if is_hop_by_hop(name)
                || name == reqwest::header::HOST
                || name == reqwest::header::CONTENT_LENGTH
                || name == USER_AGENT
            {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        out.insert(
            INVOCATION_ID_HEADER,
            HeaderValue::from_str(&invocation_id.to_string()).expect("uuid is a header value"),
        );
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .headers(out)
            .body(body);
        if let Some(t) = self.timeout {
            req = req.timeout(t);
        }
        req.send().await.map_err(|e| self.map_send_error(e))
    }
}

/// Connection-level headers that a proxy must not pass on (RFC 9110 section 7.6.1).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

//! A small HTTP client for the API, used by the CLI and the agent.

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Problem;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{0}")]
    Api(Problem),
    /// The API could not be reached.
    #[error("cannot reach the control plane at {url}: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with something that is not the documented shape.
    #[error("unexpected answer from {url} (HTTP {status}): {detail}")]
    Unexpected {
        /// The URL called.
        url: String,
        /// Status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(p) => Some(p.status),
            ClientError::Unexpected { status, .. } => Some(*status),
            ClientError::Unreachable { .. } => None,
        }
    }
}

/// A response body with its `ETag`.
#[derive(Debug)]
pub struct Tagged<T> {
    /// The body.
    pub body: T,
    /// The `ETag` header, when sent.
    pub etag: Option<String>,
}

/// A client bound to an API base URL (`http://127.0.0.1:7071/api`) and a bearer key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// Extra headers of one request.
#[derive(Default, Clone, Copy)]
pub struct Options<'a> {
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<&'a str>,
}

impl Client {
    /// A client; `key` is sent as `Authorization: Bearer`.
    pub fn new(base: &str, key: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    /// Replace the bearer key.
    pub fn set_key(&mut self, key: String) {
        self.key = Some(key);
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Call `method path` with an optional JSON body and decode the JSON answer.
    pub async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        opts: Options<'_>,
    ) -> Result<Tagged<T>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.authorized(self.http.request(method, &url));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(m) = opts.if_match {
            req = req.header(header::IF_MATCH, m);
        }
        if let Some(k) = opts.idempotency_key {
            req = req.header(crate::IDEMPOTENCY_KEY, k);
        }
        let (status, etag, bytes) = self.send(req, &url).await?;
        let bytes = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            bytes::Bytes::from_static(b"null")
        } else {
            bytes
        };
        let body = serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            url,
            status: status.as_u16(),
            detail: e.to_string(),
        })?;
        Ok(Tagged { body, etag })
    }

    /// Send `req`; a non-success answer becomes the problem it carries.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(StatusCode, Option<String>, bytes::Bytes), ClientError> {
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Problem>(&bytes) {
                Ok(p) => ClientError::Api(p),
                Err(_) => ClientError::Unexpected {
                    url: url.to_string(),
                    status: status.as_u16(),
                    detail: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                },
            });
        }
        Ok((status, etag, bytes))
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// `PUT path` with a binary body of `content_type`: the status and the decoded JSON answer.
    /// `timeout` replaces the usual 30 s, since large bodies take longer.
    pub async fn put_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, T), ClientError> {
        let url = format!("{}{}", self.base, path);
        let req = self
            .authorized(self.http.put(&url))
            .header(header::CONTENT_TYPE, content_type)
            .timeout(timeout)
            .body(body);
        let (status, _, bytes) = self.send(req, &url).await?;
        let body = serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            url,
            status: status.as_u16(),
            detail: e.to_string(),
        })?;
        Ok((status.as_u16(), body))
    }

    /// `GET path` as bytes, allowing `timeout` for the transfer.
    pub async fn get_bytes(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<bytes::Bytes, ClientError> {
        let url = format!("{}{}", self.base, path);
        let req = self.authorized(self.http.get(&url)).timeout(timeout);
        let (_, _, bytes) = self.send(req, &url).await?;
        Ok(bytes)
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Tagged<T>, ClientError> {
        self.call::<(), T>(Method::GET, path, None, Options::default())
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Ok(self
            .call(Method::POST, path, Some(body), Options::default())
            .await?
            .body)
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<(), serde_json::Value>(Method::DELETE, path, None, Options::default())
            .await
            .map(|_| ())
    }
}

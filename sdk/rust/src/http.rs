//! HTTP requests sent by the agent on the connector's behalf (`host.http-send`).
//!
//! Only endpoints in the pipeline's egress allow-list are reachable: the `host`/`port`
//! properties and any configuration property marked with
//! [`egress`](crate::config::egress) in the spec. Redirects are returned, not followed.
//!
//! ```no_run
//! use culvert_connector_sdk::http::Request;
//! # fn demo() -> culvert_connector_sdk::Result<()> {
//! let response = Request::put("http://127.0.0.1:10000/acct/container/blob")
//!     .header("x-ms-blob-type", "BlockBlob")
//!     .body(b"hello".to_vec())
//!     .send()?
//!     .error_for_status()?;
//! assert!(response.is_success());
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{ConnectorError, ErrorKind, Result};

/// An HTTP request to an allowed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `DELETE`, `HEAD` or `PATCH`.
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for none).
    pub body: Vec<u8>,
}

/// The answer to a [`Request`]; HTTP error statuses are responses, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Method and URL of the request (query string removed), for messages.
    pub request: String,
}

impl Request {
    /// A request with any method.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new("PUT", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new("POST", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new("DELETE", url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Request {
        Request::new("HEAD", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Request {
        Request::new("PATCH", url)
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Set a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Request> {
        let body = serde_json::to_vec(value).map_err(|e| {
            ConnectorError::internal(format!("cannot encode the request body as JSON: {e}"))
        })?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// `METHOD url` without the query string, which may hold credentials (SAS tokens).
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, redact_url(&self.url))
    }

    /// Send through the agent. `Err` (kind `connection`) when the request could not be
    /// made: refused by the allow-list, connection failed, timed out, or too large.
    pub fn send(self) -> Result<Response> {
        let request = self.describe();
        match transport::send(self) {
            Ok((status, headers, body)) => Ok(Response {
                status,
                headers,
                body,
                request,
            }),
            Err(reason) => Err(ConnectorError::connection(format!("{request}: {reason}"))),
        }
    }
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Status 200 to 299.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ConnectorError::internal(format!(
                "{} answered with a body that is not the expected JSON ({e}): {}",
                self.request,
                snippet(&self.text())
            ))
        })
    }

    /// The response itself on success (2xx), otherwise an error whose kind follows the
    /// status: 401 `auth`, 403 `permission`, 408/429/5xx `connection` (retried),
    /// anything else `internal`.
    pub fn error_for_status(self) -> Result<Response> {
        if self.is_success() {
            return Ok(self);
        }
        let kind = match self.status {
            401 => ErrorKind::Auth,
            403 => ErrorKind::Permission,
            408 | 429 | 500..=599 => ErrorKind::Connection,
            _ => ErrorKind::Internal,
        };
        let hint = match kind {
            ErrorKind::Auth => "; check the credentials in the configuration",
            ErrorKind::Permission => "; the credentials lack a permission for this request",
            _ => "",
        };
        Err(ConnectorError::new(
            kind,
            format!(
                "{} answered HTTP {}: {}{hint}",
                self.request,
                self.status,
                snippet(&self.text())
            ),
        ))
    }
}

/// The URL without its query string and fragment.
pub fn redact_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(target_arch = "wasm32")]
mod transport {
    use super::Request;
    use crate::bindings::source::culvert::connector::host as wit_host;

    pub(super) type Answer = (u16, Vec<(String, String)>, Vec<u8>);

    pub(super) fn send(r: Request) -> Result<Answer, String> {
        let response = wit_host::http_send(&wit_host::HttpRequest {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
        })?;
        Ok((response.status, response.headers, response.body))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod transport {
    use super::Request;

    pub(super) type Answer = (u16, Vec<(String, String)>, Vec<u8>);

    pub(super) fn send(r: Request) -> Result<Answer, String> {
        super::mock::HANDLER.with(|h| match h.borrow_mut().as_mut() {
            Some(handler) => handler(&r),
            None => Err("http-send is only available inside the Culvert agent; in native tests install a handler with culvert_connector_sdk::http::mock::set_handler".to_string()),
        })
    }
}

/// Native tests only: answer requests in-process instead of through the agent.
#[cfg(not(target_arch = "wasm32"))]
pub mod mock {
    use std::cell::RefCell;

    use super::Request;

    type Handler =
        Box<dyn FnMut(&Request) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String>>;

    thread_local! {
        pub(super) static HANDLER: RefCell<Option<Handler>> = RefCell::new(None);
    }

    /// Answer this thread's requests with `handler`: `Ok((status, headers, body))`, or
    /// `Err(reason)` to simulate a transport failure.
    pub fn set_handler(
        handler: impl FnMut(&Request) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> + 'static,
    ) {
        HANDLER.with(|h| *h.borrow_mut() = Some(Box::new(handler)));
    }

    /// Remove this thread's handler.
    pub fn clear_handler() {
        HANDLER.with(|h| *h.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_sends_through_mock() {
        mock::set_handler(|r| {
            assert_eq!(r.method, "PUT");
            assert_eq!(r.header_value("x-ms-blob-type"), Some("BlockBlob"));
            Ok((
                201,
                vec![("ETag".into(), "x".into())],
                b"{\"a\":1}".to_vec(),
            ))
        });
        let resp = Request::put("http://h:1/c/b?sig=secret")
            .header("x-ms-blob-type", "BlockBlob")
            .body(b"x".to_vec())
            .send()
            .unwrap();
        assert!(resp.is_success());
        assert_eq!(resp.header("etag"), Some("x"));
        assert_eq!(resp.request, "PUT http://h:1/c/b");
        #[derive(serde::Deserialize)]
        struct A {
            a: u32,
        }
        assert_eq!(resp.json::<A>().unwrap().a, 1);
        mock::clear_handler();
    }

    #[test]
    fn transport_errors_are_connection_errors_without_secrets() {
        mock::set_handler(|_| Err("refused by the egress allow-list".into()));
        let e = Request::get("http://h:1/x?sig=secret").send().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Connection);
        assert_eq!(
            e.message,
            "GET http://h:1/x: refused by the egress allow-list"
        );
        mock::clear_handler();
        let e = Request::get("http://h:1/x").send().unwrap_err();
        assert!(e.message.contains("set_handler"));
    }

    #[test]
    fn error_for_status_classifies() {
        let resp = |status| Response {
            status,
            headers: vec![],
            body: b"nope".to_vec(),
            request: "GET http://h/".into(),
        };
        assert_eq!(
            resp(403).error_for_status().unwrap_err().kind,
            ErrorKind::Permission
        );
        assert_eq!(
            resp(401).error_for_status().unwrap_err().kind,
            ErrorKind::Auth
        );
        assert_eq!(
            resp(503).error_for_status().unwrap_err().kind,
            ErrorKind::Connection
        );
        let e = resp(404).error_for_status().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert_eq!(e.message, "GET http://h/ answered HTTP 404: nope");
        assert!(resp(204).error_for_status().is_ok());
    }

    impl Request {
        fn header_value(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }
}

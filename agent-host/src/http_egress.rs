//! `host.http-send`: HTTP requests the agent makes on a connector's behalf, only to
//! endpoints in that connector's egress allow-list.

use std::time::Duration;

use crate::egress::Egress;

/// Largest response body handed back to a connector.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Time one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A request as the connector asked for it.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Header pairs.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// The answer handed back to the connector.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header pairs (values that are not UTF-8 are dropped).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            // A redirect could leave the allow-list; the connector decides what to do with it.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .expect("the HTTP client configuration is valid")
    })
}

/// Check the request against the allow-list, send it and read the answer.
pub async fn send(egress: &Egress, request: Request) -> Result<Response, String> {
    let shown = redact(&request.url);
    let url = url::Url::parse(&request.url)
        .map_err(|e| format!("`{shown}` is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{shown}`: only http:// and https:// URLs can be requested"
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{shown}` has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("`{shown}` has no port"))?;
    if !egress.permits(host, port) {
        return Err(format!(
            "`{host}:{port}` is not in this connector's egress allow-list; name it in a configuration field the connector's spec marks `x-culvert-egress`, or in the pipeline's `egress`"
        ));
    }
    let method = match request.method.to_ascii_uppercase().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "PATCH") => {
            reqwest::Method::from_bytes(m.as_bytes()).expect("a standard method")
        }
        other => {
            return Err(format!(
                "HTTP method `{other}` is not supported; use GET, POST, PUT, DELETE, HEAD or PATCH"
            ));
        }
    };
    let mut builder = client().request(method, url.clone());
    for (name, value) in &request.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
        let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
            format!("the value of header `{name}` is not a valid HTTP header value")
        })?;
        builder = builder.header(name, value);
    }
    let mut response = builder
        .body(request.body)
        .send()
        .await
        .map_err(|e| describe(e, host, port))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| describe(e, host, port))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!(
                "the response from `{host}:{port}` exceeds {} MiB; request smaller pages",
                MAX_RESPONSE_BYTES >> 20
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A URL as it may appear in a message: query strings carry credentials (SAS tokens).
fn redact(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    if cut < url.len() {
        format!("{}?…", &url[..cut])
    } else {
        url.to_string()
    }
}

fn describe(e: reqwest::Error, host: &str, port: u16) -> String {
    // reqwest puts the whole URL, query included, into its messages.
    let e = e.without_url();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    format!("HTTP request to `{host}:{port}` {kind}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn get(url: &str) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![("x-test".into(), "1".into())],
            body: Vec::new(),
        }
    }

    #[tokio::test]
    async fn only_allowed_endpoints_are_requested() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(text.contains("x-test: 1"));
            sock.write_all(b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await
                .unwrap();
        });
        let egress = Egress::new(&[("127.0.0.1".into(), port)]);
        let refused = send(&egress, get(&format!("http://127.0.0.1:{}/", port + 1)))
            .await
            .unwrap_err();
        assert!(refused.contains("allow-list"), "{refused}");
        assert!(send(&egress, get("ftp://127.0.0.1/")).await.is_err());
        let secret = send(&egress, get("ftp://127.0.0.1/x?sig=SECRET"))
            .await
            .unwrap_err();
        assert!(!secret.contains("SECRET"), "{secret}");
        let response = send(&egress, get(&format!("http://127.0.0.1:{port}/x")))
            .await
            .unwrap();
        // Redirects come back to the connector instead of being followed.
        assert_eq!(response.status, 302);
        assert_eq!(response.body, b"ok");
    }

    #[tokio::test]
    async fn names_are_allowed_only_on_their_ports() {
        let egress = Egress::new(&[("localhost".into(), 1)]);
        let refused = send(&egress, get("http://localhost:2/")).await.unwrap_err();
        assert!(refused.contains("allow-list"), "{refused}");
        let failed = send(&egress, get("http://localhost:1/p?sig=SECRET"))
            .await
            .unwrap_err();
        assert!(failed.contains("could not connect"), "{failed}");
        assert!(!failed.contains("SECRET"), "{failed}");
    }
}

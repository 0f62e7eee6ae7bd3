//! What an Azure SDK error means for the caller: retry later, or stop and tell the user.

use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;

/// The kind of fault behind an Azure call's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Unreachable, throttled or a server-side fault: retry with backoff.
    Transient {
        /// What the service asked for (Retry-After), when it did.
        retry_after: Option<Duration>,
    },
    /// The identity is not allowed (401/403) or could not get a token.
    Forbidden,
    /// The resource does not exist.
    NotFound,
    /// Anything else: bad input, unexpected status.
    Permanent,
}

/// The service's own message (`error.message` in Azure's error body), else the error's text.
pub fn message(e: &azure_core::Error) -> String {
    if let ErrorKind::HttpResponse {
        raw_response: Some(raw),
        ..
    } = e.kind()
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw.body().as_ref())
        && let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str())
    {
        return m.to_string();
    }
    e.to_string()
}

fn retry_after(e: &azure_core::Error) -> Option<Duration> {
    let ErrorKind::HttpResponse {
        raw_response: Some(raw),
        ..
    } = e.kind()
    else {
        return None;
    };
    ["retry-after-ms", "x-ms-retry-after-ms", "retry-after"]
        .iter()
        .find_map(|name| {
            let v = raw
                .headers()
                .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))?;
            let n: f64 = v.trim().parse().ok()?;
            Some(if name.ends_with("-ms") {
                Duration::from_millis(n as u64)
            } else {
                Duration::from_secs_f64(n)
            })
        })
}

/// Classify an SDK error.
pub fn classify(e: &azure_core::Error) -> Fault {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => match *status {
            StatusCode::Unauthorized | StatusCode::Forbidden => Fault::Forbidden,
            StatusCode::NotFound => Fault::NotFound,
            StatusCode::RequestTimeout
            | StatusCode::TooManyRequests
            | StatusCode::InternalServerError
            | StatusCode::BadGateway
            | StatusCode::ServiceUnavailable
            | StatusCode::GatewayTimeout => Fault::Transient {
                retry_after: retry_after(e),
            },
            _ => Fault::Permanent,
        },
        ErrorKind::Connection | ErrorKind::Io => Fault::Transient { retry_after: None },
        // A token endpoint that cannot be reached is an outage; one that answers no is not.
        ErrorKind::Credential => {
            let text = format!("{e:#} {:?}", e.get_ref().map(|r| r.to_string()));
            if ["connect", "timed out", "tcp", "reset", "refused"]
                .iter()
                .any(|w| text.to_ascii_lowercase().contains(w))
            {
                Fault::Transient { retry_after: None }
            } else {
                Fault::Forbidden
            }
        }
        _ => Fault::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::RawResponse;
    use azure_core::http::headers::Headers;

    fn http(status: StatusCode, headers: Headers, body: &str) -> azure_core::Error {
        ErrorKind::HttpResponse {
            status,
            error_code: None,
            raw_response: Some(Box::new(RawResponse::from_bytes(
                status,
                headers,
                body.as_bytes().to_vec(),
            ))),
        }
        .into_error()
    }

    #[test]
    fn statuses_map_to_faults_and_messages_come_from_the_body() {
        let mut h = Headers::new();
        h.insert("retry-after", "3");
        let throttled = http(StatusCode::TooManyRequests, h, "{}");
        assert_eq!(
            classify(&throttled),
            Fault::Transient {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let denied = http(
            StatusCode::Forbidden,
            Headers::new(),
            r#"{"error":{"code":"Forbidden","message":"does not have keys decrypt permission"}}"#,
        );
        assert_eq!(classify(&denied), Fault::Forbidden);
        assert_eq!(message(&denied), "does not have keys decrypt permission");
        assert_eq!(
            classify(&http(StatusCode::NotFound, Headers::new(), "")),
            Fault::NotFound
        );
        assert_eq!(
            classify(&ErrorKind::Connection.into_error()),
            Fault::Transient { retry_after: None }
        );
        assert_eq!(
            classify(&http(StatusCode::BadRequest, Headers::new(), "")),
            Fault::Permanent
        );
    }
}

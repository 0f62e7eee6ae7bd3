//! Exit codes scripts can rely on, and the one-line error message behind them.

use culvert_control_api::client::ClientError;

/// Success.
pub const OK: u8 = 0;
/// Any failure without a more specific code.
pub const OTHER: u8 = 1;
/// Bad command line (clap exits with it on its own).
pub const USAGE: u8 = 2;
/// A named resource does not exist (404).
pub const NOT_FOUND: u8 = 3;
/// The resource is in a state that forbids the change (409, 412).
pub const CONFLICT: u8 = 4;
/// The request was rejected as invalid (400, 405, 415, 422).
pub const INVALID: u8 = 5;
/// The API key is missing, wrong or not allowed (401, 403).
pub const AUTH: u8 = 6;
/// The control plane could not be reached or is unavailable (connection errors, 503).
pub const UNAVAILABLE: u8 = 7;

/// What kind of failure a local error is, for its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A resource named on the command line does not exist.
    NotFound,
    /// The state of something forbids the operation.
    Conflict,
    /// The input is wrong or ambiguous.
    Invalid,
    /// Credentials are missing.
    Auth,
    /// Anything else.
    Other,
}

/// A failure found by the CLI itself, before or after talking to the API.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Its kind, which picks the exit code.
    pub kind: Kind,
    /// One readable line.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// The exit code of an HTTP status the API answered with (or `None` when it was not reached).
pub fn for_status(status: Option<u16>) -> u8 {
    match status {
        None | Some(503) => UNAVAILABLE,
        Some(404) => NOT_FOUND,
        Some(409 | 412) => CONFLICT,
        Some(400 | 405 | 415 | 422) => INVALID,
        Some(401 | 403) => AUTH,
        Some(_) => OTHER,
    }
}

/// The exit code of any error a command returned: the single place the mapping lives.
pub fn code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return for_status(c.status());
        }
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f.kind {
                Kind::NotFound => NOT_FOUND,
                Kind::Conflict => CONFLICT,
                Kind::Invalid => INVALID,
                Kind::Auth => AUTH,
                Kind::Other => OTHER,
            };
        }
    }
    OTHER
}

/// The innermost cause: for a refused connection, "Connection refused (os error 111)" rather
/// than every layer of the HTTP stack restating the URL.
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A problem's detail and each wrong field, skipping fields the detail already states.
fn problem_text(p: &culvert_control_api::Problem) -> String {
    let mut text = p.detail.clone().unwrap_or_else(|| p.title.clone());
    for e in &p.errors {
        let field = format!("{}: {}", e.pointer, e.message);
        // Handlers often put the field's message in the detail already.
        if !text.contains(&e.message) {
            text.push_str("; ");
            text.push_str(&field);
        }
    }
    text
}

/// The message after `error: `, on one line: the problem detail and each field that is wrong.
pub fn message(err: &anyhow::Error) -> String {
    let mut context = Vec::new();
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            let core = match c {
                ClientError::Api(p) => problem_text(p),
                ClientError::Unreachable { url, source } => format!(
                    "cannot reach the control plane at {}: {} (is it running? `culvert local up` starts one here)",
                    url.split('?').next().unwrap_or(url),
                    root_cause(source)
                ),
                other => other.to_string(),
            };
            context.push(core);
            return context.join(": ").replace('\n', " ");
        }
        if cause.downcast_ref::<Failure>().is_some() {
            context.push(cause.to_string());
            return context.join(": ").replace('\n', " ");
        }
        context.push(cause.to_string());
    }
    format!("{err:#}").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use culvert_control_api::{FieldError, Problem};

    fn api(status: u16) -> anyhow::Error {
        ClientError::Api(Problem::new(status, "x", "X", "it went wrong")).into()
    }

    #[test]
    fn statuses_map_to_documented_codes() {
        let cases = [
            (404, NOT_FOUND),
            (409, CONFLICT),
            (412, CONFLICT),
            (400, INVALID),
            (405, INVALID),
            (415, INVALID),
            (422, INVALID),
            (401, AUTH),
            (403, AUTH),
            (503, UNAVAILABLE),
            (500, OTHER),
            (502, OTHER),
        ];
        for (status, want) in cases {
            assert_eq!(code(&api(status)), want, "HTTP {status}");
        }
        assert_eq!(for_status(None), UNAVAILABLE);
        let unexpected = ClientError::Unexpected {
            url: "u".into(),
            status: 404,
            detail: "html".into(),
        };
        assert_eq!(code(&unexpected.into()), NOT_FOUND);
    }

    #[test]
    fn local_failures_and_context_keep_their_code() {
        let e: anyhow::Error = Failure::new(Kind::NotFound, "no environment named \"x\"").into();
        assert_eq!(code(&e), NOT_FOUND);
        let e = e.context("resolving --env");
        assert_eq!(code(&e), NOT_FOUND);
        assert_eq!(
            code(&Failure::new(Kind::Invalid, "ambiguous").into()),
            INVALID
        );
        assert_eq!(code(&Failure::new(Kind::Auth, "empty key").into()), AUTH);
        assert_eq!(code(&anyhow::anyhow!("plain")), OTHER);
        assert_eq!(code(&api(409).context("deleting")), CONFLICT);
    }

    #[test]
    fn message_is_the_detail_and_its_fields() {
        let mut p = Problem::new(422, "invalid-body", "Invalid", "the body is wrong");
        p.errors.push(FieldError {
            pointer: "/agents".into(),
            message: "must be from 1 to 32".into(),
        });
        let e: anyhow::Error = ClientError::Api(p).into();
        assert_eq!(
            message(&e),
            "the body is wrong; /agents: must be from 1 to 32"
        );
        let e = anyhow::Error::from(Failure::new(Kind::Other, "x")).context("waiting for demo");
        assert_eq!(message(&e), "waiting for demo: x");
    }
}

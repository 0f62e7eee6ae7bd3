//! Errors returned by the replication client.

use std::io;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

/// Everything that can go wrong while talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// Reading from or writing to the underlying stream failed.
    #[error("I/O error on the replication connection: {0}")]
    Io(#[from] io::Error),

    /// The server closed the connection outside of a replication stream.
    #[error("the server closed the connection unexpectedly")]
    ConnectionClosed,

    /// The server answered with an ErrorResponse.
    #[error(
        "{message} (SQLSTATE {code}){}{}",
        suffix(": ", detail),
        suffix(" hint: ", hint)
    )]
    Db {
        /// SQLSTATE code, e.g. `28P01`.
        code: String,
        /// Primary human-readable message.
        message: String,
        /// Optional secondary message with more detail.
        detail: Option<String>,
        /// Optional suggestion on how to fix the problem.
        hint: Option<String>,
    },

    /// The server asked for a password and none was configured.
    #[error(
        "the server requires a password for this user, but none is configured: set `password` in the source configuration"
    )]
    PasswordRequired,

    /// The server asked for an authentication method this client cannot perform.
    #[error(
        "the server requested {0} authentication, which this client does not support; configure pg_hba.conf to use scram-sha-256, md5, password or trust for this connection"
    )]
    UnsupportedAuthentication(String),

    /// The authentication exchange itself failed on the client side (e.g. a bad SCRAM server proof).
    #[error("authentication failed: {0}")]
    Authentication(String),

    /// The server sent something the protocol does not allow at this point.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A textual LSN did not have the `XXXXXXXX/XXXXXXXX` hexadecimal form.
    #[error(
        "invalid LSN {0:?}: expected two hexadecimal numbers separated by '/', like 16/B374D848"
    )]
    InvalidLsn(String),

    /// The call is not allowed in the connection's current mode (querying vs. streaming).
    #[error("invalid connection state: {0}")]
    InvalidState(&'static str),

    /// The server ended the replication stream (CopyDone) or closed the connection while streaming.
    #[error("the replication stream ended")]
    StreamEnded,
}

fn suffix(prefix: &str, value: &Option<String>) -> String {
    match value {
        Some(v) if !v.is_empty() => format!("{prefix}{v}"),
        _ => String::new(),
    }
}

impl ReplicationError {
    /// The SQLSTATE code when this is a server error, so callers can branch on it without matching.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Db { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        ReplicationError::Protocol(msg.into())
    }

    /// Builds a `Db` error from ErrorResponse fields; a malformed body still yields an error, not a panic.
    pub(crate) fn from_fields(mut fields: ErrorFields<'_>) -> Self {
        let mut code = String::new();
        let mut message = String::new();
        let mut detail = None;
        let mut hint = None;
        loop {
            match fields.next() {
                Ok(Some(field)) => {
                    let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
                    match field.type_() {
                        b'C' => code = value,
                        b'M' => message = value,
                        b'D' => detail = Some(value),
                        b'H' => hint = Some(value),
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return ReplicationError::protocol(format!("malformed ErrorResponse: {e}"));
                }
            }
        }
        ReplicationError::Db {
            code,
            message,
            detail,
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_error_display_includes_code_detail_and_hint() {
        let e = ReplicationError::Db {
            code: "42704".into(),
            message: "replication slot \"x\" does not exist".into(),
            detail: Some("more".into()),
            hint: Some("create it first".into()),
        };
        assert_eq!(
            e.to_string(),
            "replication slot \"x\" does not exist (SQLSTATE 42704): more hint: create it first"
        );
        assert_eq!(e.sqlstate(), Some("42704"));
    }

    #[test]
    fn db_error_display_without_optional_parts() {
        let e = ReplicationError::Db {
            code: "28P01".into(),
            message: "password authentication failed".into(),
            detail: None,
            hint: None,
        };
        assert_eq!(
            e.to_string(),
            "password authentication failed (SQLSTATE 28P01)"
        );
    }

    #[test]
    fn password_required_mentions_configuration_key() {
        assert!(
            ReplicationError::PasswordRequired
                .to_string()
                .contains("set `password` in the source configuration")
        );
    }
}

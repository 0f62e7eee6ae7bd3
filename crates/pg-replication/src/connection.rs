//! Connection setup and the simple query protocol.

use std::collections::HashMap;
use std::fmt;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, Message, RowDescriptionBody};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::authenticate;
use crate::error::ReplicationError;
use crate::framing::{Backend, Framed};

/// What is needed to open a logical replication connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectParams {
    /// Role to log in as; it needs the REPLICATION attribute.
    pub user: String,
    /// Password, if the server's pg_hba.conf requires one.
    pub password: Option<String>,
    /// Database whose changes are decoded.
    pub database: String,
    /// Shown in `pg_stat_replication` / `pg_stat_activity`.
    pub application_name: String,
}

// Hand-written so a password never ends up in logs.
impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// One result set of a simple query: column names plus text rows.
pub(crate) struct ResultSet {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<Option<String>>>,
}

/// A walsender connection in `replication=database` mode.
pub struct ReplicationConnection<S> {
    pub(crate) framed: Framed<S>,
    pub(crate) parameters: HashMap<String, String>,
    pub(crate) backend_key: Option<(i32, i32)>,
    /// True between CopyBothResponse and the end of the stream; no queries are possible then.
    pub(crate) streaming: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ReplicationConnection<S> {
    /// Startup with `replication=database`, authentication (trust, cleartext, md5, SCRAM-SHA-256), then waits for ReadyForQuery.
    pub async fn connect(stream: S, params: &ConnectParams) -> Result<Self, ReplicationError> {
        let mut conn = ReplicationConnection {
            framed: Framed::new(stream),
            parameters: HashMap::new(),
            backend_key: None,
            streaming: false,
        };
        // Fixed session settings keep text values (dates, floats) independent of server defaults.
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("application_name", params.application_name.as_str()),
            ("replication", "database"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
        ];
        frontend::startup_message(startup, conn.framed.out())?;
        conn.framed.flush().await?;

        authenticate(&mut conn.framed, params).await?;

        loop {
            match conn.framed.next().await? {
                Backend::Message(Message::ReadyForQuery(_)) => return Ok(conn),
                Backend::Message(Message::BackendKeyData(body)) => {
                    conn.backend_key = Some((body.process_id(), body.secret_key()));
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(ReplicationError::from_fields(body.fields()));
                }
                Backend::Message(msg) => conn.handle_async_message(msg)?,
                Backend::CopyBothResponse => {
                    return Err(ReplicationError::protocol(
                        "unexpected CopyBothResponse during startup",
                    ));
                }
            }
        }
    }

    /// Simple query protocol; returns all rows of all result sets as text values (None for NULL).
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        let sets = self.query_sets(sql).await?;
        Ok(sets.into_iter().flat_map(|set| set.rows).collect())
    }

    /// Server parameter reported at startup (e.g. "server_version").
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// `server_version_num`-style number derived from the reported `server_version` (e.g. 150004).
    pub fn server_version_num(&self) -> Option<u32> {
        self.parameter("server_version")
            .and_then(parse_server_version)
    }

    /// Process id and secret key from BackendKeyData, needed to send a CancelRequest on another socket.
    pub fn backend_key(&self) -> Option<(i32, i32)> {
        self.backend_key
    }

    /// Whether the connection is inside a replication stream (after `start_logical`).
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// Sends Terminate so the server ends the session cleanly instead of logging an unexpected EOF.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        frontend::terminate(self.framed.out());
        self.framed.flush().await
    }

    /// Runs `sql` and collects every result set; a server error is returned only after ReadyForQuery so the connection stays usable.
    pub(crate) async fn query_sets(
        &mut self,
        sql: &str,
    ) -> Result<Vec<ResultSet>, ReplicationError> {
        if self.streaming {
            return Err(ReplicationError::InvalidState(
                "queries cannot be sent while the replication stream is active",
            ));
        }
        frontend::query(sql, self.framed.out())?;
        self.framed.flush().await?;

        let mut sets: Vec<ResultSet> = Vec::new();
        let mut error: Option<ReplicationError> = None;
        loop {
            match self.framed.next().await? {
                Backend::Message(Message::ReadyForQuery(_)) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(sets),
                    };
                }
                Backend::Message(Message::RowDescription(body)) => sets.push(ResultSet {
                    columns: column_names(&body)?,
                    rows: Vec::new(),
                }),
                Backend::Message(Message::DataRow(body)) => {
                    let row = text_row(&body)?;
                    match sets.last_mut() {
                        Some(set) => set.rows.push(row),
                        None => {
                            return Err(ReplicationError::protocol(
                                "DataRow without RowDescription",
                            ));
                        }
                    }
                }
                Backend::Message(Message::CommandComplete(_) | Message::EmptyQueryResponse) => {}
                Backend::Message(Message::ErrorResponse(body)) => {
                    error.get_or_insert(ReplicationError::from_fields(body.fields()));
                }
                Backend::Message(Message::CopyInResponse(_)) => {
                    // Refusing the copy makes the server error out and return to ReadyForQuery.
                    frontend::copy_fail("COPY FROM STDIN is not supported", self.framed.out())?;
                    self.framed.flush().await?;
                }
                // Draining the copy until ReadyForQuery keeps the connection usable afterwards.
                Backend::Message(Message::CopyOutResponse(_)) => {
                    error.get_or_insert(ReplicationError::protocol(
                        "simple_query does not support COPY TO STDOUT",
                    ));
                }
                Backend::Message(Message::CopyData(_) | Message::CopyDone) => {}
                Backend::CopyBothResponse => {
                    // The server is now streaming; recording that lets recv() still be used.
                    self.streaming = true;
                    return Err(ReplicationError::protocol(
                        "simple_query cannot start replication; use start_logical",
                    ));
                }
                Backend::Message(msg) => self.handle_async_message(msg)?,
            }
        }
    }

    /// Messages the server may send at any time: parameter changes are recorded, notices dropped.
    pub(crate) fn handle_async_message(&mut self, msg: Message) -> Result<(), ReplicationError> {
        match msg {
            Message::ParameterStatus(body) => {
                let name = body.name().map_err(malformed)?;
                let value = body.value().map_err(malformed)?;
                self.parameters.insert(name.to_owned(), value.to_owned());
                Ok(())
            }
            Message::NoticeResponse(_) | Message::NotificationResponse(_) => Ok(()),
            _ => Err(ReplicationError::protocol(format!(
                "unexpected {} message",
                message_name(&msg)
            ))),
        }
    }
}

fn malformed(e: std::io::Error) -> ReplicationError {
    ReplicationError::protocol(format!("malformed message from server: {e}"))
}

fn column_names(body: &RowDescriptionBody) -> Result<Vec<String>, ReplicationError> {
    body.fields()
        .map(|f| Ok(f.name().to_owned()))
        .collect()
        .map_err(malformed)
}

fn text_row(body: &DataRowBody) -> Result<Vec<Option<String>>, ReplicationError> {
    let buf = body.buffer();
    body.ranges()
        .map(|range| Ok(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
        .collect()
        .map_err(malformed)
}

/// Turns "15.4 (Debian 15.4-1.pgdg120+1)", "16beta2" or "9.6.24" into the numeric form PostgreSQL uses.
pub(crate) fn parse_server_version(version: &str) -> Option<u32> {
    let leading = version
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut nums = leading.split('.').map(|p| p.parse::<u32>().ok());
    let major = nums.next()??;
    let minor = nums.next().flatten().unwrap_or(0);
    if major >= 10 {
        Some(major * 10000 + minor)
    } else {
        let patch = nums.next().flatten().unwrap_or(0);
        Some(major * 10000 + minor * 100 + patch)
    }
}

fn message_name(msg: &Message) -> &'static str {
    match msg {
        Message::AuthenticationOk
        | Message::AuthenticationCleartextPassword
        | Message::AuthenticationMd5Password(_)
        | Message::AuthenticationSasl(_)
        | Message::AuthenticationSaslContinue(_)
        | Message::AuthenticationSaslFinal(_) => "Authentication",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::BindComplete => "BindComplete",
        Message::CloseComplete => "CloseComplete",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::NoData => "NoData",
        Message::ParameterDescription(_) => "ParameterDescription",
        Message::ParseComplete => "ParseComplete",
        Message::PortalSuspended => "PortalSuspended",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.4 (Debian 15.4-1.pgdg120+1)"),
            Some(150004)
        );
        assert_eq!(parse_server_version("17.0"), Some(170000));
        assert_eq!(parse_server_version("16beta2"), Some(160000));
        assert_eq!(parse_server_version("14devel"), Some(140000));
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version("10.23"), Some(100023));
        assert_eq!(parse_server_version(""), None);
        assert_eq!(parse_server_version("beta"), None);
    }

    #[test]
    fn debug_hides_password() {
        let p = ConnectParams {
            user: "rep".into(),
            password: Some("hunter2".into()),
            database: "db".into(),
            application_name: "culvert".into(),
        };
        let s = format!("{p:?}");
        assert!(!s.contains("hunter2"));
        assert!(s.contains("<redacted>"));
    }
}

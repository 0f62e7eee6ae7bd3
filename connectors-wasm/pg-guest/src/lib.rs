//! Connection settings, connecting and error mapping shared by the PostgreSQL connectors.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::{Client, NoTls};

pub mod raw;
mod tls;

pub use tls::{PgStream, SslMode};

/// Which part of the contract an error belongs to: the SDK's kinds, so conversion is exact.
pub use culvert_connector_sdk::ErrorKind;

/// An error with a message for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct GuestError {
    /// Classification.
    pub kind: ErrorKind,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl GuestError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> GuestError {
        GuestError {
            kind,
            message: message.into(),
        }
    }
}

/// Result of connector operations.
pub type GuestResult<T> = Result<T, GuestError>;

/// Connection fields common to source and target configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct PgConnectConfig {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Password, when the server asks for one.
    #[serde(default)]
    pub password: Option<String>,
    /// Database name.
    pub database: String,
    /// libpq's sslmode: `disable`, `allow`, `prefer`, `require`, `verify-ca` or `verify-full`.
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    /// PEM text of the certificates trusted for verify-ca / verify-full (the Mozilla roots
    /// when unset); with `prefer` or `require` it makes the chain be checked too, as in libpq.
    #[serde(default)]
    pub sslrootcert: Option<String>,
}

fn default_port() -> u16 {
    5432
}

fn default_sslmode() -> String {
    "prefer".to_string()
}

impl PgConnectConfig {
    /// Where the server is, for messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The parsed `sslmode`.
    pub fn ssl_mode(&self) -> GuestResult<SslMode> {
        SslMode::parse(&self.sslmode)
    }
}

/// Parse a connector configuration, naming the offending field on error.
pub fn parse_config<T: for<'de> Deserialize<'de>>(json: &str) -> GuestResult<T> {
    serde_json::from_str(json)
        .map_err(|e| GuestError::new(ErrorKind::Config, format!("invalid configuration: {e}")))
}

/// Resolve the configured host through the agent (which enforces the egress allow-list).
pub fn resolve_addrs(
    cfg: &PgConnectConfig,
    resolve: &(dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync),
) -> GuestResult<Vec<SocketAddr>> {
    if let Ok(ip) = cfg.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, cfg.port)]);
    }
    let ips = resolve(&cfg.host).map_err(|e| {
        GuestError::new(
            ErrorKind::Connection,
            format!("cannot resolve host `{}`: {e}", cfg.host),
        )
    })?;
    let addrs: Vec<SocketAddr> = ips
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, cfg.port))
        .collect();
    if addrs.is_empty() {
        return Err(GuestError::new(
            ErrorKind::Connection,
            format!("host `{}` resolved to no address", cfg.host),
        ));
    }
    Ok(addrs)
}

/// Open a TCP connection to the server (no TLS negotiation; see [`connect_stream`]).
pub async fn connect_tcp(
    cfg: &PgConnectConfig,
    resolve: &(dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync),
) -> GuestResult<TcpStream> {
    let mut last = String::new();
    for addr in resolve_addrs(cfg, resolve)? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(GuestError::new(
        ErrorKind::Connection,
        format!(
            "cannot reach PostgreSQL at {} ({last}); check host and port, that the server listens on that address, and that the pipeline's network allows it",
            cfg.endpoint()
        ),
    ))
}

/// Open a connection to the server and negotiate TLS as `sslmode` says; the startup
/// protocol has not begun on the returned stream.
pub async fn connect_stream(
    cfg: &PgConnectConfig,
    resolve: &(dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync),
) -> GuestResult<PgStream> {
    let mode = cfg.ssl_mode()?;
    let stream = connect_tcp(cfg, resolve).await?;
    tls::negotiate(cfg, mode, stream).await
}

/// Connect a regular SQL session; the connection task runs on the current runtime.
pub async fn connect(
    cfg: &PgConnectConfig,
    application_name: &str,
    resolve: &(dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync),
) -> GuestResult<Client> {
    let stream = connect_stream(cfg, resolve).await?;
    let mut pg = tokio_postgres::Config::new();
    // TLS, if any, is already in place on the stream.
    pg.ssl_mode(DriverSslMode::Disable)
        .user(&cfg.user)
        .dbname(&cfg.database)
        .application_name(application_name);
    if let Some(pw) = &cfg.password {
        pg.password(pw);
    }
    let (client, connection) = pg
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| pg_error(cfg, "connect", &e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute("SET DateStyle = ISO; SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET IntervalStyle = postgres")
        .await
        .map_err(|e| pg_error(cfg, "configure session", &e))?;
    Ok(client)
}

/// Turn a driver error into an operator message with a fix where one is known.
pub fn pg_error(cfg: &PgConnectConfig, doing: &str, e: &tokio_postgres::Error) -> GuestError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let (kind, hint) = match code {
            "28000" if db.message().contains("no encryption") => (
                ErrorKind::Auth,
                "the server admits this connection only over TLS; set sslmode = \"require\" or stricter".to_string(),
            ),
            "28P01" | "28000" => (
                ErrorKind::Auth,
                format!(
                    "check `user` and `password`, and that pg_hba.conf admits `{}` from the agent",
                    cfg.user
                ),
            ),
            "3D000" => (
                ErrorKind::Config,
                format!(
                    "database `{}` does not exist; check `database`",
                    cfg.database
                ),
            ),
            "42501" => (
                ErrorKind::Permission,
                format!("grant the missing privilege to role `{}`", cfg.user),
            ),
            c if c.starts_with("08") || c.starts_with("57") || c.starts_with("53") => (
                ErrorKind::Connection,
                "the server may be restarting or overloaded; the agent retries".to_string(),
            ),
            _ => (ErrorKind::Internal, String::new()),
        };
        let mut message = format!(
            "{doing} on {}: {} (SQLSTATE {code})",
            cfg.endpoint(),
            db.message()
        );
        if let Some(detail) = db.detail() {
            message.push_str(&format!("; {detail}"));
        }
        if let Some(h) = db.hint() {
            message.push_str(&format!("; hint: {h}"));
        }
        if !hint.is_empty() {
            message.push_str(&format!("; {hint}"));
        }
        return GuestError::new(kind, message);
    }
    let text = e.to_string();
    let kind = if text.contains("password") {
        ErrorKind::Auth
    } else {
        ErrorKind::Connection
    };
    let fix = if kind == ErrorKind::Auth {
        "; set `password` in the configuration"
    } else {
        ""
    };
    GuestError::new(kind, format!("{doing} on {}: {text}{fix}", cfg.endpoint()))
}

/// The single-threaded runtime a connector call runs on inside the sandbox.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime on wasi")
}

impl From<GuestError> for culvert_connector_sdk::ConnectorError {
    fn from(e: GuestError) -> culvert_connector_sdk::ConnectorError {
        culvert_connector_sdk::ConnectorError::new(e.kind, e.message)
    }
}

#[cfg(test)]
mod tests {
    use culvert_connector_sdk::ConnectorError;

    use super::*;

    #[test]
    fn guest_errors_become_connector_errors_unchanged() {
        for kind in [
            ErrorKind::Config,
            ErrorKind::Connection,
            ErrorKind::Auth,
            ErrorKind::Permission,
            ErrorKind::Unsupported,
            ErrorKind::State,
            ErrorKind::Internal,
        ] {
            let e = ConnectorError::from(GuestError::new(kind, "what to do"));
            assert_eq!(e.kind, kind);
            assert_eq!(e.message, "what to do");
        }
    }
}

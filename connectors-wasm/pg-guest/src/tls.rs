//! TLS for connections opened inside the sandbox: libpq's `sslmode` semantics on rustls
//! with a pure-Rust crypto provider (the sandbox has no C toolchain for ring or aws-lc).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::{ErrorKind, GuestError, GuestResult, PgConnectConfig};

/// How long the server may take to answer the SSLRequest and finish the handshake.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The SSLRequest message: length 8, then the request code 1234/5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// Plaintext (libpq would try TLS only after a plaintext refusal; this connector does not).
    Allow,
    /// TLS when the server offers it, plaintext otherwise; the certificate is not checked
    /// unless `sslrootcert` is set.
    Prefer,
    /// TLS or nothing; the certificate is not checked unless `sslrootcert` is set.
    Require,
    /// TLS with the certificate chain checked against the trusted roots.
    VerifyCa,
    /// TLS with the chain checked and the certificate valid for the configured host.
    VerifyFull,
}

impl SslMode {
    /// Parse the configuration value.
    pub fn parse(value: &str) -> GuestResult<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(GuestError::new(
                    ErrorKind::Config,
                    format!(
                        "invalid sslmode `{other}`; use one of disable, allow, prefer, require, verify-ca, verify-full"
                    ),
                ));
            }
        })
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the connection must not go ahead without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// Whether an SSLRequest is sent at all.
    pub fn attempts_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Allow)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection to the server: plain TCP or TLS over TCP.
#[allow(clippy::large_enum_variant)]
pub enum PgStream {
    /// No encryption.
    Plain(TcpStream),
    /// TLS negotiated with SSLRequest.
    Tls(Box<TlsStream<TcpStream>>),
}

impl PgStream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, PgStream::Tls(_))
    }
}

impl fmt::Debug for PgStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgStream::Plain(_) => f.write_str("PgStream::Plain"),
            PgStream::Tls(_) => f.write_str("PgStream::Tls"),
        }
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PgStream::Plain(s) => s.is_write_vectored(),
            PgStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the server certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    /// Nothing but the handshake signatures (the connection is encrypted, not authenticated).
    None,
    /// Chain to a trusted root, any host name.
    Chain,
    /// Chain and host name.
    Full,
}

fn verification(mode: SslMode, has_rootcert: bool) -> Verification {
    match mode {
        SslMode::VerifyFull => Verification::Full,
        SslMode::VerifyCa => Verification::Chain,
        // As in libpq: a configured root certificate makes the weaker modes check the chain.
        _ if has_rootcert => Verification::Chain,
        _ => Verification::None,
    }
}

fn has_rootcert(cfg: &PgConnectConfig) -> bool {
    cfg.sslrootcert
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls_rustcrypto::provider())
}

/// The configured trust anchors: `sslrootcert` PEM text, or the Mozilla roots when it is
/// unset or `system`.
fn root_store(cfg: &PgConnectConfig) -> GuestResult<RootCertStore> {
    let pem = match cfg.sslrootcert.as_deref().map(str::trim) {
        None | Some("") | Some("system") => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        Some(pem) => pem,
    };
    if !pem.contains("-----BEGIN") {
        return Err(GuestError::new(
            ErrorKind::Config,
            format!(
                "sslrootcert must hold PEM text (-----BEGIN CERTIFICATE----- ...), not a file name: the connector cannot read files; paste the contents of `{}` instead",
                pem.chars().take(200).collect::<String>()
            ),
        ));
    }
    let mut store = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|e| {
            GuestError::new(
                ErrorKind::Config,
                format!(
                    "sslrootcert: certificate {} is not valid PEM ({e}); paste the CA certificate(s) exactly as in the .pem/.crt file",
                    i + 1
                ),
            )
        })?;
        store.add(cert).map_err(|e| {
            GuestError::new(
                ErrorKind::Config,
                format!(
                    "sslrootcert: certificate {} cannot be used as a trust anchor ({e}); check that it is an X.509 CA certificate",
                    i + 1
                ),
            )
        })?;
    }
    if store.is_empty() {
        return Err(GuestError::new(
            ErrorKind::Config,
            "sslrootcert holds no CERTIFICATE block; paste the PEM of the CA that signed the server certificate",
        ));
    }
    Ok(store)
}

/// Accepts any certificate but still checks the handshake signatures, so the session key
/// is bound to the certificate's key (libpq's `require` without a root certificate).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks the chain like verify-full but accepts a certificate issued for another name.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name, so a name mismatch means the chain is good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn client_config(cfg: &PgConnectConfig, mode: SslMode) -> GuestResult<ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match verification(mode, has_rootcert(cfg)) {
        Verification::None => Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }),
        v => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(cfg)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| {
                GuestError::new(
                    ErrorKind::Config,
                    format!("cannot use the trusted roots for TLS: {e}; check sslrootcert"),
                )
            })?;
            if v == Verification::Full {
                inner
            } else {
                Arc::new(ChainOnly { inner })
            }
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            GuestError::new(
                ErrorKind::Internal,
                format!("TLS is not available in this connector build: {e}"),
            )
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17 checks the protocol name when a client offers one; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn server_name(cfg: &PgConnectConfig) -> GuestResult<ServerName<'static>> {
    ServerName::try_from(cfg.host.clone()).map_err(|_| {
        GuestError::new(
            ErrorKind::Config,
            format!(
                "host `{}` is neither a DNS name nor an IP address, so it cannot be checked against the server certificate; fix `host`",
                cfg.host
            ),
        )
    })
}

/// Ask for TLS on a fresh connection; returns whether the server agreed.
async fn ssl_request(cfg: &PgConnectConfig, stream: &mut TcpStream) -> GuestResult<bool> {
    let io_err = |e: io::Error| {
        GuestError::new(
            ErrorKind::Connection,
            format!(
                "asking {} for TLS: {e}; check that the port is a PostgreSQL server",
                cfg.endpoint()
            ),
        )
    };
    stream.write_all(&SSL_REQUEST).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(io_err)?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' => Ok(false),
        b'E' => Err(GuestError::new(
            ErrorKind::Connection,
            format!(
                "server at {} answered the TLS request with an error; it may be too old to support TLS negotiation or overloaded",
                cfg.endpoint()
            ),
        )),
        other => Err(GuestError::new(
            ErrorKind::Connection,
            format!(
                "server at {} answered the TLS request with byte 0x{other:02x}; check that the port is a PostgreSQL server",
                cfg.endpoint()
            ),
        )),
    }
}

/// Turn a handshake failure into a message that says what to change.
fn handshake_error(cfg: &PgConnectConfig, mode: SslMode, e: io::Error) -> GuestError {
    let endpoint = cfg.endpoint();
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return GuestError::new(
            ErrorKind::Connection,
            format!("TLS handshake with {endpoint} failed: {e}"),
        );
    };
    let message = match tls {
        rustls::Error::InvalidCertificate(cert) => {
            let (reason, fix) = match cert {
                CertificateError::UnknownIssuer => {
                    let reason = if has_rootcert(cfg) {
                        "it is not issued by a certificate authority in sslrootcert".to_string()
                    } else {
                        "it is not issued by a public certificate authority (sslrootcert is not set, so the Mozilla roots are trusted)".to_string()
                    };
                    let weaker = if mode == SslMode::VerifyCa || mode == SslMode::VerifyFull {
                        ", or use sslmode = \"require\" to encrypt without checking the certificate"
                    } else {
                        ", or remove sslrootcert to encrypt without checking the certificate"
                    };
                    (
                        reason,
                        format!(
                            "set sslrootcert to the PEM of the CA that issued the server certificate{weaker}"
                        ),
                    )
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => (
                    format!("it is not issued for host `{}`", cfg.host),
                    "connect with a host name the certificate lists, or use sslmode = \"verify-ca\" to check only the chain".to_string(),
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                    "it has expired".to_string(),
                    "renew the server certificate".to_string(),
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                    "it is not valid yet".to_string(),
                    "check the clocks of the server and the agent host".to_string(),
                ),
                CertificateError::Revoked => (
                    "it has been revoked".to_string(),
                    "install a new server certificate".to_string(),
                ),
                CertificateError::BadSignature
                | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => (
                    format!("its signature cannot be checked ({cert:?})"),
                    "use a certificate signed with RSA (PKCS#1 or PSS), ECDSA P-256/P-384 or Ed25519".to_string(),
                ),
                other => (
                    format!("{other:?}"),
                    "check sslrootcert and the server certificate, or use sslmode = \"require\" to encrypt without checking the certificate".to_string(),
                ),
            };
            format!("TLS certificate of {endpoint} rejected (sslmode = {mode}): {reason}; {fix}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "TLS handshake with {endpoint} failed: the server sent alert {alert:?}; check the server's ssl_min_protocol_version (TLS 1.2 or 1.3 needed) and ssl_ciphers (ECDHE with AES-GCM or ChaCha20-Poly1305 needed)"
        ),
        rustls::Error::PeerIncompatible(why) => format!(
            "TLS handshake with {endpoint} failed: the server's TLS settings are incompatible ({why:?}); allow TLS 1.2 or 1.3 with ECDHE and AES-GCM or ChaCha20-Poly1305 on the server"
        ),
        other => format!("TLS handshake with {endpoint} failed: {other}"),
    };
    GuestError::new(ErrorKind::Config, message)
}

/// Negotiate TLS on a fresh TCP connection according to `sslmode`.
pub(crate) async fn negotiate(
    cfg: &PgConnectConfig,
    mode: SslMode,
    mut stream: TcpStream,
) -> GuestResult<PgStream> {
    if !mode.attempts_tls() {
        return Ok(PgStream::Plain(stream));
    }
    // Configuration errors surface before anything is sent.
    let config = client_config(cfg, mode)?;
    let name = server_name(cfg)?;
    let work = async {
        if !ssl_request(cfg, &mut stream).await? {
            if mode.requires_tls() {
                return Err(GuestError::new(
                    ErrorKind::Config,
                    format!(
                        "server at {} does not support TLS but sslmode = {mode}; enable ssl on the server (ssl = on with a certificate) or use sslmode = \"prefer\"",
                        cfg.endpoint()
                    ),
                ));
            }
            return Ok(PgStream::Plain(stream));
        }
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| handshake_error(cfg, mode, e))?;
        Ok(PgStream::Tls(Box::new(tls)))
    };
    tokio::time::timeout(NEGOTIATION_TIMEOUT, work)
        .await
        .map_err(|_| {
            GuestError::new(
                ErrorKind::Connection,
                format!(
                    "no TLS answer from {} within {} s; check that the port is a PostgreSQL server, or use sslmode = \"disable\" on a trusted network",
                    cfg.endpoint(),
                    NEGOTIATION_TIMEOUT.as_secs()
                ),
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_classify() {
        for s in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(SslMode::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(
            SslMode::parse("verify_full").unwrap_err().kind,
            ErrorKind::Config
        );
        assert!(!SslMode::Allow.attempts_tls());
        assert!(SslMode::Prefer.attempts_tls() && !SslMode::Prefer.requires_tls());
        assert!(SslMode::Require.requires_tls());
        assert_eq!(verification(SslMode::Require, false), Verification::None);
        assert_eq!(verification(SslMode::Require, true), Verification::Chain);
        assert_eq!(verification(SslMode::VerifyCa, false), Verification::Chain);
        assert_eq!(verification(SslMode::VerifyFull, false), Verification::Full);
    }

    fn config(sslrootcert: Option<&str>) -> PgConnectConfig {
        PgConnectConfig {
            host: "db.example.com".to_string(),
            port: 5432,
            user: "u".to_string(),
            password: None,
            database: "d".to_string(),
            sslmode: "verify-full".to_string(),
            sslrootcert: sslrootcert.map(str::to_string),
        }
    }

    #[test]
    fn trusted_roots_come_from_pem_text_or_the_public_list() {
        assert!(root_store(&config(None)).unwrap().len() > 100);
        assert!(root_store(&config(Some("system"))).unwrap().len() > 100);
        let err = root_store(&config(Some("/etc/ssl/certs/root.crt"))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("not a file name"), "{}", err.message);
        let err = root_store(&config(Some(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )))
        .unwrap_err();
        assert!(err.message.contains("certificate 1"), "{}", err.message);
        let err = root_store(&config(Some(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )))
        .unwrap_err();
        assert!(err.message.contains("no CERTIFICATE"), "{}", err.message);
        // Building the client configuration for every mode works with the pure-Rust provider.
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            client_config(&config(None), mode).unwrap();
        }
    }
}

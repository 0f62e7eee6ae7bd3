//! The HTTP transport of every Azure client. Azure endpoints use the platform's roots; a
//! stand-in on loopback is trusted through the CA that `CULVERT_AZURE_CA_FILE` names, and
//! only there, so that CA can never vouch for a public endpoint.

use std::sync::Arc;

use azure_core::http::{ClientOptions, Transport, Url};

/// Setting naming the PEM CA certificate of the local stand-ins.
pub const CA_FILE_VAR: &str = "CULVERT_AZURE_CA_FILE";

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{CA_FILE_VAR}={path}: {detail}")]
pub struct TransportError {
    path: String,
    detail: String,
}

/// Whether `url` points at this machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Client options for an Azure SDK client of `endpoint`.
pub fn client_options_for(endpoint: &Url) -> Result<ClientOptions, TransportError> {
    let mut options = ClientOptions::default();
    let path = std::env::var(CA_FILE_VAR).unwrap_or_default();
    if path.is_empty() || !is_loopback(endpoint) {
        return Ok(options);
    }
    let err = |detail: String| TransportError {
        path: path.clone(),
        detail,
    };
    let pem = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
    let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| err(e.to_string()))?;
    let client = reqwest::Client::builder()
        .tls_certs_only([cert])
        .build()
        .map_err(|e| err(e.to_string()))?;
    options.transport = Some(Transport::new(Arc::new(client)));
    Ok(options)
}

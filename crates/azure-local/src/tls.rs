//! TLS for the vault listeners. Key Vault is HTTPS-only, and the SDK's bearer-token policy
//! refuses to send a token over plain HTTP, so the vaults must offer TLS for SDK clients.
//!
//! A local CA (kept in the state file) signs a fresh server certificate for `localhost`,
//! `127.0.0.1` and `::1` at each start; clients trust the CA certificate written next to the state.

use crate::fsutil;
use crate::state::{CaRecord, StateError, Store};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The CA certificate file's name inside `--state-dir`.
pub const CA_CERT_FILE: &str = "ca.pem";
const CA_NAME: &str = "culvert-azure-local CA";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate or key generation or parsing failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls config: {0}")]
    Config(#[from] rustls::Error),
    /// The CA could not be stored.
    #[error(transparent)]
    State(#[from] StateError),
    /// The CA certificate file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The server side of TLS plus where clients find the CA certificate.
pub struct TlsMaterial {
    /// The acceptor for vault connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Path of the CA certificate (PEM) clients should trust.
    pub ca_cert_path: PathBuf,
}

// The CA's issuer parameters are rebuilt from constants rather than parsed back from the stored
// certificate, so they must stay identical to what `new_ca` used.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn new_ca() -> Result<CaRecord, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok(CaRecord {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Loads (or creates and stores) the CA, issues a server certificate, writes the CA certificate
/// to `state_dir`, and builds the acceptor.
pub fn load_or_create(store: &Store, state_dir: &Path) -> Result<TlsMaterial, TlsError> {
    let ca = match store.tls_ca() {
        Some(ca) => ca,
        None => {
            let ca = new_ca()?;
            store.set_tls_ca(ca.clone())?;
            ca
        }
    };
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::new(ca_params()?, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "culvert-azure-local");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes())
        .map_err(|e| {
            TlsError::Config(rustls::Error::General(format!(
                "stored CA certificate: {e}"
            )))
        })?;
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // The listeners speak HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let ca_cert_path = state_dir.join(CA_CERT_FILE);
    fsutil::write_atomic(&ca_cert_path, ca.cert_pem.as_bytes()).map_err(|source| {
        TlsError::Write {
            path: ca_cert_path.clone(),
            source,
        }
    })?;
    Ok(TlsMaterial {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = load_or_create(&store, dir.path()).unwrap();
        let pem1 = std::fs::read_to_string(&first.ca_cert_path).unwrap();
        assert!(pem1.starts_with("-----BEGIN CERTIFICATE-----"));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let second = load_or_create(&store, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&second.ca_cert_path).unwrap(), pem1);
    }
}

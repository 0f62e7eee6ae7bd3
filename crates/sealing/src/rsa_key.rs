//! A local RSA key pair as key-encryption key: the control plane holds the public half
//! (wraps), agents hold the private half (unwraps). Same algorithm as Key Vault's
//! RSA-OAEP-256, so envelopes look alike.

use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::kek::{KeyEncryptionKey, KeyError, Wrapped};

const ALG: &str = "RSA-OAEP-256";

/// The public half: wraps only.
#[derive(Clone)]
pub struct SealingKey {
    key: RsaPublicKey,
    kid: String,
}

/// The private half: wraps and unwraps.
pub struct OpeningKey {
    key: RsaPrivateKey,
    kid: String,
}

fn kid_of(public: &RsaPublicKey) -> String {
    let der = public.to_public_key_der().expect("encode public key");
    let digest = Sha256::digest(der.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("local:{hex}")
}

fn bad_key(e: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid(format!("the key is not a PEM-encoded RSA key: {e}"))
}

fn wrap_with(key: &RsaPublicKey, kid: &str, dek: &[u8]) -> Wrapped {
    let bytes = key
        .encrypt(&mut rand::thread_rng(), Oaep::new::<Sha256>(), dek)
        .expect("RSA-OAEP encryption of a data key");
    Wrapped {
        kid: kid.to_string(),
        alg: ALG.into(),
        bytes,
    }
}

impl SealingKey {
    /// Parse a PEM public key (SPKI).
    pub fn from_pem(pem: &str) -> Result<SealingKey, KeyError> {
        let key = RsaPublicKey::from_public_key_pem(pem).map_err(bad_key)?;
        Ok(SealingKey {
            kid: kid_of(&key),
            key,
        })
    }

    /// The key id sealed envelopes carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

#[async_trait::async_trait]
impl KeyEncryptionKey for SealingKey {
    fn describe(&self) -> String {
        format!("local key {}", self.kid)
    }

    async fn wrap(&self, dek: &[u8]) -> Result<Wrapped, KeyError> {
        Ok(wrap_with(&self.key, &self.kid, dek))
    }

    async fn unwrap(&self, _wrapped: &Wrapped) -> Result<Vec<u8>, KeyError> {
        Err(KeyError::Forbidden {
            resource: self.describe(),
            operation: "decrypt".into(),
            permission: "decrypt".into(),
            detail: "only the public half of this key is held here".into(),
        })
    }
}

impl OpeningKey {
    /// Generate a new 3072-bit key pair.
    pub fn generate() -> OpeningKey {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 3072).expect("generate RSA key");
        let kid = kid_of(&key.to_public_key());
        OpeningKey { key, kid }
    }

    /// Parse a PEM private key (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<OpeningKey, KeyError> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem).map_err(bad_key)?;
        let kid = kid_of(&key.to_public_key());
        Ok(OpeningKey { key, kid })
    }

    /// PEM (PKCS#8) of the private key.
    pub fn to_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encode private key")
            .to_string()
    }

    /// PEM (SPKI) of the public key.
    pub fn public_pem(&self) -> String {
        self.key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("encode public key")
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

#[async_trait::async_trait]
impl KeyEncryptionKey for OpeningKey {
    fn describe(&self) -> String {
        format!("local key {}", self.kid)
    }

    async fn wrap(&self, dek: &[u8]) -> Result<Wrapped, KeyError> {
        Ok(wrap_with(&self.key.to_public_key(), &self.kid, dek))
    }

    async fn unwrap(&self, wrapped: &Wrapped) -> Result<Vec<u8>, KeyError> {
        if wrapped.kid != self.kid {
            return Err(KeyError::Invalid(format!(
                "the data key was wrapped by {}, but this agent holds key {}; the connector must be saved again for this environment",
                wrapped.kid, self.kid
            )));
        }
        if wrapped.alg != ALG {
            return Err(KeyError::Invalid(format!(
                "unsupported wrapping algorithm {}",
                wrapped.alg
            )));
        }
        self.key
            .decrypt(Oaep::new::<Sha256>(), &wrapped.bytes)
            .map_err(|_| {
                KeyError::Invalid(
                    "the wrapped data key does not open (tampered or another key)".into(),
                )
            })
    }
}

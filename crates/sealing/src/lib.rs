//! Envelope encryption of connector secrets.
//!
//! The control plane seals a connector's secret fields with the environment's public
//! key-encryption key: a fresh AES-256-GCM data key encrypts the secrets, RSA-OAEP-256
//! wraps the data key. Only holders of the private key (the environment's agents) can open
//! the envelope; the control plane can seal but never open. This is the same envelope Key
//! Vault's `encrypt` produces with an RSA key, so a Key Vault provider replaces the local
//! one without changing the format.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file is not a usable RSA key.
    #[error("the key is not a PEM-encoded RSA key: {0}")]
    BadKey(String),
    /// The envelope is not one this version understands.
    #[error("the sealed secrets are malformed: {0}")]
    Malformed(String),
    /// The envelope was sealed for another key.
    #[error(
        "the secrets were sealed for key {sealed_for}, but this agent holds key {held}; the connector must be saved again for this environment"
    )]
    WrongKey {
        /// Key id in the envelope.
        sealed_for: String,
        /// Key id held.
        held: String,
    },
    /// Decryption failed: tampered or corrupted.
    #[error("the sealed secrets cannot be decrypted (tampered or corrupted)")]
    Decrypt,
}

/// The sealed form, serialized as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    /// Key id: `local:<sha256 of the public key, hex, 16 chars>` or a Key Vault key URL.
    kid: String,
    alg: String,
    /// Wrapped data key.
    ek: String,
    iv: String,
    /// Ciphertext and tag.
    ct: String,
}

const ALG: &str = "RSA-OAEP-256";
/// Authenticated data binding the ciphertext to its purpose.
const AAD: &[u8] = b"culvert:connector-secrets:v1";

/// The public half: seals.
#[derive(Clone)]
pub struct SealingKey {
    key: RsaPublicKey,
    kid: String,
}

/// The private half: opens.
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

impl SealingKey {
    /// Parse a PEM public key (SPKI).
    pub fn from_pem(pem: &str) -> Result<SealingKey, SealError> {
        let key =
            RsaPublicKey::from_public_key_pem(pem).map_err(|e| SealError::BadKey(e.to_string()))?;
        Ok(SealingKey {
            kid: kid_of(&key),
            key,
        })
    }

    /// The key id sealed envelopes carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Seal `plaintext` (the secret fields as JSON).
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut rng = rand::thread_rng();
        let mut dek = [0u8; 32];
        rng.fill_bytes(&mut dek);
        let mut iv = [0u8; 12];
        rng.fill_bytes(&mut iv);
        let cipher = Aes256Gcm::new_from_slice(&dek).expect("32-byte key");
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: plaintext,
                    aad: AAD,
                },
            )
            .expect("AES-GCM encryption");
        let ek = self
            .key
            .encrypt(&mut rng, Oaep::new::<Sha256>(), &dek)
            .expect("RSA-OAEP encryption of a 32-byte key");
        let env = Envelope {
            v: 1,
            kid: self.kid.clone(),
            alg: ALG.into(),
            ek: B64.encode(ek),
            iv: B64.encode(iv),
            ct: B64.encode(ct),
        };
        serde_json::to_string(&env).expect("serialize envelope")
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
    pub fn from_pem(pem: &str) -> Result<OpeningKey, SealError> {
        let key =
            RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| SealError::BadKey(e.to_string()))?;
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

    /// Open an envelope made by [`SealingKey::seal`].
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let env: Envelope =
            serde_json::from_str(sealed).map_err(|e| SealError::Malformed(e.to_string()))?;
        if env.v != 1 || env.alg != ALG {
            return Err(SealError::Malformed(format!(
                "version {} algorithm {}",
                env.v, env.alg
            )));
        }
        if env.kid != self.kid {
            return Err(SealError::WrongKey {
                sealed_for: env.kid,
                held: self.kid.clone(),
            });
        }
        let field = |s: &str| {
            B64.decode(s)
                .map_err(|e| SealError::Malformed(e.to_string()))
        };
        let (ek, iv, ct) = (field(&env.ek)?, field(&env.iv)?, field(&env.ct)?);
        if iv.len() != 12 {
            return Err(SealError::Malformed("iv must be 12 bytes".into()));
        }
        let dek = self
            .key
            .decrypt(Oaep::new::<Sha256>(), &ek)
            .map_err(|_| SealError::Decrypt)?;
        let cipher = Aes256Gcm::new_from_slice(&dek).map_err(|_| SealError::Decrypt)?;
        cipher
            .decrypt(Nonce::from_slice(&iv), Payload { msg: &ct, aad: AAD })
            .map_err(|_| SealError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn pair() -> &'static OpeningKey {
        static KEY: OnceLock<OpeningKey> = OnceLock::new();
        KEY.get_or_init(OpeningKey::generate)
    }

    #[test]
    fn seals_with_the_public_half_and_opens_with_the_private_half() {
        let private = pair();
        let public = SealingKey::from_pem(&private.public_pem()).unwrap();
        assert_eq!(public.kid(), private.kid());
        let sealed = public.seal(br#"{"password":"hunter2"}"#);
        assert!(!sealed.contains("hunter2"));
        assert_eq!(private.open(&sealed).unwrap(), br#"{"password":"hunter2"}"#);
        let again = OpeningKey::from_pem(&private.to_pem()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), br#"{"password":"hunter2"}"#);
    }

    #[test]
    fn refuses_tampering_and_other_keys() {
        let private = pair();
        let public = SealingKey::from_pem(&private.public_pem()).unwrap();
        let sealed = public.seal(b"secret");
        let mut env: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let ct = env["ct"].as_str().unwrap().to_string();
        let first = if ct.starts_with('A') { "B" } else { "A" };
        let flipped = format!("{first}{}", &ct[1..]);
        env["ct"] = flipped.into();
        assert!(matches!(
            private.open(&env.to_string()),
            Err(SealError::Decrypt)
        ));
        env["kid"] = "local:0000".into();
        assert!(matches!(
            private.open(&env.to_string()),
            Err(SealError::WrongKey { .. })
        ));
        assert!(matches!(
            private.open("not json"),
            Err(SealError::Malformed(_))
        ));
    }
}

//! The sealed form of connector secrets: `{v, kid, alg, ek, iv, ct}` as JSON.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::kek::{KeyEncryptionKey, KeyError, Wrapped};

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The envelope is not one this version understands.
    #[error("the sealed secrets are malformed: {0}")]
    Malformed(String),
    /// The key-encryption key refused or failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Decryption failed: tampered or corrupted.
    #[error("the sealed secrets cannot be decrypted (tampered or corrupted)")]
    Decrypt,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    /// Versioned id of the key that wrapped `ek`.
    kid: String,
    alg: String,
    /// Wrapped data key.
    ek: String,
    iv: String,
    /// Ciphertext and tag.
    ct: String,
}

/// Authenticated data binding the ciphertext to its purpose.
const AAD: &[u8] = b"culvert:connector-secrets:v1";

/// Seal `plaintext` under a fresh data key wrapped by `kek`.
pub async fn seal(kek: &dyn KeyEncryptionKey, plaintext: &[u8]) -> Result<String, SealError> {
    let mut dek = [0u8; 32];
    let mut iv = [0u8; 12];
    {
        // The thread-local generator must not be held across the await below.
        let mut rng = rand::thread_rng();
        rng.fill_bytes(&mut dek);
        rng.fill_bytes(&mut iv);
    }
    let ct = Aes256Gcm::new_from_slice(&dek)
        .expect("32-byte key")
        .encrypt(
            Nonce::from_slice(&iv),
            Payload {
                msg: plaintext,
                aad: AAD,
            },
        )
        .expect("AES-GCM encryption");
    let wrapped = kek.wrap(&dek).await?;
    let env = Envelope {
        v: 1,
        kid: wrapped.kid,
        alg: wrapped.alg,
        ek: B64.encode(wrapped.bytes),
        iv: B64.encode(iv),
        ct: B64.encode(ct),
    };
    Ok(serde_json::to_string(&env).expect("serialize envelope"))
}

/// The key id an envelope was sealed with.
pub fn sealed_kid(sealed: &str) -> Result<String, SealError> {
    let env: Envelope =
        serde_json::from_str(sealed).map_err(|e| SealError::Malformed(e.to_string()))?;
    Ok(env.kid)
}

/// Open an envelope made by [`seal`].
pub async fn open(kek: &dyn KeyEncryptionKey, sealed: &str) -> Result<Vec<u8>, SealError> {
    let env: Envelope =
        serde_json::from_str(sealed).map_err(|e| SealError::Malformed(e.to_string()))?;
    if env.v != 1 {
        return Err(SealError::Malformed(format!("version {}", env.v)));
    }
    let field = |s: &str| {
        B64.decode(s)
            .map_err(|e| SealError::Malformed(e.to_string()))
    };
    let (ek, iv, ct) = (field(&env.ek)?, field(&env.iv)?, field(&env.ct)?);
    if iv.len() != 12 {
        return Err(SealError::Malformed("iv must be 12 bytes".into()));
    }
    let dek = kek
        .unwrap(&Wrapped {
            kid: env.kid,
            alg: env.alg,
            bytes: ek,
        })
        .await?;
    let cipher = Aes256Gcm::new_from_slice(&dek).map_err(|_| SealError::Decrypt)?;
    cipher
        .decrypt(Nonce::from_slice(&iv), Payload { msg: &ct, aad: AAD })
        .map_err(|_| SealError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpeningKey, SealingKey};
    use std::sync::OnceLock;

    fn pair() -> &'static OpeningKey {
        static KEY: OnceLock<OpeningKey> = OnceLock::new();
        KEY.get_or_init(OpeningKey::generate)
    }

    #[tokio::test]
    async fn seals_with_the_public_half_and_opens_with_the_private_half() {
        let private = pair();
        let public = SealingKey::from_pem(&private.public_pem()).unwrap();
        assert_eq!(public.kid(), private.kid());
        let sealed = seal(&public, br#"{"password":"hunter2"}"#).await.unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(sealed_kid(&sealed).unwrap(), private.kid());
        assert_eq!(
            open(private, &sealed).await.unwrap(),
            br#"{"password":"hunter2"}"#
        );
        let again = OpeningKey::from_pem(&private.to_pem()).unwrap();
        assert_eq!(
            open(&again, &sealed).await.unwrap(),
            br#"{"password":"hunter2"}"#
        );
        assert!(matches!(
            open(&public, &sealed).await,
            Err(SealError::Key(KeyError::Forbidden { .. }))
        ));
    }

    #[tokio::test]
    async fn refuses_tampering_and_other_keys() {
        let private = pair();
        let public = SealingKey::from_pem(&private.public_pem()).unwrap();
        let sealed = seal(&public, b"secret").await.unwrap();
        let mut env: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let ct = env["ct"].as_str().unwrap().to_string();
        let first = if ct.starts_with('A') { "B" } else { "A" };
        env["ct"] = format!("{first}{}", &ct[1..]).into();
        assert!(matches!(
            open(private, &env.to_string()).await,
            Err(SealError::Decrypt)
        ));
        env["kid"] = "local:0000".into();
        assert!(matches!(
            open(private, &env.to_string()).await,
            Err(SealError::Key(KeyError::Invalid(_)))
        ));
        assert!(matches!(
            open(private, "not json").await,
            Err(SealError::Malformed(_))
        ));
    }
}

//! RSA key material: generation, PEM storage, public JWK parts, and the RSA-OAEP / RSA-OAEP-256 /
//! RSA1_5 operations Key Vault offers for RSA keys.

use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Encrypt, RsaPrivateKey};

/// Key sizes Key Vault accepts for RSA keys.
pub const KEY_SIZES: [u32; 3] = [2048, 3072, 4096];

/// An RSA encryption algorithm name as sent in `alg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA-OAEP with SHA-1 (and MGF1-SHA-1).
    RsaOaep,
    /// RSA-OAEP with SHA-256 (and MGF1-SHA-256).
    RsaOaep256,
    /// RSAES-PKCS1-v1_5.
    Rsa15,
}

impl Algorithm {
    /// Parses the wire name; `None` for algorithms RSA keys do not support here.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RSA-OAEP" => Some(Self::RsaOaep),
            "RSA-OAEP-256" => Some(Self::RsaOaep256),
            "RSA1_5" => Some(Self::Rsa15),
            _ => None,
        }
    }

    // Largest plaintext for a modulus of `k` bytes (RFC 8017 7.1.1 and 7.2.1).
    fn max_plaintext(self, k: usize) -> usize {
        match self {
            Self::RsaOaep => k.saturating_sub(2 * 20 + 2),
            Self::RsaOaep256 => k.saturating_sub(2 * 32 + 2),
            Self::Rsa15 => k.saturating_sub(11),
        }
    }
}

/// A crypto failure, phrased for a `BadParameter` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Plaintext too long for the key and padding.
    #[error("The value is too long for the key size and algorithm: {len} bytes, at most {max}.")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// Ciphertext is not one modulus long or does not decrypt.
    #[error("The value could not be decrypted with this key and algorithm.")]
    Decrypt,
    /// Key generation or encoding failed.
    #[error("key material error: {0}")]
    Key(String),
}

/// Generates a private key of `bits` and returns it as PKCS#8 PEM.
pub fn generate_pem(bits: u32) -> Result<String, CryptoError> {
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits as usize)
        .map_err(|e| CryptoError::Key(e.to_string()))?;
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| CryptoError::Key(e.to_string()))
}

/// Loads a private key from PKCS#8 PEM.
pub fn load(pem: &str) -> Result<RsaPrivateKey, CryptoError> {
    RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| CryptoError::Key(e.to_string()))
}

/// The public modulus and exponent, big-endian, for the JWK `n` and `e`.
pub fn public_parts(key: &RsaPrivateKey) -> (Vec<u8>, Vec<u8>) {
    (key.n().to_bytes_be(), key.e().to_bytes_be())
}

/// Encrypts (or wraps) `plaintext` with the public key.
pub fn encrypt(
    key: &RsaPrivateKey,
    alg: Algorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let public = key.to_public_key();
    let max = alg.max_plaintext(public.size());
    if plaintext.len() > max {
        return Err(CryptoError::TooLong {
            len: plaintext.len(),
            max,
        });
    }
    let rng = &mut rand::rngs::OsRng;
    let result = match alg {
        Algorithm::RsaOaep => public.encrypt(rng, Oaep::new::<sha1::Sha1>(), plaintext),
        Algorithm::RsaOaep256 => public.encrypt(rng, Oaep::new::<sha2::Sha256>(), plaintext),
        Algorithm::Rsa15 => public.encrypt(rng, Pkcs1v15Encrypt, plaintext),
    };
    result.map_err(|e| CryptoError::Key(e.to_string()))
}

/// Decrypts (or unwraps) `ciphertext` with the private key.
pub fn decrypt(
    key: &RsaPrivateKey,
    alg: Algorithm,
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.len() != key.size() {
        return Err(CryptoError::Decrypt);
    }
    let result = match alg {
        Algorithm::RsaOaep => key.decrypt(Oaep::new::<sha1::Sha1>(), ciphertext),
        Algorithm::RsaOaep256 => key.decrypt(Oaep::new::<sha2::Sha256>(), ciphertext),
        Algorithm::Rsa15 => key.decrypt(Pkcs1v15Encrypt, ciphertext),
    };
    result.map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| load(&generate_pem(2048).unwrap()).unwrap())
    }

    #[test]
    fn round_trips_for_every_algorithm() {
        for alg in [Algorithm::RsaOaep, Algorithm::RsaOaep256, Algorithm::Rsa15] {
            let ct = encrypt(key(), alg, b"data key").unwrap();
            assert_eq!(ct.len(), 256);
            assert_eq!(decrypt(key(), alg, &ct).unwrap(), b"data key");
        }
    }

    #[test]
    fn oaep_256_ciphertext_does_not_decrypt_as_oaep_sha1() {
        let ct = encrypt(key(), Algorithm::RsaOaep256, b"x").unwrap();
        assert_eq!(
            decrypt(key(), Algorithm::RsaOaep, &ct),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(
            encrypt(key(), Algorithm::RsaOaep256, &[0; 191]),
            Err(CryptoError::TooLong { len: 191, max: 190 })
        );
        assert!(encrypt(key(), Algorithm::RsaOaep256, &[0; 190]).is_ok());
        assert_eq!(
            decrypt(key(), Algorithm::RsaOaep256, &[0; 10]),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn pem_round_trip_keeps_public_parts() {
        let pem = key().to_pkcs8_pem(LineEnding::LF).unwrap();
        let again = load(&pem).unwrap();
        assert_eq!(public_parts(&again), public_parts(key()));
        assert_eq!(public_parts(key()).1, vec![1, 0, 1]);
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(
            Algorithm::parse("RSA-OAEP-256"),
            Some(Algorithm::RsaOaep256)
        );
        assert_eq!(Algorithm::parse("RSA-OAEP"), Some(Algorithm::RsaOaep));
        assert_eq!(Algorithm::parse("RSA1_5"), Some(Algorithm::Rsa15));
        assert_eq!(Algorithm::parse("A256GCM"), None);
    }
}

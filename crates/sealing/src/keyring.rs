//! The local key provider: versioned AES-256 keys in a file, for buffers outside Azure.
//!
//! Rotation adds a version and makes it current; older versions stay to unwrap what they
//! wrapped. The file is written atomically with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::kek::{KeyEncryptionKey, KeyError, Wrapped};

/// Algorithm name of keyring wraps.
pub const KEYRING_ALG: &str = "A256GCM-local";
const AAD: &[u8] = b"culvert:keyring-wrap:v1";

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    current: u32,
    keys: BTreeMap<u32, String>,
}

/// Versioned AES-256 keys kept in one file.
pub struct Keyring {
    path: PathBuf,
    id: String,
    current: u32,
    keys: BTreeMap<u32, [u8; 32]>,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid(format!("key file {}: {what}", path.display()))
}

impl Keyring {
    /// Open the keyring at `path`, creating it with one fresh key if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Keyring, KeyError> {
        if !path.exists() {
            let mut ring = Keyring {
                path: path.to_path_buf(),
                id: String::new(),
                current: 0,
                keys: BTreeMap::new(),
            };
            ring.rotate()?;
            return Keyring::open(path);
        }
        Keyring::open(path)
    }

    /// Open an existing keyring.
    pub fn open(path: &Path) -> Result<Keyring, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
        let file: KeyringFile = serde_json::from_str(&text).map_err(|e| invalid(path, e))?;
        let mut keys = BTreeMap::new();
        for (version, b64) in &file.keys {
            let bytes = B64.decode(b64).map_err(|e| invalid(path, e))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| invalid(path, format!("key version {version} is not 32 bytes")))?;
            keys.insert(*version, key);
        }
        if !keys.contains_key(&file.current) {
            return Err(invalid(
                path,
                format!("current version {} is missing", file.current),
            ));
        }
        Ok(Keyring {
            id: format!("local-keyring:{}", path.display()),
            path: path.to_path_buf(),
            current: file.current,
            keys,
        })
    }

    /// Add a fresh key version and make it current; returns the new version.
    pub fn rotate(&mut self) -> Result<u32, KeyError> {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let version = self.keys.keys().next_back().copied().unwrap_or(0) + 1;
        self.keys.insert(version, key);
        self.current = version;
        self.save()?;
        Ok(version)
    }

    /// The current version.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    fn save(&self) -> Result<(), KeyError> {
        let file = KeyringFile {
            current: self.current,
            keys: self.keys.iter().map(|(v, k)| (*v, B64.encode(k))).collect(),
        };
        let text = serde_json::to_string_pretty(&file).expect("keyring json");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| invalid(&self.path, e))?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| invalid(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| invalid(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| invalid(&self.path, e))
    }

    fn kid(&self, version: u32) -> String {
        format!("{}#{version}", self.id)
    }
}

#[async_trait::async_trait]
impl KeyEncryptionKey for Keyring {
    fn describe(&self) -> String {
        self.id.clone()
    }

    async fn wrap(&self, dek: &[u8]) -> Result<Wrapped, KeyError> {
        let key = &self.keys[&self.current];
        let mut iv = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut iv);
        let ct = Aes256Gcm::new_from_slice(key)
            .expect("32-byte key")
            .encrypt(Nonce::from_slice(&iv), Payload { msg: dek, aad: AAD })
            .expect("AES-GCM encryption");
        let mut bytes = iv.to_vec();
        bytes.extend(ct);
        Ok(Wrapped {
            kid: self.kid(self.current),
            alg: KEYRING_ALG.into(),
            bytes,
        })
    }

    async fn unwrap(&self, wrapped: &Wrapped) -> Result<Vec<u8>, KeyError> {
        let version = wrapped
            .kid
            .strip_prefix(&format!("{}#", self.id))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| {
                KeyError::Invalid(format!(
                    "data key was wrapped by `{}`, not by {}",
                    wrapped.kid, self.id
                ))
            })?;
        let key = self.keys.get(&version).ok_or_else(|| KeyError::NotFound {
            resource: self.kid(version),
            detail: "that version is not in the key file".into(),
        })?;
        if wrapped.bytes.len() < 12 + 16 {
            return Err(KeyError::Invalid("wrapped data key is truncated".into()));
        }
        let (iv, ct) = wrapped.bytes.split_at(12);
        Aes256Gcm::new_from_slice(key)
            .expect("32-byte key")
            .decrypt(Nonce::from_slice(iv), Payload { msg: ct, aad: AAD })
            .map_err(|_| {
                KeyError::Invalid("wrapped data key does not open (tampered or another key)".into())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wraps_rotates_and_keeps_old_versions_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring.json");
        let mut ring = Keyring::open_or_create(&path).unwrap();
        let old = ring.wrap(&[7u8; 32]).await.unwrap();
        assert_eq!(ring.rotate().unwrap(), 2);
        let new = ring.wrap(&[8u8; 32]).await.unwrap();
        assert_ne!(old.kid, new.kid);
        let reopened = Keyring::open(&path).unwrap();
        assert_eq!(reopened.current_version(), 2);
        assert_eq!(reopened.unwrap(&old).await.unwrap(), vec![7u8; 32]);
        assert_eq!(reopened.unwrap(&new).await.unwrap(), vec![8u8; 32]);
        let mut tampered = new.clone();
        tampered.bytes[20] ^= 1;
        assert!(matches!(
            reopened.unwrap(&tampered).await,
            Err(KeyError::Invalid(_))
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}

//! Persistent state: every vault's keys (all versions) and secrets, and the token signing key,
//! kept in one JSON file that is replaced atomically on each change.

use crate::fsutil;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The state file's name inside `--state-dir`.
pub const STATE_FILE: &str = "state.json";
const FORMAT_VERSION: u32 = 1;

/// Everything that survives a restart.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateData {
    /// Bumped if the layout changes incompatibly.
    pub format_version: u32,
    /// The HS256 token signing key, base64.
    pub signing_key: String,
    /// The local certificate authority that issues the vaults' TLS certificates.
    #[serde(default)]
    pub tls_ca: Option<CaRecord>,
    /// Per vault name (lowercase), its objects.
    #[serde(default)]
    pub vaults: BTreeMap<String, VaultData>,
}

/// The local CA, kept so clients that trust its certificate keep working after a restart.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaRecord {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM. Never logged.
    pub key_pem: String,
}

/// The objects of one vault.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultData {
    /// Keys, by lowercase name (Key Vault names are case-insensitive).
    #[serde(default)]
    pub keys: BTreeMap<String, KeyRecord>,
    /// Secrets, by lowercase name.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRecord>,
}

/// A named object and all its versions, oldest first; the last one is the current version.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record<V> {
    /// The name as first written.
    pub name: String,
    /// All versions, in creation order.
    pub versions: Vec<V>,
}

/// A key and all its versions.
pub type KeyRecord = Record<KeyVersion>;
/// A secret and all its versions.
pub type SecretRecord = Record<SecretVersion>;

/// An object version with a version id.
pub trait Versioned {
    /// The 32-hex version id.
    fn version_id(&self) -> &str;
}

impl<V: Versioned> Record<V> {
    /// A new record with no versions yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            versions: Vec::new(),
        }
    }

    /// The current (latest) version.
    pub fn current(&self) -> &V {
        self.versions
            .last()
            .expect("a stored object always has at least one version")
    }

    /// The named version (case-insensitive), or the current one when `version` is `None`.
    pub fn find(&self, version: Option<&str>) -> Option<&V> {
        match version {
            None => self.versions.last(),
            Some(v) => self
                .versions
                .iter()
                .find(|x| x.version_id().eq_ignore_ascii_case(v)),
        }
    }
}

/// Object attributes shared by key and secret versions (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    /// Whether the version can be used.
    pub enabled: bool,
    /// Creation time.
    pub created: i64,
    /// Last update time.
    pub updated: i64,
    /// Not usable before this time.
    #[serde(default)]
    pub not_before: Option<i64>,
    /// Not usable after this time.
    #[serde(default)]
    pub expires: Option<i64>,
}

/// One version of an RSA key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVersion {
    /// 32 lowercase hex characters.
    pub version: String,
    /// "RSA" or "RSA-HSM".
    pub kty: String,
    /// Modulus size in bits.
    pub key_size: u32,
    /// Permitted JWK operations.
    pub key_ops: Vec<String>,
    /// Attributes.
    pub attributes: Attributes,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The private key, PKCS#8 PEM. Never logged or returned.
    pub private_key_pem: String,
}

impl Versioned for KeyVersion {
    fn version_id(&self) -> &str {
        &self.version
    }
}

/// One version of a secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretVersion {
    /// 32 lowercase hex characters.
    pub version: String,
    /// The value. Never logged.
    pub value: String,
    /// Optional content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Attributes.
    pub attributes: Attributes,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O error on the state dir or file.
    #[error("state {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file exists but is not valid.
    #[error("state file {path} is corrupt: {message}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The state, shared by all listeners; every change is persisted before it becomes visible.
pub struct Store {
    path: PathBuf,
    data: Mutex<StateData>,
}

impl Store {
    /// Opens (or initializes, with a fresh signing key) the state under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let (path, data) =
            fsutil::load_versioned(dir, STATE_FILE, FORMAT_VERSION, |d: &StateData| {
                d.format_version
            })?;
        let data = match data {
            Some(data) => {
                if STANDARD
                    .decode(&data.signing_key)
                    .map(|k| k.len())
                    .unwrap_or(0)
                    < 32
                {
                    return Err(StateError::Corrupt {
                        path,
                        message: "signing_key is not base64 of at least 32 bytes".into(),
                    });
                }
                data
            }
            None => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let data = StateData {
                    format_version: FORMAT_VERSION,
                    signing_key: STANDARD.encode(key),
                    tls_ca: None,
                    vaults: BTreeMap::new(),
                };
                persist(&path, &data)?;
                data
            }
        };
        Ok(Self {
            path,
            data: Mutex::new(data),
        })
    }

    /// The token signing key bytes.
    pub fn signing_key(&self) -> Vec<u8> {
        let data = self.lock();
        STANDARD
            .decode(&data.signing_key)
            .expect("signing key validated when loaded")
    }

    /// The stored local CA, if one was created.
    pub fn tls_ca(&self) -> Option<CaRecord> {
        self.lock().tls_ca.clone()
    }

    /// Stores the local CA.
    pub fn set_tls_ca(&self, ca: CaRecord) -> Result<(), StateError> {
        let mut data = self.lock();
        let mut next = data.clone();
        next.tls_ca = Some(ca);
        persist(&self.path, &next)?;
        *data = next;
        Ok(())
    }

    /// Runs `f` on a read-only view of one vault's data (empty if the vault has none yet).
    pub fn read_vault<R>(&self, vault: &str, f: impl FnOnce(&VaultData) -> R) -> R {
        let data = self.lock();
        match data.vaults.get(&vault.to_ascii_lowercase()) {
            Some(v) => f(v),
            None => f(&VaultData::default()),
        }
    }

    /// Applies `f` to a copy of one vault's data, persists the result, then publishes it.
    ///
    /// If `f` fails or the write fails, nothing changes, so memory and disk never disagree.
    pub fn update_vault<R, E>(
        &self,
        vault: &str,
        f: impl FnOnce(&mut VaultData) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<StateError>,
    {
        let mut data = self.lock();
        let mut next = data.clone();
        let result = f(next.vaults.entry(vault.to_ascii_lowercase()).or_default())?;
        persist(&self.path, &next)?;
        *data = next;
        Ok(result)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StateData> {
        // A panic while holding the lock cannot leave half-applied changes (see update_vault),
        // so the data behind a poisoned lock is still consistent.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn persist(path: &Path, data: &StateData) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(data).map_err(|e| StateError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    fsutil::write_atomic(path, &bytes).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A new random object version: 32 lowercase hex characters, like Azure's.
pub fn new_version() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Versioned for SecretVersion {
    fn version_id(&self) -> &str {
        &self.version
    }
}

/// A random id in GUID layout, for request and correlation ids.
pub fn new_guid() -> String {
    let h = new_version();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct TestError;
    impl From<StateError> for TestError {
        fn from(_: StateError) -> Self {
            TestError
        }
    }

    fn secret(value: &str) -> SecretRecord {
        SecretRecord {
            name: "S".into(),
            versions: vec![SecretVersion {
                version: new_version(),
                value: value.into(),
                content_type: None,
                attributes: Attributes {
                    enabled: true,
                    created: 1,
                    updated: 1,
                    not_before: None,
                    expires: None,
                },
                tags: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn state_survives_reopen_with_same_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = store.signing_key();
        store
            .update_vault("KV", |v| {
                v.secrets.insert("s".into(), secret("x"));
                Ok::<_, TestError>(())
            })
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.signing_key(), key);
        let value = store.read_vault("kv", |v| v.secrets["s"].versions[0].value.clone());
        assert_eq!(value, "x");
    }

    #[test]
    fn failed_update_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r: Result<(), TestError> = store.update_vault("kv", |v| {
            v.secrets.insert("s".into(), secret("x"));
            Err(TestError)
        });
        assert!(r.is_err());
        assert!(store.read_vault("kv", |v| v.secrets.is_empty()));
    }

    #[test]
    fn corrupt_state_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn versions_are_32_hex() {
        let v = new_version();
        assert_eq!(v.len(), 32);
        assert!(
            v.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}

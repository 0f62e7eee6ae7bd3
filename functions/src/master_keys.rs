//! The control plane's master keys: versioned 256-bit keys, one of them current, that seal
//! configuration at rest (`store::at_rest`).
//!
//! Two sources, chosen by the app settings: every enabled version of a Key Vault secret, read
//! with the control plane's own identity (on Azure), or a local key file (development and
//! tests). Sealed values name the version that sealed them, so a rotation adds a version and
//! old values stay readable until they are re-encrypted. A handler that meets a version it
//! does not hold reloads the set once: another instance may have rotated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use azure_core::credentials::TokenCredential;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use culvert_azure::identity::CredentialSource;
use culvert_azure::secrets::{SecretError, VaultSecret};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::settings::MasterKeySetting;

/// Bytes in a master key (AES-256).
pub const KEY_LEN: usize = 32;

/// What a Key Vault secret version holding a master key is labelled with.
const CONTENT_TYPE: &str = "culvert master key: base64 of 32 random bytes";

/// Why the master keys cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The key source is unreachable or throttled: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The control plane's identity may not read (or, rotating, write) the key source.
    #[error("{0}")]
    Forbidden(String),
    /// The settings, the key file or a secret value is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl From<MasterKeyError> for ApiError {
    fn from(e: MasterKeyError) -> ApiError {
        match e {
            MasterKeyError::Unavailable(m) => ApiError::Unavailable(format!(
                "the control plane's master keys cannot be read: {m}; retry in a moment"
            )),
            // Nothing the caller can fix, and the control plane cannot serve without its keys.
            MasterKeyError::Forbidden(m) | MasterKeyError::Invalid(m) => ApiError::Unavailable(
                format!("the control plane's master keys cannot be read: {m}"),
            ),
        }
    }
}

fn from_secret_error(e: SecretError) -> MasterKeyError {
    match e {
        SecretError::Unavailable { .. } => MasterKeyError::Unavailable(e.to_string()),
        SecretError::Forbidden {
            ref resource,
            permission,
            role,
            ..
        } => {
            // The service's text names the identity's ids and tenant: the log has it, an
            // unauthenticated caller's 503 does not.
            tracing::error!(error = %e, "master key secret");
            MasterKeyError::Forbidden(format!(
                "the control plane's identity may not {permission} secret {resource}: grant it the `{permission}` secret permission ({role})"
            ))
        }
        SecretError::NoToken { .. } => MasterKeyError::Forbidden(e.to_string()),
        SecretError::NotFound { resource, .. } => MasterKeyError::Invalid(format!(
            "{resource} does not exist; create its first version with `culvert-functions rotate-master-key` (which needs the `set` secret permission)"
        )),
        SecretError::Invalid(m) => MasterKeyError::Invalid(m),
    }
}

/// A version name: it sits between `:` separators in sealed values, so it is kept plain.
fn check_version_name(v: &str) -> Result<(), MasterKeyError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MasterKeyError::Invalid(format!(
            "master key version {v:?} is not 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

fn decode_key(text: &str, what: &str) -> Result<[u8; KEY_LEN], MasterKeyError> {
    B64.decode(text.trim())
        .ok()
        .and_then(|b| <[u8; KEY_LEN]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            MasterKeyError::Invalid(format!(
                "{what} is not a master key: it must be the base64 of 32 random bytes"
            ))
        })
}

fn fresh_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// A loaded set of master keys by version, one of them current (the one new values are sealed with).
#[derive(Clone)]
pub struct KeySet {
    current: String,
    keys: BTreeMap<String, [u8; KEY_LEN]>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes.
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeySet {
    /// A set of `keys` whose current one is `current`.
    pub fn new(
        current: &str,
        keys: BTreeMap<String, [u8; KEY_LEN]>,
    ) -> Result<KeySet, MasterKeyError> {
        for v in keys.keys() {
            check_version_name(v)?;
        }
        if !keys.contains_key(current) {
            return Err(MasterKeyError::Invalid(format!(
                "the current master key version {current:?} is not among the versions"
            )));
        }
        Ok(KeySet {
            current: current.to_string(),
            keys,
        })
    }

    /// The version new values are sealed with.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// The key of `version`.
    pub fn key(&self, version: &str) -> Option<&[u8; KEY_LEN]> {
        self.keys.get(version)
    }

    /// Whether `version` is held.
    pub fn holds(&self, version: &str) -> bool {
        self.keys.contains_key(version)
    }

    /// Every version held.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The same keys with `version` as the current one.
    pub fn with_current(&self, version: &str) -> Result<KeySet, MasterKeyError> {
        KeySet::new(version, self.keys.clone())
    }
}

/// The key file: every version's key and which one is current.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    current: String,
    /// Version → base64 of the key.
    versions: BTreeMap<String, String>,
}

impl KeyFile {
    fn to_set(&self, path: &Path) -> Result<KeySet, MasterKeyError> {
        let mut keys = BTreeMap::new();
        for (v, text) in &self.versions {
            keys.insert(
                v.clone(),
                decode_key(text, &format!("version {v} in {}", path.display()))?,
            );
        }
        KeySet::new(&self.current, keys)
            .map_err(|e| MasterKeyError::Invalid(format!("{}: {e}", path.display())))
    }

    /// The next version name: one more than the highest numbered one.
    fn next_version(&self) -> String {
        let highest = self
            .versions
            .keys()
            .filter_map(|v| v.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let mut n = highest + 1;
        while self.versions.contains_key(&n.to_string()) {
            n += 1;
        }
        n.to_string()
    }
}

fn file_error(path: &Path, what: &str, e: std::io::Error) -> MasterKeyError {
    MasterKeyError::Invalid(format!(
        "cannot {what} the master key file {}: {e}",
        path.display()
    ))
}

/// Write `file` to `path` so a reader (or a crash) never sees half of it: a private temporary
/// file, synced, renamed over the old one.
fn write_key_file(path: &Path, file: &KeyFile, create_new: bool) -> Result<(), MasterKeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_vec_pretty(file).expect("key file");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(path, "write", e));
    }
    let placed = if create_new {
        // Two processes creating the file at once: the first one's keys win, the other reads them.
        std::fs::hard_link(&tmp, path).and_then(|()| std::fs::remove_file(&tmp))
    } else {
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        if create_new && e.kind() == std::io::ErrorKind::AlreadyExists {
            return Ok(());
        }
        return Err(file_error(path, "write", e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<Option<KeyFile>, MasterKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, "read", e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(MasterKeyError::Invalid(format!(
            "the master key file {} has mode {mode:03o}; it holds keys, so only its owner may read it (chmod 600)",
            path.display()
        )));
    }
    let text = std::fs::read(path).map_err(|e| file_error(path, "read", e))?;
    let file: KeyFile = serde_json::from_slice(&text).map_err(|e| {
        MasterKeyError::Invalid(format!(
            "the master key file {} is not {{\"current\": VERSION, \"versions\": {{VERSION: BASE64_KEY}}}}: {e}",
            path.display()
        ))
    })?;
    Ok(Some(file))
}

/// The key file, created with one fresh key when missing.
fn load_or_create_file(path: &Path) -> Result<KeyFile, MasterKeyError> {
    if let Some(f) = read_key_file(path)? {
        return Ok(f);
    }
    let file = KeyFile {
        current: "1".into(),
        versions: BTreeMap::from([("1".to_string(), B64.encode(fresh_key()))]),
    };
    write_key_file(path, &file, true)?;
    tracing::info!(file = %path.display(), "created the master key file with one key");
    // Whoever won the creation race, read what is there.
    read_key_file(path)?.ok_or_else(|| {
        MasterKeyError::Invalid(format!("{} vanished after it was created", path.display()))
    })
}

/// Lock held while the key file is changed, so two rotations cannot both add "the next" version.
fn lock_key_file(path: &Path) -> Result<std::fs::File, MasterKeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| file_error(&lock_path, "open", e))?;
    f.lock().map_err(|e| file_error(&lock_path, "lock", e))?;
    Ok(f)
}

enum Source {
    File(PathBuf),
    Vault {
        url: String,
        identity: CredentialSource,
        client: Mutex<Option<Arc<VaultSecret>>>,
    },
}

/// The master keys, loaded on first use and reloaded when a sealed value names a version the
/// loaded set lacks.
pub struct MasterKeys {
    source: Source,
    loaded: RwLock<Option<Arc<KeySet>>>,
    // One load at a time: concurrent readers that meet a new version share one reload.
    loading: tokio::sync::Mutex<()>,
}

impl MasterKeys {
    /// Keys from `setting`; a Key Vault secret is read with `identity`. Nothing is read yet.
    pub fn new(
        setting: &MasterKeySetting,
        identity: CredentialSource,
    ) -> Result<MasterKeys, MasterKeyError> {
        let source = match setting {
            MasterKeySetting::File(path) => Source::File(path.clone()),
            MasterKeySetting::Vault(url) => {
                // Refuse a bad URL at start rather than on the first request.
                culvert_azure::secrets::parse_secret_url(url).map_err(from_secret_error)?;
                Source::Vault {
                    url: url.clone(),
                    identity,
                    client: Mutex::new(None),
                }
            }
        };
        Ok(MasterKeys {
            source,
            loaded: RwLock::new(None),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the keys come from, for messages.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::File(p) => format!("master key file {}", p.display()),
            Source::Vault { url, .. } => format!("Key Vault secret {url}"),
        }
    }

    fn vault(&self) -> Result<Arc<VaultSecret>, MasterKeyError> {
        let Source::Vault {
            url,
            identity,
            client,
        } = &self.source
        else {
            unreachable!("only called for a vault source");
        };
        let mut slot = client.lock().expect("vault client lock");
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let credential: Arc<dyn TokenCredential> = identity.credential().map_err(|e| {
            MasterKeyError::Forbidden(format!(
                "the control plane's identity ({identity}) cannot read {url}: {e}"
            ))
        })?;
        let secret = Arc::new(VaultSecret::new(url, credential).map_err(from_secret_error)?);
        *slot = Some(secret.clone());
        Ok(secret)
    }

    fn loaded(&self) -> Option<Arc<KeySet>> {
        self.loaded.read().expect("keys lock").clone()
    }

    /// The loaded set, loading it the first time.
    pub async fn current(&self) -> Result<Arc<KeySet>, MasterKeyError> {
        self.holding(&[]).await
    }

    /// A set that holds every one of `versions`: the loaded one, or one reloaded once from the
    /// source when it lacks some (the caller reports what is still missing).
    pub async fn holding(&self, versions: &[&str]) -> Result<Arc<KeySet>, MasterKeyError> {
        let enough = |s: &KeySet| versions.iter().all(|v| s.holds(v));
        if let Some(set) = self.loaded().filter(|s| enough(s)) {
            return Ok(set);
        }
        let _one = self.loading.lock().await;
        // Another caller may have reloaded while this one waited.
        if let Some(set) = self.loaded().filter(|s| enough(s)) {
            return Ok(set);
        }
        self.load_locked().await
    }

    /// Read the keys from the source again.
    pub async fn reload(&self) -> Result<Arc<KeySet>, MasterKeyError> {
        let _one = self.loading.lock().await;
        self.load_locked().await
    }

    async fn load_locked(&self) -> Result<Arc<KeySet>, MasterKeyError> {
        let set = Arc::new(match &self.source {
            Source::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    load_or_create_file(&path).and_then(|f| f.to_set(&path))
                })
                .await
                .map_err(|e| MasterKeyError::Invalid(format!("reading the key file: {e}")))??
            }
            Source::Vault { .. } => self.load_vault().await?,
        });
        let before = self.loaded.write().expect("keys lock").replace(set.clone());
        if before.as_ref().is_none_or(|b| b.current() != set.current()) {
            tracing::info!(
                source = %self.describe(),
                current = set.current(),
                versions = set.keys.len(),
                "master keys loaded"
            );
        }
        Ok(set)
    }

    async fn load_vault(&self) -> Result<KeySet, MasterKeyError> {
        let secret = self.vault()?;
        let mut versions: Vec<_> = secret
            .versions()
            .await
            .map_err(from_secret_error)?
            .into_iter()
            .filter(|v| v.enabled)
            .collect();
        if versions.is_empty() {
            return Err(MasterKeyError::Invalid(format!(
                "{} has no enabled version; create the first with `culvert-functions rotate-master-key` (which needs the `set` secret permission)",
                secret.url()
            )));
        }
        // Newest last; a stable sort keeps the service's order for equal creation times.
        versions.sort_by_key(|v| v.created.unwrap_or(0));
        let current = versions.last().expect("not empty").version.clone();
        let mut keys = BTreeMap::new();
        for v in &versions {
            let value = secret.get(&v.version).await.map_err(from_secret_error)?;
            let key = decode_key(&value, &format!("{}/{}", secret.url(), v.version))?;
            keys.insert(v.version.clone(), key);
        }
        KeySet::new(&current, keys)
    }

    /// Add a fresh key as a new version (the file gains a key; the vault secret a version, which
    /// needs the `set` permission), reload, and return the new version.
    pub async fn add_version(&self) -> Result<String, MasterKeyError> {
        let _one = self.loading.lock().await;
        let version = match &self.source {
            Source::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let _lock = lock_key_file(&path)?;
                    let mut file = load_or_create_file(&path)?;
                    let version = file.next_version();
                    file.versions
                        .insert(version.clone(), B64.encode(fresh_key()));
                    file.current = version.clone();
                    write_key_file(&path, &file, false)?;
                    Ok::<_, MasterKeyError>(version)
                })
                .await
                .map_err(|e| MasterKeyError::Invalid(format!("writing the key file: {e}")))??
            }
            Source::Vault { .. } => {
                let secret = self.vault()?;
                secret
                    .set(&B64.encode(fresh_key()), CONTENT_TYPE)
                    .await
                    .map_err(from_secret_error)?
            }
        };
        check_version_name(&version)?;
        let set = self.load_locked().await?;
        if !set.holds(&version) {
            return Err(MasterKeyError::Invalid(format!(
                "master key version {version} was added to the {} but is not read back from it",
                self.describe()
            )));
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_keys(path: &Path) -> MasterKeys {
        MasterKeys::new(
            &MasterKeySetting::File(path.to_path_buf()),
            CredentialSource::AzureCli,
        )
        .unwrap()
    }

    /// A key file path in a directory removed when the guard drops.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("culvert-master-keys-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("master-keys.json");
        (dir, path)
    }

    #[tokio::test]
    async fn a_missing_file_is_created_private_with_one_key() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = scratch();
        let keys = file_keys(&path);
        let set = keys.current().await.unwrap();
        assert_eq!(set.current(), "1");
        assert_eq!(set.versions().count(), 1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second reader gets the same key, not a new one.
        let again = file_keys(&path).current().await.unwrap();
        assert_eq!(again.key("1"), set.key("1"));
    }

    #[tokio::test]
    async fn a_readable_file_or_a_bad_key_is_refused_with_the_reason() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = scratch();
        file_keys(&path).current().await.unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = file_keys(&path).current().await.unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, r#"{"current":"1","versions":{"1":"c2hvcnQ="}}"#).unwrap();
        let e = file_keys(&path).current().await.unwrap_err();
        assert!(e.to_string().contains("base64 of 32 random bytes"), "{e}");
    }

    #[tokio::test]
    async fn added_versions_become_current_and_keep_the_old_ones() {
        let (_dir, path) = scratch();
        let keys = file_keys(&path);
        let first = keys.current().await.unwrap();
        let v = keys.add_version().await.unwrap();
        assert_eq!(v, "2");
        let set = keys.current().await.unwrap();
        assert_eq!(set.current(), "2");
        assert_eq!(set.key("1"), first.key("1"));
        assert_ne!(set.key("2"), set.key("1"));
    }

    #[tokio::test]
    async fn an_unknown_version_reloads_the_set_once() {
        let (_dir, path) = scratch();
        let reader = file_keys(&path);
        reader.current().await.unwrap();
        // Another instance rotates.
        let rotator = file_keys(&path);
        let v = rotator.add_version().await.unwrap();
        let stale = reader.current().await.unwrap();
        assert!(!stale.holds(&v), "nothing reloads without a reason");
        let fresh = reader.holding(&[&v]).await.unwrap();
        assert!(fresh.holds(&v));
        assert_eq!(fresh.current(), v);
        // A version nobody has is still missing after the one reload.
        let none = reader.holding(&["99"]).await.unwrap();
        assert!(!none.holds("99"));
    }
}

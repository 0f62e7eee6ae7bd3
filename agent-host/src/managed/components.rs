//! Registered connector components, fetched from the control plane by digest and kept in
//! `<state dir>/components/<digest>.wasm`.
//!
//! The digest comes with the assignment; the bytes come from the control plane's component
//! store. Bytes that do not hash to the digest are never used: a download is verified
//! before it is renamed into place, and a cached file is verified again before each use, so
//! a file altered on disk is fetched anew rather than run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use culvert_control_api::client::{Client, ClientError};
use culvert_control_api::registry::{ComponentRef, is_digest};
use sha2::{Digest, Sha256};

/// How long one download may take (components are up to 100 MiB).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a component is not available.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The bytes do not hash to the pinned digest.
    #[error(
        "component digest mismatch: expected {expected}, got {actual}; the control plane or the network altered it"
    )]
    Mismatch {
        /// The pinned digest.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The control plane could not hand it over.
    #[error("cannot fetch component {digest} from the control plane: {source}")]
    Fetch {
        /// The digest.
        digest: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The assignment names something that is not a digest.
    #[error("the assignment names component {0:?}, which is not a SHA-256 digest")]
    BadDigest(String),
    /// The cache directory cannot be written.
    #[error("component cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ComponentError {
    /// Whether trying again later may help (the network, the control plane, the disk).
    pub fn is_transient(&self) -> bool {
        !matches!(self, ComponentError::BadDigest(_))
    }
}

/// Lowercase hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The component cache of one agent.
#[derive(Clone)]
pub struct Components {
    dir: PathBuf,
    client: Arc<Mutex<Client>>,
}

impl Components {
    /// A cache in `state_dir/components`, fetching through `client`.
    pub fn new(state_dir: &Path, client: Client) -> Components {
        Components {
            dir: state_dir.join("components"),
            client: Arc::new(Mutex::new(client)),
        }
    }

    /// Use `client` from now on (after the agent registered again with a new key).
    pub fn set_client(&self, client: Client) {
        *self.client.lock().expect("component client") = client;
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ComponentError + '_ {
        move |source| ComponentError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The path of the component's verified bytes, fetching them when they are not cached
    /// or the cached file does not hash to the digest.
    pub async fn path_for(&self, component: &ComponentRef) -> Result<PathBuf, ComponentError> {
        let digest = &component.digest;
        if !is_digest(digest) {
            return Err(ComponentError::BadDigest(digest.clone()));
        }
        let path = self.dir.join(format!("{digest}.wasm"));
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let actual = sha256_hex(&bytes);
                if actual == *digest {
                    return Ok(path);
                }
                tracing::warn!(%digest, %actual, path = %path.display(), "cached component does not match its digest; fetching it again");
                tokio::fs::remove_file(&path)
                    .await
                    .map_err(Self::io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io(&path)(e)),
        }
        let client = self.client.lock().expect("component client").clone();
        let bytes = client
            .get_bytes(&format!("/v1/agent/components/{digest}"), DOWNLOAD_TIMEOUT)
            .await
            .map_err(|source| ComponentError::Fetch {
                digest: digest.clone(),
                source,
            })?;
        let actual = sha256_hex(&bytes);
        if actual != *digest {
            return Err(ComponentError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(Self::io(&self.dir))?;
        // A unique temporary name: pipelines sharing a component may fetch it at once.
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = async {
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&bytes).await?;
            f.sync_all().await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Self::io(&path)(e));
        }
        tracing::info!(%digest, size = bytes.len(), "component fetched");
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A control plane stand-in serving `body` for every component, counting requests.
    async fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/api/v1/agent/components/{digest}",
            axum::routing::get(move || {
                let body = body.clone();
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    body
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/api"), hits)
    }

    fn reference(bytes: &[u8]) -> ComponentRef {
        ComponentRef {
            digest: sha256_hex(bytes),
            size: bytes.len() as u64,
        }
    }

    #[tokio::test]
    async fn fetched_once_verified_on_every_use_and_refetched_when_tampered() {
        let bytes = b"\0asm\x0d\0\x01\0 a component".to_vec();
        let (base, hits) = serve(bytes.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Components::new(dir.path(), Client::new(&base, Some("cva_x".into())));
        let c = reference(&bytes);
        let path = cache.path_for(&c).await.unwrap();
        assert_eq!(
            path,
            dir.path().join(format!("components/{}.wasm", c.digest))
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        cache.path_for(&c).await.unwrap();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a verified cached file is used"
        );
        std::fs::write(&path, b"tampered").unwrap();
        let again = cache.path_for(&c).await.unwrap();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "a tampered file is fetched again"
        );
        assert_eq!(std::fs::read(&again).unwrap(), bytes);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("components"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_the_digest_are_refused_and_not_kept() {
        let (base, _) = serve(b"altered in transit".to_vec()).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Components::new(dir.path(), Client::new(&base, None));
        let c = reference(b"what was published");
        let e = cache.path_for(&c).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "component digest mismatch: expected {}, got {}",
                c.digest,
                sha256_hex(b"altered in transit")
            )),
            "{text}"
        );
        assert!(text.contains("the control plane or the network altered it"));
        assert!(e.is_transient());
        assert!(
            !dir.path()
                .join(format!("components/{}.wasm", c.digest))
                .exists()
        );
        let bad = ComponentRef {
            digest: "../../etc/passwd".into(),
            size: 1,
        };
        assert!(matches!(
            cache.path_for(&bad).await,
            Err(ComponentError::BadDigest(_))
        ));
    }
}

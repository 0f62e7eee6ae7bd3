//! The durable, bounded queue of batches between a pipeline's source and target.
//!
//! The source side appends a segment and only then asks for more; the target side
//! reads segments in order and releases them once they are committed. Appends wait
//! while the buffered bytes exceed the bound, so memory and disk stay bounded.
//!
//! Every segment is encrypted before it reaches the store ([`crypto`]). A transient
//! fault of the store or of the key service never fails the pipeline: the call is
//! retried with backoff until it succeeds, and until then nothing moves on (an append
//! that has not returned was not acknowledged to anyone). A fault retrying cannot fix
//! (a missing permission, a missing container or key) fails at once with an error that
//! names the resource.

mod blob;
mod crypto;
mod file;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use culvert_sealing::{KeyEncryptionKey, KeyError, Keyring};
use tokio::sync::{Mutex, Notify, OnceCell};

use crate::batch::Batch;
use crate::config::BufferConfig;
use crate::metrics::BufferMetrics;
pub use blob::{BlobLocation, BlobStore};
pub use crypto::{MAX_KEY_AGE, OpenError, SealError, SegmentCipher, segment_kid};
pub use file::FileStore;

/// Sequence number of the object recording the newest released segment (segments start at 1).
const RELEASED_MARK: u64 = 0;

/// First wait after a transient fault; it doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between retries unless the service asks for longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A `Retry-After` beyond this is taken as this, so a bogus header cannot park the pipeline.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A storage failure, classified by the store that saw it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreFault {
    /// Whether retrying later may succeed.
    pub transient: bool,
    /// How long the service asked us to wait.
    pub retry_after: Option<Duration>,
    /// What failed, naming the resource (and, when permanent, what to change).
    pub message: String,
}

/// Where segments are kept.
pub enum SegmentStore {
    /// A local directory.
    File(FileStore),
    /// A container in Azure Blob Storage (or the storage emulator).
    Blob(Box<BlobStore>),
}

impl SegmentStore {
    /// Open the store named by a `[buffer] url`.
    pub fn open(url: &str) -> Result<SegmentStore> {
        let parsed =
            url::Url::parse(url).with_context(|| format!("buffer url `{url}` is not a URL"))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed.to_file_path().map_err(|_| {
                    anyhow::anyhow!("buffer url `{url}` is not an absolute file:// path")
                })?;
                Ok(SegmentStore::File(FileStore::open(&path)?))
            }
            "https" | "http" => Ok(SegmentStore::Blob(Box::new(BlobStore::open(url)?))),
            other => bail!(
                "buffer url scheme `{other}` is not supported by this agent; use file:///absolute/path \
                 or https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix"
            ),
        }
    }

    /// The store as named in messages.
    pub fn describe(&self) -> String {
        match self {
            SegmentStore::File(f) => format!("buffer directory {}", f.dir().display()),
            SegmentStore::Blob(b) => b.describe(),
        }
    }

    /// Make the store usable (create the container).
    pub async fn prepare(&self) -> Result<()> {
        match self {
            SegmentStore::File(_) => Ok(()),
            SegmentStore::Blob(b) => b.prepare().await,
        }
    }

    /// Store a segment durably.
    pub async fn put(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        match self {
            SegmentStore::File(f) => f.put(seq, bytes).await,
            SegmentStore::Blob(b) => b.put(seq, bytes).await,
        }
    }

    /// Read a segment.
    pub async fn get(&self, seq: u64) -> Result<Vec<u8>> {
        match self {
            SegmentStore::File(f) => f.get(seq).await,
            SegmentStore::Blob(b) => b.get(seq).await,
        }
    }

    /// Delete a segment (missing is fine).
    pub async fn delete(&self, seq: u64) -> Result<()> {
        match self {
            SegmentStore::File(f) => f.delete(seq).await,
            SegmentStore::Blob(b) => b.delete(seq).await,
        }
    }

    /// Sequence numbers present.
    pub async fn list(&self) -> Result<Vec<u64>> {
        match self {
            SegmentStore::File(f) => f.list().await,
            SegmentStore::Blob(b) => b.list().await,
        }
    }
}

/// The keyring a directory buffer uses when `[buffer] key` is not set: next to the
/// directory (not inside it, so clearing the segments keeps the key).
pub fn default_keyring_path(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().with_context(|| {
        format!(
            "buffer directory {} has no name to put a keyring next to; set [buffer] key",
            dir.display()
        )
    })?;
    let mut file = name.to_os_string();
    file.push(".keyring.json");
    Ok(dir.with_file_name(file))
}

/// Open the key-encryption key of a `[buffer]` section.
pub fn open_key(cfg: &BufferConfig) -> Result<Arc<dyn KeyEncryptionKey>> {
    let keyring = |path: &Path| -> Result<Arc<dyn KeyEncryptionKey>> {
        let ring = Keyring::open_or_create(path)
            .with_context(|| format!("opening the buffer keyring {}", path.display()))?;
        Ok(Arc::new(ring))
    };
    let Some(key) = cfg.key.as_deref() else {
        let url = url::Url::parse(&cfg.url)
            .with_context(|| format!("buffer url `{}` is not a URL", cfg.url))?;
        if url.scheme() != "file" {
            bail!(
                "`buffer.key` is required for the blob storage buffer {}: segments are encrypted before they leave the agent; \
                 set key = \"https://VAULT.vault.azure.net/keys/NAME\"",
                cfg.url
            );
        }
        let dir = url.to_file_path().map_err(|_| {
            anyhow::anyhow!("buffer url `{}` is not an absolute file:// path", cfg.url)
        })?;
        return keyring(&default_keyring_path(&dir)?);
    };
    let parsed =
        url::Url::parse(key).with_context(|| format!("`buffer.key` `{key}` is not a URL"))?;
    match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|_| {
                anyhow::anyhow!("`buffer.key` `{key}` is not an absolute file:// path")
            })?;
            keyring(&path)
        }
        "https" | "http" => {
            let source = culvert_azure::identity::CredentialSource::from_env()
                .context("choosing the identity for the buffer key")?;
            let credential = source
                .credential()
                .context("building the credential for the buffer key")?;
            let kek = culvert_azure::keyvault::KeyVaultKey::new(
                key,
                credential,
                culvert_azure::keyvault::KeyUse::DataKeys,
            )
            .with_context(|| format!("opening the buffer key {key}"))?;
            Ok(Arc::new(kek))
        }
        other => bail!(
            "`buffer.key` scheme `{other}` is not supported; use file:///absolute/keyring.json or https://VAULT.vault.azure.net/keys/NAME"
        ),
    }
}

/// Whether a failure may go away by itself, and when to try again.
enum Fault {
    Transient(Option<Duration>),
    Permanent,
}

fn classify(e: &anyhow::Error) -> Fault {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<StoreFault>() {
            return if f.transient {
                Fault::Transient(f.retry_after)
            } else {
                Fault::Permanent
            };
        }
        if let Some(k) = cause.downcast_ref::<KeyError>() {
            return match k {
                KeyError::Unavailable { retry_after, .. } => Fault::Transient(*retry_after),
                _ => Fault::Permanent,
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            // A full disk or a stalled mount can clear up; a permission or a missing
            // directory needs an operator.
            return match io.kind() {
                K::StorageFull
                | K::QuotaExceeded
                | K::TimedOut
                | K::Interrupted
                | K::WouldBlock
                | K::ResourceBusy => Fault::Transient(None),
                _ => Fault::Permanent,
            };
        }
    }
    Fault::Permanent
}

/// Whether a segment failed to open because of its own bytes (as opposed to the key).
fn is_corrupt(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<OpenError>(),
            Some(OpenError::Corrupt { .. })
        ) || c.downcast_ref::<crate::batch::SegmentError>().is_some()
    })
}

/// Reachability of the store and key service, for operators.
struct Health {
    unavailable_since: std::sync::Mutex<Option<Instant>>,
    retries: AtomicU64,
    metrics: BufferMetrics,
}

impl Health {
    fn failing(&self) {
        let mut since = self.unavailable_since.lock().expect("health lock");
        if since.is_none() {
            *since = Some(Instant::now());
            self.metrics.unavailable.set(1);
        }
        drop(since);
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.metrics.retries.inc();
    }

    fn ok(&self) {
        let mut since = self.unavailable_since.lock().expect("health lock");
        if let Some(at) = since.take() {
            self.metrics.unavailable.set(0);
            tracing::info!(
                after_seconds = at.elapsed().as_secs_f64(),
                "buffer storage and key service reachable again"
            );
        }
    }
}

struct Entry {
    seq: u64,
    size: u64,
    position: Vec<u8>,
    appended: std::time::Instant,
}

struct Index {
    entries: VecDeque<Entry>,
    next_seq: u64,
    delivered: u64,
    bytes: u64,
}

/// The bounded queue.
pub struct Buffer {
    store: SegmentStore,
    cipher: SegmentCipher,
    max_bytes: u64,
    index: Mutex<Index>,
    changed: Notify,
    prepared: OnceCell<()>,
    health: Health,
    /// The segment after the one last handed out, read ahead while the target applies.
    read_ahead: std::sync::Mutex<Option<ReadAhead>>,
    /// The newest released segment; recorded in the store before segments are deleted.
    released: AtomicU64,
    /// Deletions of released segments still running.
    housekeeping: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Uploads in flight at most (the source prepares the next batch meanwhile).
    uploads: Arc<tokio::sync::Semaphore>,
    /// The newest segment visible to the target (all before it are stored too).
    published: tokio::sync::watch::Sender<u64>,
    /// Why a segment could not be stored, once one could not.
    failure: std::sync::Mutex<Option<String>>,
}

/// Segments being uploaded at once.
const UPLOADS_IN_FLIGHT: usize = 1;

struct ReadAhead {
    seq: u64,
    task: tokio::task::JoinHandle<Result<Vec<u8>>>,
}

/// What survived in the buffer from an earlier run.
pub struct Recovered {
    /// Position of the newest buffered batch, if any survived.
    pub last_position: Option<Vec<u8>>,
    /// Segments kept.
    pub segments: usize,
}

impl Buffer {
    /// The buffer a `[buffer]` section describes, reporting into `metrics`.
    pub fn open(cfg: &BufferConfig, metrics: BufferMetrics) -> Result<Arc<Buffer>> {
        let store = SegmentStore::open(&cfg.url)?;
        let kek = open_key(cfg)?;
        let cipher = SegmentCipher::new(kek, cfg.segments_per_key);
        Ok(Buffer::new(store, cipher, cfg.max_bytes, metrics))
    }

    /// A buffer over `store`, encrypting with `cipher`, holding at most about `max_bytes`.
    pub fn new(
        store: SegmentStore,
        cipher: SegmentCipher,
        max_bytes: u64,
        metrics: BufferMetrics,
    ) -> Arc<Buffer> {
        metrics.unavailable.set(0);
        Arc::new(Buffer {
            store,
            cipher,
            max_bytes: max_bytes.max(1),
            index: Mutex::new(Index {
                entries: VecDeque::new(),
                next_seq: 1,
                delivered: 0,
                bytes: 0,
            }),
            changed: Notify::new(),
            prepared: OnceCell::new(),
            health: Health {
                unavailable_since: std::sync::Mutex::new(None),
                retries: AtomicU64::new(0),
                metrics,
            },
            read_ahead: std::sync::Mutex::new(None),
            released: AtomicU64::new(0),
            housekeeping: std::sync::Mutex::new(Vec::new()),
            uploads: Arc::new(tokio::sync::Semaphore::new(UPLOADS_IN_FLIGHT)),
            published: tokio::sync::watch::Sender::new(0),
            failure: std::sync::Mutex::new(None),
        })
    }

    /// Wait for deletions of released segments started so far.
    pub async fn settle(&self) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.housekeeping.lock().expect("housekeeping lock"));
        for t in tasks {
            let _ = t.await;
        }
    }

    fn drop_read_ahead(&self, at_or_before: u64) {
        let mut slot = self.read_ahead.lock().expect("read-ahead lock");
        if slot.as_ref().is_some_and(|r| r.seq <= at_or_before)
            && let Some(r) = slot.take()
        {
            r.task.abort();
        }
    }

    /// Start reading the segment after `seq`, if there is one, so the next `next` finds it ready.
    async fn read_ahead_after(self: &Arc<Self>, seq: u64) {
        let following = {
            let index = self.index.lock().await;
            index.entries.iter().find(|e| e.seq > seq).map(|e| e.seq)
        };
        let Some(following) = following else { return };
        let me = self.clone();
        let task = tokio::spawn(async move { me.read(following).await.map(|(_, plain)| plain) });
        let old = self
            .read_ahead
            .lock()
            .expect("read-ahead lock")
            .replace(ReadAhead {
                seq: following,
                task,
            });
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// Since when the store or key service has been failing transiently (calls are being
    /// retried); `None` while it answers.
    pub fn unavailable_since(&self) -> Option<Instant> {
        *self.health.unavailable_since.lock().expect("health lock")
    }

    /// Calls retried after a transient fault since the buffer was opened.
    pub fn retries(&self) -> u64 {
        self.health.retries.load(Ordering::Relaxed)
    }

    /// The store, as named in messages.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Run `op` until it succeeds or fails for good; transient faults are retried with
    /// exponential backoff (or the wait the service asked for), forever, with one warning
    /// per distinct failure.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = INITIAL_BACKOFF;
        let mut warned: Option<String> = None;
        loop {
            let e = match op().await {
                Ok(v) => {
                    self.health.ok();
                    return Ok(v);
                }
                Err(e) => e,
            };
            let Fault::Transient(retry_after) = classify(&e) else {
                return Err(e.context(what.to_string()));
            };
            let wait = retry_after.map_or(delay, |r| r.min(MAX_RETRY_AFTER));
            self.health.failing();
            let text = format!("{e:#}");
            if warned.as_deref() != Some(text.as_str()) {
                tracing::warn!(
                    operation = what,
                    store = %self.store.describe(),
                    error = %text,
                    retry_in = ?wait,
                    "buffer unavailable; retrying until it answers (nothing is acknowledged meanwhile)"
                );
                warned = Some(text);
            }
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    async fn ensure_prepared(&self) -> Result<()> {
        self.prepared
            .get_or_try_init(|| async {
                self.retrying("preparing the buffer", || self.store.prepare())
                    .await
            })
            .await?;
        Ok(())
    }

    /// Read and decrypt segment `seq`, retrying transient faults.
    async fn read(&self, seq: u64) -> Result<(u64, Vec<u8>)> {
        let what = format!("reading segment {seq}");
        let stored = self.retrying(&what, || self.store.get(seq)).await?;
        let what = format!("decrypting segment {seq}");
        let plain = self
            .retrying(&what, || async {
                self.cipher
                    .open(seq, &stored)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await?;
        Ok((stored.len() as u64, plain))
    }

    /// The newest segment released by an earlier run.
    async fn released_mark(&self) -> Result<u64> {
        let bytes = self
            .retrying("reading the released mark", || {
                self.store.get(RELEASED_MARK)
            })
            .await?;
        Ok(bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    async fn delete(&self, seq: u64) -> Result<()> {
        let what = format!("deleting segment {seq}");
        self.retrying(&what, || self.store.delete(seq)).await
    }

    /// Load segments left by an earlier run. Segments at or before `committed` are
    /// deleted; the rest are kept only when they continue the committed stream with
    /// changes (a snapshot in flight is restarted by the source, so its chunks go).
    /// A segment that does not authenticate (altered, or not written by this agent) is
    /// dropped like a snapshot in flight: the source sends its data again.
    pub async fn recover(&self, committed: Option<&[u8]>) -> Result<Recovered> {
        self.ensure_prepared().await?;
        let mut seqs = self
            .retrying("listing the buffer's segments", || self.store.list())
            .await?;
        seqs.sort_unstable();
        let released = if seqs.first() == Some(&RELEASED_MARK) {
            seqs.remove(0);
            self.released_mark().await?
        } else {
            0
        };
        self.released.fetch_max(released, Ordering::SeqCst);
        let mut kept: Vec<Entry> = Vec::new();
        let mut discard = false;
        let mut max_seq = released;
        let mut expected = released + 1;
        for seq in seqs {
            max_seq = max_seq.max(seq);
            if seq <= released {
                self.delete(seq).await?;
                continue;
            }
            // A store that lost an acknowledged segment (an emulator crash can) leaves a
            // hole: what follows cannot be applied in order, so the source sends it again.
            if seq != expected && !discard {
                tracing::warn!(missing = expected, found = seq, store = %self.store.describe(),
                    "a buffer segment is missing; dropping the buffered segments so the source sends them again");
                discard = true;
            }
            expected = seq + 1;
            if discard {
                self.delete(seq).await?;
                continue;
            }
            let read = self.read(seq).await.and_then(|(size, plain)| {
                Batch::decode(&plain)
                    .map(|b| (size, b))
                    .map_err(anyhow::Error::from)
            });
            let (size, batch) = match read {
                Ok(r) => r,
                Err(e) if is_corrupt(&e) => {
                    tracing::warn!(seq, store = %self.store.describe(), error = %format!("{e:#}"), "dropping unreadable buffer segment");
                    discard = true;
                    self.delete(seq).await?;
                    continue;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "buffer segment {seq} in {} cannot be opened; restore the key (or the permission) it needs, \
                         or delete the buffer's segments so the source sends them again",
                        self.store.describe()
                    )));
                }
            };
            if committed.is_some_and(|c| batch.position.as_slice() <= c) {
                self.delete(seq).await?;
                continue;
            }
            if batch.kind == crate::batch::Kind::Snapshot {
                discard = true;
            }
            kept.push(Entry {
                seq,
                size,
                position: batch.position,
                appended: std::time::Instant::now(),
            });
        }
        if discard {
            for e in kept.drain(..) {
                self.delete(e.seq).await?;
            }
        }
        let mut index = self.index.lock().await;
        index.next_seq = max_seq + 1;
        self.published.send_replace(max_seq);
        index.bytes = kept.iter().map(|e| e.size).sum();
        let last_position = kept.last().map(|e| e.position.clone());
        let segments = kept.len();
        index.entries = kept.into();
        Ok(Recovered {
            last_position,
            segments,
        })
    }

    /// Bytes currently buffered.
    pub async fn bytes(&self) -> u64 {
        self.index.lock().await.bytes
    }

    /// Whether an append of `size` bytes has to wait for the target.
    pub async fn is_full(&self) -> bool {
        let index = self.index.lock().await;
        index.bytes >= self.max_bytes && !index.entries.is_empty()
    }

    /// Wait until there is room, or until `deadline` passes; returns whether there is room.
    pub async fn wait_for_room(&self, wait: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if !self.is_full().await {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !self.is_full().await;
            }
        }
    }

    /// Durably append a batch; returns its sequence number. Returns only once the
    /// encrypted segment is stored (retrying through outages), so whatever the caller
    /// acknowledges afterwards is safe.
    pub async fn append(self: &Arc<Self>, batch: &Batch) -> Result<u64> {
        self.check()?;
        self.ensure_prepared().await?;
        let permit = self
            .uploads
            .clone()
            .acquire_owned()
            .await
            .expect("the upload semaphore is never closed");
        let plain = batch.encode();
        let seq = {
            let mut index = self.index.lock().await;
            let seq = index.next_seq;
            index.next_seq += 1;
            seq
        };
        // Sealed once: a retried upload sends the same bytes under the same nonce.
        let what = format!("encrypting segment {seq}");
        let sealed = self
            .retrying(&what, || async {
                self.cipher
                    .seal(seq, &plain)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await?;
        drop(plain);
        let size = sealed.len() as u64;
        // Room is taken now, so the bound holds while uploads are in flight.
        self.index.lock().await.bytes += size;
        let me = self.clone();
        let position = batch.position.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let what = format!("writing segment {seq}");
            let stored = me.retrying(&what, || me.store.put(seq, &sealed)).await;
            // Segments become visible in order, each only once it and all before it are stored.
            let mut published = me.published.subscribe();
            let _ = published
                .wait_for(|p| *p + 1 >= seq || me.failure.lock().expect("failure lock").is_some())
                .await;
            let failed_before = me.failure.lock().expect("failure lock").is_some();
            let mut index = me.index.lock().await;
            match stored {
                Ok(()) if !failed_before => {
                    index.entries.push_back(Entry {
                        seq,
                        size,
                        position,
                        appended: std::time::Instant::now(),
                    });
                    drop(index);
                    me.published.send_replace(seq);
                }
                outcome => {
                    index.bytes -= size;
                    drop(index);
                    if let Err(e) = outcome {
                        me.failure
                            .lock()
                            .expect("failure lock")
                            .get_or_insert(format!("{e:#}"));
                    }
                    me.published.send_modify(|_| {});
                }
            }
            me.changed.notify_waiters();
        });
        Ok(seq)
    }

    /// Fails once a segment could not be stored (a permanent fault): nothing after it is
    /// handed to the target, and the pipeline must restart from what is durable.
    pub fn check(&self) -> Result<()> {
        match self.failure.lock().expect("failure lock").as_ref() {
            Some(e) => bail!("a buffer segment could not be stored: {e}"),
            None => Ok(()),
        }
    }

    /// The newest segment the target may read (it and every one before it are stored).
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Wait until every segment appended so far is stored (or one failed).
    pub async fn flush(&self) -> Result<()> {
        let last = self.index.lock().await.next_seq - 1;
        let mut published = self.published.subscribe();
        let _ = published
            .wait_for(|p| *p >= last || self.failure.lock().expect("failure lock").is_some())
            .await;
        self.check()
    }

    /// The oldest segment not yet handed out, waiting up to `wait` for one.
    pub async fn next(self: &Arc<Self>, wait: std::time::Duration) -> Result<Option<(u64, Batch)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            let candidate = {
                let index = self.index.lock().await;
                index
                    .entries
                    .iter()
                    .find(|e| e.seq > index.delivered)
                    .map(|e| e.seq)
            };
            if let Some(seq) = candidate {
                let ready = {
                    let mut slot = self.read_ahead.lock().expect("read-ahead lock");
                    match slot.take() {
                        Some(r) if r.seq == seq => Some(r.task),
                        Some(r) => {
                            r.task.abort();
                            None
                        }
                        None => None,
                    }
                };
                let plain = match ready {
                    Some(task) => match task.await {
                        Ok(read) => read?,
                        Err(_) => self.read(seq).await?.1,
                    },
                    None => self.read(seq).await?.1,
                };
                let batch = Batch::decode(&plain)
                    .with_context(|| format!("reading buffer segment {seq}"))?;
                self.index.lock().await.delivered = seq;
                self.read_ahead_after(seq).await;
                return Ok(Some((seq, batch)));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// When segment `seq` was appended (for segments recovered from disk: when recovered).
    pub async fn appended_at(&self, seq: u64) -> Option<std::time::Instant> {
        let index = self.index.lock().await;
        index
            .entries
            .iter()
            .find(|e| e.seq == seq)
            .map(|e| e.appended)
    }

    /// Hand out segments again from the oldest one kept (after the target restarts).
    pub async fn rewind(&self) {
        self.drop_read_ahead(u64::MAX);
        self.index.lock().await.delivered = 0;
    }

    /// The target committed segment `seq`: delete it and everything before it.
    pub async fn release(self: &Arc<Self>, seq: u64) -> Result<()> {
        let released: Vec<u64> = {
            let mut index = self.index.lock().await;
            let mut out = Vec::new();
            while index.entries.front().is_some_and(|e| e.seq <= seq) {
                let e = index.entries.pop_front().expect("checked front");
                index.bytes -= e.size;
                out.push(e.seq);
            }
            out
        };
        // Room is made as soon as the target committed; deleting is housekeeping (a
        // segment left behind by a crash here is at or before the committed position,
        // so `recover` deletes it).
        self.changed.notify_waiters();
        self.drop_read_ahead(seq);
        let Some(last) = released.last().copied() else {
            return Ok(());
        };
        self.released.fetch_max(last, Ordering::SeqCst);
        // Deleting is housekeeping, off the target's path. The mark goes first, so recovery
        // knows which segments must still exist; a mark that lands late is only older, which
        // makes recovery resend more, never less.
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mark = me.released.load(Ordering::SeqCst).to_be_bytes();
            let result = async {
                me.retrying("recording released segments", || {
                    me.store.put(RELEASED_MARK, &mark)
                })
                .await?;
                for s in released {
                    me.delete(s).await?;
                }
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(store = %me.store.describe(), error = %format!("{e:#}"), "cannot delete released buffer segments; the next start deletes them");
            }
        });
        let mut tasks = self.housekeeping.lock().expect("housekeeping lock");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Kind, TableRows};
    use std::time::Duration;

    fn batch(kind: Kind, pos: u8, size: usize) -> Batch {
        Batch {
            kind,
            position: vec![1, pos],
            lag_bytes: 0,
            continues: false,
            tables: vec![TableRows {
                namespace: "s".into(),
                name: "t".into(),
                first_of_table: false,
                row_count: 1,
                ipc: vec![0; size],
            }],
        }
    }

    fn config(url: &str) -> BufferConfig {
        BufferConfig {
            url: url.to_string(),
            max_bytes: 500,
            key: None,
            segments_per_key: 2,
        }
    }

    #[tokio::test]
    async fn a_lost_segment_drops_what_follows_and_numbering_continues_after_releases() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/buf", dir.path().display());
        let open = || Buffer::open(&config(&url), BufferMetrics::default()).unwrap();
        let buffer = open();
        for pos in 1..=4 {
            buffer.append(&batch(Kind::Changes, pos, 10)).await.unwrap();
            buffer.flush().await.unwrap();
        }
        buffer.release(1).await.unwrap();
        buffer.settle().await;
        // A restart keeps 2..4: the released mark says 1 is gone on purpose.
        let again = open();
        let rec = again.recover(Some(&[1, 1])).await.unwrap();
        assert_eq!(rec.segments, 3);
        // The store loses segment 3 (acknowledged, then gone): nothing after 2 can be trusted.
        std::fs::remove_file(dir.path().join("buf/00000000000000000003.seg")).unwrap();
        let third = open();
        let rec = third.recover(Some(&[1, 1])).await.unwrap();
        assert_eq!(rec.segments, 0, "a hole drops the buffered segments");
        assert_eq!(rec.last_position, None);
        // Numbering continues after the released mark, so the next recovery finds no false hole.
        let seq = third.append(&batch(Kind::Changes, 5, 10)).await.unwrap();
        third.flush().await.unwrap();
        assert!(seq > 1, "{seq}");
        third.release(seq).await.unwrap();
        third.settle().await;
        let seq2 = third.append(&batch(Kind::Changes, 6, 10)).await.unwrap();
        third.flush().await.unwrap();
        let fourth = open();
        let rec = fourth.recover(Some(&[1, 5])).await.unwrap();
        assert_eq!(rec.segments, 1);
        assert_eq!(rec.last_position, Some(vec![1, 6]));
        assert_eq!(seq2, seq + 1);
    }

    #[tokio::test]
    async fn bounded_ordered_durable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/buf", dir.path().display());
        let open = || Buffer::open(&config(&url), BufferMetrics::default()).unwrap();
        let buffer = open();
        buffer.append(&batch(Kind::Changes, 1, 800)).await.unwrap();
        buffer.flush().await.unwrap();
        assert!(!buffer.wait_for_room(Duration::from_millis(10)).await);
        let (seq, b) = buffer
            .next(Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.position, vec![1, 1]);
        buffer.append(&batch(Kind::Changes, 2, 10)).await.unwrap();
        buffer.flush().await.unwrap();
        buffer.release(seq).await.unwrap();
        buffer.settle().await;
        assert!(buffer.wait_for_room(Duration::from_millis(10)).await);

        // A new process sees what was not released.
        let again = open();
        let rec = again.recover(Some(&[1, 1])).await.unwrap();
        assert_eq!(rec.segments, 1);
        assert_eq!(rec.last_position, Some(vec![1, 2]));
        let (_, b) = again
            .next(Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.position, vec![1, 2]);
        again.append(&batch(Kind::Snapshot, 3, 10)).await.unwrap();
        again.flush().await.unwrap();
        let third = open();
        assert_eq!(third.recover(None).await.unwrap().segments, 0);
        assert_eq!(third.retries(), 0);
        assert!(third.unavailable_since().is_none());
    }

    #[tokio::test]
    async fn directory_segments_are_encrypted_under_a_keyring_next_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/buf", dir.path().display());
        let buffer = Buffer::open(&config(&url), BufferMetrics::default()).unwrap();
        let mut b = batch(Kind::Changes, 1, 0);
        b.tables[0].ipc = b"very recognisable row data".repeat(4);
        buffer.append(&b).await.unwrap();
        buffer.flush().await.unwrap();
        let ring = dir.path().join("buf.keyring.json");
        let mode = std::fs::metadata(&ring).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let stored = std::fs::read(dir.path().join("buf/00000000000000000001.seg")).unwrap();
        assert!(stored.starts_with(b"CVSG"));
        assert!(
            !stored
                .windows(b"recognisable".len())
                .any(|w| w == b"recognisable")
        );
        assert!(segment_kid(&stored).unwrap().contains("buf.keyring.json#1"));

        // A segment moved to another sequence number does not open; recovery drops it
        // (the source sends its data again) rather than replaying it out of order.
        std::fs::copy(
            dir.path().join("buf/00000000000000000001.seg"),
            dir.path().join("buf/00000000000000000002.seg"),
        )
        .unwrap();
        let again = Buffer::open(&config(&url), BufferMetrics::default()).unwrap();
        let rec = again.recover(None).await.unwrap();
        assert_eq!(rec.segments, 0);
        assert!(
            std::fs::read_dir(dir.path().join("buf"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_foreign_key_fails_recovery_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/buf", dir.path().display());
        let buffer = Buffer::open(&config(&url), BufferMetrics::default()).unwrap();
        buffer.append(&batch(Kind::Changes, 1, 10)).await.unwrap();
        buffer.flush().await.unwrap();
        let mut other = config(&url);
        other.key = Some(format!("file://{}/other.json", dir.path().display()));
        let again = Buffer::open(&other, BufferMetrics::default()).unwrap();
        let e = format!("{:#}", again.recover(None).await.err().unwrap());
        assert!(e.contains("buf.keyring.json#1"), "{e}");
        assert!(e.contains("cannot be opened"), "{e}");
    }

    #[test]
    fn blob_buffers_need_a_key() {
        let e = open_key(&config("https://acct.blob.core.windows.net/c/p"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("`buffer.key` is required"), "{e}");
        assert_eq!(
            default_keyring_path(Path::new("/var/lib/culvert/orders/")).unwrap(),
            PathBuf::from("/var/lib/culvert/orders.keyring.json")
        );
    }

    #[test]
    fn key_faults_are_classified_through_the_error_chain() {
        let unavailable = KeyError::Unavailable {
            resource: "https://v.vault.azure.net/keys/k".into(),
            detail: "503".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let sealed = anyhow::Error::new(SealError {
            kek: "k".into(),
            source: unavailable,
        })
        .context("encrypting segment 1");
        assert!(matches!(
            classify(&sealed),
            Fault::Transient(Some(d)) if d == Duration::from_secs(3)
        ));
        let forbidden = anyhow::Error::new(OpenError::Key {
            seq: 1,
            kid: "k/1".into(),
            source: KeyError::Forbidden {
                resource: "k".into(),
                operation: "unwrapKey".into(),
                permission: "unwrapKey".into(),
                detail: "403".into(),
            },
        });
        assert!(matches!(classify(&forbidden), Fault::Permanent));
        assert!(!is_corrupt(&forbidden));
        let store = anyhow::Error::new(StoreFault {
            transient: true,
            retry_after: None,
            message: "503".into(),
        });
        assert!(matches!(classify(&store), Fault::Transient(None)));
        assert!(matches!(
            classify(&anyhow::anyhow!("something else")),
            Fault::Permanent
        ));
    }

    #[tokio::test]
    async fn a_full_disk_is_retried_and_reported() {
        let metrics = BufferMetrics::default();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/buf", dir.path().display());
        let buffer = Buffer::open(&config(&url), metrics.clone()).unwrap();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let out = buffer
            .retrying("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(
                        anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::StorageFull))
                            .context("writing"),
                    )
                } else {
                    assert!(buffer.unavailable_since().is_some());
                    assert_eq!(metrics.unavailable.get(), 1);
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert_eq!(buffer.retries(), 2);
        assert_eq!(metrics.retries.get(), 2);
        assert_eq!(metrics.unavailable.get(), 0);
        assert!(buffer.unavailable_since().is_none());
        let e = buffer
            .retrying("test", || async {
                Err::<(), _>(anyhow::Error::new(std::io::Error::from(
                    std::io::ErrorKind::PermissionDenied,
                )))
            })
            .await
            .unwrap_err();
        assert!(format!("{e:#}").starts_with("test"), "{e:#}");
    }
}

//! The durable, bounded queue of batches between a pipeline's source and target.
//!
//! The source side appends a segment and only then asks for more; the target side
//! reads segments in order and releases them once they are committed. Appends wait
//! while the buffered bytes exceed the bound, so memory and disk stay bounded.

mod file;

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::sync::{Mutex, Notify};

use crate::batch::Batch;
pub use file::FileStore;

/// Where segments are kept.
pub enum SegmentStore {
    /// A local directory.
    File(FileStore),
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
            other => bail!(
                "buffer url scheme `{other}` is not supported by this agent; use file:///absolute/path"
            ),
        }
    }

    async fn put(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        match self {
            SegmentStore::File(f) => f.put(seq, bytes).await,
        }
    }

    async fn get(&self, seq: u64) -> Result<Vec<u8>> {
        match self {
            SegmentStore::File(f) => f.get(seq).await,
        }
    }

    async fn delete(&self, seq: u64) -> Result<()> {
        match self {
            SegmentStore::File(f) => f.delete(seq).await,
        }
    }

    async fn list(&self) -> Result<Vec<u64>> {
        match self {
            SegmentStore::File(f) => f.list().await,
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
    max_bytes: u64,
    index: Mutex<Index>,
    changed: Notify,
}

/// What survived in the buffer from an earlier run.
pub struct Recovered {
    /// Position of the newest buffered batch, if any survived.
    pub last_position: Option<Vec<u8>>,
    /// Segments kept.
    pub segments: usize,
}

impl Buffer {
    /// A buffer over `store` holding at most about `max_bytes`.
    pub fn new(store: SegmentStore, max_bytes: u64) -> Arc<Buffer> {
        Arc::new(Buffer {
            store,
            max_bytes: max_bytes.max(1),
            index: Mutex::new(Index {
                entries: VecDeque::new(),
                next_seq: 1,
                delivered: 0,
                bytes: 0,
            }),
            changed: Notify::new(),
        })
    }

    /// Load segments left by an earlier run. Segments at or before `committed` are
    /// deleted; the rest are kept only when they continue the committed stream with
    /// changes (a snapshot in flight is restarted by the source, so its chunks go).
    pub async fn recover(&self, committed: Option<&[u8]>) -> Result<Recovered> {
        let mut seqs = self.store.list().await?;
        seqs.sort_unstable();
        let mut kept: Vec<Entry> = Vec::new();
        let mut discard = false;
        let mut max_seq = 0;
        for seq in seqs {
            max_seq = max_seq.max(seq);
            let bytes = self.store.get(seq).await?;
            let batch = match Batch::decode(&bytes) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(seq, error = %e, "dropping unreadable buffer segment");
                    discard = true;
                    self.store.delete(seq).await?;
                    continue;
                }
            };
            if committed.is_some_and(|c| batch.position.as_slice() <= c) {
                self.store.delete(seq).await?;
                continue;
            }
            if batch.kind == crate::batch::Kind::Snapshot {
                discard = true;
            }
            kept.push(Entry {
                seq,
                size: bytes.len() as u64,
                position: batch.position,
                appended: std::time::Instant::now(),
            });
        }
        if discard {
            for e in kept.drain(..) {
                self.store.delete(e.seq).await?;
            }
        }
        let mut index = self.index.lock().await;
        index.next_seq = max_seq + 1;
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

    /// Durably append a batch; returns its sequence number.
    pub async fn append(&self, batch: &Batch) -> Result<u64> {
        let bytes = batch.encode();
        let seq = {
            let mut index = self.index.lock().await;
            let seq = index.next_seq;
            index.next_seq += 1;
            seq
        };
        self.store.put(seq, &bytes).await?;
        let mut index = self.index.lock().await;
        index.bytes += bytes.len() as u64;
        index.entries.push_back(Entry {
            seq,
            size: bytes.len() as u64,
            position: batch.position.clone(),
            appended: std::time::Instant::now(),
        });
        drop(index);
        self.changed.notify_waiters();
        Ok(seq)
    }

    /// The oldest segment not yet handed out, waiting up to `wait` for one.
    pub async fn next(&self, wait: std::time::Duration) -> Result<Option<(u64, Batch)>> {
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
                let bytes = self.store.get(seq).await?;
                let batch = Batch::decode(&bytes)
                    .with_context(|| format!("reading buffer segment {seq}"))?;
                self.index.lock().await.delivered = seq;
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
        self.index.lock().await.delivered = 0;
    }

    /// The target committed segment `seq`: delete it and everything before it.
    pub async fn release(&self, seq: u64) -> Result<()> {
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
        for s in released {
            self.store.delete(s).await?;
        }
        self.changed.notify_waiters();
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

    #[tokio::test]
    async fn bounded_ordered_durable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let buffer = Buffer::new(SegmentStore::open(&url).unwrap(), 500);
        buffer.append(&batch(Kind::Changes, 1, 800)).await.unwrap();
        assert!(!buffer.wait_for_room(Duration::from_millis(10)).await);
        let (seq, b) = buffer
            .next(Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.position, vec![1, 1]);
        buffer.append(&batch(Kind::Changes, 2, 10)).await.unwrap();
        buffer.release(seq).await.unwrap();
        assert!(buffer.wait_for_room(Duration::from_millis(10)).await);

        // A new process sees what was not released.
        let again = Buffer::new(SegmentStore::open(&url).unwrap(), 500);
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
        let third = Buffer::new(SegmentStore::open(&url).unwrap(), 500);
        assert_eq!(third.recover(None).await.unwrap().segments, 0);
    }
}

//! Segments as files in a local directory, written atomically and synced.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A directory of `NNNNNNNNNNNNNNNNNNNN.seg` files.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Open (creating) the directory.
    pub fn open(dir: &Path) -> Result<FileStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating buffer directory {}", dir.display()))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.seg"))
    }

    /// Write a segment durably: temporary file, fsync, rename, fsync the directory.
    pub async fn put(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        let path = self.path(seq);
        let dir = self.dir.clone();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || -> Result<()> {
            use std::io::Write;
            // Unique per write: the released mark is rewritten by concurrent releases.
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = path.with_extension(format!("{n}.tmp"));
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&bytes)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.sync_data()
                .with_context(|| format!("syncing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
            Ok(())
        })
        .await?
    }

    /// Read a segment.
    pub async fn get(&self, seq: u64) -> Result<Vec<u8>> {
        let path = self.path(seq);
        tokio::fs::read(&path)
            .await
            .with_context(|| format!("reading buffer segment {}", path.display()))
    }

    /// Delete a segment (missing is fine).
    pub async fn delete(&self, seq: u64) -> Result<()> {
        match tokio::fs::remove_file(self.path(seq)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("deleting buffer segment")
            }
            _ => Ok(()),
        }
    }

    /// Sequence numbers present.
    pub async fn list(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dir)
            .await
            .with_context(|| format!("listing {}", self.dir.display()))?;
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                out.push(seq);
            } else if name.ends_with(".tmp") {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
        Ok(out)
    }
}

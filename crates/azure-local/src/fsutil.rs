//! Atomic file replacement, so readers (and a restart after a crash) never see a half-written file,
//! and loading of the versioned JSON state files.

use crate::state::StateError;
use serde::de::DeserializeOwned;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Replaces `path` with `contents`: write a sibling temp file, fsync it, rename it over, fsync the directory.
///
/// The file is created with mode 0600 because the state file holds private keys.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename itself is only durable once the directory entry is flushed.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and reads the JSON state file `file` in it: `None` when the file does not exist
/// yet, an error when it cannot be read, is not valid JSON for `T`, or its `format_version` (as
/// `version_of` reports it) is not `version`. Also returns the file's path.
pub fn load_versioned<T: DeserializeOwned>(
    dir: &Path,
    file: &str,
    version: u32,
    version_of: impl FnOnce(&T) -> u32,
) -> Result<(PathBuf, Option<T>), StateError> {
    fs::create_dir_all(dir).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(file);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((path, None)),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let data: T = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let found = version_of(&data);
    if found != version {
        return Err(StateError::Corrupt {
            path,
            message: format!("format_version {found} is not {version}"),
        });
    }
    Ok((path, Some(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

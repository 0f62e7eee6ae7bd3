//! The part of cloud-init a scale-set instance needs: `write_files` entries of a
//! `#cloud-config` document, and `KEY=VALUE` environment files.
//!
//! Only what the control plane writes is understood: top-level `write_files:` list items with
//! single-line `path`, `encoding: b64` (or `base64`), `content` and optional `permissions`
//! (octal). Other entries (plain or block-scalar content, gzip) are skipped, and every other
//! top-level key (`runcmd`, `packages`, ...) is ignored: the stand-in runs the agent itself.

use base64::Engine as _;
use std::io;
use std::path::{Component, Path, PathBuf};

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// The absolute path on the instance.
    pub path: String,
    /// The decoded content.
    pub content: Vec<u8>,
    /// File mode bits, if given.
    pub permissions: Option<u32>,
}

/// The files of a base64 `customData`; empty unless it is a `#cloud-config` document.
pub fn files_of_custom_data(custom_data: &str) -> Vec<WriteFile> {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(custom_data.trim()) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    if !text.trim_start().starts_with("#cloud-config") {
        return Vec::new();
    }
    write_files(&text)
}

/// The b64-encoded `write_files` entries of a `#cloud-config` document.
pub fn write_files(text: &str) -> Vec<WriteFile> {
    #[derive(Default)]
    struct Entry {
        path: Option<String>,
        content: Option<String>,
        encoding: Option<String>,
        permissions: Option<String>,
    }
    fn finish(entry: Option<Entry>, out: &mut Vec<WriteFile>) {
        let Some(e) = entry else { return };
        let b64 = matches!(e.encoding.as_deref(), Some("b64" | "base64"));
        if let (true, Some(path), Some(content)) = (b64, e.path, e.content)
            && let Ok(content) = base64::engine::general_purpose::STANDARD.decode(content)
        {
            let permissions = e
                .permissions
                .and_then(|p| u32::from_str_radix(p.trim_start_matches("0o"), 8).ok());
            out.push(WriteFile {
                path,
                content,
                permissions,
            });
        }
    }

    let mut out = Vec::new();
    let mut in_list = false;
    let mut current: Option<Entry> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('-') {
            finish(current.take(), &mut out);
            in_list = line.trim_end() == "write_files:";
            continue;
        }
        if !in_list {
            continue;
        }
        let field = match trimmed.strip_prefix('-') {
            Some(rest) => {
                finish(current.take(), &mut out);
                current = Some(Entry::default());
                rest.trim_start()
            }
            None => trimmed,
        };
        let (Some(entry), Some((key, value))) = (current.as_mut(), field.split_once(':')) else {
            continue;
        };
        let value = unquote(value.trim()).to_owned();
        match key.trim() {
            "path" => entry.path = Some(value),
            "content" => entry.content = Some(value),
            "encoding" => entry.encoding = Some(value.to_ascii_lowercase()),
            "permissions" => entry.permissions = Some(value),
            _ => {}
        }
    }
    finish(current, &mut out);
    out
}

/// The `KEY=VALUE` lines of an environment file (blank lines, `#` comments and an `export `
/// prefix allowed; one pair of matching quotes around a value is removed).
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), unquote(v.trim()).to_owned()))
        })
        .collect()
}

/// Where `path` (absolute on the instance) lives under `root`; `None` if it escapes it.
pub fn under_root(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(rel))
}

/// Writes `files` under `root`, creating directories and applying permissions.
pub fn install(root: &Path, files: &[WriteFile]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let Some(target) = under_root(root, &f.path) else {
            tracing::warn!(path = %f.path, "cloud-init file path escapes the instance root; skipped");
            continue;
        };
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&target, &f.content)?;
        if let Some(mode) = f.permissions {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

fn unquote(v: &str) -> &str {
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_b64_write_files_and_ignores_the_rest() {
        let doc = format!(
            "#cloud-config\nwrite_files:\n  - path: /etc/culvert/agent.env\n    permissions: '0600'\n    encoding: b64\n    content: {}\n  - path: /etc/plain\n    content: hello\n  - path: \"/etc/systemd/system/x.service\"\n    encoding: base64\n    content: {}\nruncmd:\n  - [sh, -c, \"echo hi\"]\n",
            b64("A=1\n"),
            b64("[Unit]\n")
        );
        let files = files_of_custom_data(&b64(&doc));
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "/etc/culvert/agent.env");
        assert_eq!(files[0].content, b"A=1\n");
        assert_eq!(files[0].permissions, Some(0o600));
        assert_eq!(files[1].path, "/etc/systemd/system/x.service");
        assert_eq!(files[1].permissions, None);
        assert!(files_of_custom_data(&b64("#!/bin/sh\necho\n")).is_empty());
    }

    #[test]
    fn env_files_and_root_confinement() {
        assert_eq!(
            parse_env("# c\nA=1\nexport B=\"two words\"\n\nC='x=y'\nbad\n"),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ]
        );
        let root = Path::new("/r");
        assert_eq!(under_root(root, "/etc/a"), Some(PathBuf::from("/r/etc/a")));
        assert_eq!(under_root(root, "/etc/../../x"), None);
    }

    #[test]
    fn install_writes_files_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = vec![WriteFile {
            path: "/etc/culvert/agent.env".into(),
            content: b"A=1\n".to_vec(),
            permissions: Some(0o600),
        }];
        install(dir.path(), &files).unwrap();
        let p = dir.path().join("etc/culvert/agent.env");
        assert_eq!(std::fs::read(&p).unwrap(), b"A=1\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

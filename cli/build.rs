//! Embeds the connector project templates, the SDKs and the WIT, so `culvert connector new`
//! writes a project that builds without anything else from this repository.

use std::path::{Path, PathBuf};

/// Directories never copied into a new project: build output and installed packages.
const SKIP: &[&str] = &[
    "target",
    "node_modules",
    "dist",
    "__pycache__",
    ".venv",
    ".pytest_cache",
];

/// Directories of the SDKs that hold their own tests, not part of a project.
const SDK_SKIP: &[&str] = &["test", "tests", "testdata"];

/// Collects the files under `dir`; returns whether no skipped directory lies anywhere below it.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> bool {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    let mut clean = true;
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            let in_sdk = path
                .parent()
                .and_then(Path::parent)
                .is_some_and(|p| p.file_name().is_some_and(|n| n == "sdk"));
            if SKIP.contains(&name) {
                clean = false;
            } else if !(in_sdk && SDK_SKIP.contains(&name)) {
                clean &= walk(root, &path, out);
            }
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
            let rel = path
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path.canonicalize().expect("file path")));
        }
    }
    // Cargo watches a directory by the newest file anywhere below it, so one holding installed
    // packages or bytecode (rewritten by every `npm install`) is watched through its files and
    // subdirectories instead; the others are watched whole, so new files count too.
    if clean {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    clean
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("cli lives in the workspace root");
    let mut files = Vec::new();
    for top in ["templates", "sdk", "wit"] {
        let dir = root.join(top);
        if dir.is_dir() {
            walk(root, &dir, &mut files);
        }
    }
    let mut code = String::from(
        "/// Every embedded file: path relative to the repository root, bytes.\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (rel, abs) in files {
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("scaffold_files.rs");
    std::fs::write(out, code).expect("writing the embedded file list");
}

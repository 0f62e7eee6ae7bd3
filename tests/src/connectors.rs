//! Connector projects in end-to-end tests: scaffolded with `culvert connector new`, built
//! with their own `build.sh`, checked with `culvert connector test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::agent::binary;
use crate::stack::Run;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// Run `culvert ARGS` without a control plane.
pub fn culvert(args: &[&str]) -> Run {
    Run::from(
        Command::new(binary("culvert"))
            .args(args)
            .output()
            .expect("run culvert"),
    )
}

/// `culvert connector new NAME --lang LANG --kind KIND --dir WORK/NAME`.
pub fn scaffold(work: &Path, name: &str, lang: &str, kind: &str) -> PathBuf {
    let dir = work.join(name);
    let r = culvert(&[
        "connector",
        "new",
        name,
        "--lang",
        lang,
        "--kind",
        kind,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "connector new failed: {}{}", r.stdout, r.stderr);
    dir
}

/// Run a project's `./build.sh` and return the component it wrote under dist/.
pub fn build(project: &Path, name: &str) -> PathBuf {
    // Rust projects share one target directory so their dependencies compile once.
    let shared = repo_root().join("target").join("connector-projects");
    let out = Command::new("./build.sh")
        .current_dir(project)
        .env("CARGO_TARGET_DIR", &shared)
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "{}/build.sh failed:\n{}\n{}",
        project.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = project.join("dist").join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{} was not written", wasm.display());
    wasm
}

/// `culvert connector test COMPONENT --config (config written to a file) EXTRA...`.
pub fn kit(component: &Path, config: &Value, extra: &[&str]) -> Run {
    let file = component.with_extension(format!(
        "kit-{}.json",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&file, config.to_string()).unwrap();
    let mut args = vec![
        "connector",
        "test",
        component.to_str().unwrap(),
        "--config",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = culvert(&args);
    let _ = std::fs::remove_file(&file);
    run
}

/// Assert the kit passed, showing its report otherwise.
pub fn assert_kit_passes(component: &Path, config: &Value, extra: &[&str]) -> String {
    let r = kit(component, config, extra);
    assert_eq!(
        r.code,
        0,
        "the kit failed {}:\n{}\n{}",
        component.display(),
        r.stdout,
        r.stderr
    );
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    r.stdout
}

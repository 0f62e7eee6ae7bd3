//! Builds the connectors in `connectors-wasm/` for `wasm32-wasip2` and embeds the
//! first-party ones, so `culvert-agent` finds them by name.

use std::path::{Path, PathBuf};
use std::process::Command;

const FIRST_PARTY: &[(&str, &str)] = &[
    ("postgres-source", "postgres_source"),
    ("postgres-target", "postgres_target"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("agent-host lives in the workspace root")
        .to_path_buf();
    let connectors = root.join("connectors-wasm");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR has the usual depth")
        .to_path_buf();
    let wasm_target_dir = target_dir.join("wasm-connectors");

    for dir in [
        "connectors-wasm/Cargo.toml",
        "connectors-wasm/Cargo.lock",
        "connectors-wasm/.cargo",
        "wit",
        "crates/pg-arrow/src",
        "crates/pg-arrow/Cargo.toml",
        "crates/pg-replication/src",
        "crates/pg-replication/Cargo.toml",
        "sdk/rust/src",
        "sdk/rust/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for member in members(&connectors) {
        println!(
            "cargo:rerun-if-changed={}",
            connectors.join(&member).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            connectors.join(&member).join("Cargo.toml").display()
        );
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&connectors)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            "wasm32-wasip2",
        ])
        .env("CARGO_TARGET_DIR", &wasm_target_dir)
        // The connectors get their own flags from connectors-wasm/.cargo/config.toml.
        .env("CARGO_ENCODED_RUSTFLAGS", "--cfg\x1ftokio_unstable");
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_")
            && !matches!(
                key.as_str(),
                "CARGO_HOME"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_MAKEFLAGS"
                    | "CARGO_NET_OFFLINE"
                    | "CARGO_REGISTRIES_CRATES_IO_PROTOCOL"
            )
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTDOCFLAGS"
                    | "DEBUG"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "TARGET"
                    | "HOST"
                    | "NUM_JOBS"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .expect("running cargo to build the wasm connectors");
    if !status.success() {
        panic!(
            "building connectors-wasm for wasm32-wasip2 failed; if the target is missing run `rustup target add wasm32-wasip2` (scripts/setup.sh does this)"
        );
    }
    let built = wasm_target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::from(
        "/// First-party connectors: name and component bytes.\npub const FIRST_PARTY: &[(&str, &[u8])] = &[\n",
    );
    for (name, file) in FIRST_PARTY {
        let path = built.join(format!("{file}.wasm"));
        assert!(path.exists(), "missing {}", path.display());
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    code.push_str(&format!(
        "/// Where the build put every component.\npub const WASM_BUILD_DIR: &str = {:?};\n",
        built.display().to_string()
    ));
    std::fs::write(out_dir.join("first_party.rs"), code).expect("writing first_party.rs");
}

fn members(connectors: &Path) -> Vec<String> {
    std::fs::read_dir(connectors)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("Cargo.toml").exists())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

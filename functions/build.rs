//! Embeds `host.json` and every `app/<name>/function.json`: they are the routing table.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let app = root.join("app");
    println!("cargo:rerun-if-changed={}", app.display());
    let host = root.join("..").join("host.json");
    println!("cargo:rerun-if-changed={}", host.display());
    let mut names: Vec<String> = std::fs::read_dir(&app)
        .expect("functions/app")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("function.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = String::from(
        "/// Every function: folder name and `function.json` text.\npub const FUNCTIONS: &[(&str, &str)] = &[\n",
    );
    for n in &names {
        let path = app.join(n).join("function.json");
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({n:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    writeln!(
        out,
        "/// `host.json`.\npub const HOST_JSON: &str = include_str!({:?});",
        host.canonicalize()
            .expect("host.json")
            .display()
            .to_string()
    )
    .unwrap();
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("functions.rs");
    std::fs::write(dest, out).unwrap();
}

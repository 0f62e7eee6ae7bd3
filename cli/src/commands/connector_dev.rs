//! Writing connectors: `culvert connector new` (a project from a template) and
//! `culvert connector test` (the conformance kit in the agent's sandbox). Neither talks
//! to the control plane.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use culvert_agent_host::config::parse_endpoint;
use culvert_agent_host::conformance;
use culvert_agent_host::limits::Limits;
use serde_json::{Map, Value};

use crate::exit::{Failure, Kind};
use crate::output::Output;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/scaffold_files.rs"));
}

/// Languages a connector project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust with the culvert-connector-sdk crate, built with cargo.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// Which side of a pipeline the connector is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProjectKind {
    /// Reads from a system: snapshot, then changes.
    Source,
    /// Writes batches into a system, each atomically with its position.
    Destination,
}

impl ProjectKind {
    fn dir(self) -> &'static str {
        match self {
            ProjectKind::Source => "source",
            ProjectKind::Destination => "destination",
        }
    }
}

fn invalid(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Kind::Invalid, message).into()
}

/// Check a connector name: it becomes a crate, package and file name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "`{name}` is not a valid connector name: use 2 to 63 lowercase letters, digits and single `-`, starting with a letter (for example `orders-api`)"
        )))
    }
}

fn pascal(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn substitute(text: &str, name: &str) -> String {
    text.replace("{{name}}", name)
        .replace("{{name_snake}}", &name.replace('-', "_"))
        .replace("{{name_pascal}}", &pascal(name))
}

/// The files of a new project: relative path and contents.
pub fn project_files(name: &str, lang: Lang, kind: ProjectKind) -> Vec<(String, Vec<u8>)> {
    let template = format!("templates/{}/{}/", lang.dir(), kind.dir());
    let sdk = format!("sdk/{}/", lang.dir());
    let mut files = Vec::new();
    for (path, bytes) in embedded::FILES {
        if let Some(rel) = path.strip_prefix(&template) {
            let contents = match std::str::from_utf8(bytes) {
                Ok(text) => substitute(text, name).into_bytes(),
                Err(_) => bytes.to_vec(),
            };
            files.push((substitute(rel, name), contents));
        } else if let Some(rel) = path.strip_prefix(&sdk) {
            files.push((format!("culvert-sdk/{rel}"), bytes.to_vec()));
        } else if let Some(rel) = path.strip_prefix("wit/") {
            files.push((format!("wit/{rel}"), bytes.to_vec()));
            if lang == Lang::Rust {
                // The Rust SDK generates its bindings from its own wit/ directory.
                files.push((format!("culvert-sdk/wit/{rel}"), bytes.to_vec()));
            }
        }
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    files
}

/// `culvert connector new`.
pub fn new_project(
    name: &str,
    lang: Lang,
    kind: ProjectKind,
    dir: Option<PathBuf>,
    output: Output,
) -> Result<()> {
    check_name(name)?;
    let root = dir.unwrap_or_else(|| PathBuf::from(name));
    if root.exists()
        && std::fs::read_dir(&root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Failure::new(
            Kind::Conflict,
            format!(
                "{} already exists and is not empty; pick another name or --dir",
                root.display()
            ),
        )
        .into());
    }
    let files = project_files(name, lang, kind);
    if !files.iter().any(|(p, _)| p == "build.sh") {
        anyhow::bail!(
            "this culvert was built without the {} {} template",
            lang.dir(),
            kind.dir()
        );
    }
    for (rel, bytes) in &files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        if rel.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", path.display()))?;
        }
    }
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "name": name,
                "lang": lang.dir(),
                "kind": kind.dir(),
                "dir": root.display().to_string(),
                "component": format!("dist/{name}.wasm"),
                "files": files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "created the {} {} connector `{name}` in {} ({} files)\nnext:\n  cd {}\n  ./build.sh                      # writes dist/{name}.wasm\n  culvert connector test dist/{name}.wasm --config config.example.json",
            lang.dir(),
            kind.dir(),
            root.display(),
            files.len(),
            root.display()
        );
    }
    Ok(())
}

/// What `culvert connector test` was asked to do.
#[derive(Debug)]
pub struct KitArgs {
    /// The component.
    pub component: PathBuf,
    /// JSON configuration file.
    pub config: PathBuf,
    /// `max-rows` per `next`.
    pub max_rows: u32,
    /// A source's read stops after this many rows.
    pub read_rows: u64,
    /// A source's read stops after this many seconds.
    pub read_seconds: u64,
    /// Linear memory cap.
    pub memory_mib: u64,
    /// CPU seconds per call.
    pub cpu_seconds_per_call: f64,
    /// Extra `host:port` endpoints.
    pub egress: Vec<String>,
    /// Table selection for a source.
    pub tables: Vec<String>,
}

fn read_config(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read --config {}: {e}", path.display())))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid(format!(
            "--config {} must hold a JSON object of settings",
            path.display()
        ))),
        Err(e) => Err(invalid(format!(
            "--config {} is not JSON: {e}",
            path.display()
        ))),
    }
}

/// Where the kit and `publish` cache compiled components between runs.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("culvert")
        .join("components")
}

/// `culvert connector test`: returns whether the component passed.
pub async fn test_component(args: KitArgs, output: Output) -> Result<bool> {
    if !args.component.is_file() {
        return Err(invalid(format!(
            "{} is not a file; build the connector first (./build.sh writes dist/NAME.wasm)",
            args.component.display()
        )));
    }
    let config = read_config(&args.config)?;
    if args.max_rows == 0 {
        return Err(invalid("--max-rows must be at least 1"));
    }
    let mut opts = conformance::Options::new(args.component.clone(), config, cache_dir());
    opts.max_rows = args.max_rows;
    opts.read_rows = args.read_rows;
    opts.read_time = Duration::from_secs(args.read_seconds);
    opts.limits = Limits {
        memory_mib: args.memory_mib,
        cpu_seconds_per_call: args.cpu_seconds_per_call,
        ..Limits::default()
    };
    opts.egress = args
        .egress
        .iter()
        .map(|e| parse_endpoint(e, "--egress").map_err(|e| invalid(e.to_string())))
        .collect::<Result<_>>()?;
    opts.selection = args.tables;
    let report = conformance::run(&opts).await?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(report.passed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["ab", "orders-api", "x1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "Orders", "1x", "a_b", "a-", "a--b", "with space"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(pascal("orders-api"), "OrdersApi");
        assert_eq!(
            substitute("{{name}} {{name_snake}} {{name_pascal}}", "my-conn"),
            "my-conn my_conn MyConn"
        );
    }
}

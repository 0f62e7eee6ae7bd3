//! The Functions app root: `host.json`, one `<name>/function.json` per function, and the handler
//! binary, laid out exactly as a deployment to Azure would be.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// Write the app root at `dir` from the texts embedded in `culvert-functions`, linking `handler`
/// (the real `culvert-functions` binary) as the executable host.json names.
pub fn write(dir: &Path, handler: &Path) -> Result<()> {
    write_from(
        dir,
        culvert_functions::bindings::HOST_JSON,
        culvert_functions::bindings::FUNCTIONS,
        handler,
    )
}

/// Lay out `host` and `functions` at `dir`; folders of functions that no longer exist are removed
/// so a newer build never serves an old route.
pub fn write_from(
    dir: &Path,
    host: &str,
    functions: &[(&str, &str)],
    handler: &Path,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join("host.json"), host)?;
    for (name, text) in functions {
        let f = dir.join(name);
        fs::create_dir_all(&f)?;
        fs::write(f.join("function.json"), text)?;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = entry.path().join("function.json").is_file()
            && !functions.iter().any(|(n, _)| *n == name);
        if stale {
            fs::remove_dir_all(entry.path())?;
        }
    }
    let exe = executable_name(host);
    let link = dir.join(&exe);
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(handler, &link)
        .with_context(|| format!("cannot link {}", link.display()))?;
    Ok(())
}

/// `customHandler.description.defaultExecutablePath` of host.json.
fn executable_name(host: &str) -> String {
    serde_json::from_str::<serde_json::Value>(host)
        .ok()
        .and_then(|v| {
            v["customHandler"]["description"]["defaultExecutablePath"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "culvert-functions".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_every_function_and_links_the_handler() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        let handler = dir.path().join("real-handler");
        fs::write(&handler, "#!/bin/sh\n").unwrap();
        fs::create_dir_all(app.join("old-function")).unwrap();
        fs::write(app.join("old-function/function.json"), "{}").unwrap();
        write(&app, &handler).unwrap();
        assert_eq!(
            fs::read_to_string(app.join("host.json")).unwrap(),
            culvert_functions::bindings::HOST_JSON
        );
        for (name, text) in culvert_functions::bindings::FUNCTIONS {
            assert_eq!(
                &fs::read_to_string(app.join(name).join("function.json")).unwrap(),
                text
            );
        }
        assert!(!app.join("old-function").exists());
        assert_eq!(
            fs::read_link(app.join("culvert-functions")).unwrap(),
            handler
        );
        // Idempotent: a second run replaces the link.
        write(&app, &handler).unwrap();
        assert_eq!(
            fs::read_link(app.join("culvert-functions")).unwrap(),
            handler
        );
    }

    #[test]
    fn the_executable_comes_from_host_json() {
        assert_eq!(
            executable_name(r#"{"customHandler":{"description":{"defaultExecutablePath":"h"}}}"#),
            "h"
        );
        assert_eq!(executable_name("{}"), "culvert-functions");
    }
}

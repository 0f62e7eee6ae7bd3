//! Checks every connector gets: `spec`, the configuration against it, and `check` on good
//! and bad configurations.

use anyhow::{Result, anyhow};
use serde_json::{Map, Value};

use super::report::Report;
use crate::bindings::{destination as dst, source as src};
use crate::sandbox::Instance;

/// One line of a `check` answer: `(name, ok, message)`.
pub(crate) type CheckLine = (String, bool, String);

/// `spec` of a source instance.
pub(crate) async fn source_spec(i: &mut Instance<src::Source>) -> Result<String> {
    i.call("spec", |s, w| {
        w.culvert_connector_source_connector().call_spec(s)
    })
    .await
    .map_err(|e| anyhow!(e))
}

/// `spec` of a destination instance.
pub(crate) async fn destination_spec(i: &mut Instance<dst::Destination>) -> Result<String> {
    i.call("spec", |s, w| {
        w.culvert_connector_destination_connector().call_spec(s)
    })
    .await
    .map_err(|e| anyhow!(e))
}

/// `spec` must be a JSON Schema for an object; returns its validator.
pub(crate) fn check_spec(report: &mut Report, spec: &str) -> Option<jsonschema::Validator> {
    let schema: Value = match serde_json::from_str(spec) {
        Ok(v) => v,
        Err(e) => {
            report.fail("spec", format!("`spec` is not JSON: {e}"));
            return None;
        }
    };
    if let Err(e) = jsonschema::meta::validate(&schema) {
        report.fail(
            "spec",
            format!(
                "`spec` is not a valid JSON Schema: {e} (at {})",
                e.instance_path()
            ),
        );
        return None;
    }
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        report.fail(
            "spec",
            "`spec` must describe a JSON object (\"type\": \"object\"): configurations are objects",
        );
        return None;
    }
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            report.fail("spec", format!("`spec` does not compile: {e}"));
            return None;
        }
    };
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let marked = |key: &str| -> Vec<String> {
        props
            .iter()
            .filter(|(_, p)| p.get(key).and_then(Value::as_bool) == Some(true))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let secrets = marked("x-culvert-secret");
    let egress = marked("x-culvert-egress");
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    report.pass(
        "spec",
        format!(
            "valid JSON Schema with {} properties; secret: {}; egress: {}",
            props.len(),
            list(&secrets),
            list(&egress)
        ),
    );
    Some(validator)
}

/// The configuration given to the kit must satisfy the spec.
pub(crate) fn check_config(
    report: &mut Report,
    validator: &jsonschema::Validator,
    config: &Map<String, Value>,
) {
    let instance = Value::Object(config.clone());
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", pointer_or_root(&e.instance_path().to_string())))
        .collect();
    if errors.is_empty() {
        report.pass("config", "the configuration satisfies the spec");
    } else {
        report.fail(
            "config",
            format!(
                "the configuration given with --config does not satisfy the connector's spec:\n{}",
                errors.join("\n")
            ),
        );
    }
}

fn pointer_or_root(p: &str) -> String {
    if p.is_empty() {
        "(root)".into()
    } else {
        p.to_string()
    }
}

/// Configurations `check` must refuse: `(what is wrong, JSON text)`.
pub(crate) fn bad_configs(
    validator: &jsonschema::Validator,
    config: &Map<String, Value>,
) -> Vec<(String, String)> {
    let mut out = vec![(
        "configuration that is not JSON".to_string(),
        "{\"unterminated".to_string(),
    )];
    if !validator.is_valid(&Value::Object(Map::new())) {
        out.push(("empty configuration {}".to_string(), "{}".to_string()));
    }
    for (key, value) in config {
        let wrong = match value {
            Value::String(_) => Value::from(12345),
            Value::Number(_) => Value::from("not a number"),
            Value::Bool(_) => Value::from("not a boolean"),
            Value::Array(_) | Value::Object(_) => Value::from(7),
            Value::Null => continue,
        };
        let mut bad = config.clone();
        bad.insert(key.clone(), wrong.clone());
        if !validator.is_valid(&Value::Object(bad.clone())) {
            out.push((
                format!("`{key}` of the wrong type ({wrong})"),
                Value::Object(bad).to_string(),
            ));
            break;
        }
    }
    out
}

/// Judge `check`'s answer to a bad configuration: it must fail, and say why.
pub(crate) fn judge_bad(report: &mut Report, what: &str, answer: Result<Vec<CheckLine>>) {
    let name = "check-rejects";
    match answer {
        Err(e) => report.fail(
            name,
            format!("`check` with a {what} did not return a report: {e:#}; return failed check-results instead"),
        ),
        Ok(lines) => match lines.iter().find(|(_, ok, _)| !ok) {
            None => report.fail(
                name,
                format!("`check` with a {what} reported nothing wrong; it must return a failed check-result that names the problem"),
            ),
            Some((n, _, m)) if m.trim().is_empty() => report.fail(
                name,
                format!("`check` with a {what} failed `{n}` without a message; say what is wrong and how to fix it"),
            ),
            Some((n, _, m)) => report.pass(name, format!("{what}: `{n}` failed with \"{}\"", first_line(m))),
        },
    }
}

/// Judge `check`'s answer to the configuration under test: every line must pass.
pub(crate) fn judge_good(report: &mut Report, answer: Result<Vec<CheckLine>>) -> bool {
    let name = "check";
    match answer {
        Err(e) => {
            report.fail(name, format!("`check` did not return a report: {e:#}"));
            false
        }
        Ok(lines) if lines.is_empty() => {
            report.fail(name, "`check` returned no check-results; report at least one line (for example `reachable`)");
            false
        }
        Ok(lines) => {
            let failed: Vec<String> = lines
                .iter()
                .filter(|(_, ok, _)| !ok)
                .map(|(n, _, m)| format!("{n}: {m}"))
                .collect();
            if failed.is_empty() {
                let names: Vec<&str> = lines.iter().map(|(n, _, _)| n.as_str()).collect();
                report.pass(
                    name,
                    format!("all {} passed ({})", lines.len(), names.join(", ")),
                );
                true
            } else {
                report.fail(
                    name,
                    format!(
                        "`check` fails with the given configuration (is the system it talks to running?):\n{}",
                        failed.join("\n")
                    ),
                );
                false
            }
        }
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > 160 {
        format!("{}…", line.chars().take(160).collect::<String>())
    } else {
        line.to_string()
    }
}

/// The limits line: peak memory and the slowest call, against the caps.
pub(crate) fn judge_limits(
    report: &mut Report,
    limits: &crate::limits::Limits,
    peak_memory: usize,
    slowest: std::time::Duration,
) {
    report.pass(
        "limits",
        format!(
            "peak linear memory {:.1} MiB of {} MiB allowed; slowest call took {:.2} s wall-clock (CPU limit {} s per call)",
            peak_memory as f64 / (1 << 20) as f64,
            limits.memory_mib,
            slowest.as_secs_f64(),
            limits.cpu_seconds_per_call
        ),
    );
}

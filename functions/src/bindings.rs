//! The functions of this app as `function.json` declares them.

use serde::Deserialize;
use serde_json::Value;

include!(concat!(env!("OUT_DIR"), "/functions.rs"));

/// One binding of a `function.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// Binding type (`httpTrigger`, `http`, `queue`, `queueTrigger`, `timerTrigger`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `in` or `out`.
    pub direction: String,
    /// Binding name.
    pub name: String,
    /// HTTP methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// HTTP route template.
    #[serde(default)]
    pub route: Option<String>,
    /// Queue name.
    #[serde(default)]
    pub queue_name: Option<String>,
}

/// A function.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    /// Folder name.
    pub name: &'static str,
    /// Bindings.
    pub bindings: Vec<Binding>,
}

impl FunctionDef {
    /// The HTTP trigger, if any.
    pub fn http_trigger(&self) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.kind == "httpTrigger")
    }

    /// Whether the host forwards requests as plain HTTP (exactly one `httpTrigger` in and one
    /// `http` out, with forwarding on) rather than as an invocation payload.
    pub fn forwarded(&self) -> bool {
        forwarding_enabled()
            && self.bindings.iter().filter(|b| b.direction == "in").count() == 1
            && self.http_trigger().is_some()
            && self
                .bindings
                .iter()
                .filter(|b| b.direction == "out")
                .count()
                == 1
            && self
                .bindings
                .iter()
                .any(|b| b.direction == "out" && b.kind == "http")
    }

    /// Names of the queue output bindings.
    pub fn queue_outputs(&self) -> Vec<&str> {
        self.bindings
            .iter()
            .filter(|b| b.direction == "out" && b.kind == "queue")
            .map(|b| b.name.as_str())
            .collect()
    }

    /// The trigger binding.
    pub fn trigger(&self) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.kind.ends_with("Trigger"))
    }
}

#[derive(Deserialize)]
struct FunctionJson {
    bindings: Vec<Binding>,
}

/// Every function, parsed.
pub fn all() -> Vec<FunctionDef> {
    FUNCTIONS
        .iter()
        .map(|(name, text)| FunctionDef {
            name,
            bindings: serde_json::from_str::<FunctionJson>(text)
                .unwrap_or_else(|e| panic!("functions/app/{name}/function.json: {e}"))
                .bindings,
        })
        .collect()
}

/// `host.json`, parsed once.
fn host() -> &'static Value {
    static HOST: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| serde_json::from_str(HOST_JSON).expect("host.json"));
    &HOST
}

/// `extensions.http.routePrefix` (default `api`).
pub fn route_prefix() -> String {
    host()["extensions"]["http"]["routePrefix"]
        .as_str()
        .unwrap_or("api")
        .to_string()
}

fn forwarding_enabled() -> bool {
    host()["customHandler"]["enableForwardingHttpRequest"].as_bool() == Some(true)
}

/// An Azure route template as axum paths: `{id:guid?}` becomes `/x` and `/x/{id}`.
pub fn axum_paths(prefix: &str, template: &str) -> Vec<String> {
    let mut base = format!("/{prefix}");
    let mut paths = Vec::new();
    for seg in template.split('/').filter(|s| !s.is_empty()) {
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let optional = inner.ends_with('?');
            let name = inner
                .trim_end_matches('?')
                .split(':')
                .next()
                .unwrap_or(inner);
            if optional {
                paths.push(base.clone());
            }
            base.push_str(&format!("/{{{name}}}"));
        } else {
            base.push('/');
            base.push_str(seg);
        }
    }
    paths.push(base);
    paths
}

/// `extensions.queues.maxDequeueCount` (default 5).
pub fn max_dequeue_count() -> u32 {
    host()["extensions"]["queues"]["maxDequeueCount"]
        .as_u64()
        .unwrap_or(5) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_axum_paths() {
        assert_eq!(
            axum_paths("api", "v1/connectors/{id:guid?}"),
            vec!["/api/v1/connectors", "/api/v1/connectors/{id}"]
        );
        assert_eq!(
            axum_paths(
                "api",
                "v1/pipelines/{id:guid}/{action:regex(^(deploy|pause)$)}"
            ),
            vec!["/api/v1/pipelines/{id}/{action}"]
        );
    }

    #[test]
    fn functions_with_queue_outputs_take_the_payload_path() {
        let all = all();
        assert!(all.len() >= 10);
        for f in &all {
            if !f.queue_outputs().is_empty() || f.http_trigger().is_none() {
                assert!(!f.forwarded(), "{}", f.name);
            }
        }
        assert!(
            all.iter()
                .find(|f| f.name == "pipelines")
                .unwrap()
                .forwarded()
        );
        assert!(
            !all.iter()
                .find(|f| f.name == "environments")
                .unwrap()
                .forwarded()
        );
    }
}

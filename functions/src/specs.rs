//! Connector types and their configuration schemas, and validation against them.
//!
//! The first-party schemas are the connectors' own `spec` exports, kept in
//! `connector-types.json`; a test compares them with what the compiled components return.
//! Registered types bring theirs with each version (`api::registry`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use culvert_control_api::FieldError;
use culvert_control_api::connectors::{ConnectorKind, ConnectorType};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Keys a connector's configuration may not hold because the pipeline owns them.
const PIPELINE_KEYS: &[(&str, &str)] = &[("tables", "set the table selection on the pipeline")];

struct Known {
    ty: ConnectorType,
    validator: Arc<jsonschema::Validator>,
}

static TYPES: LazyLock<Vec<Known>> = LazyLock::new(|| {
    let types: Vec<ConnectorType> = serde_json::from_str(include_str!("../connector-types.json"))
        .expect("connector-types.json");
    types
        .into_iter()
        .map(|ty| Known {
            validator: Arc::new(
                jsonschema::validator_for(&ty.spec).expect("connector spec is a valid JSON Schema"),
            ),
            ty,
        })
        .collect()
});

/// Every first-party connector type.
pub fn all() -> Vec<ConnectorType> {
    TYPES.iter().map(|k| k.ty.clone()).collect()
}

/// One first-party connector type by name.
pub fn get(name: &str) -> Option<ConnectorType> {
    TYPES
        .iter()
        .find(|k| k.ty.name == name)
        .map(|k| k.ty.clone())
}

/// Whether `name` is a first-party type (built into the agent).
pub fn is_first_party(name: &str) -> bool {
    TYPES.iter().any(|k| k.ty.name == name)
}

/// Names of the first-party types.
pub fn first_party_names() -> Vec<&'static str> {
    TYPES.iter().map(|k| k.ty.name.as_str()).collect()
}

/// Properties a registered spec may not declare: the agent's pipeline section uses these
/// names itself, so a connector setting of that name would be taken for the agent's own.
const RESERVED_PROPERTIES: &[&str] = &["connector", "egress", "limits"];

/// Check a spec a publisher submits: a JSON Schema object the validator compiles, valid
/// against its meta-schema, describing an object, without reserved property names.
pub fn check_spec(spec: &Value) -> Result<(), String> {
    let Some(obj) = spec.as_object() else {
        return Err("must be a JSON Schema object, for example {\"type\": \"object\", \"properties\": {...}}".into());
    };
    if let Some(t) = obj.get("type")
        && t != "object"
    {
        return Err(format!(
            "must describe an object (the configuration is a JSON object), not `\"type\": {t}`"
        ));
    }
    jsonschema::meta::validate(spec)
        .map_err(|e| format!("is not a valid JSON Schema: {e} (at {})", e.instance_path()))?;
    jsonschema::validator_for(spec).map_err(|e| format!("is not a usable JSON Schema: {e}"))?;
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for name in RESERVED_PROPERTIES {
            if props.contains_key(*name) {
                return Err(format!(
                    "declares the property `{name}`, which the agent reserves ({}); rename it",
                    RESERVED_PROPERTIES.join(", ")
                ));
            }
        }
        for (name, p) in props {
            if let Some(v) = p.get("x-culvert-secret")
                && !v.is_boolean()
            {
                return Err(format!(
                    "property `{name}`: `x-culvert-secret` must be true or false"
                ));
            }
        }
    }
    Ok(())
}

/// A connector type's configuration schema, compiled: what a configuration is checked with.
#[derive(Clone)]
pub struct TypeSpec {
    /// Type name, with the version for a registered type (`acme-source 1.2.0`).
    label: String,
    kind: ConnectorKind,
    spec: Value,
    validator: Arc<jsonschema::Validator>,
}

impl TypeSpec {
    /// A first-party type's spec; 422 naming the known types when there is none.
    pub fn first_party(name: &str) -> Result<TypeSpec, ApiError> {
        let k = TYPES.iter().find(|k| k.ty.name == name).ok_or_else(|| {
            ApiError::field(
                "/type",
                format!(
                    "unknown connector type {name:?}; known types are {}",
                    first_party_names().join(", ")
                ),
            )
        })?;
        Ok(TypeSpec {
            label: name.to_string(),
            kind: k.ty.kind,
            spec: k.ty.spec.clone(),
            validator: k.validator.clone(),
        })
    }

    /// A registered version's spec (checked when it was published).
    pub fn registered(
        name: &str,
        version: &str,
        kind: ConnectorKind,
        spec: Value,
    ) -> Result<TypeSpec, ApiError> {
        let validator = jsonschema::validator_for(&spec).map_err(|e| {
            ApiError::Internal(format!(
                "stored spec of {name} {version} does not compile: {e}"
            ))
        })?;
        Ok(TypeSpec {
            label: format!("{name} {version}"),
            kind,
            spec,
            validator: Arc::new(validator),
        })
    }

    /// Source or target.
    pub fn kind(&self) -> ConnectorKind {
        self.kind
    }

    /// Names of the fields the spec marks secret.
    pub fn secret_fields(&self) -> Vec<String> {
        self.spec["properties"]
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, p)| {
                        p.get("x-culvert-secret").and_then(Value::as_bool) == Some(true)
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Check a full configuration against the spec; errors point into `/config`.
    /// Values are never echoed, so a secret typed into the wrong field does not leak.
    pub fn validate(&self, config: &Map<String, Value>) -> Result<(), ApiError> {
        let name = &self.label;
        let mut errors = Vec::new();
        let props = self.spec["properties"].as_object();
        for key in config.keys() {
            if let Some((_, why)) = PIPELINE_KEYS.iter().find(|(p, _)| p == key) {
                errors.push(FieldError {
                    pointer: format!("/config/{key}"),
                    message: format!("not a connector setting: {why}"),
                });
            } else if props.is_some_and(|p| !p.contains_key(key)) {
                let mut names: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                names.retain(|n| !PIPELINE_KEYS.iter().any(|(p, _)| p == n));
                errors.push(FieldError {
                    pointer: format!("/config/{key}"),
                    message: format!(
                        "unknown setting for {name}; known settings are {}",
                        names.join(", ")
                    ),
                });
            }
        }
        let instance = Value::Object(config.clone());
        for e in self.validator.iter_errors(&instance) {
            errors.push(FieldError {
                pointer: format!("/config{}", e.instance_path()),
                message: e.masked().to_string(),
            });
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(ApiError::Invalid {
            detail: format!(
                "the configuration does not match the {name} spec: {}",
                errors
                    .iter()
                    .map(|e| format!("{} {}", e.pointer, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            errors,
        })
    }

    /// Split a configuration into plain fields and secret fields.
    pub fn split_secrets(&self, mut config: Map<String, Value>) -> Result<Split, ApiError> {
        let mut secrets = BTreeMap::new();
        for field in self.secret_fields() {
            match config.remove(&field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => {
                    secrets.insert(field, s);
                }
                Some(_) => {
                    return Err(ApiError::field(
                        &format!("/config/{field}"),
                        "must be a string",
                    ));
                }
            }
        }
        Ok((config, secrets))
    }
}

/// A configuration's plain fields and its secret fields.
pub type Split = (Map<String, Value>, BTreeMap<String, String>);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn fp(name: &str) -> TypeSpec {
        TypeSpec::first_party(name).unwrap()
    }

    #[test]
    fn both_first_party_types_are_known() {
        assert_eq!(fp("postgres-source").kind(), ConnectorKind::Source);
        assert_eq!(fp("postgres-target").kind(), ConnectorKind::Target);
        assert_eq!(
            fp("postgres-source").secret_fields(),
            vec!["password".to_string()]
        );
        assert!(
            TypeSpec::first_party("mysql-source")
                .err()
                .unwrap()
                .to_string()
                .contains("known types are")
        );
    }

    #[test]
    fn errors_point_at_the_field_and_never_echo_values() {
        fp("postgres-source")
            .validate(&map(json!({"host": "db", "user": "u", "database": "d"})))
            .unwrap();
        let e = fp("postgres-source")
            .validate(&map(
                json!({"host": "db", "user": "u", "database": "d", "port": "hunter2", "prot": 1, "tables": ["a"]}),
            ))
            .unwrap_err();
        let p = e.problem();
        let pointers: Vec<&str> = p.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/config/port"), "{pointers:?}");
        assert!(pointers.contains(&"/config/prot"), "{pointers:?}");
        assert!(pointers.contains(&"/config/tables"), "{pointers:?}");
        assert!(!serde_json::to_string(&p).unwrap().contains("hunter2"));
        let e = fp("postgres-target")
            .validate(&map(json!({"host": "db"})))
            .unwrap_err();
        assert!(e.to_string().contains("user"), "{e}");
    }

    #[test]
    fn secrets_are_split_off() {
        let (plain, secrets) = fp("postgres-target")
            .split_secrets(map(json!({"host": "db", "password": "pw"})))
            .unwrap();
        assert!(!plain.contains_key("password"));
        assert_eq!(secrets["password"], "pw");
    }

    #[test]
    fn registered_specs_are_checked_and_used() {
        let spec = json!({"type": "object", "required": ["url"], "properties": {
            "url": {"type": "string", "x-culvert-egress": true},
            "token": {"type": "string", "writeOnly": true, "x-culvert-secret": true}}});
        check_spec(&spec).unwrap();
        let t = TypeSpec::registered("acme", "1.0.0", ConnectorKind::Target, spec).unwrap();
        assert_eq!(t.secret_fields(), vec!["token".to_string()]);
        let e = t.validate(&map(json!({"token": "x"}))).unwrap_err();
        assert!(e.to_string().contains("acme 1.0.0 spec"), "{e}");
        for (bad, why) in [
            (json!([1]), "JSON Schema object"),
            (json!({"type": "string"}), "must describe an object"),
            (
                json!({"type": "object", "properties": {"a": {"type": "nope"}}}),
                "not a valid JSON Schema",
            ),
            (
                json!({"type": "object", "properties": {"egress": {}}}),
                "reserves",
            ),
            (
                json!({"properties": {"a": {"x-culvert-secret": "yes"}}}),
                "true or false",
            ),
        ] {
            let e = check_spec(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

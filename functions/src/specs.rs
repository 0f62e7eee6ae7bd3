//! Connector types and their configuration schemas, and validation against them.
//!
//! The schemas are the connectors' own `spec` exports, kept in `connector-types.json`; a
//! test compares them with what the compiled components return.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use culvert_control_api::FieldError;
use culvert_control_api::connectors::{ConnectorKind, ConnectorType};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Keys a connector's configuration may not hold because the pipeline owns them.
const PIPELINE_KEYS: &[(&str, &str)] = &[("tables", "set the table selection on the pipeline")];

struct Known {
    ty: ConnectorType,
    validator: jsonschema::Validator,
}

static TYPES: LazyLock<Vec<Known>> = LazyLock::new(|| {
    let types: Vec<ConnectorType> = serde_json::from_str(include_str!("../connector-types.json"))
        .expect("connector-types.json");
    types
        .into_iter()
        .map(|ty| Known {
            validator: jsonschema::validator_for(&ty.spec)
                .expect("connector spec is a valid JSON Schema"),
            ty,
        })
        .collect()
});

/// Every connector type.
pub fn all() -> Vec<ConnectorType> {
    TYPES.iter().map(|k| k.ty.clone()).collect()
}

/// One connector type by name.
pub fn get(name: &str) -> Option<ConnectorType> {
    TYPES
        .iter()
        .find(|k| k.ty.name == name)
        .map(|k| k.ty.clone())
}

fn known(name: &str) -> Result<&'static Known, ApiError> {
    TYPES.iter().find(|k| k.ty.name == name).ok_or_else(|| {
        let names: Vec<&str> = TYPES.iter().map(|k| k.ty.name.as_str()).collect();
        ApiError::field(
            "/type",
            format!(
                "unknown connector type {name:?}; known types are {}",
                names.join(", ")
            ),
        )
    })
}

/// The kind of a connector type.
pub fn kind_of(name: &str) -> Result<ConnectorKind, ApiError> {
    Ok(known(name)?.ty.kind)
}

/// Names of the fields the spec marks secret.
pub fn secret_fields(name: &str) -> Result<Vec<String>, ApiError> {
    let spec = &known(name)?.ty.spec;
    Ok(spec["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .filter(|(_, p)| p.get("x-culvert-secret").and_then(Value::as_bool) == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default())
}

/// Check a full configuration against the type's spec; errors point into `/config`.
/// Values are never echoed, so a secret typed into the wrong field does not leak.
pub fn validate(name: &str, config: &Map<String, Value>) -> Result<(), ApiError> {
    let k = known(name)?;
    let mut errors = Vec::new();
    let props = k.ty.spec["properties"].as_object();
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
    for e in k.validator.iter_errors(&instance) {
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

/// A configuration's plain fields and its secret fields.
pub type Split = (Map<String, Value>, BTreeMap<String, String>);

/// Split a configuration into plain fields and secret fields.
pub fn split_secrets(name: &str, mut config: Map<String, Value>) -> Result<Split, ApiError> {
    let mut secrets = BTreeMap::new();
    for field in secret_fields(name)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn both_first_party_types_are_known() {
        assert_eq!(kind_of("postgres-source").unwrap(), ConnectorKind::Source);
        assert_eq!(kind_of("postgres-target").unwrap(), ConnectorKind::Target);
        assert_eq!(
            secret_fields("postgres-source").unwrap(),
            vec!["password".to_string()]
        );
        assert!(
            kind_of("mysql-source")
                .unwrap_err()
                .to_string()
                .contains("known types are")
        );
    }

    #[test]
    fn errors_point_at_the_field_and_never_echo_values() {
        validate(
            "postgres-source",
            &map(json!({"host": "db", "user": "u", "database": "d"})),
        )
        .unwrap();
        let e = validate(
            "postgres-source",
            &map(json!({"host": "db", "user": "u", "database": "d", "port": "hunter2", "prot": 1, "tables": ["a"]})),
        )
        .unwrap_err();
        let p = e.problem();
        let pointers: Vec<&str> = p.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/config/port"), "{pointers:?}");
        assert!(pointers.contains(&"/config/prot"), "{pointers:?}");
        assert!(pointers.contains(&"/config/tables"), "{pointers:?}");
        assert!(!serde_json::to_string(&p).unwrap().contains("hunter2"));
        let e = validate("postgres-target", &map(json!({"host": "db"}))).unwrap_err();
        assert!(e.to_string().contains("user"), "{e}");
    }

    #[test]
    fn secrets_are_split_off() {
        let (plain, secrets) = split_secrets(
            "postgres-target",
            map(json!({"host": "db", "password": "pw"})),
        )
        .unwrap();
        assert!(!plain.contains_key("password"));
        assert_eq!(secrets["password"], "pw");
    }
}

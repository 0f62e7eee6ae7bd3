//! Typed configuration: derive `serde::Deserialize` and [`JsonSchema`] on a struct, return
//! [`spec_of::<Config>()`](spec_of) from `spec`, and read it with [`parse_config`].
//!
//! ```
//! use culvert_connector_sdk::config::{JsonSchema, parse_config, spec_of};
//! use serde::Deserialize;
//!
//! /// Settings of the example connector.
//! #[derive(Debug, Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// Blob container URL; the agent allows egress to its host.
//!     #[schemars(transform = culvert_connector_sdk::config::egress)]
//!     container_url: String,
//!     /// Shared access signature.
//!     #[schemars(transform = culvert_connector_sdk::config::secret)]
//!     sas: String,
//!     /// Rows per batch.
//!     #[serde(default = "default_batch")]
//!     batch_rows: u32,
//! }
//! fn default_batch() -> u32 { 1000 }
//!
//! let spec: serde_json::Value = serde_json::from_str(&spec_of::<Config>()).unwrap();
//! assert_eq!(spec["properties"]["sas"]["x-culvert-secret"], true);
//! let err = parse_config::<Config>(r#"{"container_url": "http://h/c", "sas": 1}"#).unwrap_err();
//! assert!(err.message.contains("`sas`"));
//! ```

use serde::de::DeserializeOwned;

pub use schemars::{JsonSchema, Schema};

use crate::types::{ConnectorError, Result};

/// JSON Schema (draft 2020-12) of `T`, pretty-printed, for a connector's `spec`.
///
/// Doc comments become `description`s, `#[serde(default = …)]` values become `default`s
/// and `#[serde(deny_unknown_fields)]` becomes `"additionalProperties": false`.
pub fn spec_of<T: JsonSchema>() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    serde_json::to_string_pretty(&schema).expect("a JSON Schema always serializes")
}

/// Field attribute `#[schemars(transform = culvert_connector_sdk::config::secret)]`:
/// the value is a credential (`"writeOnly": true, "x-culvert-secret": true`), so the
/// agent and control plane store it sealed and never show it.
pub fn secret(schema: &mut Schema) {
    schema.insert("writeOnly".to_string(), true.into());
    schema.insert("x-culvert-secret".to_string(), true.into());
}

/// Field attribute `#[schemars(transform = culvert_connector_sdk::config::egress)]`:
/// the value is a URL or `host[:port]` the connector talks to (`"x-culvert-egress": true`);
/// the agent adds its host and port to the pipeline's egress allow-list.
pub fn egress(schema: &mut Schema) {
    schema.insert("x-culvert-egress".to_string(), true.into());
}

/// Parse the configuration JSON into `T`; a `config` error names the offending field.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        config_error(&path, &inner)
    })?;
    de.end().map_err(|e| config_error(".", &e))?;
    Ok(value)
}

fn config_error(path: &str, e: &serde_json::Error) -> ConnectorError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full);
    if e.is_syntax() || e.is_eof() {
        return ConnectorError::config(format!(
            "the configuration is not valid JSON: {reason} (line {}, column {})",
            e.line(),
            e.column()
        ));
    }
    if path.is_empty() || path == "." {
        ConnectorError::config(format!("invalid configuration: {reason}"))
    } else {
        ConnectorError::config(format!("invalid configuration: field `{path}`: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Example settings.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Example {
        /// Where to send.
        #[schemars(transform = egress)]
        url: String,
        /// The token.
        #[serde(default)]
        #[schemars(transform = secret)]
        token: Option<String>,
        /// How many.
        #[serde(default = "ten")]
        rows: u64,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize, JsonSchema)]
    struct Nested {
        depth: u8,
    }

    fn ten() -> u64 {
        10
    }

    fn spec() -> serde_json::Value {
        serde_json::from_str(&spec_of::<Example>()).unwrap()
    }

    #[test]
    fn spec_is_draft_2020_12_with_markers() {
        let s = spec();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s["type"], "object");
        assert_eq!(s["required"], serde_json::json!(["url"]));
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["token"]["writeOnly"], true);
        assert_eq!(s["properties"]["token"]["x-culvert-secret"], true);
        assert_eq!(s["properties"]["url"]["x-culvert-egress"], true);
        assert_eq!(s["properties"]["url"]["description"], "Where to send.");
        assert_eq!(s["properties"]["rows"]["default"], 10);
    }

    #[test]
    fn parse_names_the_field() {
        let e = parse_config::<Example>(r#"{"url": "http://x", "rows": "many"}"#).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Config);
        assert_eq!(
            e.message,
            "invalid configuration: field `rows`: invalid type: string \"many\", expected u64"
        );
        let e = parse_config::<Example>(r#"{"url": "x", "nested": {"depth": 300}}"#).unwrap_err();
        assert!(e.message.contains("field `nested.depth`"), "{}", e.message);
    }

    #[test]
    fn parse_reports_missing_and_unknown_fields() {
        let e = parse_config::<Example>("{}").unwrap_err();
        assert_eq!(e.message, "invalid configuration: missing field `url`");
        let e = parse_config::<Example>(r#"{"url": "x", "rowz": 1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `rowz`"), "{}", e.message);
    }

    #[test]
    fn parse_reports_bad_json() {
        let e = parse_config::<Example>("{").unwrap_err();
        assert!(
            e.message.starts_with("the configuration is not valid JSON"),
            "{}",
            e.message
        );
        let e = parse_config::<Example>(r#"{"url": "x"} trailing"#).unwrap_err();
        assert!(
            e.message.starts_with("the configuration is not valid JSON"),
            "{}",
            e.message
        );
    }

    #[test]
    fn parse_applies_defaults() {
        let c = parse_config::<Example>(r#"{"url": "x"}"#).unwrap();
        assert_eq!(c.rows, 10);
        assert!(c.token.is_none() && c.nested.is_none());
    }
}

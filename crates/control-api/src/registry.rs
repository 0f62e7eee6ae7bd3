//! The connector registry: components stored by SHA-256 digest, connector types with
//! versions that pin a component, and the keys publishers sign versions with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connectors::ConnectorKind;

/// Largest component the registry stores (the Functions host's request limit).
pub const MAX_COMPONENT_BYTES: usize = 100 * 1024 * 1024;

/// Media type of component bodies.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";

/// The message a publisher signs for one version: what the signature vouches for.
pub fn signed_message(name: &str, version: &str, digest: &str) -> String {
    format!("culvert-connector:v1:{name}:{version}:{digest}")
}

/// Whether `s` is a digest as the registry writes them: 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A stored component (`PUT /v1/components/{digest}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Component {
    /// Lowercase hex SHA-256 of the bytes.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Which world it exports: a source, or a destination (a target).
    pub kind: ConnectorKind,
    /// Stored.
    pub created_at: DateTime<Utc>,
}

/// Resource limits a connector version asks for; unset fields take the agent's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConnectorLimits {
    /// Linear memory cap in MiB (16 to 4096; agent default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// CPU seconds one call may spend (0.1 to 600; agent default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds_per_call: Option<f64>,
    /// Wall-clock seconds one call may take (1 to 3600; agent default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_seconds: Option<f64>,
}

/// An ed25519 signature over [`signed_message`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VersionSignature {
    /// The signing key's id (see `GET /v1/signing-keys`).
    pub key_id: String,
    /// Base64 of the 64-byte signature.
    pub value: String,
}

/// Body of `POST /v1/connector-types/{name}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VersionPublish {
    /// Semantic version, for example `1.2.0` (no build metadata).
    pub version: String,
    /// Digest of a component already uploaded with `PUT /v1/components/{digest}`.
    pub digest: String,
    /// JSON Schema of the configuration (the component's `spec` export). Secret fields carry
    /// `"x-culvert-secret": true`.
    pub spec: Value,
    /// Static `host:port` endpoints the connector needs besides those its configuration names.
    #[serde(default)]
    pub egress: Vec<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ConnectorLimits>,
    /// What this version is or changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Signature over `culvert-connector:v1:{name}:{version}:{digest}`; required once the
    /// organization has signing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<VersionSignature>,
}

/// One published version of a registered connector type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectorTypeVersion {
    /// Connector type.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Source or target (from the component).
    pub kind: ConnectorKind,
    /// The component's SHA-256; agents refuse bytes that do not hash to it.
    pub digest: String,
    /// Component size in bytes.
    pub size: u64,
    /// JSON Schema of the configuration. Absent in type listings (see the type's `spec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    /// Static `host:port` endpoints the agent allows besides those the configuration names.
    pub egress: Vec<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ConnectorLimits>,
    /// What this version is or changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The signing key whose signature was verified at publication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Published.
    pub created_at: DateTime<Utc>,
}

/// Body of `PUT /v1/signing-keys/{key_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SigningKeyPut {
    /// Base64 of the 32-byte ed25519 public key.
    pub public_key: String,
}

/// A key publishers sign connector versions with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKey {
    /// Id: letters, digits, `.`, `_` and `-`, up to 64 characters.
    pub key_id: String,
    /// Base64 of the 32-byte ed25519 public key.
    pub public_key: String,
    /// Added.
    pub created_at: DateTime<Utc>,
}

/// The component an agent fetches for a registered connector type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComponentRef {
    /// Lowercase hex SHA-256 of the bytes.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lowercase_hex_of_64() {
        assert!(is_digest(&"a".repeat(64)));
        assert!(!is_digest(&"A".repeat(64)));
        assert!(!is_digest(&"a".repeat(63)));
        assert!(!is_digest(&"g".repeat(64)));
        assert_eq!(
            signed_message("acme-source", "1.2.0", "ab"),
            "culvert-connector:v1:acme-source:1.2.0:ab"
        );
    }
}

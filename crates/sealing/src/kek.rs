//! Key-encryption keys: what wraps the data keys of sealed secrets and buffer segments.
//!
//! A data key never leaves the process in plaintext; only its wrapped form is stored,
//! together with the versioned id of the key that wrapped it, so a rotated key keeps
//! opening what it wrapped before.

use std::time::Duration;

/// A data key wrapped by a key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// Versioned id of the wrapping key (a Key Vault key URL with its version, or a local id).
    pub kid: String,
    /// Wrapping algorithm (`RSA-OAEP-256`, `A256GCM-local`).
    pub alg: String,
    /// The wrapped bytes.
    pub bytes: Vec<u8>,
}

/// Why a key operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// A transient fault (unreachable, throttled, 5xx): retrying later may succeed.
    #[error("{resource} is unavailable: {detail}")]
    Unavailable {
        /// The key or vault involved.
        resource: String,
        /// What happened, without secret material.
        detail: String,
        /// How long the service asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The identity lacks a permission.
    #[error(
        "{resource} refused `{operation}` for this identity: grant it the `{permission}` key permission on the vault ({detail})"
    )]
    Forbidden {
        /// The key or vault involved.
        resource: String,
        /// The operation attempted.
        operation: String,
        /// The permission that is missing.
        permission: String,
        /// The service's own message.
        detail: String,
    },
    /// The key does not exist (or that version does not).
    #[error("{resource} does not exist: {detail}")]
    NotFound {
        /// The key involved.
        resource: String,
        /// The service's own message.
        detail: String,
    },
    /// The key exists but cannot be used for this (wrong kind, malformed input, tampered data).
    #[error("{0}")]
    Invalid(String),
}

impl KeyError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, KeyError::Unavailable { .. })
    }
}

/// A key that wraps and unwraps data keys.
#[async_trait::async_trait]
pub trait KeyEncryptionKey: Send + Sync {
    /// The key as named in errors and logs (never key material).
    fn describe(&self) -> String;

    /// Wrap `dek` with the key's current version.
    async fn wrap(&self, dek: &[u8]) -> Result<Wrapped, KeyError>;

    /// Unwrap bytes wrapped by the version `wrapped.kid` names.
    async fn unwrap(&self, wrapped: &Wrapped) -> Result<Vec<u8>, KeyError>;
}

//! Envelope encryption: connector secrets and buffer segments under data keys wrapped by
//! a key-encryption key.
//!
//! A fresh AES-256-GCM data key encrypts the payload; a key-encryption key wraps the data
//! key. For connector secrets the control plane wraps with the environment's key (Key
//! Vault `encrypt`, or a local RSA public key) and only the environment's agents can
//! unwrap; the control plane can seal but never open.

mod envelope;
pub mod kek;
pub mod keyring;
mod rsa_key;

pub use envelope::{SealError, open, seal, sealed_kid};
pub use kek::{KeyEncryptionKey, KeyError, Wrapped};
pub use keyring::Keyring;
pub use rsa_key::{OpeningKey, SealingKey};

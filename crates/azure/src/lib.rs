//! Azure for the control plane and the agent: one credential abstraction over
//! `azure_identity`, Key Vault keys as key-encryption keys, Blob and Queue authorization.

pub mod error;
pub mod identity;
pub mod keyvault;
pub mod sas;
pub mod secrets;
pub mod transport;
pub mod vault_url;

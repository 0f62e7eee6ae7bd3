//! Local stand-ins for two Azure services that cannot run on a developer machine or in CI:
//! the App Service managed-identity token endpoint and the Key Vault data plane.
//!
//! Both speak Azure's documented REST wire format, so the official Azure SDK for Rust clients
//! (`azure_identity`'s `ManagedIdentityCredential`, `KeyClient`, `SecretClient`) work against
//! them unchanged.
//!
//! # Running
//!
//! `culvert-azure-local --state-dir DIR --config FILE [--ready-file FILE]`
//!
//! ```json
//! {
//!   "tenant_id": "11111111-2222-4333-8444-555555555555",
//!   "identities": [{"name": "agent", "client_id": "…", "object_id": "…"}],
//!   "token_endpoint": {"listen": "127.0.0.1:0", "header": "value clients send"},
//!   "vaults": [{"name": "culvert-kv", "listen": "127.0.0.1:0",
//!               "access_policies": [{"object_id": "…", "keys": ["get", "decrypt"], "secrets": ["get"]}]}]
//! }
//! ```
//!
//! The ready file lists the bound addresses: `identity_endpoint`, `vaults` (plain HTTP),
//! `vaults_https` (same ports, TLS) and `ca_certificate` (the PEM file HTTPS clients must trust).
//!
//! # Clients
//!
//! - `IDENTITY_ENDPOINT` = the ready file's `identity_endpoint`, `IDENTITY_HEADER` = the
//!   configured header; then `ManagedIdentityCredential` with a user-assigned client id.
//! - Key Vault clients must use the `vaults_https` URL: the SDK's bearer-token policy refuses to
//!   send a token over plain HTTP. Give the client a transport that trusts `ca_certificate`, and
//!   set `verify_challenge_resource: Some(false)` (the challenge names `vault.azure.net`).

pub mod config;
pub mod faults;
pub mod fsutil;
pub mod identity;
pub mod listener;
pub mod server;
pub mod state;
pub mod tls;
pub mod token;
pub mod vault;

//! Local stand-ins for Azure services that cannot run on a developer machine or in CI: the
//! App Service managed-identity token endpoint, the Key Vault data plane and (optionally) Azure
//! Resource Manager.
//!
//! All speak Azure's documented REST wire format, so the official Azure SDK for Rust clients
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
//!               "access_policies": [{"object_id": "…", "keys": ["get", "decrypt"], "secrets": ["get"]}]}],
//!   "arm": {"listen": "127.0.0.1:0", "owners": ["<object ids exempt from RBAC>"],
//!           "subscriptions": [{"id": "…", "tenant_id": "… (default: tenant_id)"}],
//!           "page_size": 100, "lro_polls": 2, "agent_binary": "/path/to/culvert-agent"}
//! }
//! ```
//!
//! The ready file lists the bound addresses: `identity_endpoint`, `vaults` (plain HTTP),
//! `vaults_https` (same ports, TLS), `ca_certificate` (the PEM file HTTPS clients must trust)
//! and, with an `arm` section, `arm_endpoint` (`https://127.0.0.1:PORT`, the Resource Manager
//! base URL; the same port answers plain HTTP too). State lives in `--state-dir`: `state.json`
//! (keys, secrets, signing key, CA), `arm.json` (resources and operations), and the working
//! directories of the processes behind scale-set instances (`vmss/`) and container groups (`aci/`).
//!
//! # Resource Manager
//!
//! [`arm`] serves resource groups and resources of any type under the configured
//! subscriptions, with long-running operations counted in polls (`lro_polls`), `nextLink`
//! paging (`page_size` items a page), and role-based access control for every caller not in
//! `owners`: role definitions and assignments are ordinary resources PUT by an owner, `actions`
//! and `notActions` (with wildcards) are evaluated at the resource's scope and its ancestors, and
//! linked authorization covers identity assignment, subnet and NSG joins and VNet peering.
//! `dataActions`, `notDataActions` and assignment conditions are stored and returned but not
//! evaluated. Tokens are the token endpoint's, with audience `https://management.azure.com`.
//! Scale sets and container groups run `agent_binary` as described in [`arm::processes`].
//!
//! Every listener (each vault and the Resource Manager) takes fault rules on `/_local/faults`
//! (see [`faults`]); on the Resource Manager the operation names are the lowercase HTTP methods
//! and `path_contains` narrows a rule to matching paths, e.g.
//! `{"status":429,"count":1,"retry_after":0,"path_contains":"virtualMachineScaleSets"}`.
//!
//! # Clients
//!
//! - `IDENTITY_ENDPOINT` = the ready file's `identity_endpoint`, `IDENTITY_HEADER` = the
//!   configured header; then `ManagedIdentityCredential` with a user-assigned client id.
//! - Key Vault clients must use the `vaults_https` URL: the SDK's bearer-token policy refuses to
//!   send a token over plain HTTP. Give the client a transport that trusts `ca_certificate`, and
//!   set `verify_challenge_resource: Some(false)` (the challenge names `vault.azure.net`).
//! - Resource Manager clients use `arm_endpoint` as the base instead of
//!   `https://management.azure.com`, trusting `ca_certificate`, with a token for the resource
//!   `https://management.azure.com/`.

pub mod arm;
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

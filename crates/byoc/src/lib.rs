//! Texts an Azure customer runs to bring their own cloud to Culvert.
//!
//! - [`bootstrap`]: the Terraform bundle (`main.tf`, `terraform.tfvars`, `README.md`) that
//!   creates the custom role, identities, Key Vault keys, agent NSG and private endpoint.
//! - [`network_steps`]: the per-connector `az` script that opens the agents' way to a
//!   database, and the checks that tell, from ARM bodies, what is still missing.
//! - [`peering_steps`]: the peer-side `az` script of a VNet peering with the agents' VNet.
//!
//! Everything here renders text from values; nothing reaches the network.

pub mod bootstrap;
pub mod network_steps;
pub mod peering_steps;
mod quote;

pub use bootstrap::{BootstrapInputs, Bundle, ExpectedResources, FIXES, InputError};
pub use network_steps::{NetworkStepInputs, NetworkSteps, RequiredRule};
pub use peering_steps::PeeringStepInputs;

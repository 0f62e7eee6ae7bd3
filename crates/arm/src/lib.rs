//! Azure Resource Manager for the control plane: the catalogue of every ARM operation it makes
//! (and so the customer's custom role), a typed resource id, and the REST client that sends the
//! operations, waits for long-running ones and says plainly what a refusal means.

pub mod client;
pub mod error;
pub mod ids;
pub mod operations;

pub use client::{ArmClient, MANAGEMENT_SCOPE, PUBLIC_ENDPOINT};
pub use error::ArmError;
pub use ids::ResourceId;
pub use operations::{Method, Operation, Scope};

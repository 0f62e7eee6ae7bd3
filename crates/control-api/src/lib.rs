//! The Culvert control plane's API: resources, the agent metadata protocol, errors and paging.
//!
//! The handler (`culvert-functions`) serves these types, the `culvert` CLI and the agent
//! send and read them. Field names are the JSON names on the wire.

pub mod agents;
#[cfg(feature = "client")]
pub mod client;
pub mod connectors;
pub mod environments;
pub mod keys;
pub mod page;
pub mod pipelines;
pub mod problem;
pub mod registry;

pub use page::Page;
pub use problem::{FieldError, Problem};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Header carrying an idempotency key on creates.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

//! The Culvert agent: runs replication pipelines whose connectors are sandboxed
//! WebAssembly components.

pub mod batch;
pub mod bindings;
pub mod buffer;
pub mod config;
pub mod conformance;
pub mod connectors;
pub mod egress;
pub mod engine;
pub mod http_egress;
pub mod limits;
pub mod managed;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod sandbox;

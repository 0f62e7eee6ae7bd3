//! PostgreSQL values, COPY binary streams, pgoutput messages and stream positions,
//! mapped to and from Arrow so both PostgreSQL connectors share one exact codec.

pub mod copy;
pub mod decode;
pub mod encode;
pub mod ipc;
pub mod numeric;
pub mod pgoutput;
pub mod position;
pub mod reduce;
pub mod schema;
pub mod types;

/// Arrow arrays, re-exported so connectors use the same version.
pub use arrow_array;
/// Arrow schema types, re-exported for connectors.
pub use arrow_schema;

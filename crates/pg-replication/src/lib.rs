//! PostgreSQL streaming-replication client (logical replication with pgoutput) over any async byte stream.
//!
//! The transport is left to the caller (TCP, TLS, a WASI socket, ...) so the same client runs natively
//! and on `wasm32-wasip2`; this crate only speaks the protocol.

#![warn(missing_docs)]

mod auth;
mod commands;
mod connection;
mod error;
mod framing;
mod lsn;
mod quote;
mod stream;

pub use commands::{CreatedSlot, SystemIdentity};
pub use connection::{ConnectParams, ReplicationConnection};
pub use error::ReplicationError;
pub use lsn::{Lsn, format_lsn, parse_lsn};
pub use quote::{quote_identifier, quote_literal};
pub use stream::ReplicationMessage;

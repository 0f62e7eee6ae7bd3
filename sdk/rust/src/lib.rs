//! Write Culvert connectors in Rust.
//!
//! A connector is a WebAssembly component (`wasm32-wasip2`) that the Culvert agent runs
//! in a sandbox. This crate hides the component boundary: implement [`Source`] (with a
//! [`Reader`]) or [`Destination`] (with a [`Writer`]) on your own types and export them
//! with [`export_source!`] or [`export_destination!`].
//!
//! - [`config`]: typed configuration, the JSON Schema `spec` derived from it, and
//!   [`parse_config`] whose errors name the field.
//! - [`rows`]: Arrow builders for snapshot and change rows, and the reader for destinations.
//! - [`position`]: byte-wise ordered positions.
//! - [`host`] and [`http`]: logging, metrics, name resolution and HTTP through the agent.
//!
//! ```no_run
//! use culvert_connector_sdk::{Batch, CheckResult, Reader, Result, Source, export_source};
//!
//! struct Empty;
//!
//! impl Source for Empty {
//!     type Reader = EmptyReader;
//!     fn spec() -> String {
//!         r#"{"type": "object"}"#.to_string()
//!     }
//!     fn check(_config: &str) -> Vec<CheckResult> {
//!         vec![CheckResult::ok("config")]
//!     }
//! }
//!
//! struct EmptyReader;
//!
//! impl Reader for EmptyReader {
//!     fn open(_config: &str, _selection: Vec<String>, _resume: Option<Vec<u8>>) -> Result<Self> {
//!         Ok(EmptyReader)
//!     }
//!     fn next(&mut self, _max_rows: u32) -> Result<Option<Batch>> {
//!         Ok(None)
//!     }
//! }
//!
//! export_source!(Empty);
//! ```
#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings;
pub mod config;
mod connector;
mod convert;
pub mod host;
pub mod http;
mod panic;
pub mod position;
pub mod rows;
mod types;

pub use config::{parse_config, spec_of};
pub use connector::{Destination, Reader, Source, Writer};
pub use position::Position;
pub use types::{
    Batch, BatchKind, CheckResult, ColumnInfo, ConnectorError, ErrorKind, Result, TableInfo,
    TableRef, TableRows,
};

/// The Arrow crates this SDK builds on, re-exported so versions always match.
pub use arrow_array;
/// See [`arrow_array`].
pub use arrow_schema;
/// JSON Schema derivation used by [`config`]; `#[derive(JsonSchema)]` needs it in scope
/// of the crate, so depend on the same major version or use this re-export.
pub use schemars;

/// Not public API: used by the export macros.
#[doc(hidden)]
pub mod __private {
    pub use crate::connector::{DestinationExport, ReaderExport, SourceExport, WriterExport};
}

/// Export a type implementing [`Source`] as this component's source connector.
///
/// Use it once, at the top level of the connector's `cdylib` crate.
#[macro_export]
macro_rules! export_source {
    ($source:ty) => {
        const _: () = {
            type __CulvertSourceExport = $crate::__private::SourceExport<$source>;
            $crate::__export_source_impl!(__CulvertSourceExport with_types_in $crate::bindings::source);
        };
    };
}

/// Export a type implementing [`Destination`] as this component's destination connector.
///
/// Use it once, at the top level of the connector's `cdylib` crate.
#[macro_export]
macro_rules! export_destination {
    ($destination:ty) => {
        const _: () = {
            type __CulvertDestinationExport = $crate::__private::DestinationExport<$destination>;
            $crate::__export_destination_impl!(
                __CulvertDestinationExport with_types_in $crate::bindings::destination
            );
        };
    };
}

//! Every end-to-end flow in one test binary: each links the whole harness, so one binary
//! instead of one per file saves a link of it and its size on disk per file.

mod api_schema;
mod azure_services;
mod byoc;
mod connector_sdk;
mod control_plane;
mod crash;
mod data_path;
mod lifecycle;
mod registry;
mod schema_changes;
mod tls;

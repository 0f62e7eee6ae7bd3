//! The agent host's integration tests in one binary (each file would otherwise link all of
//! wasmtime and the Azure SDK into a binary of its own).

mod blob_buffer;
mod sandbox;

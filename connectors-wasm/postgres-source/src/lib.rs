//! `postgres-source`: a Culvert source connector for PostgreSQL.
//!
//! Creates (or reuses) a publication and a logical replication slot, copies the selected
//! tables under the slot's exported snapshot, then streams changes with pgoutput.

mod catalog;
mod changes;
mod check;
mod config;
mod reader;
mod snapshot;

use std::sync::Arc;

use culvert_pg_guest::{ErrorKind, GuestError};

wit_bindgen::generate!({
    path: "../../wit",
    world: "source",
    generate_all,
});

use culvert::connector::types as wit;
use exports::culvert::connector::source_connector::{self as api, Guest};

/// Resolves a configured host name through the agent.
pub type Resolver = Arc<dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync>;

fn resolver() -> Resolver {
    Arc::new(|name: &str| culvert::connector::host::resolve(name))
}

fn log(level: culvert::connector::host::Level, message: &str) {
    culvert::connector::host::log(level, message);
}

fn to_wit(e: GuestError) -> wit::ConnectorError {
    let kind = match e.kind {
        ErrorKind::Config => wit::ErrorKind::Config,
        ErrorKind::Connection => wit::ErrorKind::Connection,
        ErrorKind::Auth => wit::ErrorKind::Auth,
        ErrorKind::Permission => wit::ErrorKind::Permission,
        ErrorKind::Unsupported => wit::ErrorKind::Unsupported,
        ErrorKind::State => wit::ErrorKind::State,
        ErrorKind::Internal => wit::ErrorKind::Internal,
    };
    wit::ConnectorError {
        kind,
        message: e.message,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime on wasi")
}

struct Component;

impl Guest for Component {
    type Reader = reader::Reader;

    fn spec() -> String {
        config::SPEC.to_string()
    }

    fn check(config: String) -> Vec<wit::CheckResult> {
        runtime().block_on(check::run(&config, resolver()))
    }

    fn discover(config: String) -> Result<Vec<wit::TableInfo>, wit::ConnectorError> {
        runtime()
            .block_on(check::discover(&config, resolver()))
            .map_err(to_wit)
    }
}

export!(Component);

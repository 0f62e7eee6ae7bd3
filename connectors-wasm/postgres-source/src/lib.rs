//! `postgres-source`: a Culvert source connector for PostgreSQL.
//!
//! Creates (or reuses) a publication and a logical replication slot, copies the selected
//! tables under the slot's exported snapshot, then streams changes with pgoutput,
//! following schema changes and copying added or resynced tables in the background.

mod backfill;
mod catalog;
mod changes;
mod check;
mod config;
mod ddl_capture;
mod reader;
mod slot;
mod snapshot;

use std::sync::Arc;

wit_bindgen::generate!({
    path: "../../wit",
    world: "source",
    generate_all,
});

use culvert::connector::types as wit;
use exports::culvert::connector::source_connector::{self as api, Guest};
use wit::TableRef;

/// Resolves a configured host name through the agent.
pub type Resolver = Arc<dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync>;

fn resolver() -> Resolver {
    Arc::new(|name: &str| culvert::connector::host::resolve(name))
}

fn log(level: culvert::connector::host::Level, message: &str) {
    culvert::connector::host::log(level, message);
}

culvert_pg_guest::define_to_wit!();

use culvert_pg_guest::runtime;

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

    fn resync(
        config: String,
        selection: Vec<String>,
        tables: Vec<TableRef>,
    ) -> Result<String, wit::ConnectorError> {
        let tables = tables.into_iter().map(|t| (t.namespace, t.name)).collect();
        runtime()
            .block_on(reader::resync(&config, selection, tables, resolver()))
            .map_err(to_wit)
    }
}

export!(Component);

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

use culvert_connector_sdk::host::{self, Level};
use culvert_connector_sdk::{
    CheckResult, ConnectorError, Source, TableInfo, TableRef, export_source,
};
use culvert_pg_guest::runtime;

/// Resolves a configured host name through the agent.
pub type Resolver = Arc<dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync>;

fn resolver() -> Resolver {
    Arc::new(host::resolve)
}

fn log(level: Level, message: &str) {
    host::log(level, message);
}

struct Component;

impl Source for Component {
    type Reader = reader::Reader;

    fn spec() -> String {
        config::SPEC.to_string()
    }

    fn check(config: &str) -> Vec<CheckResult> {
        runtime().block_on(check::run(config, resolver()))
    }

    fn discover(config: &str) -> Result<Vec<TableInfo>, ConnectorError> {
        Ok(runtime().block_on(check::discover(config, resolver()))?)
    }

    fn resync(
        config: &str,
        selection: Vec<String>,
        tables: Vec<TableRef>,
    ) -> Result<String, ConnectorError> {
        let tables = tables.into_iter().map(|t| (t.namespace, t.name)).collect();
        Ok(runtime().block_on(reader::resync(config, selection, tables, resolver()))?)
    }
}

export_source!(Component);

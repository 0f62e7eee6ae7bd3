//! `postgres-target`: a Culvert destination connector for PostgreSQL.
//!
//! Creates missing schemas, enum types and tables; loads snapshots with
//! `COPY ... FROM STDIN (FORMAT binary)`; applies changes set-based through a staging
//! table; commits each batch together with its position in `_culvert.positions`, so a
//! replayed batch is a no-op.

mod apply;
mod ddl;
mod writer;

use std::sync::Arc;

use culvert_connector_sdk::host::{self, Level};
use culvert_connector_sdk::{CheckResult, Destination, export_destination};
use culvert_pg_guest::runtime;

/// Resolves a configured host name through the agent.
pub type Resolver = Arc<dyn Fn(&str) -> Result<Vec<String>, String> + Send + Sync>;

fn resolver() -> Resolver {
    Arc::new(host::resolve)
}

fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// JSON Schema of the configuration.
const SPEC: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "postgres-target",
  "type": "object",
  "required": ["host", "user", "database"],
  "properties": {
    "host": {"type": "string"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432},
    "user": {"type": "string", "description": "Role that can create schemas and tables in the database"},
    "password": {"type": "string", "writeOnly": true, "x-culvert-secret": true},
    "database": {"type": "string"},
    "sslmode": {"type": "string", "enum": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"], "default": "prefer"},
    "sslrootcert": {"type": "string", "description": "PEM certificates trusted for verify-ca / verify-full"}
  },
  "additionalProperties": true
}"#;

struct Component;

impl Destination for Component {
    type Writer = writer::Writer;

    fn spec() -> String {
        SPEC.to_string()
    }

    fn check(config: &str) -> Vec<CheckResult> {
        runtime().block_on(writer::check(config, resolver()))
    }
}

export_destination!(Component);

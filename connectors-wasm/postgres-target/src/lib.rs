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

wit_bindgen::generate!({
    path: "../../wit",
    world: "destination",
    generate_all,
});

use culvert::connector::types as wit;
use exports::culvert::connector::destination_connector::{self as api, Guest};

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

impl Guest for Component {
    type Writer = writer::Writer;

    fn spec() -> String {
        SPEC.to_string()
    }

    fn check(config: String) -> Vec<wit::CheckResult> {
        runtime().block_on(writer::check(&config, resolver()))
    }
}

export!(Component);

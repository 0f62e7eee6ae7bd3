//! The source's configuration.

use culvert_pg_guest::PgConnectConfig;
use serde::Deserialize;

/// Configuration of `postgres-source`.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// Where and how to connect.
    #[serde(flatten)]
    pub conn: PgConnectConfig,
    /// Schema-qualified globs of the tables to replicate.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Replication slot name.
    #[serde(default = "default_name")]
    pub slot: String,
    /// Publication name.
    #[serde(default = "default_name")]
    pub publication: String,
    /// Parallel connections copying tables during the snapshot.
    #[serde(default = "default_workers")]
    pub snapshot_workers: usize,
    /// Rows per snapshot batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Approximate bytes per snapshot batch.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Heap pages per range of the initial copy: a crash resumes after the finished ranges.
    #[serde(default = "default_range_pages")]
    pub snapshot_range_pages: u64,
    /// Heap pages per chunk of a background copy (added tables, resyncs).
    #[serde(default = "default_chunk_pages")]
    pub backfill_chunk_pages: u64,
    /// Seconds between checks of the slot's retained WAL.
    #[serde(default = "default_slot_check")]
    pub slot_check_seconds: u64,
    /// Seconds without changes after which a heartbeat is written so the slot advances (0: never).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// Warn when the slot retains more WAL than this.
    #[serde(default)]
    pub retained_wal_warn_bytes: Option<u64>,
    /// Drop the slot (the pipeline then needs a resync) when it retains more WAL than this.
    #[serde(default)]
    pub retained_wal_drop_bytes: Option<u64>,
    /// Rebuild a missing or invalidated slot and copy the tables again without asking.
    #[serde(default)]
    pub resync_on_slot_loss: bool,
}

fn default_range_pages() -> u64 {
    16_384
}

fn default_chunk_pages() -> u64 {
    1024
}

fn default_slot_check() -> u64 {
    10
}

fn default_heartbeat() -> u64 {
    30
}

fn default_name() -> String {
    "culvert".to_string()
}

fn default_workers() -> usize {
    2
}

fn default_batch_rows() -> usize {
    50_000
}

fn default_batch_bytes() -> usize {
    8 << 20
}

/// JSON Schema of [`SourceConfig`].
pub const SPEC: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "postgres-source",
  "type": "object",
  "required": ["host", "user", "database"],
  "properties": {
    "host": {"type": "string", "description": "Host name or IP address of the PostgreSQL server"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432},
    "user": {"type": "string", "description": "Role with LOGIN and REPLICATION"},
    "password": {"type": "string", "writeOnly": true, "x-culvert-secret": true},
    "database": {"type": "string"},
    "sslmode": {"type": "string", "enum": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"], "default": "prefer"},
    "sslrootcert": {"type": "string", "description": "PEM certificates trusted for verify-ca / verify-full"},
    "tables": {"type": "array", "items": {"type": "string"}, "description": "Schema-qualified globs, for example public.* or sales.orders"},
    "slot": {"type": "string", "description": "Replication slot name (default: the pipeline name)"},
    "publication": {"type": "string", "description": "Publication name (default: the pipeline name)"},
    "snapshot_workers": {"type": "integer", "minimum": 1, "maximum": 16, "default": 2},
    "batch_rows": {"type": "integer", "minimum": 1, "default": 50000},
    "batch_bytes": {"type": "integer", "minimum": 65536, "default": 8388608},
    "snapshot_range_pages": {"type": "integer", "minimum": 1, "default": 16384, "description": "Heap pages per range of the initial copy; ranges are copied in parallel and a crash resumes after the finished ones"},
    "backfill_chunk_pages": {"type": "integer", "minimum": 1, "default": 1024, "description": "Heap pages per chunk when a table is copied while changes stream"},
    "slot_check_seconds": {"type": "integer", "minimum": 1, "default": 10},
    "heartbeat_seconds": {"type": "integer", "minimum": 0, "default": 30, "description": "Write a heartbeat after this many quiet seconds so the slot keeps advancing (0: never)"},
    "retained_wal_warn_bytes": {"type": "integer", "minimum": 0, "description": "Warn when the slot retains more WAL than this"},
    "retained_wal_drop_bytes": {"type": "integer", "minimum": 0, "description": "Drop the slot rather than let it retain more WAL than this (off by default; a resync follows)"},
    "resync_on_slot_loss": {"type": "boolean", "default": false, "description": "Rebuild a missing or invalidated slot and copy the tables again automatically"}
  },
  "additionalProperties": true
}"#;

/// Whether a table is named exactly (not only matched by a wildcard) by one of the globs.
pub fn named(globs: &[String], namespace: &str, name: &str) -> bool {
    globs
        .iter()
        .any(|g| !g.contains(['*', '?']) && matches(g, namespace, name))
}

/// Whether `namespace.name` matches a schema-qualified glob (`*` and `?` wildcards).
pub fn matches(glob: &str, namespace: &str, name: &str) -> bool {
    let (gs, gt) = glob.split_once('.').unwrap_or(("public", glob));
    wildcard(gs.as_bytes(), namespace.as_bytes()) && wildcard(gt.as_bytes(), name.as_bytes())
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("public.*", "public", "orders"));
        assert!(matches("sales.ord?rs", "sales", "orders"));
        assert!(!matches("sales.orders", "public", "orders"));
        assert!(matches("*.*", "Mixed Case", "T"));
        assert!(matches("orders", "public", "orders"));
    }
}

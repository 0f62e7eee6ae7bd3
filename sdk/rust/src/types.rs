//! The records a connector exchanges with the agent, as plain Rust types.

use std::fmt;

/// What went wrong, so the agent can decide between retrying and stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The configuration is invalid; the message names the field.
    Config,
    /// The endpoint cannot be reached or the connection broke; retrying may help.
    Connection,
    /// Credentials were refused.
    Auth,
    /// The credentials work but lack a privilege; the message names it.
    Permission,
    /// The data or schema uses something this connector cannot carry exactly.
    Unsupported,
    /// The replication state is gone or inconsistent.
    State,
    /// A bug or an unexpected answer from the remote system.
    Internal,
}

impl ErrorKind {
    /// Lower-case name, as the WIT enum spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Connection => "connection",
            ErrorKind::Auth => "auth",
            ErrorKind::Permission => "permission",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::State => "state",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error for the person operating the pipeline: what is wrong and how to fix it.
///
/// The message is shown as written, so make it a full sentence that names the field,
/// table or privilege involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorError {
    /// Classification the agent acts on (retry or stop).
    pub kind: ErrorKind,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConnectorError {
    /// An error of any kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ConnectorError {
        ConnectorError {
            kind,
            message: message.into(),
        }
    }

    /// Invalid configuration; name the field, e.g. ``"field `rows` must be at least 1"``.
    pub fn config(message: impl Into<String>) -> ConnectorError {
        ConnectorError::new(ErrorKind::Config, message)
    }

    /// The endpoint cannot be reached or the connection broke (the agent retries).
    pub fn connection(message: impl Into<String>) -> ConnectorError {
        ConnectorError::new(ErrorKind::Connection, message)
    }

    /// Credentials were refused.
    pub fn auth(message: impl Into<String>) -> ConnectorError {
        ConnectorError::new(ErrorKind::Auth, message)
    }

    /// A privilege is missing; name it.
    pub fn permission(message: impl Into<String>) -> ConnectorError {
        ConnectorError::new(ErrorKind::Permission, message)
    }

    /// Something this connector cannot carry exactly.
    pub fn unsupported(message: impl Into<String>) -> ConnectorError {
        ConnectorError::new(ErrorKind::Unsupported, message)
    }

    /// Replication state is lost or inconsistent.
    pub fn state(message: impl Into<String>) -> ConnectorError {
        ConnectorError::new(ErrorKind::State, message)
    }

    /// A bug or an unexpected answer from the remote system.
    pub fn internal(message: impl Into<String>) -> ConnectorError {
        ConnectorError::new(ErrorKind::Internal, message)
    }

    /// The same error with `context: ` put in front of the message.
    pub fn context(self, context: impl fmt::Display) -> ConnectorError {
        ConnectorError {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectorError {}

/// Result of connector operations.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// One line of a `check` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Short name of what was checked, for example `reachable` or `config`.
    pub name: String,
    /// Whether the check passed.
    pub ok: bool,
    /// When not ok: what to do about it.
    pub message: String,
}

impl CheckResult {
    /// A passed check.
    pub fn ok(name: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            ok: true,
            message: String::new(),
        }
    }

    /// A failed check with what to do about it.
    pub fn failed(name: impl Into<String>, message: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            ok: false,
            message: message.into(),
        }
    }

    /// Passed on `Ok`, failed with the error's text on `Err`.
    pub fn from_result<T, E: fmt::Display>(
        name: impl Into<String>,
        result: std::result::Result<T, E>,
    ) -> CheckResult {
        match result {
            Ok(_) => CheckResult::ok(name),
            Err(e) => CheckResult::failed(name, e.to_string()),
        }
    }
}

/// A schema-qualified table name, exactly as spelled at the source (not quoted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// Schema, database or other namespace.
    pub namespace: String,
    /// Table name.
    pub name: String,
}

impl TableRef {
    /// A table reference.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> TableRef {
        TableRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Whether a schema-qualified glob such as `public.*` or `sales.order_?` matches
    /// (`*` any run of characters, `?` one character). A glob without `.` matches the
    /// table name in any namespace.
    pub fn matches(&self, glob: &str) -> bool {
        match glob.split_once('.') {
            Some((ns, name)) => wildcard(ns, &self.namespace) && wildcard(name, &self.name),
            None => wildcard(glob, &self.name),
        }
    }

    /// Whether a reader's table selection includes this table; an empty selection
    /// selects every table.
    pub fn is_selected(&self, selection: &[String]) -> bool {
        selection.is_empty() || selection.iter().any(|g| self.matches(g))
    }
}

/// Glob match with `*` and `?`, backtracking to the most recent `*` on a mismatch.
fn wildcard(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut resume: Option<(usize, usize)> = None;
    while ti < text.len() {
        match pattern.get(pi) {
            Some('*') => {
                resume = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == text[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match resume {
                Some((star, matched)) => {
                    pi = star + 1;
                    ti = matched + 1;
                    resume = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pi..].iter().all(|&c| c == '*')
}

impl fmt::Display for TableRef {
    /// `namespace.name`, unquoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// A column as a source reports it in `discover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// The source's own type name, for example `numeric(12,2)` or `text[]`.
    pub type_name: String,
    /// Whether NULL values occur.
    pub nullable: bool,
    /// Position in the primary key (1-based), if the column is part of it.
    pub key_ordinal: Option<u16>,
    /// Empty when the column replicates exactly; otherwise why it cannot.
    pub unsupported_reason: String,
}

impl ColumnInfo {
    /// A nullable, non-key, supported column.
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_name: type_name.into(),
            nullable: true,
            key_ordinal: None,
            unsupported_reason: String::new(),
        }
    }

    /// Set whether NULL values occur.
    pub fn nullable(mut self, nullable: bool) -> ColumnInfo {
        self.nullable = nullable;
        self
    }

    /// Make the column the `ordinal`-th (1-based) part of the primary key; implies NOT NULL.
    pub fn key(mut self, ordinal: u16) -> ColumnInfo {
        self.key_ordinal = Some(ordinal);
        self.nullable = false;
        self
    }

    /// Mark the column as not replicable, saying why.
    pub fn unsupported(mut self, reason: impl Into<String>) -> ColumnInfo {
        self.unsupported_reason = reason.into();
        self
    }
}

/// A table as a source reports it in `discover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The table.
    pub table: TableRef,
    /// Its columns in order.
    pub columns: Vec<ColumnInfo>,
    /// Whether changes to rows can be identified (primary key or equivalent).
    pub identifiable: bool,
    /// Approximate row count (0 when unknown).
    pub estimated_rows: u64,
}

/// What a batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// Rows of the initial copy; a table's first batch has `first_of_table` set and
    /// the destination replaces what it held for that table.
    Snapshot,
    /// Changes in source commit order, each table's rows led by the `__culvert_` columns
    /// (see [`crate::rows::ChangesBuilder`]).
    Changes,
    /// No rows: the source only moved its position.
    Heartbeat,
}

/// Rows of one table, as Arrow IPC stream bytes (schema message first).
///
/// Build it with [`crate::rows::TableRowsBuilder`] or [`TableRows::from_record_batch`];
/// read it with [`TableRows::record_batches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    /// The table.
    pub table: TableRef,
    /// Set on a table's first snapshot batch: the destination replaces the table's rows.
    pub first_of_table: bool,
    /// Rows in `ipc`.
    pub row_count: u32,
    /// Arrow IPC stream bytes.
    pub ipc: Vec<u8>,
}

/// The unit a source produces and a destination applies atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// What the batch carries.
    pub kind: BatchKind,
    /// Opaque, byte-wise ordered position reached once this batch is applied.
    pub position: Vec<u8>,
    /// Rows per table (empty for heartbeats).
    pub tables: Vec<TableRows>,
    /// Source-side lag behind the head of its log, in bytes (0 when unknown).
    pub lag_bytes: u64,
    /// The batch ends inside a source transaction that the next batch continues.
    pub continues: bool,
}

impl Batch {
    /// A snapshot batch.
    pub fn snapshot(position: impl Into<Vec<u8>>, tables: Vec<TableRows>) -> Batch {
        Batch::new(BatchKind::Snapshot, position, tables)
    }

    /// A changes batch.
    pub fn changes(position: impl Into<Vec<u8>>, tables: Vec<TableRows>) -> Batch {
        Batch::new(BatchKind::Changes, position, tables)
    }

    /// A batch without rows that only moves the position.
    pub fn heartbeat(position: impl Into<Vec<u8>>) -> Batch {
        Batch::new(BatchKind::Heartbeat, position, Vec::new())
    }

    fn new(kind: BatchKind, position: impl Into<Vec<u8>>, tables: Vec<TableRows>) -> Batch {
        Batch {
            kind,
            position: position.into(),
            tables,
            lag_bytes: 0,
            continues: false,
        }
    }

    /// Rows over all tables.
    pub fn row_count(&self) -> u64 {
        self.tables.iter().map(|t| u64::from(t.row_count)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_constructors_set_kind_and_message() {
        let e = ConnectorError::config("field `rows` must be at least 1");
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(e.to_string(), "field `rows` must be at least 1");
        let e = ConnectorError::connection("refused").context("GET http://x/");
        assert_eq!(e.kind, ErrorKind::Connection);
        assert_eq!(e.message, "GET http://x/: refused");
    }

    #[test]
    fn check_result_from_result() {
        let ok = CheckResult::from_result("config", Ok::<_, ConnectorError>(()));
        assert!(ok.ok && ok.message.is_empty());
        let bad = CheckResult::from_result("config", Err::<(), _>(ConnectorError::config("x")));
        assert!(!bad.ok);
        assert_eq!(bad.message, "x");
    }

    #[test]
    fn table_ref_displays_qualified() {
        assert_eq!(TableRef::new("demo", "items").to_string(), "demo.items");
    }

    #[test]
    fn globs_select_tables() {
        let t = TableRef::new("sales", "orders");
        assert!(t.matches("sales.*"));
        assert!(t.matches("*.ord?rs"));
        assert!(t.matches("orders"));
        assert!(t.matches("s*s.*s"));
        assert!(!t.matches("public.*"));
        assert!(!t.matches("sales.order"));
        assert!(t.is_selected(&[]));
        assert!(t.is_selected(&["public.*".into(), "sales.orders".into()]));
        assert!(!t.is_selected(&["public.*".into()]));
    }

    #[test]
    fn column_key_implies_not_null() {
        let c = ColumnInfo::new("id", "bigint").key(1);
        assert_eq!(c.key_ordinal, Some(1));
        assert!(!c.nullable);
    }

    #[test]
    fn batch_constructors() {
        let b = Batch::heartbeat(vec![0, 1]);
        assert_eq!(b.kind, BatchKind::Heartbeat);
        assert_eq!(b.row_count(), 0);
        assert!(!b.continues);
    }
}

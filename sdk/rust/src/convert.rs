//! Moves between the SDK's types and the generated WIT records at the boundary.

use crate::bindings::source::culvert::connector::types as wit;
use crate::types::{
    Batch, BatchKind, CheckResult, ColumnInfo, ConnectorError, ErrorKind, TableInfo, TableRef,
    TableRows,
};

impl From<ErrorKind> for wit::ErrorKind {
    fn from(kind: ErrorKind) -> wit::ErrorKind {
        match kind {
            ErrorKind::Config => wit::ErrorKind::Config,
            ErrorKind::Connection => wit::ErrorKind::Connection,
            ErrorKind::Auth => wit::ErrorKind::Auth,
            ErrorKind::Permission => wit::ErrorKind::Permission,
            ErrorKind::Unsupported => wit::ErrorKind::Unsupported,
            ErrorKind::State => wit::ErrorKind::State,
            ErrorKind::Internal => wit::ErrorKind::Internal,
        }
    }
}

impl From<ConnectorError> for wit::ConnectorError {
    fn from(e: ConnectorError) -> wit::ConnectorError {
        wit::ConnectorError {
            kind: e.kind.into(),
            message: e.message,
        }
    }
}

impl From<CheckResult> for wit::CheckResult {
    fn from(c: CheckResult) -> wit::CheckResult {
        wit::CheckResult {
            name: c.name,
            ok: c.ok,
            message: c.message,
        }
    }
}

impl From<TableRef> for wit::TableRef {
    fn from(t: TableRef) -> wit::TableRef {
        wit::TableRef {
            namespace: t.namespace,
            name: t.name,
        }
    }
}

impl From<wit::TableRef> for TableRef {
    fn from(t: wit::TableRef) -> TableRef {
        TableRef {
            namespace: t.namespace,
            name: t.name,
        }
    }
}

impl From<ColumnInfo> for wit::ColumnInfo {
    fn from(c: ColumnInfo) -> wit::ColumnInfo {
        wit::ColumnInfo {
            name: c.name,
            type_name: c.type_name,
            nullable: c.nullable,
            key_ordinal: c.key_ordinal,
            unsupported_reason: c.unsupported_reason,
        }
    }
}

impl From<TableInfo> for wit::TableInfo {
    fn from(t: TableInfo) -> wit::TableInfo {
        wit::TableInfo {
            table: t.table.into(),
            columns: t.columns.into_iter().map(Into::into).collect(),
            identifiable: t.identifiable,
            estimated_rows: t.estimated_rows,
        }
    }
}

impl From<BatchKind> for wit::BatchKind {
    fn from(k: BatchKind) -> wit::BatchKind {
        match k {
            BatchKind::Snapshot => wit::BatchKind::Snapshot,
            BatchKind::Changes => wit::BatchKind::Changes,
            BatchKind::Heartbeat => wit::BatchKind::Heartbeat,
        }
    }
}

impl From<wit::BatchKind> for BatchKind {
    fn from(k: wit::BatchKind) -> BatchKind {
        match k {
            wit::BatchKind::Snapshot => BatchKind::Snapshot,
            wit::BatchKind::Changes => BatchKind::Changes,
            wit::BatchKind::Heartbeat => BatchKind::Heartbeat,
        }
    }
}

impl From<TableRows> for wit::TableRows {
    fn from(t: TableRows) -> wit::TableRows {
        wit::TableRows {
            table: t.table.into(),
            first_of_table: t.first_of_table,
            row_count: t.row_count,
            ipc: t.ipc,
        }
    }
}

impl From<wit::TableRows> for TableRows {
    fn from(t: wit::TableRows) -> TableRows {
        TableRows {
            table: t.table.into(),
            first_of_table: t.first_of_table,
            row_count: t.row_count,
            ipc: t.ipc,
        }
    }
}

impl From<Batch> for wit::Batch {
    fn from(b: Batch) -> wit::Batch {
        wit::Batch {
            kind: b.kind.into(),
            position: b.position,
            tables: b.tables.into_iter().map(Into::into).collect(),
            lag_bytes: b.lag_bytes,
            continues: b.continues,
        }
    }
}

impl From<wit::Batch> for Batch {
    fn from(b: wit::Batch) -> Batch {
        Batch {
            kind: b.kind.into(),
            position: b.position,
            tables: b.tables.into_iter().map(Into::into).collect(),
            lag_bytes: b.lag_bytes,
            continues: b.continues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_through_wit() {
        let batch = Batch {
            kind: BatchKind::Changes,
            position: vec![1, 2, 3],
            tables: vec![TableRows {
                table: TableRef::new("a", "b"),
                first_of_table: true,
                row_count: 2,
                ipc: vec![9, 9],
            }],
            lag_bytes: 7,
            continues: true,
        };
        let back: Batch = wit::Batch::from(batch.clone()).into();
        assert_eq!(back, batch);
    }

    #[test]
    fn error_kind_maps_one_to_one() {
        let e: wit::ConnectorError = ConnectorError::permission("grant it").into();
        assert_eq!(e.kind, wit::ErrorKind::Permission);
        assert_eq!(e.message, "grant it");
    }
}

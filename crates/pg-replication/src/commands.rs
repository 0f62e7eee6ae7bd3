//! Replication commands: slot management and entering streaming mode.

use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::{ReplicationConnection, ResultSet};
use crate::error::ReplicationError;
use crate::framing::Backend;
use crate::lsn::{Lsn, format_lsn, parse_lsn};
use crate::quote::{quote_identifier, quote_literal};

/// First server version accepting the parenthesised `(SNAPSHOT '...')` option list.
const GENERIC_OPTIONS_VERSION: u32 = 150000;

/// Result of `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// Position from which the slot streams changes; the exported snapshot sees exactly the data before it.
    pub consistent_lsn: Lsn,
    /// Exported snapshot usable with `SET TRANSACTION SNAPSHOT` until the next command on this connection.
    pub snapshot_name: Option<String>,
}

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// Cluster's unique system identifier.
    pub system_id: u64,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlog_pos: Lsn,
    /// Database the connection is attached to, if any.
    pub dbname: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ReplicationConnection<S> {
    /// Creates a logical slot for pgoutput, optionally exporting a snapshot; uses the legacy keywords before PostgreSQL 15.
    pub async fn create_logical_slot(
        &mut self,
        slot: &str,
        export_snapshot: bool,
    ) -> Result<CreatedSlot, ReplicationError> {
        let version = match self.server_version_num() {
            Some(v) => v,
            None => self.query_version_num().await?,
        };
        let sql = create_slot_command(slot, export_snapshot, version);
        let sets = self.query_sets(&sql).await?;
        let (set, row) = single_row(&sets, "CREATE_REPLICATION_SLOT")?;
        let consistent = column(set, row, "consistent_point", 1).ok_or_else(|| {
            ReplicationError::protocol("CREATE_REPLICATION_SLOT returned no consistent_point")
        })?;
        Ok(CreatedSlot {
            consistent_lsn: parse_lsn(consistent)?,
            snapshot_name: column(set, row, "snapshot_name", 2).map(str::to_owned),
        })
    }

    /// `START_REPLICATION SLOT "<slot>" LOGICAL <lsn> (<options>)`; returns once the server has entered COPY BOTH mode.
    pub async fn start_logical(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<(), ReplicationError> {
        if self.streaming {
            return Err(ReplicationError::InvalidState(
                "the replication stream is already active",
            ));
        }
        let sql = start_logical_command(slot, start, options);
        frontend::query(&sql, self.framed.out())?;
        self.framed.flush().await?;

        let mut error: Option<ReplicationError> = None;
        loop {
            match self.framed.next().await? {
                Backend::CopyBothResponse => {
                    self.streaming = true;
                    return Ok(());
                }
                Backend::Message(Message::ErrorResponse(body)) => {
                    error.get_or_insert(ReplicationError::from_fields(body.fields()));
                }
                // A failed START_REPLICATION is followed by ReadyForQuery; waiting for it keeps the connection usable.
                Backend::Message(Message::ReadyForQuery(_)) => {
                    return Err(error.unwrap_or_else(|| {
                        ReplicationError::protocol("START_REPLICATION finished without streaming")
                    }));
                }
                Backend::Message(Message::CommandComplete(_)) => {}
                Backend::Message(msg) => self.handle_async_message(msg)?,
            }
        }
    }

    /// `IDENTIFY_SYSTEM`: cluster id, timeline and current WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ReplicationError> {
        let sets = self.query_sets("IDENTIFY_SYSTEM").await?;
        let (set, row) = single_row(&sets, "IDENTIFY_SYSTEM")?;
        let missing =
            |name: &str| ReplicationError::protocol(format!("IDENTIFY_SYSTEM returned no {name}"));
        let system_id = column(set, row, "systemid", 0).ok_or_else(|| missing("systemid"))?;
        let timeline = column(set, row, "timeline", 1).ok_or_else(|| missing("timeline"))?;
        let xlog_pos = column(set, row, "xlogpos", 2).ok_or_else(|| missing("xlogpos"))?;
        Ok(SystemIdentity {
            system_id: system_id.parse().map_err(|_| {
                ReplicationError::protocol(format!("invalid systemid {system_id:?}"))
            })?,
            timeline: timeline.parse().map_err(|_| {
                ReplicationError::protocol(format!("invalid timeline {timeline:?}"))
            })?,
            xlog_pos: parse_lsn(xlog_pos)?,
            dbname: column(set, row, "dbname", 3).map(str::to_owned),
        })
    }

    /// `DROP_REPLICATION_SLOT "<slot>"`, optionally waiting for a still-active slot to be released.
    pub async fn drop_slot(&mut self, slot: &str, wait: bool) -> Result<(), ReplicationError> {
        let mut sql = format!("DROP_REPLICATION_SLOT {}", quote_identifier(slot));
        if wait {
            sql.push_str(" WAIT");
        }
        self.query_sets(&sql).await?;
        Ok(())
    }

    async fn query_version_num(&mut self) -> Result<u32, ReplicationError> {
        let rows = self.simple_query("SHOW server_version_num").await?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ReplicationError::protocol("could not determine the server version"))
    }
}

fn single_row<'a>(
    sets: &'a [ResultSet],
    command: &str,
) -> Result<(&'a ResultSet, &'a [Option<String>]), ReplicationError> {
    sets.iter()
        .find_map(|set| set.rows.first().map(|row| (set, row.as_slice())))
        .ok_or_else(|| ReplicationError::protocol(format!("{command} returned no row")))
}

/// Looks a value up by column name, falling back to the documented position.
fn column<'a>(
    set: &ResultSet,
    row: &'a [Option<String>],
    name: &str,
    position: usize,
) -> Option<&'a str> {
    let index = set
        .columns
        .iter()
        .position(|c| c == name)
        .unwrap_or(position);
    row.get(index).and_then(|v| v.as_deref())
}

/// Text of `CREATE_REPLICATION_SLOT` for the given server version.
/// First server version with failover slots.
const FAILOVER_VERSION: u32 = 170_000;

pub(crate) fn create_slot_command(
    slot: &str,
    export_snapshot: bool,
    server_version_num: u32,
) -> String {
    let slot = quote_identifier(slot);
    // From PostgreSQL 17 the slot is a failover slot: standbys that synchronize slots
    // keep it, so replication resumes on a promoted standby.
    let failover = if server_version_num >= FAILOVER_VERSION {
        ", FAILOVER true"
    } else {
        ""
    };
    let snapshot = if server_version_num >= GENERIC_OPTIONS_VERSION {
        let mode = if export_snapshot { "export" } else { "nothing" };
        return format!(
            "CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT '{mode}'{failover})"
        );
    } else if export_snapshot {
        "EXPORT_SNAPSHOT"
    } else {
        "NOEXPORT_SNAPSHOT"
    };
    format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput {snapshot}")
}

/// Text of `START_REPLICATION ... LOGICAL`; names are quoted as identifiers and values as literals.
pub(crate) fn start_logical_command(slot: &str, start: Lsn, options: &[(&str, &str)]) -> String {
    let mut sql = format!(
        "START_REPLICATION SLOT {} LOGICAL {}",
        quote_identifier(slot),
        format_lsn(start)
    );
    if !options.is_empty() {
        let list: Vec<String> = options
            .iter()
            .map(|(name, value)| format!("{} {}", quote_identifier(name), quote_literal(value)))
            .collect();
        sql.push_str(" (");
        sql.push_str(&list.join(", "));
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_slot_uses_generic_options_on_15() {
        assert_eq!(
            create_slot_command("s", true, 150004),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            create_slot_command("s", false, 170000),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)"
        );
    }

    #[test]
    fn create_slot_uses_legacy_keywords_before_15() {
        assert_eq!(
            create_slot_command("s", true, 140010),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("we\"ird", false, 100000),
            "CREATE_REPLICATION_SLOT \"we\"\"ird\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
    }

    #[test]
    fn start_command_quotes_options() {
        assert_eq!(
            start_logical_command(
                "slot",
                0x16_B374_D848,
                &[("proto_version", "1"), ("publication_names", "a'b")]
            ),
            "START_REPLICATION SLOT \"slot\" LOGICAL 16/B374D848 (\"proto_version\" '1', \"publication_names\" 'a''b')"
        );
    }

    #[test]
    fn start_command_without_options_has_no_parentheses() {
        assert_eq!(
            start_logical_command("slot", 0, &[]),
            "START_REPLICATION SLOT \"slot\" LOGICAL 0/0"
        );
    }

    #[test]
    fn column_lookup_prefers_names() {
        let set = ResultSet {
            columns: vec!["a".into(), "snapshot_name".into()],
            rows: vec![],
        };
        let row = vec![Some("x".to_string()), Some("snap".to_string())];
        assert_eq!(column(&set, &row, "snapshot_name", 2), Some("snap"));
        assert_eq!(column(&set, &row, "missing", 0), Some("x"));
        assert_eq!(column(&set, &row, "missing", 5), None);
    }
}

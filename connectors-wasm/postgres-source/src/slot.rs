//! Watching the replication slot: retained WAL, activity, bounds, idle heartbeats.

use culvert_connector_sdk::host::{Level, gauge_set};
use culvert_pg_guest::{ErrorKind, GuestError, GuestResult, PgConnectConfig, pg_error};
use tokio_postgres::Client;

use crate::log;

/// Prefix of heartbeat messages.
pub const HEARTBEAT_PREFIX: &str = "culvert.heartbeat";

/// What the server says about the slot.
#[derive(Debug, Clone, Default)]
pub struct SlotStats {
    /// WAL bytes the slot keeps the server from removing.
    pub retained_bytes: u64,
    /// A walsender is attached.
    pub active: bool,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: String,
    /// Bytes that can still be written before the slot is in danger (None: no limit).
    pub safe_bytes: Option<i64>,
}

/// Read the slot's state and publish it as gauges.
pub async fn stats(client: &Client, cfg: &PgConnectConfig, slot: &str) -> GuestResult<SlotStats> {
    let row = client
        .query_opt(
            "SELECT coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::int8,
                    active, coalesce(wal_status, ''), safe_wal_size
               FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| pg_error(cfg, "read the replication slot", &e))?;
    let Some(row) = row else {
        return Err(missing(slot));
    };
    let s = SlotStats {
        retained_bytes: row.get::<_, i64>(0).max(0) as u64,
        active: row.get(1),
        wal_status: row.get(2),
        safe_bytes: row.get(3),
    };
    gauge_set("slot_retained_wal_bytes", s.retained_bytes as f64);
    gauge_set("slot_active", if s.active { 1.0 } else { 0.0 });
    gauge_set(
        "slot_safe_wal_bytes",
        s.safe_bytes.map(|b| b as f64).unwrap_or(-1.0),
    );
    if s.wal_status == "lost" {
        return Err(lost(slot));
    }
    Ok(s)
}

/// The error for a slot that no longer exists.
pub fn missing(slot: &str) -> GuestError {
    GuestError::new(
        ErrorKind::State,
        format!(
            "replication slot `{slot}` is missing, so changes since the last committed position are gone; run `culvert-agent resync --pipeline FILE` to rebuild it and copy the tables again (or set resync_on_slot_loss = true)"
        ),
    )
}

/// The error for a slot the server invalidated.
pub fn lost(slot: &str) -> GuestError {
    GuestError::new(
        ErrorKind::State,
        format!(
            "replication slot `{slot}` was invalidated: the server removed WAL it still needed (max_slot_wal_keep_size); run `culvert-agent resync --pipeline FILE` to rebuild it and copy the tables again (or set resync_on_slot_loss = true)"
        ),
    )
}

/// Write a heartbeat into the WAL so an idle slot's position can advance.
pub async fn heartbeat(client: &Client, cfg: &PgConnectConfig, slot: &str) -> GuestResult<()> {
    client
        .execute(
            "SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)",
            &[&HEARTBEAT_PREFIX, &slot],
        )
        .await
        .map_err(|e| pg_error(cfg, "write a heartbeat", &e))?;
    Ok(())
}

/// Drop the slot (after the replication connection is closed), waiting for the
/// walsender to let go of it.
pub async fn drop_slot(client: &Client, cfg: &PgConnectConfig, slot: &str) -> GuestResult<()> {
    for _ in 0..50 {
        // Whoever still streams from the slot (a walsender of ours that has not noticed
        // its client is gone) is told to stop; dropping below retries until it has.
        let _ = client
            .execute(
                "SELECT pg_catalog.pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            )
            .await;
        match client
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code().map(|c| c.code()) == Some("55006") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(pg_error(cfg, &format!("drop replication slot `{slot}`"), &e)),
        }
    }
    Err(GuestError::new(
        ErrorKind::State,
        format!("replication slot `{slot}` stayed in use; stop whatever reads it and retry"),
    ))
}

/// Warn once per crossing of the warning bound.
pub fn check_bounds(s: &SlotStats, slot: &str, warn_bytes: Option<u64>, warned: &mut bool) {
    match warn_bytes {
        Some(w) if s.retained_bytes > w => {
            if !*warned {
                log(
                    Level::Warn,
                    &format!(
                        "replication slot `{slot}` retains {} MiB of WAL (warning bound {} MiB): the destination is behind or stopped",
                        s.retained_bytes >> 20,
                        w >> 20
                    ),
                );
                *warned = true;
            }
        }
        _ => *warned = false,
    }
}

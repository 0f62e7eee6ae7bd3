//! The progress line on stderr and the counters behind it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared progress of one pipeline.
#[derive(Default)]
pub struct Progress {
    /// Rows the target committed.
    pub rows_applied: AtomicU64,
    /// Rows the source produced.
    pub rows_read: AtomicU64,
    /// Source lag in bytes.
    pub lag_bytes: AtomicU64,
    /// Buffered bytes.
    pub buffer_bytes: AtomicU64,
    /// Snapshot tables known.
    pub tables_total: AtomicU64,
    /// Snapshot tables started at the target.
    pub tables_started: AtomicU64,
    /// Bytes of Arrow data the target committed.
    pub bytes_applied: AtomicU64,
    /// Milliseconds from a batch entering the buffer to its commit, for the last batch.
    pub lag_millis: AtomicU64,
    phase: Mutex<&'static str>,
    /// Rows committed per table, and whether the last of them came from the snapshot.
    tables: Mutex<std::collections::BTreeMap<String, TableCount>>,
}

/// What the target committed for one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCount {
    /// Rows committed.
    pub rows: u64,
    /// The last rows came from the initial copy (or a backfill), not from changes.
    pub copying: bool,
}

impl Progress {
    /// Set the phase shown.
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().expect("progress lock") = phase;
    }

    /// Count rows committed for `table` (`schema.name`).
    pub fn add_table_rows(&self, table: String, rows: u64, copying: bool) {
        let mut t = self.tables.lock().expect("progress lock");
        let e = t.entry(table).or_default();
        e.rows += rows;
        e.copying = copying;
    }

    /// The initial copy is over (a change batch was committed): no table is copying.
    pub fn end_snapshot(&self) {
        let mut t = self.tables.lock().expect("progress lock");
        for c in t.values_mut() {
            c.copying = false;
        }
    }

    /// Rows committed per table.
    pub fn tables(&self) -> Vec<(String, TableCount)> {
        let t = self.tables.lock().expect("progress lock");
        t.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The phase shown.
    pub fn phase(&self) -> &'static str {
        let p = *self.phase.lock().expect("progress lock");
        if p.is_empty() { "starting" } else { p }
    }
}

/// Print one line every `every` until the task is dropped.
pub async fn report(name: String, progress: std::sync::Arc<Progress>, every: Duration) {
    let mut last_rows = 0;
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let rows = progress.rows_applied.load(Ordering::Relaxed);
        let elapsed = last.elapsed().as_secs_f64().max(0.001);
        let rate = (rows - last_rows) as f64 / elapsed;
        last_rows = rows;
        last = Instant::now();
        let total = progress.tables_total.load(Ordering::Relaxed);
        let tables = if total > 0 {
            format!(
                " tables={}/{}",
                progress.tables_started.load(Ordering::Relaxed).min(total),
                total
            )
        } else {
            String::new()
        };
        eprintln!(
            "[{name}] phase={}{tables} rows={rows} rate={rate:.0} rows/s lag={} KiB buffer={} KiB",
            progress.phase(),
            progress.lag_bytes.load(Ordering::Relaxed) / 1024,
            progress.buffer_bytes.load(Ordering::Relaxed) / 1024,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_stop_copying_when_changes_arrive() {
        let p = Progress::default();
        p.add_table_rows("public.a".into(), 10, true);
        p.add_table_rows("public.b".into(), 5, true);
        p.add_table_rows("public.a".into(), 2, false);
        p.end_snapshot();
        let t = p.tables();
        assert_eq!(
            t[0],
            (
                "public.a".into(),
                TableCount {
                    rows: 12,
                    copying: false
                }
            )
        );
        assert_eq!(
            t[1],
            (
                "public.b".into(),
                TableCount {
                    rows: 5,
                    copying: false
                }
            )
        );
    }
}

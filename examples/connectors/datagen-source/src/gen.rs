//! The synthetic data: pure functions of the seed, so any position can be resumed exactly.
//!
//! Each table starts with ids `1..=rows`. Its changes follow a repeating cycle of eight:
//! three inserts, two updates, a delete, a key change (an update that moves a row to a
//! new id, so it carries a before-image) and another update. Deletes and key changes
//! always take the lowest live id and new ids are always the next unused one, so the
//! live ids of a table are one contiguous range that follows from the change count alone.

/// What one change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new row.
    Insert { id: u64 },
    /// New values for a row (same key).
    Update { id: u64 },
    /// The row is removed.
    Delete { id: u64 },
    /// The row moves from `old` to `new` with new values.
    Rekey { old: u64, new: u64 },
}

impl Change {
    /// Rows this change occupies in a changes batch (a key change needs a before-image).
    pub fn rows(self) -> u64 {
        match self {
            Change::Rekey { .. } => 2,
            _ => 1,
        }
    }
}

/// Changes per cycle.
const CYCLE: u64 = 8;
/// Cycle slots that take a new id.
const NEW_ID_SLOTS: [u64; 4] = [0, 1, 2, 6];
/// Cycle slots that take the lowest live id away.
const LOW_END_SLOTS: [u64; 2] = [5, 6];

fn before(slots: &[u64], per_cycle: u64, c: u64) -> u64 {
    let (cycle, slot) = (c / CYCLE, c % CYCLE);
    cycle * per_cycle + slots.iter().filter(|s| **s < slot).count() as u64
}

/// The live ids of a table before its change `c`: `low..=high`.
pub fn live_range(rows: u64, c: u64) -> (u64, u64) {
    let taken = before(&LOW_END_SLOTS, LOW_END_SLOTS.len() as u64, c);
    let added = before(&NEW_ID_SLOTS, NEW_ID_SLOTS.len() as u64, c);
    (taken + 1, rows + added)
}

/// The table's change number `c` (0-based).
pub fn change(seed: u64, table: u64, rows: u64, c: u64) -> Change {
    let (low, high) = live_range(rows, c);
    let next_id = high + 1;
    let pick = || low + mix(&[seed, table, c, 0x5eed]) % (high - low + 1);
    match c % CYCLE {
        0..=2 => Change::Insert { id: next_id },
        5 => Change::Delete { id: low },
        6 => Change::Rekey {
            old: low,
            new: next_id,
        },
        _ => Change::Update { id: pick() },
    }
}

/// The stamp of values written by snapshot rows; a change `c` writes with stamp `c + 1`.
pub const SNAPSHOT_STAMP: u64 = 0;

/// One row's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: u64,
    pub name: Option<String>,
    pub score: f64,
    pub active: bool,
    /// Microseconds since 1970-01-01 UTC.
    pub created_at: i64,
    /// Decimal text.
    pub amount: String,
    pub payload: Vec<u8>,
}

/// 2024-01-01T00:00:00Z in microseconds since the Unix epoch.
const BASE_MICROS: i64 = 1_704_067_200_000_000;

/// The values row `id` of `table` has after the write stamped `stamp`.
pub fn row(seed: u64, table: u64, id: u64, stamp: u64) -> Row {
    let h = mix(&[seed, table, id, stamp]);
    let g = mix(&[h, 0x9e37]);
    let payload_len = (g % 17) as usize;
    let payload = (0..payload_len)
        .map(|i| (mix(&[g, i as u64]) & 0xff) as u8)
        .collect();
    let cents = (h >> 20) % 10_000_000;
    let sign = if (h >> 60) & 1 == 1 { "-" } else { "" };
    Row {
        id,
        name: (!h.is_multiple_of(13)).then(|| format!("row {id} of table {table} v{stamp}")),
        score: ((h >> 8) % 2_000_001) as f64 / 100.0 - 10_000.0,
        active: (h >> 4) & 1 == 1,
        created_at: BASE_MICROS + (id as i64) * 1_000_000 + (stamp as i64 % 1_000_000),
        amount: format!("{sign}{}.{:02}", cents / 100, cents % 100),
        payload,
    }
}

/// SplitMix64 finalizer folded over the inputs: cheap, well spread and stable.
pub fn mix(parts: &[u64]) -> u64 {
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    for p in parts {
        x = x.wrapping_add(*p).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    x
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn live_range_matches_a_replay() {
        let rows = 3;
        let mut live: BTreeSet<u64> = (1..=rows).collect();
        for c in 0..200 {
            let (low, high) = live_range(rows, c);
            assert_eq!(live, (low..=high).collect(), "before change {c}");
            match change(1, 0, rows, c) {
                Change::Insert { id } => assert!(live.insert(id)),
                Change::Update { id } => assert!(live.contains(&id)),
                Change::Delete { id } => assert!(live.remove(&id)),
                Change::Rekey { old, new } => assert!(live.remove(&old) && live.insert(new)),
            }
        }
    }

    #[test]
    fn empty_tables_still_have_live_rows_when_needed() {
        for c in 0..64 {
            let (low, high) = live_range(0, c);
            if matches!(
                change(3, 1, 0, c),
                Change::Update { .. } | Change::Delete { .. } | Change::Rekey { .. }
            ) {
                assert!(low <= high, "change {c} needs a live row");
            }
        }
    }

    #[test]
    fn rows_are_deterministic_and_vary() {
        assert_eq!(row(1, 2, 3, 4), row(1, 2, 3, 4));
        assert_ne!(row(1, 2, 3, 4), row(2, 2, 3, 4));
        assert_ne!(row(1, 2, 3, 4), row(1, 2, 3, 5));
        let nulls = (1..=1000)
            .filter(|id| row(9, 0, *id, 0).name.is_none())
            .count();
        assert!((40..120).contains(&nulls), "{nulls}");
        assert!(row(9, 0, 1, 0).amount.contains('.'));
    }
}

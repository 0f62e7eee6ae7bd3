//! Reducing a table's change rows to one net action per key, so a destination can
//! apply a batch with a few set-based statements and still end exactly where the
//! source did.

use std::collections::HashMap;

/// The net effect on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Insert, or overwrite every column of, the row.
    Upsert,
    /// Remove the row.
    Delete,
    /// Overwrite the columns whose bit is clear in the bitmap; keep the others.
    Partial(Vec<u8>),
}

/// One output row: its action and, per table column, the input row holding the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRow {
    /// What to do.
    pub action: Action,
    /// Input row index per table column.
    pub sources: Vec<u32>,
    /// The key did not exist before the batch (its first change inserted or moved a row
    /// into it), so an upsert is a plain insert and a delete has nothing to remove.
    pub fresh: bool,
}

/// A step of the plan, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Net rows; their keys are distinct, so they commute.
    Rows(Vec<NetRow>),
    /// Empty the table.
    Truncate,
}

/// One input change row as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// `I`, `U`, `B`, `D` or `T`.
    pub op: u8,
    /// Encoded key values of the row.
    pub key: &'a [u8],
    /// Bitmap of unchanged columns, if any.
    pub unchanged: Option<&'a [u8]>,
}

fn bit(bits: &[u8], col: usize) -> bool {
    bits.get(col / 8).is_some_and(|b| b & (1 << (col % 8)) != 0)
}

fn has_any(bits: Option<&[u8]>) -> bool {
    bits.is_some_and(|b| b.iter().any(|x| *x != 0))
}

/// Plan the changes of a keyed table. Returns `None` when the batch moves a row to a
/// new key while leaving values unsent that only the destination holds; the caller then
/// applies the rows one by one.
pub fn plan(changes: &[Change<'_>], width: usize) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut net: HashMap<&[u8], NetRow> = HashMap::new();
    let mut order: Vec<&[u8]> = Vec::new();
    let all = |row: usize| vec![row as u32; width];
    let mut i = 0;
    while i < changes.len() {
        let c = changes[i];
        match c.op {
            b'T' => {
                flush(&mut net, &mut order, &mut steps);
                steps.push(Step::Truncate);
            }
            b'I' => put(
                &mut net,
                &mut order,
                c.key,
                NetRow {
                    action: Action::Upsert,
                    sources: all(i),
                    fresh: false,
                },
                true,
            ),
            b'D' => put(
                &mut net,
                &mut order,
                c.key,
                NetRow {
                    action: Action::Delete,
                    sources: all(i),
                    fresh: false,
                },
                false,
            ),
            b'B' | b'U' => {
                let before_i = i;
                let (old_key, new_i) = if c.op == b'B' {
                    if i + 1 >= changes.len() || changes[i + 1].op != b'U' {
                        return None;
                    }
                    i += 1;
                    (Some(c.key), i)
                } else {
                    (None, i)
                };
                let new = changes[new_i];
                let prev = match old_key {
                    Some(old) if old != new.key => {
                        let prev = net.remove(old);
                        let old_fresh = prev.as_ref().is_some_and(|p| p.fresh);
                        put(
                            &mut net,
                            &mut order,
                            old,
                            NetRow {
                                action: Action::Delete,
                                sources: all(before_i),
                                fresh: false,
                            },
                            old_fresh,
                        );
                        if has_any(new.unchanged)
                            && !matches!(
                                prev,
                                Some(NetRow {
                                    action: Action::Upsert,
                                    ..
                                })
                            )
                        {
                            return None;
                        }
                        prev
                    }
                    _ => net.get(new.key).cloned(),
                };
                // A row moved into a key that was not in use makes that key fresh.
                let moved = old_key.is_some_and(|old| old != new.key);
                let row = merge(prev, new_i, new.unchanged, width);
                put(&mut net, &mut order, new.key, row, moved);
            }
            _ => return None,
        }
        i += 1;
    }
    flush(&mut net, &mut order, &mut steps);
    Some(steps)
}

fn merge(prev: Option<NetRow>, row: usize, unchanged: Option<&[u8]>, width: usize) -> NetRow {
    let Some(bits) = unchanged.filter(|b| has_any(Some(b))) else {
        return NetRow {
            action: Action::Upsert,
            sources: vec![row as u32; width],
            fresh: false,
        };
    };
    match prev {
        Some(NetRow {
            action: Action::Upsert,
            sources,
            ..
        }) => NetRow {
            action: Action::Upsert,
            sources: (0..width)
                .map(|c| if bit(bits, c) { sources[c] } else { row as u32 })
                .collect(),
            fresh: false,
        },
        Some(NetRow {
            action: Action::Partial(prev_bits),
            sources,
            ..
        }) => {
            let mask: Vec<u8> = (0..width.div_ceil(8))
                .map(|b| bits.get(b).copied().unwrap_or(0) & prev_bits.get(b).copied().unwrap_or(0))
                .collect();
            NetRow {
                action: Action::Partial(mask),
                sources: (0..width)
                    .map(|c| if bit(bits, c) { sources[c] } else { row as u32 })
                    .collect(),
                fresh: false,
            }
        }
        _ => {
            let mut mask = bits.to_vec();
            mask.resize(width.div_ceil(8), 0);
            NetRow {
                action: Action::Partial(mask),
                sources: vec![row as u32; width],
                fresh: false,
            }
        }
    }
}

fn put<'a>(
    net: &mut HashMap<&'a [u8], NetRow>,
    order: &mut Vec<&'a [u8]>,
    key: &'a [u8],
    mut row: NetRow,
    fresh_if_new: bool,
) {
    row.fresh = net.get(key).map(|e| e.fresh).unwrap_or(fresh_if_new);
    if net.insert(key, row).is_none() {
        order.push(key);
    }
}

fn flush<'a>(
    net: &mut HashMap<&'a [u8], NetRow>,
    order: &mut Vec<&'a [u8]>,
    steps: &mut Vec<Step>,
) {
    if order.is_empty() {
        return;
    }
    let rows = order
        .drain(..)
        .filter_map(|k| net.remove(k))
        .filter(|r| !(r.fresh && r.action == Action::Delete))
        .collect();
    steps.push(Step::Rows(rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch<'a>(op: u8, key: &'a [u8], unchanged: Option<&'a [u8]>) -> Change<'a> {
        Change { op, key, unchanged }
    }

    fn rows(steps: &[Step]) -> &[NetRow] {
        match &steps[0] {
            Step::Rows(r) => r,
            Step::Truncate => panic!("expected rows"),
        }
    }

    #[test]
    fn last_change_per_key_wins() {
        let c = [
            ch(b'I', b"1", None),
            ch(b'U', b"1", None),
            ch(b'D', b"2", None),
            ch(b'I', b"2", None),
        ];
        let steps = plan(&c, 2).unwrap();
        let r = rows(&steps);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            NetRow {
                action: Action::Upsert,
                sources: vec![1, 1],
                fresh: true,
            }
        );
        assert_eq!(
            r[1],
            NetRow {
                action: Action::Upsert,
                sources: vec![3, 3],
                fresh: false,
            }
        );
    }

    #[test]
    fn unchanged_values_come_from_earlier_rows_or_stay_partial() {
        let bits = [0b10u8];
        let c = [
            ch(b'I', b"1", None),
            ch(b'U', b"1", Some(&bits)),
            ch(b'U', b"9", Some(&bits)),
        ];
        let steps = plan(&c, 2).unwrap();
        let r = rows(&steps);
        assert_eq!(
            r[0],
            NetRow {
                action: Action::Upsert,
                sources: vec![1, 0],
                fresh: true,
            }
        );
        assert_eq!(
            r[1],
            NetRow {
                action: Action::Partial(vec![0b10]),
                sources: vec![2, 2],
                fresh: false,
            }
        );
    }

    #[test]
    fn key_change_deletes_old_key() {
        let c = [ch(b'B', b"1", None), ch(b'U', b"2", None)];
        let steps = plan(&c, 1).unwrap();
        let r = rows(&steps);
        assert_eq!(
            r[0],
            NetRow {
                action: Action::Delete,
                sources: vec![0],
                fresh: false,
            }
        );
        assert_eq!(
            r[1],
            NetRow {
                action: Action::Upsert,
                sources: vec![1],
                fresh: true,
            }
        );
    }

    #[test]
    fn key_change_with_values_only_the_destination_has_needs_row_by_row() {
        let bits = [1u8];
        assert!(plan(&[ch(b'B', b"1", None), ch(b'U', b"2", Some(&bits))], 2).is_none());
        assert!(
            plan(
                &[
                    ch(b'I', b"1", None),
                    ch(b'B', b"1", None),
                    ch(b'U', b"2", Some(&bits))
                ],
                2
            )
            .is_some()
        );
    }

    #[test]
    fn keys_born_in_the_batch_insert_plainly_and_vanish_without_a_trace() {
        let c = [
            ch(b'I', b"1", None),
            ch(b'D', b"1", None),
            ch(b'I', b"2", None),
            ch(b'B', b"2", None),
            ch(b'U', b"3", None),
        ];
        let steps = plan(&c, 1).unwrap();
        let r = rows(&steps);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0],
            NetRow {
                action: Action::Upsert,
                sources: vec![4],
                fresh: true
            }
        );
    }

    #[test]
    fn truncate_splits_steps() {
        let c = [
            ch(b'I', b"1", None),
            ch(b'T', b"", None),
            ch(b'I', b"1", None),
        ];
        let steps = plan(&c, 1).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1], Step::Truncate);
    }
}

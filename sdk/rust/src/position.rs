//! Positions: opaque bytes that the agent compares byte-wise (lexicographically).
//!
//! A source must emit data batches with strictly increasing positions and must be able
//! to resume *after* any position it emitted. Unsigned integers encoded big-endian with
//! a fixed width sort byte-wise exactly as they sort numerically, and so do tuples of
//! them concatenated, which is what the helpers here produce.

use std::cmp::Ordering;
use std::fmt;

use crate::types::{ConnectorError, Result};

/// `n` as 8 big-endian bytes.
pub fn encode_u64(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// Read a position written by [`encode_u64`].
pub fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| foreign(bytes, 8))?;
    Ok(u64::from_be_bytes(array))
}

/// Several numbers as one position, ordered like the tuple `(values[0], values[1], …)`.
pub fn encode_u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Read exactly `N` numbers written by [`encode_u64s`].
pub fn decode_u64s<const N: usize>(bytes: &[u8]) -> Result<[u64; N]> {
    if bytes.len() != N * 8 {
        return Err(foreign(bytes, N * 8));
    }
    let mut out = [0u64; N];
    for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *slot = u64::from_be_bytes(chunk.try_into().expect("chunks of 8"));
    }
    Ok(out)
}

/// Byte-wise order, the order the agent uses.
pub fn compare(a: &[u8], b: &[u8]) -> Ordering {
    a.cmp(b)
}

/// Whether `position` comes strictly after `reference`; `None` (nothing committed yet)
/// is before everything.
pub fn is_after(position: &[u8], reference: Option<&[u8]>) -> bool {
    match reference {
        Some(r) => compare(position, r) == Ordering::Greater,
        None => true,
    }
}

/// Lower-case hexadecimal, a file-name-safe spelling that keeps the order.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Read [`to_hex`] text back (either case; surrounding whitespace ignored).
pub fn from_hex(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    let bad = || {
        ConnectorError::state(format!(
            "stored position `{}` is not hexadecimal; it was not written by this connector",
            text.chars().take(80).collect::<String>()
        ))
    };
    if text.len() % 2 != 0 {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

fn foreign(bytes: &[u8], expected: usize) -> ConnectorError {
    ConnectorError::state(format!(
        "position {} has {} bytes, expected {expected}: it was not written by this connector (or by an incompatible version); reset the pipeline's position to start over",
        to_hex(bytes),
        bytes.len()
    ))
}

/// An owned position with the agent's ordering.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(Vec<u8>);

impl Position {
    /// The position of `n`, see [`encode_u64`].
    pub fn from_u64(n: u64) -> Position {
        Position(encode_u64(n))
    }

    /// The position of a tuple of numbers, see [`encode_u64s`].
    pub fn from_u64s(values: &[u64]) -> Position {
        Position(encode_u64s(values))
    }

    /// The number in a position made by [`Position::from_u64`].
    pub fn to_u64(&self) -> Result<u64> {
        decode_u64(&self.0)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for Position {
    fn from(bytes: Vec<u8>) -> Position {
        Position(bytes)
    }
}

impl From<&[u8]> for Position {
    fn from(bytes: &[u8]) -> Position {
        Position(bytes.to_vec())
    }
}

impl From<Position> for Vec<u8> {
    fn from(p: Position) -> Vec<u8> {
        p.0
    }
}

impl AsRef<[u8]> for Position {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Position {
    /// Hexadecimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_round_trips_and_orders_bytewise() {
        for n in [0u64, 1, 255, 256, 1 << 40, u64::MAX] {
            assert_eq!(decode_u64(&encode_u64(n)).unwrap(), n);
        }
        let mut numbers = vec![300u64, 2, 65_536, 255, 0, u64::MAX, 256];
        let mut encoded: Vec<Vec<u8>> = numbers.iter().map(|n| encode_u64(*n)).collect();
        numbers.sort();
        encoded.sort();
        let decoded: Vec<u64> = encoded.iter().map(|e| decode_u64(e).unwrap()).collect();
        assert_eq!(decoded, numbers);
    }

    #[test]
    fn tuples_order_like_tuples() {
        let a = encode_u64s(&[1, u64::MAX]);
        let b = encode_u64s(&[2, 0]);
        assert_eq!(compare(&a, &b), Ordering::Less);
        assert_eq!(decode_u64s::<2>(&b).unwrap(), [2, 0]);
        assert!(decode_u64s::<3>(&b).is_err());
    }

    #[test]
    fn wrong_width_is_a_state_error() {
        let e = decode_u64(&[1, 2, 3]).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::State);
        assert!(e.message.contains("010203"));
    }

    #[test]
    fn is_after_treats_none_as_start() {
        assert!(is_after(&encode_u64(0), None));
        assert!(is_after(&encode_u64(2), Some(&encode_u64(1))));
        assert!(!is_after(&encode_u64(1), Some(&encode_u64(1))));
    }

    #[test]
    fn hex_round_trips() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001ABFF\n").unwrap(), bytes);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn position_type_orders_bytewise() {
        assert!(Position::from_u64(9) < Position::from_u64(10));
        assert_eq!(Position::from_u64(7).to_u64().unwrap(), 7);
        assert_eq!(Position::from_u64(1).to_string(), "0000000000000001");
    }
}

//! Log sequence numbers and their textual form.

use crate::error::ReplicationError;

/// A WAL position, as a plain 64-bit byte offset.
pub type Lsn = u64;

/// Parses PostgreSQL's `high/low` hexadecimal LSN notation, e.g. `16/B374D848`.
pub fn parse_lsn(s: &str) -> Result<Lsn, ReplicationError> {
    let invalid = || ReplicationError::InvalidLsn(s.to_owned());
    let (high, low) = s.trim().split_once('/').ok_or_else(invalid)?;
    let half = |part: &str| -> Result<u64, ReplicationError> {
        // from_str_radix alone would accept a leading '+', which PostgreSQL does not.
        if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        u64::from_str_radix(part, 16).map_err(|_| invalid())
    };
    Ok((half(high)? << 32) | half(low)?)
}

/// Formats an LSN the way PostgreSQL prints it (uppercase hex, no padding).
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typical_values() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn("0/0").unwrap(), 0);
        assert_eq!(parse_lsn("0/1").unwrap(), 1);
        assert_eq!(parse_lsn("1/0").unwrap(), 1 << 32);
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF").unwrap(), u64::MAX);
        assert_eq!(parse_lsn("16/b374d848").unwrap(), 0x16_B374_D848);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "/",
            "16",
            "16/",
            "/B374D848",
            "16/B374D848/1",
            "G/0",
            "+1/0",
            "1/-0",
            "100000000/0",
            "0/100000000",
            "1 /2",
        ] {
            let err = parse_lsn(bad).unwrap_err();
            assert!(
                matches!(err, ReplicationError::InvalidLsn(_)),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn formats_like_postgres() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(format_lsn(1 << 32), "1/0");
        assert_eq!(format_lsn(u64::MAX), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn round_trips() {
        for lsn in [0, 1, 0x1_0000_0000, 0x16_B374_D848, u64::MAX, 0xDEAD_BEEF] {
            assert_eq!(parse_lsn(&format_lsn(lsn)).unwrap(), lsn);
        }
    }
}

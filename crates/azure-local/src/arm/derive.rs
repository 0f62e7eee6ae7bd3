//! Values the stand-in makes up for resources (principal ids, connection names, private IPs),
//! derived from resource ids so they are stable across requests and restarts.

use sha2::{Digest, Sha256};

fn digest(purpose: &str, seed: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(seed.to_ascii_lowercase().as_bytes());
    h.finalize().into()
}

/// A version-4-shaped GUID derived from `purpose` and `seed` (case-insensitive).
pub fn guid(purpose: &str, seed: &str) -> String {
    let mut b = digest(purpose, seed);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A private IPv4 address in 10.0.0.0/8 derived from `seed`, never a network, gateway or
/// broadcast address of a /24.
pub fn private_ip(seed: &str) -> String {
    let b = digest("private-ip", seed);
    format!("10.{}.{}.{}", b[0], b[1], 4 + b[2] % 250)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_case_insensitive_and_distinct_per_purpose() {
        let a = guid("principal", "/subscriptions/S/x");
        assert_eq!(a, guid("principal", "/subscriptions/s/X"));
        assert_ne!(a, guid("client", "/subscriptions/s/x"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        let ip = private_ip("pe");
        assert_eq!(ip, private_ip("PE"));
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!((4..=253).contains(&last));
    }
}

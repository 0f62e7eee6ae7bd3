//! Account SAS tokens: HMAC-SHA256 over the documented string-to-sign.
//!
//! The Storage SDK 1.x authenticates only with Entra tokens or a SAS already in the URL;
//! Azurite (and accounts reached with a key rather than an identity) get an account SAS
//! derived from the account key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

/// Azurite's well-known account name.
pub const DEVSTORE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key (public, documented; not a secret).
pub const DEVSTORE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The SAS service version signed into account SAS tokens.
pub const SAS_VERSION: &str = "2022-11-02";

/// Azurite's account key, decoded.
pub fn devstore_key() -> Vec<u8> {
    B64.decode(DEVSTORE_KEY).expect("well-known key is base64")
}

/// The fields of an account SAS, in the order the string-to-sign uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSas {
    /// `sp`, in the documented order (`rwdlacup` for queues).
    pub permissions: String,
    /// `ss`.
    pub services: String,
    /// `srt`.
    pub resource_types: String,
    /// `st`, ISO 8601 UTC, or empty.
    pub start: String,
    /// `se`, ISO 8601 UTC.
    pub expiry: String,
    /// `sip`, or empty.
    pub ip: String,
    /// `spr`, or empty.
    pub protocol: String,
    /// `sv`.
    pub version: String,
}

const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl AccountSas {
    /// Full queue permissions over service, queues and messages, over http or https.
    pub fn for_queues(expiry: DateTime<Utc>) -> Self {
        Self::full("q", expiry)
    }

    /// Full blob permissions over service, containers and blobs, over http or https.
    pub fn for_blobs(expiry: DateTime<Utc>) -> Self {
        Self::full("b", expiry)
    }

    fn full(services: &str, expiry: DateTime<Utc>) -> Self {
        Self {
            permissions: "rwdlacup".into(),
            services: services.into(),
            resource_types: "sco".into(),
            start: String::new(),
            expiry: expiry.to_rfc3339_opts(SecondsFormat::Secs, true),
            ip: String::new(),
            protocol: "https,http".into(),
            version: SAS_VERSION.into(),
        }
    }

    /// The string-to-sign for service version 2020-12-06 and later (an empty encryption scope line included).
    pub fn string_to_sign(&self, account: &str) -> String {
        [
            account,
            &self.permissions,
            &self.services,
            &self.resource_types,
            &self.start,
            &self.expiry,
            &self.ip,
            &self.protocol,
            &self.version,
            "",
            "",
        ]
        .join("\n")
    }

    /// Base64 HMAC-SHA256 of the string-to-sign with the decoded account key.
    pub fn signature(&self, account: &str, key: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(self.string_to_sign(account).as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// The signed query string, values percent-encoded.
    pub fn to_query(&self, account: &str, key: &[u8]) -> String {
        let sig = self.signature(account, key);
        let mut parts = vec![
            ("sv", self.version.as_str()),
            ("ss", &self.services),
            ("srt", &self.resource_types),
            ("sp", &self.permissions),
            ("se", &self.expiry),
        ];
        if !self.start.is_empty() {
            parts.push(("st", &self.start));
        }
        if !self.ip.is_empty() {
            parts.push(("sip", &self.ip));
        }
        if !self.protocol.is_empty() {
            parts.push(("spr", &self.protocol));
        }
        parts.push(("sig", &sig));
        parts
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Expected signature computed independently:
    /// `printf 'devstoreaccount1\nrwdlacup\nq\nsco\n\n2030-01-01T00:00:00Z\n\nhttps,http\n2022-11-02\n\n'
    ///  | openssl dgst -sha256 -mac HMAC -macopt hexkey:<hex of the decoded key> -binary | base64`
    #[test]
    fn account_sas_known_vector() {
        let expiry = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let sas = AccountSas::for_queues(expiry);
        assert_eq!(
            sas.string_to_sign("devstoreaccount1"),
            "devstoreaccount1\nrwdlacup\nq\nsco\n\n2030-01-01T00:00:00Z\n\nhttps,http\n2022-11-02\n\n"
        );
        let key = B64.decode(DEVSTORE_KEY).unwrap();
        assert_eq!(
            sas.signature("devstoreaccount1", &key),
            "eNCNzg5JTrT8wlsIKSALrFUs7bN42O/NIL5WXCvd2XI="
        );
        assert_eq!(
            sas.to_query("devstoreaccount1", &key),
            "sv=2022-11-02&ss=q&srt=sco&sp=rwdlacup&se=2030-01-01T00%3A00%3A00Z&spr=https%2Chttp\
             &sig=eNCNzg5JTrT8wlsIKSALrFUs7bN42O%2FNIL5WXCvd2XI%3D"
        );
    }
}

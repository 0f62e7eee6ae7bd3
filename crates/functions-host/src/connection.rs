//! Storage connection strings and the account SAS that stands in for SharedKey.
//!
//! `azure_storage_queue` 1.x authenticates only with Entra tokens or a SAS already in the URL, so an account key
//! from a connection string is turned into an account SAS here (HMAC-SHA256 over the documented string-to-sign).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use url::Url;

/// Azurite's well-known account name.
pub const DEVSTORE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key.
pub const DEVSTORE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The SAS service version signed into account SAS tokens.
pub const SAS_VERSION: &str = "2022-11-02";

/// Why a connection string was rejected (never includes the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage connection string: {0}")]
pub struct ConnectionStringError(pub String);

/// How requests to the account are authorized.
#[derive(Clone)]
pub enum StorageCredential {
    /// The account key (decoded); an account SAS is derived from it.
    AccountKey(Vec<u8>),
    /// A SAS token given in the connection string, without the leading `?`.
    Sas(String),
}

impl std::fmt::Debug for StorageCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageCredential::AccountKey(_) => "AccountKey(..)",
            StorageCredential::Sas(_) => "Sas(..)",
        })
    }
}

/// A storage account's queue endpoint and credential.
#[derive(Debug, Clone)]
pub struct StorageAccount {
    /// Account name (for signing).
    pub account_name: String,
    /// Queue service URL, e.g. `http://127.0.0.1:10001/devstoreaccount1` (no trailing slash).
    pub queue_endpoint: Url,
    /// Credential.
    pub credential: StorageCredential,
}

impl StorageAccount {
    /// Parses `UseDevelopmentStorage=true` or `DefaultEndpointsProtocol=..;AccountName=..;AccountKey=..;QueueEndpoint=..`.
    pub fn from_connection_string(text: &str) -> Result<Self, ConnectionStringError> {
        let err = |m: &str| ConnectionStringError(m.to_owned());
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err("every part must be Key=Value"))?;
            pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };

        if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            let base = get("developmentstorageproxyuri").unwrap_or("http://127.0.0.1");
            let mut url =
                Url::parse(base).map_err(|_| err("DevelopmentStorageProxyUri is not a URL"))?;
            url.set_port(Some(10001))
                .map_err(|_| err("DevelopmentStorageProxyUri cannot take a port"))?;
            url.set_path(DEVSTORE_ACCOUNT);
            return Ok(Self {
                account_name: DEVSTORE_ACCOUNT.to_owned(),
                queue_endpoint: url,
                credential: StorageCredential::AccountKey(
                    B64.decode(DEVSTORE_KEY).expect("well-known key is base64"),
                ),
            });
        }

        let account_name = get("accountname").map(str::to_owned);
        let credential = match (get("accountkey"), get("sharedaccesssignature")) {
            (Some(key), _) => StorageCredential::AccountKey(
                B64.decode(key)
                    .map_err(|_| err("AccountKey is not base64"))?,
            ),
            (None, Some(sas)) => StorageCredential::Sas(sas.trim_start_matches('?').to_owned()),
            (None, None) => {
                return Err(err(
                    "needs AccountKey or SharedAccessSignature (identity-based connections are not supported locally)",
                ));
            }
        };
        let queue_endpoint = match get("queueendpoint") {
            Some(e) => Url::parse(e.trim_end_matches('/'))
                .map_err(|_| err("QueueEndpoint is not a URL"))?,
            None => {
                let name = account_name
                    .as_deref()
                    .ok_or_else(|| err("needs AccountName or QueueEndpoint"))?;
                let protocol = get("defaultendpointsprotocol").unwrap_or("https");
                let suffix = get("endpointsuffix").unwrap_or("core.windows.net");
                Url::parse(&format!("{protocol}://{name}.queue.{suffix}"))
                    .map_err(|_| err("cannot build the queue endpoint URL"))?
            }
        };
        let account_name = match account_name {
            Some(n) => n,
            None if matches!(credential, StorageCredential::Sas(_)) => String::new(),
            None => return Err(err("AccountKey needs AccountName")),
        };
        Ok(Self {
            account_name,
            queue_endpoint,
            credential,
        })
    }

    /// The query string (no `?`) that authorizes requests, valid until `expiry` when derived from a key.
    pub fn sas_query(&self, expiry: DateTime<Utc>) -> String {
        match &self.credential {
            StorageCredential::Sas(sas) => sas.clone(),
            StorageCredential::AccountKey(key) => {
                AccountSas::for_queues(expiry).to_query(&self.account_name, key)
            }
        }
    }
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
        Self {
            permissions: "rwdlacup".into(),
            services: "q".into(),
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

    #[test]
    fn development_storage() {
        let a = StorageAccount::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(a.account_name, "devstoreaccount1");
        assert_eq!(
            a.queue_endpoint.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert!(matches!(a.credential, StorageCredential::AccountKey(ref k) if k.len() == 64));
    }

    #[test]
    fn explicit_endpoint_and_defaults() {
        let a = StorageAccount::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEVSTORE_KEY};QueueEndpoint=http://127.0.0.1:4711/devstoreaccount1;"
        ))
        .unwrap();
        assert_eq!(
            a.queue_endpoint.as_str(),
            "http://127.0.0.1:4711/devstoreaccount1"
        );
        let a = StorageAccount::from_connection_string(&format!(
            "AccountName=acct;AccountKey={DEVSTORE_KEY}"
        ))
        .unwrap();
        assert_eq!(
            a.queue_endpoint.as_str(),
            "https://acct.queue.core.windows.net/"
        );
        let a = StorageAccount::from_connection_string(
            "QueueEndpoint=https://x.example/;SharedAccessSignature=?sv=1&sig=2",
        )
        .unwrap();
        assert_eq!(a.sas_query(Utc::now()), "sv=1&sig=2");
    }

    #[test]
    fn connection_string_errors() {
        for (s, want) in [
            ("AccountName=a", "AccountKey or SharedAccessSignature"),
            ("AccountName=a;AccountKey=***", "not base64"),
            ("garbage", "Key=Value"),
            ("AccountKey=AAAA", "AccountName"),
        ] {
            let e = StorageAccount::from_connection_string(s).unwrap_err();
            assert!(e.0.contains(want), "{s}: {e}");
        }
    }

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

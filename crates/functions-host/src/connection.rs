//! Storage connection strings and the account SAS that stands in for SharedKey.
//!
//! `azure_storage_queue` 1.x authenticates only with Entra tokens or a SAS already in the URL, so an account key
//! from a connection string is turned into an account SAS here (HMAC-SHA256 over the documented string-to-sign).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use url::Url;

pub use culvert_azure::sas::{AccountSas, DEVSTORE_ACCOUNT, DEVSTORE_KEY};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

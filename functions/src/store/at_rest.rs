//! Configuration at rest: sealed with AES-256-GCM under a versioned master key.
//!
//! A sealed value is `v1:<key version>:<base64 of nonce || ciphertext || tag>`. The version
//! says which master key opens it, so values sealed before a rotation stay readable. The
//! additional data binds the ciphertext to its table, column and row (and to the version), so
//! a value copied into another row, column or version label does not open.
//!
//! What is sealed: a connector's configuration, an environment's Azure settings, and the
//! stored replies of idempotent creates (they repeat that configuration).

use std::collections::BTreeSet;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde_json::Value;

use super::{Sql, Store};
use crate::error::{ApiError, ApiResult};
use crate::master_keys::{KeySet, MasterKeyError, MasterKeys};

/// The format tag of sealed values.
const FORMAT: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Rows sealed or re-encrypted per transaction.
pub const BATCH: i64 = 200;

/// A sealed column: its table and the (logical) column name the additional data names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Table.
    pub table: &'static str,
    /// Column, as the API knows it (stored in `<column>_sealed`).
    pub column: &'static str,
}

/// `connectors.config`.
pub const CONNECTOR_CONFIG: Field = Field {
    table: "connectors",
    column: "config",
};
/// `environments.azure`.
pub const ENVIRONMENT_AZURE: Field = Field {
    table: "environments",
    column: "azure",
};
/// `environments.agent_token_sealed`: the registration token an Azure environment's scale
/// set carries, kept so every model update carries the same one.
pub const ENVIRONMENT_AGENT_TOKEN: Field = Field {
    table: "environments",
    column: "agent_token",
};
/// `idempotency_keys.body`: the first reply of a create, replayed on a retry.
pub const IDEMPOTENCY_BODY: Field = Field {
    table: "idempotency_keys",
    column: "body",
};

/// Why a sealed value does not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not of the sealed format.
    #[error("is not a sealed value")]
    Malformed,
    /// Sealed under a version the key set lacks.
    #[error(
        "is sealed under master key version {0}, which the master key source does not hold (was it disabled or deleted?)"
    )]
    UnknownVersion(String),
    /// The key or the additional data does not match: sealed for another row, or altered.
    #[error("does not open: it was sealed for another row or field, or altered")]
    Tampered,
}

fn aad(field: Field, row: &str, version: &str) -> Vec<u8> {
    // NUL cannot occur in PostgreSQL text, so the parts cannot run into each other.
    format!(
        "culvert/at-rest/{FORMAT}\0{}\0{}\0{row}\0{version}",
        field.table, field.column
    )
    .into_bytes()
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// The key version a sealed value names.
pub fn version_of(stored: &str) -> Option<&str> {
    let mut parts = stored.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(FORMAT), Some(v), Some(_)) if !v.is_empty() => Some(v),
        _ => None,
    }
}

/// Seal `plaintext` for `field` of `row` under the set's current key.
pub fn seal(keys: &KeySet, field: Field, row: &str, plaintext: &[u8]) -> String {
    let version = keys.current();
    let key = keys
        .key(version)
        .expect("a key set holds its current version");
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = aad(field, row, version);
    let sealed = cipher(key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory value");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    format!("{FORMAT}:{version}:{}", B64.encode(out))
}

/// Open a value sealed for `field` of `row`.
pub fn open(keys: &KeySet, field: Field, row: &str, stored: &str) -> Result<Vec<u8>, OpenError> {
    let version = version_of(stored).ok_or(OpenError::Malformed)?;
    let body = &stored[FORMAT.len() + version.len() + 2..];
    let bytes = B64.decode(body).map_err(|_| OpenError::Malformed)?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError::Malformed);
    }
    let key = keys
        .key(version)
        .ok_or_else(|| OpenError::UnknownVersion(version.to_string()))?;
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let aad = aad(field, row, version);
    cipher(key)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| OpenError::Tampered)
}

/// Seal a JSON value.
pub fn seal_json(keys: &KeySet, field: Field, row: &str, value: &Value) -> String {
    seal(
        keys,
        field,
        row,
        &serde_json::to_vec(value).expect("JSON value"),
    )
}

/// Open a sealed JSON value; a failure is a 500 naming the row (it is logged, never detailed).
pub fn open_json(keys: &KeySet, field: Field, row: &str, stored: &str) -> ApiResult<Value> {
    let bytes = open(keys, field, row, stored).map_err(|e| {
        ApiError::Internal(format!("{}.{} of {row} {e}", field.table, field.column))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Internal(format!(
            "{}.{} of {row} is not JSON: {e}",
            field.table, field.column
        ))
    })
}

/// A key set that holds every version `sealed` values name, reloading the master keys once
/// when one is missing (another instance may have rotated).
pub async fn keys_for<'a>(
    keys: &MasterKeys,
    sealed: impl IntoIterator<Item = &'a str>,
) -> ApiResult<Arc<KeySet>> {
    let versions: BTreeSet<&str> = sealed.into_iter().filter_map(version_of).collect();
    let versions: Vec<&str> = versions.into_iter().collect();
    Ok(keys.holding(&versions).await?)
}

/// The row id of an idempotency record in the additional data.
pub fn idempotency_row(principal: &str, key: &str) -> String {
    format!("{principal}\0{key}")
}

/// Why sealing or re-encrypting the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreSealError {
    /// The store failed.
    #[error("control store: {0}")]
    Store(String),
    /// The master keys could not be had.
    #[error(transparent)]
    Keys(#[from] MasterKeyError),
    /// A stored value does not open.
    #[error("{0}")]
    Open(String),
}

impl From<tokio_postgres::Error> for StoreSealError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreSealError::Store(format!("{e:#}"))
    }
}

impl From<ApiError> for StoreSealError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Internal(m) => StoreSealError::Open(m),
            other => StoreSealError::Store(other.to_string()),
        }
    }
}

/// Serializes the one-time sealing of plaintext rows across instances starting together.
const SEAL_LOCK: i64 = 0x6375_6c76_6572_7402;
/// Serializes rotations.
const ROTATE_LOCK: i64 = 0x6375_6c76_6572_7403;

/// Seal what migration 2 found in plaintext and drop the plaintext columns; a no-op once they
/// are gone. All in one transaction: a crash leaves the store as it was, and the next start
/// does it again. Returns the rows sealed.
pub async fn seal_plaintext(store: &Store, keys: &KeySet) -> Result<u64, StoreSealError> {
    let plaintext_left = |count: &tokio_postgres::Row| count.get::<_, i64>(0) > 0;
    const LEFT: &str = "select count(*) from information_schema.columns
         where table_schema = current_schema() and table_name = 'connectors' and column_name = 'config'";
    let mut conn = store.conn().await?;
    if !plaintext_left(&conn.q_one(LEFT, &[]).await?) {
        return Ok(0);
    }
    let tx = conn.transaction().await?;
    tx.exec("select pg_advisory_xact_lock($1)", &[&SEAL_LOCK])
        .await?;
    // Another instance may have finished while this one waited for the lock.
    if !plaintext_left(&tx.q_one(LEFT, &[]).await?) {
        return Ok(0);
    }
    // Reads go on; a write by a handler of the previous release waits, so no plaintext row can
    // arrive between the sealing below and the dropping of its column.
    tx.batch_execute("lock table connectors, environments, idempotency_keys in exclusive mode")
        .await?;
    let mut sealed = 0u64;
    for t in &TARGETS {
        loop {
            let rows = tx.q(t.seal_select, &[&BATCH]).await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let (row, k1, k2) = t.row(r);
                let value: Value = r.get(t.value_column());
                let s = seal_json(keys, t.field, &row, &value);
                match k2 {
                    Some(k2) => tx.exec(t.seal_update, &[&k1, &s, &k2]).await?,
                    None => tx.exec(t.seal_update, &[&k1, &s]).await?,
                };
            }
            sealed += rows.len() as u64;
        }
    }
    // The reason of an environment waiting for its bootstrap repeats its subscription and
    // resource group; it is rendered from the sealed settings when read.
    tx.exec(
        "update environments set reason = null where state = 'pending_bootstrap'",
        &[],
    )
    .await?;
    tx.batch_execute(
        "alter table connectors drop column config;
         alter table connectors alter column config_sealed set not null;
         alter table environments drop column azure;
         alter table idempotency_keys drop column body;
         alter table idempotency_keys alter column body_sealed set not null;",
    )
    .await?;
    tx.commit().await?;
    Ok(sealed)
}

/// Rows re-encrypted by a rotation, by table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reencrypted {
    /// Connectors.
    pub connectors: u64,
    /// Environments.
    pub environments: u64,
    /// Idempotency records.
    pub idempotency_keys: u64,
}

impl Reencrypted {
    /// All rows.
    pub fn total(&self) -> u64 {
        self.connectors + self.environments + self.idempotency_keys
    }
}

/// How one sealed column is keyed and re-encrypted.
struct Target {
    field: Field,
    /// Rows not under `$1`, at most `$2`, locked: the row key (one or two text columns), then
    /// the sealed value.
    select: &'static str,
    /// `$1` (and `$4`) the row key, `$2` the new value, `$3` the value read (unchanged since:
    /// the row is locked).
    update: &'static str,
    /// Whether the row key has two parts (principal and key).
    pair: bool,
    /// At most `$1` rows still holding the plaintext column: the row key, then the value.
    seal_select: &'static str,
    /// `$1` (and `$3`) the row key, `$2` the sealed value; clears the plaintext.
    seal_update: &'static str,
}

impl Target {
    /// The row as the additional data names it, and the key parts the queries take.
    fn row<'r>(&self, r: &'r tokio_postgres::Row) -> (String, &'r str, Option<&'r str>) {
        let k1: &str = r.get(0);
        let k2: Option<&str> = self.pair.then(|| r.get(1));
        let row = match k2 {
            Some(k2) => idempotency_row(k1, k2),
            None => k1.to_string(),
        };
        (row, k1, k2)
    }

    /// Index of the value column after the row key.
    fn value_column(&self) -> usize {
        if self.pair { 2 } else { 1 }
    }
}

const TARGETS: [Target; 4] = [
    Target {
        field: CONNECTOR_CONFIG,
        select: "select id::text, config_sealed from connectors
                 where split_part(config_sealed, ':', 2) <> $1 order by id limit $2 for update",
        update: "update connectors set config_sealed = $2 where id = $1::text::uuid and config_sealed = $3",
        pair: false,
        seal_select: "select id::text, config from connectors where config is not null limit $1",
        seal_update: "update connectors set config_sealed = $2, config = null where id = $1::text::uuid",
    },
    Target {
        field: ENVIRONMENT_AZURE,
        select: "select id::text, azure_sealed from environments
                 where azure_sealed is not null and split_part(azure_sealed, ':', 2) <> $1
                 order by id limit $2 for update",
        update: "update environments set azure_sealed = $2 where id = $1::text::uuid and azure_sealed = $3",
        pair: false,
        seal_select: "select id::text, azure from environments where azure is not null limit $1",
        seal_update: "update environments set azure_sealed = $2, azure = null where id = $1::text::uuid",
    },
    Target {
        field: ENVIRONMENT_AGENT_TOKEN,
        select: "select id::text, agent_token_sealed from environments
                 where agent_token_sealed is not null and split_part(agent_token_sealed, ':', 2) <> $1
                 order by id limit $2 for update",
        update: "update environments set agent_token_sealed = $2 where id = $1::text::uuid and agent_token_sealed = $3",
        pair: false,
        // Never stored in plaintext.
        seal_select: "select id::text, null::text from environments where false limit $1",
        seal_update: "update environments set agent_token_sealed = $2 where id = $1::text::uuid and false",
    },
    Target {
        field: IDEMPOTENCY_BODY,
        select: "select principal, key, body_sealed from idempotency_keys
                 where split_part(body_sealed, ':', 2) <> $1 order by principal, key limit $2 for update",
        update: "update idempotency_keys set body_sealed = $2
                 where principal = $1 and key = $4 and body_sealed = $3",
        pair: true,
        seal_select: "select principal, key, body from idempotency_keys where body is not null limit $1",
        seal_update: "update idempotency_keys set body_sealed = $2, body = null where principal = $1 and key = $3",
    },
];

/// Re-encrypt every sealed value not under `version` with that version's key, `BATCH` rows per
/// transaction. Idempotent: rows already under `version` are skipped, so a run cut short is
/// finished by running again; every value stays readable in between (old versions are kept).
pub async fn reencrypt(
    store: &Store,
    keys: &MasterKeys,
    version: &str,
) -> Result<Reencrypted, StoreSealError> {
    // Held for the whole run, on its own connection: rotations do not interleave.
    let lock = store.conn().await?;
    let got: bool = lock
        .q_one("select pg_try_advisory_lock($1)", &[&ROTATE_LOCK])
        .await?
        .get(0);
    if !got {
        return Err(StoreSealError::Store(
            "another rotation is running on this control store; let it finish".into(),
        ));
    }
    let result = reencrypt_locked(store, keys, version).await;
    let _ = lock
        .q_one("select pg_advisory_unlock($1)", &[&ROTATE_LOCK])
        .await;
    result
}

async fn reencrypt_locked(
    store: &Store,
    keys: &MasterKeys,
    version: &str,
) -> Result<Reencrypted, StoreSealError> {
    let mut counts = Reencrypted::default();
    for t in &TARGETS {
        let mut done = 0u64;
        loop {
            let mut conn = store.conn().await?;
            let tx = conn.transaction().await?;
            let rows = tx.q(t.select, &[&version, &BATCH]).await?;
            if rows.is_empty() {
                tx.commit().await?;
                break;
            }
            let last = t.value_column();
            let set = keys_for(keys, rows.iter().map(|r| r.get::<_, &str>(last)))
                .await?
                .with_current(version)?;
            for r in &rows {
                let (row, k1, k2) = t.row(r);
                let old: &str = r.get(last);
                let plaintext = open(&set, t.field, &row, old).map_err(|e| {
                    StoreSealError::Open(format!(
                        "{}.{} of {} {e}",
                        t.field.table,
                        t.field.column,
                        row.replace('\0', "/")
                    ))
                })?;
                let new = seal(&set, t.field, &row, &plaintext);
                match k2 {
                    Some(k2) => tx.exec(t.update, &[&k1, &new, &old, &k2]).await?,
                    None => tx.exec(t.update, &[&k1, &new, &old]).await?,
                };
            }
            tx.commit().await?;
            done += rows.len() as u64;
        }
        match t.field.table {
            // Two sealed columns live in environments: their rows add up.
            "connectors" => counts.connectors += done,
            "environments" => counts.environments += done,
            _ => counts.idempotency_keys += done,
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn set(current: &str, versions: &[(&str, u8)]) -> KeySet {
        let keys: BTreeMap<String, [u8; 32]> = versions
            .iter()
            .map(|(v, b)| (v.to_string(), [*b; 32]))
            .collect();
        KeySet::new(current, keys).unwrap()
    }

    #[test]
    fn values_round_trip_and_name_their_version() {
        let keys = set("1", &[("1", 7)]);
        let s = seal(
            &keys,
            CONNECTOR_CONFIG,
            "row-1",
            b"{\"host\":\"db.internal\"}",
        );
        assert!(s.starts_with("v1:1:"), "{s}");
        assert!(!s.contains("db.internal"));
        assert_eq!(version_of(&s), Some("1"));
        assert_eq!(
            open(&keys, CONNECTOR_CONFIG, "row-1", &s).unwrap(),
            b"{\"host\":\"db.internal\"}"
        );
        // A fresh nonce every time.
        assert_ne!(
            s,
            seal(
                &keys,
                CONNECTOR_CONFIG,
                "row-1",
                b"{\"host\":\"db.internal\"}"
            )
        );
        let v = serde_json::json!({"port": 5432});
        let s = seal_json(&keys, ENVIRONMENT_AZURE, "e", &v);
        assert_eq!(open_json(&keys, ENVIRONMENT_AZURE, "e", &s).unwrap(), v);
    }

    #[test]
    fn another_row_field_or_version_label_is_refused() {
        let keys = set("1", &[("1", 7), ("2", 9)]);
        let s = seal(&keys, CONNECTOR_CONFIG, "row-1", b"secret config");
        assert!(matches!(
            open(&keys, CONNECTOR_CONFIG, "row-2", &s),
            Err(OpenError::Tampered)
        ));
        assert!(matches!(
            open(&keys, ENVIRONMENT_AZURE, "row-1", &s),
            Err(OpenError::Tampered)
        ));
        let relabelled = s.replacen("v1:1:", "v1:2:", 1);
        assert!(matches!(
            open(&keys, CONNECTOR_CONFIG, "row-1", &relabelled),
            Err(OpenError::Tampered)
        ));
        let mut flipped = s.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(open(&keys, CONNECTOR_CONFIG, "row-1", &flipped).is_err());
        for bad in ["", "v1:1:", "v2:1:AAAA", "plain text", "v1:1:!!!"] {
            assert!(
                matches!(
                    open(&keys, CONNECTOR_CONFIG, "row-1", bad),
                    Err(OpenError::Malformed)
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn old_versions_stay_readable_after_a_rotation() {
        let before = set("1", &[("1", 7)]);
        let s = seal(&before, CONNECTOR_CONFIG, "r", b"config");
        let after = set("2", &[("1", 7), ("2", 9)]);
        assert_eq!(open(&after, CONNECTOR_CONFIG, "r", &s).unwrap(), b"config");
        let again = seal(&after, CONNECTOR_CONFIG, "r", b"config");
        assert_eq!(version_of(&again), Some("2"));
        assert!(matches!(
            open(&before, CONNECTOR_CONFIG, "r", &again),
            Err(OpenError::UnknownVersion(v)) if v == "2"
        ));
    }

    #[tokio::test]
    async fn a_value_under_an_unknown_version_reloads_the_keys_before_failing() {
        use crate::settings::MasterKeySetting;
        let dir = tempfile::Builder::new()
            .prefix("culvert-at-rest-")
            .tempdir()
            .unwrap();
        let setting = MasterKeySetting::File(dir.path().join("keys.json"));
        let identity = culvert_azure::identity::CredentialSource::AzureCli;
        let handler = MasterKeys::new(&setting, identity.clone()).unwrap();
        let loaded = handler.current().await.unwrap();
        // Another instance rotates and seals under the new version.
        let rotator = MasterKeys::new(&setting, identity).unwrap();
        rotator.add_version().await.unwrap();
        let newer = rotator.current().await.unwrap();
        let s = seal(&newer, CONNECTOR_CONFIG, "r", b"config");
        assert!(matches!(
            open(&loaded, CONNECTOR_CONFIG, "r", &s),
            Err(OpenError::UnknownVersion(_))
        ));
        let reloaded = keys_for(&handler, [s.as_str()]).await.unwrap();
        assert_eq!(
            open(&reloaded, CONNECTOR_CONFIG, "r", &s).unwrap(),
            b"config"
        );
        // Writes from now on use the new version too.
        assert_eq!(handler.current().await.unwrap().current(), newer.current());
    }
}

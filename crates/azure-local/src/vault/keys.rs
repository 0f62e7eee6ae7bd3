//! Key operations: create, get, list, list versions, rotate, delete, and encrypt / decrypt /
//! wrapkey / unwrapkey against a named (or the latest) version.

use super::crypto::{self, Algorithm, KEY_SIZES};
use super::error::VaultError;
use super::routes::CryptoOp;
use super::{
    Params, Vault, attributes_json, b64url, deletion_dates, from_b64url, paging, parse_body,
    validate_name,
};
use crate::state::{Attributes, KeyRecord, KeyVersion, new_version, now_unix};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// JWK operations Key Vault knows, in its spelling.
const KEY_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];
/// What Key Vault grants an RSA key created without `key_ops`.
const DEFAULT_RSA_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
];

#[derive(Deserialize)]
struct CreateKeyBody {
    kty: Option<String>,
    key_size: Option<u32>,
    key_ops: Option<Vec<String>>,
    public_exponent: Option<u64>,
    attributes: Option<AttributesBody>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct AttributesBody {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

#[derive(Deserialize)]
struct KeyOperationBody {
    alg: Option<String>,
    value: Option<String>,
}

/// `POST /keys/{name}/create`: a new key, or a new version of an existing one.
pub async fn create(svc: &Vault<'_>, name: &str, body: &[u8]) -> Result<Value, VaultError> {
    validate_name(name)?;
    let body: CreateKeyBody = parse_body(body)?;
    let kty = match body.kty.as_deref() {
        Some(k @ ("RSA" | "RSA-HSM")) => k.to_owned(),
        Some(other) => {
            return Err(VaultError::BadParameter(format!(
                "Key type '{other}' is not supported by this vault; use RSA or RSA-HSM."
            )));
        }
        None => {
            return Err(VaultError::BadParameter(
                "The property 'kty' is required.".into(),
            ));
        }
    };
    let key_size = body.key_size.unwrap_or(2048);
    if !KEY_SIZES.contains(&key_size) {
        return Err(VaultError::BadParameter(format!(
            "The key size {key_size} is not supported; use 2048, 3072 or 4096."
        )));
    }
    if body.public_exponent.is_some_and(|e| e != 65537) {
        return Err(VaultError::BadParameter(
            "Only the public exponent 65537 is supported.".into(),
        ));
    }
    let key_ops = match body.key_ops {
        Some(ops) => normalize_ops(&ops)?,
        None => DEFAULT_RSA_OPS.iter().map(|s| s.to_string()).collect(),
    };
    let now = now_unix();
    let attrs = body.attributes.unwrap_or(AttributesBody {
        enabled: None,
        nbf: None,
        exp: None,
    });
    let pem = generate(key_size).await?;
    let version = KeyVersion {
        version: new_version(),
        kty,
        key_size,
        key_ops,
        attributes: Attributes {
            enabled: attrs.enabled.unwrap_or(true),
            created: now,
            updated: now,
            not_before: attrs.nbf,
            expires: attrs.exp,
        },
        tags: body.tags.unwrap_or_default(),
        private_key_pem: pem,
    };
    let record = svc.store().update_vault(svc.name(), |v| {
        let record = v
            .keys
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| KeyRecord::new(name));
        record.versions.push(version);
        Ok::<_, VaultError>(record.clone())
    })?;
    tracing::info!(vault = %svc.name(), key = %record.name, "key version created");
    key_bundle(svc, &record, record.current())
}

/// `GET /keys/{name}[/{version}]`.
pub fn get(svc: &Vault<'_>, name: &str, version: Option<&str>) -> Result<Value, VaultError> {
    let (record, v) = find(svc, name, version)?;
    key_bundle(svc, &record, &v)
}

/// `GET /keys`: one item per key (current version's attributes), kid without version.
pub fn list(svc: &Vault<'_>, params: &Params, api_version: &str) -> Result<Value, VaultError> {
    let items = svc.store().read_vault(svc.name(), |v| {
        v.keys
            .values()
            .map(|r| key_item(&format!("{}/keys/{}", svc.base_url(), r.name), r.current()))
            .collect::<Vec<_>>()
    });
    paging::page(
        items,
        params,
        &format!("{}/keys", svc.base_url()),
        api_version,
    )
}

/// `GET /keys/{name}/versions`: one item per version, kid with version.
pub fn list_versions(
    svc: &Vault<'_>,
    name: &str,
    params: &Params,
    api_version: &str,
) -> Result<Value, VaultError> {
    let record = svc
        .store()
        .read_vault(svc.name(), |v| {
            v.keys.get(&name.to_ascii_lowercase()).cloned()
        })
        .ok_or_else(|| VaultError::key_not_found(name))?;
    let items = record
        .versions
        .iter()
        .map(|v| key_item(&kid(svc, &record, v), v))
        .collect();
    paging::page(
        items,
        params,
        &format!("{}/keys/{}/versions", svc.base_url(), record.name),
        api_version,
    )
}

/// `POST /keys/{name}/rotate`: a new version with the current version's type, size, ops and tags.
pub async fn rotate(svc: &Vault<'_>, name: &str) -> Result<Value, VaultError> {
    let (record, latest) = find(svc, name, None)?;
    let pem = generate(latest.key_size).await?;
    let now = now_unix();
    let version = KeyVersion {
        version: new_version(),
        kty: latest.kty.clone(),
        key_size: latest.key_size,
        key_ops: latest.key_ops.clone(),
        attributes: Attributes {
            enabled: true,
            created: now,
            updated: now,
            not_before: None,
            expires: None,
        },
        tags: latest.tags.clone(),
        private_key_pem: pem,
    };
    let record = svc.store().update_vault(svc.name(), |v| {
        // The key may have been deleted while the new material was being generated.
        let r = v
            .keys
            .get_mut(&record.name.to_ascii_lowercase())
            .ok_or_else(|| VaultError::key_not_found(name))?;
        r.versions.push(version);
        Ok::<_, VaultError>(r.clone())
    })?;
    tracing::info!(vault = %svc.name(), key = %record.name, "key rotated");
    key_bundle(svc, &record, record.current())
}

/// `DELETE /keys/{name}`: removes the key with all versions and answers a DeletedKeyBundle.
///
/// The key is purged at once (no soft-delete recovery), so the name can be reused right away.
pub fn delete(svc: &Vault<'_>, name: &str) -> Result<Value, VaultError> {
    let record = svc.store().update_vault(svc.name(), |v| {
        v.keys
            .remove(&name.to_ascii_lowercase())
            .ok_or_else(|| VaultError::key_not_found(name))
    })?;
    tracing::info!(vault = %svc.name(), key = %record.name, "key deleted");
    let mut bundle = key_bundle(svc, &record, record.current())?;
    let (deleted, purge) = deletion_dates();
    bundle["recoveryId"] = json!(format!("{}/deletedkeys/{}", svc.base_url(), record.name));
    bundle["deletedDate"] = json!(deleted);
    bundle["scheduledPurgeDate"] = json!(purge);
    Ok(bundle)
}

/// `POST /keys/{name}[/{version}]/{encrypt|decrypt|wrapkey|unwrapkey}`.
pub async fn crypto_op(
    svc: &Vault<'_>,
    op: CryptoOp,
    name: &str,
    version: Option<&str>,
    body: &[u8],
) -> Result<Value, VaultError> {
    let body: KeyOperationBody = parse_body(body)?;
    let alg_name = body
        .alg
        .ok_or_else(|| VaultError::BadParameter("The property 'alg' is required.".into()))?;
    let alg = Algorithm::parse(&alg_name).ok_or_else(|| {
        VaultError::BadParameter(format!(
            "Algorithm '{alg_name}' is not supported for RSA keys; use RSA-OAEP, RSA-OAEP-256 or RSA1_5."
        ))
    })?;
    let value = body
        .value
        .ok_or_else(|| VaultError::BadParameter("The property 'value' is required.".into()))?;
    let input = from_b64url(&value).ok_or_else(|| {
        VaultError::BadParameter("The property 'value' is not valid base64url.".into())
    })?;
    let (record, v) = find(svc, name, version)?;
    check_usable(&v, op)?;
    let pem = v.private_key_pem.clone();
    let output = tokio::task::spawn_blocking(move || {
        let key = crypto::load(&pem)?;
        if op.is_private() {
            crypto::decrypt(&key, alg, &input)
        } else {
            crypto::encrypt(&key, alg, &input)
        }
    })
    .await
    .map_err(|e| VaultError::Internal(format!("crypto task failed: {e}")))?
    .map_err(|e| match e {
        crypto::CryptoError::Key(m) => {
            tracing::error!(error = %m, "stored key material is unusable");
            VaultError::Internal("The key material could not be used.".into())
        }
        other => VaultError::BadParameter(other.to_string()),
    })?;
    Ok(json!({ "kid": kid(svc, &record, &v), "value": b64url(&output) }))
}

fn check_usable(v: &KeyVersion, op: CryptoOp) -> Result<(), VaultError> {
    let forbidden = |message: String| VaultError::Forbidden {
        message,
        inner_code: None,
    };
    let op_name = op.key_op();
    if !v.attributes.enabled {
        return Err(forbidden(format!(
            "Operation {op_name} is not allowed on a disabled key."
        )));
    }
    let now = now_unix();
    if v.attributes.not_before.is_some_and(|nbf| now < nbf)
        || v.attributes.expires.is_some_and(|exp| now >= exp)
    {
        return Err(forbidden(format!(
            "Operation {op_name} is not allowed on a key outside its validity period."
        )));
    }
    if !v.key_ops.iter().any(|o| o == op_name) {
        return Err(forbidden(format!(
            "Operation {op_name} is not permitted on this key."
        )));
    }
    Ok(())
}

fn normalize_ops(ops: &[String]) -> Result<Vec<String>, VaultError> {
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        let known = KEY_OPS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(op))
            .ok_or_else(|| {
                VaultError::BadParameter(format!("The key operation '{op}' is not valid."))
            })?;
        if !out.iter().any(|o| o == known) {
            out.push(known.to_string());
        }
    }
    Ok(out)
}

async fn generate(bits: u32) -> Result<String, VaultError> {
    tokio::task::spawn_blocking(move || crypto::generate_pem(bits))
        .await
        .map_err(|e| VaultError::Internal(format!("key generation task failed: {e}")))?
        .map_err(|e| VaultError::Internal(e.to_string()))
}

fn find(
    svc: &Vault<'_>,
    name: &str,
    version: Option<&str>,
) -> Result<(KeyRecord, KeyVersion), VaultError> {
    svc.store()
        .read_vault(svc.name(), |v| {
            let record = v.keys.get(&name.to_ascii_lowercase())?;
            let found = record.find(version)?.clone();
            Some((record.clone(), found))
        })
        .ok_or_else(|| match version {
            None => VaultError::key_not_found(name),
            Some(ver) => VaultError::key_not_found(&format!("{name}/{ver}")),
        })
}

fn kid(svc: &Vault<'_>, record: &KeyRecord, v: &KeyVersion) -> String {
    format!("{}/keys/{}/{}", svc.base_url(), record.name, v.version)
}

fn key_bundle(svc: &Vault<'_>, record: &KeyRecord, v: &KeyVersion) -> Result<Value, VaultError> {
    let key = crypto::load(&v.private_key_pem).map_err(|e| {
        tracing::error!(error = %e, "stored key material is unusable");
        VaultError::Internal("The key material could not be read.".into())
    })?;
    let (n, e) = crypto::public_parts(&key);
    let mut bundle = json!({
        "key": {
            "kid": kid(svc, record, v),
            "kty": v.kty,
            "key_ops": v.key_ops,
            "n": b64url(&n),
            "e": b64url(&e),
        },
        "attributes": attributes_json(&v.attributes),
    });
    if !v.tags.is_empty() {
        bundle["tags"] = json!(v.tags);
    }
    Ok(bundle)
}

fn key_item(kid: &str, v: &KeyVersion) -> Value {
    let mut item = json!({ "kid": kid, "attributes": attributes_json(&v.attributes) });
    if !v.tags.is_empty() {
        item["tags"] = json!(v.tags);
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ops_are_normalized_and_unknown_refused() {
        let ops = normalize_ops(&["WRAPKEY".into(), "decrypt".into(), "wrapKey".into()]).unwrap();
        assert_eq!(ops, vec!["wrapKey", "decrypt"]);
        assert!(normalize_ops(&["frob".into()]).is_err());
    }

    fn version(enabled: bool, ops: &[&str]) -> KeyVersion {
        KeyVersion {
            version: "v".into(),
            kty: "RSA".into(),
            key_size: 2048,
            key_ops: ops.iter().map(|s| s.to_string()).collect(),
            attributes: Attributes {
                enabled,
                created: 0,
                updated: 0,
                not_before: None,
                expires: None,
            },
            tags: BTreeMap::new(),
            private_key_pem: String::new(),
        }
    }

    #[test]
    fn disabled_keys_and_missing_ops_are_forbidden() {
        assert!(check_usable(&version(true, &["wrapKey"]), CryptoOp::WrapKey).is_ok());
        assert!(matches!(
            check_usable(&version(true, &["wrapKey"]), CryptoOp::Decrypt),
            Err(VaultError::Forbidden {
                inner_code: None,
                ..
            })
        ));
        assert!(matches!(
            check_usable(&version(false, &["wrapKey"]), CryptoOp::WrapKey),
            Err(VaultError::Forbidden { .. })
        ));
    }
}

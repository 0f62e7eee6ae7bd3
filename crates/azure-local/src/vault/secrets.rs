//! Secret operations: set (new version), get, list and list versions (without values), delete.

use super::error::VaultError;
use super::{Params, Vault, attributes_json, deletion_dates, paging, parse_body, validate_name};
use crate::state::{Attributes, SecretRecord, SecretVersion, new_version, now_unix};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Key Vault's limit on a secret value.
const MAX_VALUE_BYTES: usize = 25 * 1024;

#[derive(Deserialize)]
struct SetSecretBody {
    value: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesBody>,
}

#[derive(Deserialize)]
struct AttributesBody {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

/// `PUT /secrets/{name}`: stores a new version and answers its SecretBundle.
pub fn set(svc: &Vault<'_>, name: &str, body: &[u8]) -> Result<Value, VaultError> {
    validate_name(name)?;
    let body: SetSecretBody = parse_body(body)?;
    let value = body
        .value
        .ok_or_else(|| VaultError::BadParameter("The property 'value' is required.".into()))?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(VaultError::BadParameter(format!(
            "The secret value is {} bytes; the limit is {MAX_VALUE_BYTES}.",
            value.len()
        )));
    }
    let now = now_unix();
    let attrs = body.attributes;
    let version = SecretVersion {
        version: new_version(),
        value,
        content_type: body.content_type,
        attributes: Attributes {
            enabled: attrs.as_ref().and_then(|a| a.enabled).unwrap_or(true),
            created: now,
            updated: now,
            not_before: attrs.as_ref().and_then(|a| a.nbf),
            expires: attrs.as_ref().and_then(|a| a.exp),
        },
        tags: body.tags.unwrap_or_default(),
    };
    let record = svc.store().update_vault(svc.name(), |v| {
        let record = v
            .secrets
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| SecretRecord::new(name));
        record.versions.push(version);
        Ok::<_, VaultError>(record.clone())
    })?;
    tracing::info!(vault = %svc.name(), secret = %record.name, "secret version set");
    Ok(secret_bundle(svc, &record, record.current(), true))
}

/// `GET /secrets/{name}[/{version}]`; a disabled version is refused as Azure does.
pub fn get(svc: &Vault<'_>, name: &str, version: Option<&str>) -> Result<Value, VaultError> {
    let (record, v) = find(svc, name, version)?;
    if !v.attributes.enabled {
        return Err(VaultError::Forbidden {
            message: "Operation get is not allowed on a disabled secret.".into(),
            inner_code: None,
        });
    }
    Ok(secret_bundle(svc, &record, &v, true))
}

/// `GET /secrets`: one item per secret, id without version, no value.
pub fn list(svc: &Vault<'_>, params: &Params, api_version: &str) -> Result<Value, VaultError> {
    let items = svc.store().read_vault(svc.name(), |v| {
        v.secrets
            .values()
            .map(|r| {
                let mut item = secret_bundle(svc, r, r.current(), false);
                item["id"] = json!(format!("{}/secrets/{}", svc.base_url(), r.name));
                item
            })
            .collect::<Vec<_>>()
    });
    paging::page(
        items,
        params,
        &format!("{}/secrets", svc.base_url()),
        api_version,
    )
}

/// `GET /secrets/{name}/versions`: one item per version, no values.
pub fn list_versions(
    svc: &Vault<'_>,
    name: &str,
    params: &Params,
    api_version: &str,
) -> Result<Value, VaultError> {
    let record = svc
        .store()
        .read_vault(svc.name(), |v| {
            v.secrets.get(&name.to_ascii_lowercase()).cloned()
        })
        .ok_or_else(|| VaultError::secret_not_found(name))?;
    let items = record
        .versions
        .iter()
        .map(|v| secret_bundle(svc, &record, v, false))
        .collect();
    paging::page(
        items,
        params,
        &format!("{}/secrets/{}/versions", svc.base_url(), record.name),
        api_version,
    )
}

/// `DELETE /secrets/{name}`: removes all versions and answers a DeletedSecretBundle (no value).
///
/// The secret is purged at once (no soft-delete recovery).
pub fn delete(svc: &Vault<'_>, name: &str) -> Result<Value, VaultError> {
    let record = svc.store().update_vault(svc.name(), |v| {
        v.secrets
            .remove(&name.to_ascii_lowercase())
            .ok_or_else(|| VaultError::secret_not_found(name))
    })?;
    tracing::info!(vault = %svc.name(), secret = %record.name, "secret deleted");
    let mut bundle = secret_bundle(svc, &record, record.current(), false);
    let (deleted, purge) = deletion_dates();
    bundle["recoveryId"] = json!(format!("{}/deletedsecrets/{}", svc.base_url(), record.name));
    bundle["deletedDate"] = json!(deleted);
    bundle["scheduledPurgeDate"] = json!(purge);
    Ok(bundle)
}

fn find(
    svc: &Vault<'_>,
    name: &str,
    version: Option<&str>,
) -> Result<(SecretRecord, SecretVersion), VaultError> {
    svc.store()
        .read_vault(svc.name(), |v| {
            let record = v.secrets.get(&name.to_ascii_lowercase())?;
            let found = record.find(version)?.clone();
            Some((record.clone(), found))
        })
        .ok_or_else(|| match version {
            None => VaultError::secret_not_found(name),
            Some(ver) => VaultError::secret_not_found(&format!("{name}/{ver}")),
        })
}

fn secret_bundle(
    svc: &Vault<'_>,
    record: &SecretRecord,
    v: &SecretVersion,
    with_value: bool,
) -> Value {
    let mut bundle = json!({
        "id": format!("{}/secrets/{}/{}", svc.base_url(), record.name, v.version),
        "attributes": attributes_json(&v.attributes),
    });
    if with_value {
        bundle["value"] = json!(v.value);
    }
    if let Some(ct) = &v.content_type {
        bundle["contentType"] = json!(ct);
    }
    if !v.tags.is_empty() {
        bundle["tags"] = json!(v.tags);
    }
    bundle
}

//! The connector registry: connector types with immutable versions pinning a component by
//! digest, the signing keys versions are verified with, and the resolution of a connector's
//! `type` (`name` or `name@version`) to the version it runs.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE as B64_URL};
use culvert_control_api::connectors::{ConnectorKind, ConnectorType};
use culvert_control_api::registry::{
    ComponentRef, ConnectorLimits, ConnectorTypeVersion, SigningKey, SigningKeyPut, VersionPublish,
    VersionSignature, is_digest, signed_message,
};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;

use super::{Outcome, Req, components, method_not_allowed};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, no_content, reply};
use crate::specs::{self, TypeSpec};
use crate::store::Sql;

/// Most static egress endpoints one version may declare.
const MAX_EGRESS: usize = 32;
/// Longest description.
const MAX_DESCRIPTION: usize = 2000;

fn kind_of(s: &str) -> ConnectorKind {
    if s == "source" {
        ConnectorKind::Source
    } else {
        ConnectorKind::Target
    }
}

/// Whether `name` can name a registered type: `[a-z][a-z0-9-]{1,62}`.
pub fn valid_type_name(name: &str) -> bool {
    (2..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_type_name(name: &str) -> ApiResult<()> {
    if !valid_type_name(name) {
        return Err(ApiError::BadRequest(format!(
            "{name:?} is not a connector type name: use 2 to 63 lowercase letters, digits or `-`, starting with a letter"
        )));
    }
    if specs::is_first_party(name) {
        return Err(ApiError::Conflict(format!(
            "{name} is a first-party connector type built into the agent; it has no registered versions, so choose another name"
        )));
    }
    Ok(())
}

/// A version as the API accepts it: semantic, without build metadata (it does not order).
pub fn parse_version(v: &str) -> Result<semver::Version, String> {
    let parsed = semver::Version::parse(v).map_err(|e| {
        format!("{v:?} is not a semantic version ({e}); write MAJOR.MINOR.PATCH, for example 1.2.0")
    })?;
    if !parsed.build.is_empty() {
        return Err(format!(
            "{v:?} has build metadata (`+{}`), which semantic versioning does not order; drop it or use a pre-release such as 1.2.0-rc.1",
            parsed.build
        ));
    }
    if v.len() > 64 {
        return Err("a version is at most 64 characters".into());
    }
    Ok(parsed)
}

/// Validate one `host:port` egress entry.
pub fn check_endpoint(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} must be host:port, for example api.example.com:443"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !host_ok {
        return Err(format!(
            "{s:?}: the host must be a DNS name or an IP address, without wildcards"
        ));
    }
    if !port_ok {
        return Err(format!("{s:?}: the port must be from 1 to 65535"));
    }
    Ok(())
}

fn check_limits(l: &ConnectorLimits) -> ApiResult<()> {
    if let Some(m) = l.memory_mib
        && !(16..=4096).contains(&m)
    {
        return Err(ApiError::field(
            "/limits/memory_mib",
            "must be from 16 to 4096",
        ));
    }
    if let Some(c) = l.cpu_seconds_per_call
        && !(0.1..=600.0).contains(&c)
    {
        return Err(ApiError::field(
            "/limits/cpu_seconds_per_call",
            "must be from 0.1 to 600",
        ));
    }
    if let Some(t) = l.call_timeout_seconds
        && !(1.0..=3600.0).contains(&t)
    {
        return Err(ApiError::field(
            "/limits/call_timeout_seconds",
            "must be from 1 to 3600",
        ));
    }
    Ok(())
}

const VERSION_COLUMNS: &str =
    "v.type_name, v.version, t.kind, v.digest, c.size, v.spec, v.egress, v.limits,
    v.description, v.signed_by, v.created_at";
const VERSION_FROM: &str =
    "connector_type_versions v join connector_types t on t.name = v.type_name
    join components c on c.digest = v.digest";

fn version_from(r: &Row) -> ApiResult<ConnectorTypeVersion> {
    let limits: Option<Value> = r.get(7);
    Ok(ConnectorTypeVersion {
        name: r.get(0),
        version: r.get(1),
        kind: kind_of(r.get(2)),
        digest: r.get(3),
        size: r.get::<_, i64>(4) as u64,
        spec: Some(r.get(5)),
        egress: r.get(6),
        limits: limits
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ApiError::Internal(format!("stored limits: {e}")))?,
        description: r.get(8),
        signed_by: r.get(9),
        created_at: r.get(10),
    })
}

/// Every version of `name`, oldest first.
async fn versions_of(
    client: &impl GenericClient,
    name: &str,
) -> ApiResult<Vec<ConnectorTypeVersion>> {
    client
        .q(
            &format!(
                "select {VERSION_COLUMNS} from {VERSION_FROM} where v.type_name = $1 order by v.seq"
            ),
            &[&name],
        )
        .await?
        .iter()
        .map(version_from)
        .collect()
}

async fn version_of(
    client: &impl GenericClient,
    name: &str,
    version: &str,
) -> ApiResult<Option<ConnectorTypeVersion>> {
    client
        .q_opt(
            &format!(
                "select {VERSION_COLUMNS} from {VERSION_FROM} where v.type_name = $1 and v.version = $2"
            ),
            &[&name, &version],
        )
        .await?
        .as_ref()
        .map(version_from)
        .transpose()
}

/// The latest of `versions`: the highest release, else the highest pre-release.
pub fn latest(versions: &[ConnectorTypeVersion]) -> Option<&ConnectorTypeVersion> {
    let parsed = versions
        .iter()
        .filter_map(|v| semver::Version::parse(&v.version).ok().map(|p| (p, v)));
    let (releases, pre): (Vec<_>, Vec<_>) = parsed.partition(|(p, _)| p.pre.is_empty());
    let pick = if releases.is_empty() { pre } else { releases };
    pick.into_iter()
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

/// A registered type as the type listing shows it: the latest version's spec, every version
/// without its spec.
fn as_type(name: &str, mut versions: Vec<ConnectorTypeVersion>) -> Option<ConnectorType> {
    let latest = latest(&versions)?.clone();
    for v in &mut versions {
        v.spec = None;
    }
    Some(ConnectorType {
        name: name.to_string(),
        kind: latest.kind,
        spec: latest.spec.unwrap_or(Value::Null),
        first_party: false,
        latest_version: Some(latest.version),
        versions,
    })
}

/// Every registered type.
pub async fn registered_types(client: &impl GenericClient) -> ApiResult<Vec<ConnectorType>> {
    let rows = client
        .q(
            &format!("select {VERSION_COLUMNS} from {VERSION_FROM} order by t.seq, v.seq"),
            &[],
        )
        .await?;
    let mut grouped: Vec<(String, Vec<ConnectorTypeVersion>)> = Vec::new();
    for r in &rows {
        let v = version_from(r)?;
        match grouped.last_mut() {
            Some((n, list)) if *n == v.name => list.push(v),
            _ => grouped.push((v.name.clone(), vec![v])),
        }
    }
    Ok(grouped
        .into_iter()
        .filter_map(|(n, v)| as_type(&n, v))
        .collect())
}

/// One registered type, if there is one by that name.
pub async fn registered_type(
    client: &impl GenericClient,
    name: &str,
) -> ApiResult<Option<ConnectorType>> {
    if !valid_type_name(name) {
        return Ok(None);
    }
    Ok(as_type(name, versions_of(client, name).await?))
}

/// Names of every type, first-party and registered, for "known types are" messages.
async fn known_names(client: &impl GenericClient) -> ApiResult<String> {
    let mut names: Vec<String> = specs::first_party_names()
        .into_iter()
        .map(String::from)
        .collect();
    for r in client
        .q("select name from connector_types order by name", &[])
        .await?
    {
        names.push(r.get(0));
    }
    Ok(names.join(", "))
}

/// A connector type resolved for a connector: its spec and, for a registered type, the
/// pinned version and its component.
pub struct Resolved {
    /// Type name without a version.
    pub name: String,
    /// The spec configurations are checked against.
    pub spec: TypeSpec,
    /// The pinned version and its component digest, for a registered type.
    pub pinned: Option<(String, String)>,
}

/// Resolve `type` as a connector create gives it: `name` (a first-party type, or a
/// registered type at its latest version) or `name@version`.
pub async fn resolve(client: &impl GenericClient, type_ref: &str) -> ApiResult<Resolved> {
    let (name, version) = match type_ref.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (type_ref, None),
    };
    if specs::is_first_party(name) {
        if version.is_some() {
            return Err(ApiError::field(
                "/type",
                format!("{name} is built into the agent and has no versions; write `{name}`"),
            ));
        }
        return Ok(Resolved {
            name: name.to_string(),
            spec: TypeSpec::first_party(name)?,
            pinned: None,
        });
    }
    pin(client, name, version, "/type").await
}

/// A registered type at `version` (its latest when `None`); 422 at `pointer` otherwise.
pub async fn pin(
    client: &impl GenericClient,
    name: &str,
    version: Option<&str>,
    pointer: &str,
) -> ApiResult<Resolved> {
    let versions = if valid_type_name(name) {
        versions_of(client, name).await?
    } else {
        Vec::new()
    };
    if versions.is_empty() {
        return Err(ApiError::field(
            pointer,
            format!(
                "unknown connector type {name:?}; known types are {} (publish one with `culvert connector publish`)",
                known_names(client).await?
            ),
        ));
    }
    let chosen = match version {
        None => latest(&versions),
        Some(v) => versions.iter().find(|x| x.version == v),
    };
    let Some(chosen) = chosen else {
        let list: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
        return Err(ApiError::field(
            pointer,
            format!(
                "{name} has no version {:?}; its versions are {}",
                version.unwrap_or_default(),
                list.join(", ")
            ),
        ));
    };
    Ok(Resolved {
        name: name.to_string(),
        spec: TypeSpec::registered(
            name,
            &chosen.version,
            chosen.kind,
            chosen.spec.clone().unwrap_or(Value::Null),
        )?,
        pinned: Some((chosen.version.clone(), chosen.digest.clone())),
    })
}

/// What an agent needs to run a pinned version: its component, egress and limits.
pub async fn runtime(
    client: &impl GenericClient,
    name: &str,
    version: &str,
) -> ApiResult<(ComponentRef, Vec<String>, Option<ConnectorLimits>)> {
    let v = version_of(client, name, version).await?.ok_or_else(|| {
        ApiError::Internal(format!("pinned version {name} {version} is not stored"))
    })?;
    Ok((
        ComponentRef {
            digest: v.digest,
            size: v.size,
        },
        v.egress,
        v.limits,
    ))
}

/// `connector-type-versions`: `GET` every version of a type, `POST` publish one.
pub async fn versions(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let name = req.param("name").unwrap_or_default().to_string();
    match req.method {
        Method::GET => {
            let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
            if !valid_type_name(&name) {
                return Err(no_such_type(&name));
            }
            let conn = ctx.conn().await?;
            let list = versions_of(&conn, &name).await?;
            if list.is_empty() {
                return Err(no_such_type(&name));
            }
            Ok(reply(StatusCode::OK, &list, None).into())
        }
        Method::POST => publish(app, req, name).await,
        _ => Err(method_not_allowed(&req)),
    }
}

fn no_such_type(name: &str) -> ApiError {
    if specs::is_first_party(name) {
        ApiError::NotFound(format!(
            "{name} is built into the agent and has no registered versions"
        ))
    } else {
        ApiError::NotFound(format!("no registered connector type {name:?}"))
    }
}

/// `connector-type-version`: one version, with its spec.
pub async fn version(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let name = req.param("name").unwrap_or_default();
    let version = req.param("version").unwrap_or_default();
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    if !valid_type_name(name) {
        return Err(no_such_type(name));
    }
    if parse_version(version).is_err() {
        return Err(ApiError::NotFound(format!(
            "{name} has no version {version:?} (versions look like 1.2.0)"
        )));
    }
    let conn = ctx.conn().await?;
    match version_of(&conn, name, version).await? {
        Some(v) => Ok(reply(StatusCode::OK, &v, None).into()),
        None if versions_of(&conn, name).await?.is_empty() => Err(no_such_type(name)),
        None => Err(ApiError::NotFound(format!(
            "{name} has no version {version:?}"
        ))),
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    B64.decode(s).or_else(|_| B64_URL.decode(s)).ok()
}

/// Check the publication's signature against the configured keys: required when there are
/// any, verified whenever one is given. Returns the key id that signed it.
fn verify_signature(
    keys: &[(String, Vec<u8>)],
    signature: Option<&VersionSignature>,
    message: &str,
) -> ApiResult<Option<String>> {
    let ids: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let how = "sign it with `culvert connector publish --sign-key FILE` (the private half of a configured key)";
    let Some(sig) = signature else {
        if keys.is_empty() {
            return Ok(None);
        }
        return Err(ApiError::Forbidden(format!(
            "this organization accepts only signed connector versions (signing keys: {}); {how}",
            ids.join(", ")
        )));
    };
    let Some((_, public)) = keys.iter().find(|(k, _)| *k == sig.key_id) else {
        return Err(ApiError::Forbidden(if keys.is_empty() {
            format!(
                "the signature names key {:?}, but no signing keys are configured; add it with `culvert signing-key add {} --public-key FILE`, or publish without a signature",
                sig.key_id, sig.key_id
            )
        } else {
            format!(
                "the signature names key {:?}, which is not configured; the accepted keys are {}; {how}",
                sig.key_id,
                ids.join(", ")
            )
        }));
    };
    let value = decode_b64(&sig.value)
        .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::field(
                "/signature/value",
                "must be the base64 of a 64-byte ed25519 signature",
            )
        })?;
    let key: [u8; 32] = public
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::Internal("stored signing key is not 32 bytes".into()))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|e| ApiError::Internal(format!("stored signing key: {e}")))?;
    key.verify_strict(message.as_bytes(), &value).map_err(|_| {
        ApiError::Forbidden(format!(
            "the signature by key {:?} does not verify for {message:?}; {how}",
            sig.key_id
        ))
    })?;
    Ok(Some(sig.key_id.clone()))
}

async fn publish(app: Arc<App>, req: Req, name: String) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    check_type_name(&name)?;
    let body: VersionPublish = json_body(&req.headers, &req.body)?;
    parse_version(&body.version).map_err(|m| ApiError::field("/version", m))?;
    if !is_digest(&body.digest) {
        return Err(ApiError::field(
            "/digest",
            "must be the lowercase hex SHA-256 of the component (64 characters)",
        ));
    }
    specs::check_spec(&body.spec).map_err(|m| ApiError::field("/spec", m))?;
    if body.egress.len() > MAX_EGRESS {
        return Err(ApiError::field(
            "/egress",
            format!("at most {MAX_EGRESS} endpoints"),
        ));
    }
    for (i, e) in body.egress.iter().enumerate() {
        check_endpoint(e).map_err(|m| ApiError::field(&format!("/egress/{i}"), m))?;
    }
    if let Some(l) = &body.limits {
        check_limits(l)?;
    }
    // PostgreSQL text and jsonb cannot hold NUL.
    if serde_json::to_string(&body.spec).is_ok_and(|t| t.contains("\\u0000")) {
        return Err(ApiError::field("/spec", "must not contain NUL characters"));
    }
    if body.description.as_ref().is_some_and(|d| d.contains('\0')) {
        return Err(ApiError::field(
            "/description",
            "must not contain NUL characters",
        ));
    }
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::field(
            "/description",
            format!("at most {MAX_DESCRIPTION} characters"),
        ));
    }
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    let component = components::find(&tx, &body.digest).await?.ok_or_else(|| {
        ApiError::field(
            "/digest",
            format!(
                "no component with digest {}; upload it first with PUT /v1/components/{} (`culvert connector publish` does both)",
                body.digest, body.digest
            ),
        )
    })?;
    let keys: Vec<(String, Vec<u8>)> = tx
        .q(
            "select key_id, public_key from signing_keys order by key_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let message = signed_message(&name, &body.version, &body.digest);
    let signed_by = verify_signature(&keys, body.signature.as_ref(), &message)?;
    tx.exec(
        "insert into connector_types (name, kind) values ($1, $2) on conflict (name) do nothing",
        &[&name, &component.kind.as_str()],
    )
    .await?;
    let kind: String = tx
        .q_one(
            "select kind from connector_types where name = $1 for update",
            &[&name],
        )
        .await?
        .get(0);
    if kind != component.kind.as_str() {
        return Err(ApiError::Conflict(format!(
            "{name} is a {kind} connector type, but component {} is a {}; publish it under another name",
            body.digest,
            component.kind.as_str()
        )));
    }
    let limits = body
        .limits
        .as_ref()
        .map(|l| serde_json::to_value(l).expect("limits"));
    if let Some(existing) = version_of(&tx, &name, &body.version).await? {
        if existing.digest != body.digest {
            return Err(ApiError::Conflict(format!(
                "{name} {} is already published with digest {}; versions are immutable, so publish this component as a new version",
                body.version, existing.digest
            )));
        }
        let differs = [
            ("spec", existing.spec.as_ref() != Some(&body.spec)),
            ("egress", existing.egress != body.egress),
            ("limits", existing.limits != body.limits),
        ];
        if let Some((what, _)) = differs.iter().find(|(_, d)| *d) {
            return Err(ApiError::Conflict(format!(
                "{name} {} is already published with the same component but another {what}; versions are immutable, so publish a new version",
                body.version
            )));
        }
        tx.commit().await?;
        return Ok(reply(StatusCode::OK, &existing, None).into());
    }
    tx.exec(
        "insert into connector_type_versions
             (type_name, version, digest, spec, egress, limits, description, signed_by, signature)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &name,
            &body.version,
            &body.digest,
            &body.spec,
            &body.egress,
            &limits,
            &body.description,
            &signed_by,
            &body.signature.as_ref().map(|s| s.value.clone()),
        ],
    )
    .await?;
    let v = version_of(&tx, &name, &body.version)
        .await?
        .ok_or_else(|| ApiError::Internal("version just stored".into()))?;
    tx.commit().await?;
    tracing::info!(connector_type = %name, version = %v.version, digest = %v.digest, signed_by = ?v.signed_by, "connector version published");
    Ok(reply(StatusCode::CREATED, &v, None).into())
}

fn check_key_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{id:?} is not a signing key id: use 1 to 64 letters, digits, `.`, `_` or `-`"
        )))
    }
}

fn key_from(r: &Row) -> SigningKey {
    SigningKey {
        key_id: r.get(0),
        public_key: B64.encode(r.get::<_, Vec<u8>>(1)),
        created_at: r.get(2),
    }
}

/// `signing-keys`: every configured signing key.
pub async fn signing_keys(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let keys: Vec<SigningKey> = ctx
        .conn()
        .await?
        .q(
            "select key_id, public_key, created_at from signing_keys order by seq",
            &[],
        )
        .await?
        .iter()
        .map(key_from)
        .collect();
    Ok(reply(StatusCode::OK, &keys, None).into())
}

/// `signing-key`: get, add (`PUT`) or remove one signing key.
pub async fn signing_key(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = req.param("key_id").unwrap_or_default().to_string();
    check_key_id(&id)?;
    let action = if req.method == Method::GET {
        Action::Read
    } else {
        Action::ManageSigningKeys
    };
    let ctx = Ctx::new(&app, &req.headers, action).await?;
    let conn = ctx.conn().await?;
    let current = conn
        .q_opt(
            "select key_id, public_key, created_at from signing_keys where key_id = $1",
            &[&id],
        )
        .await?
        .as_ref()
        .map(key_from);
    let missing = || ApiError::NotFound(format!("no signing key {id:?}"));
    match req.method {
        Method::GET => Ok(reply(StatusCode::OK, &current.ok_or_else(missing)?, None).into()),
        Method::PUT => {
            let body: SigningKeyPut = json_body(&req.headers, &req.body)?;
            let bytes: [u8; 32] = decode_b64(&body.public_key)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    ApiError::field(
                        "/public_key",
                        "must be the base64 of a 32-byte ed25519 public key (`culvert connector keygen` prints one)",
                    )
                })?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| ApiError::field("/public_key", "is not a valid ed25519 public key"))?;
            let encoded = B64.encode(bytes);
            if let Some(k) = current {
                if k.public_key == encoded {
                    return Ok(reply(StatusCode::OK, &k, None).into());
                }
                return Err(ApiError::Conflict(format!(
                    "signing key {id:?} exists with another public key; remove it first (`culvert signing-key remove {id}`) to replace it"
                )));
            }
            conn.exec(
                "insert into signing_keys (key_id, public_key) values ($1, $2)",
                &[&id, &bytes.as_slice()],
            )
            .await
            .map_err(|e| {
                crate::store::conflict_on_unique(e, || format!("signing key {id:?} was just added"))
            })?;
            let k = conn
                .q_one(
                    "select key_id, public_key, created_at from signing_keys where key_id = $1",
                    &[&id],
                )
                .await?;
            tracing::info!(key_id = %id, "signing key added");
            Ok(reply(StatusCode::CREATED, &key_from(&k), None).into())
        }
        Method::DELETE => {
            current.ok_or_else(missing)?;
            conn.exec("delete from signing_keys where key_id = $1", &[&id])
                .await?;
            tracing::info!(key_id = %id, "signing key removed");
            Ok(no_content().into())
        }
        _ => Err(method_not_allowed(&req)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn v(version: &str) -> ConnectorTypeVersion {
        ConnectorTypeVersion {
            name: "acme".into(),
            version: version.into(),
            kind: ConnectorKind::Source,
            digest: "d".into(),
            size: 1,
            spec: None,
            egress: vec![],
            limits: None,
            description: None,
            signed_by: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn latest_prefers_releases_by_precedence() {
        let all = vec![v("1.10.0"), v("1.9.0"), v("2.0.0-rc.1")];
        assert_eq!(latest(&all).unwrap().version, "1.10.0");
        let pre = vec![v("2.0.0-rc.1"), v("2.0.0-rc.2")];
        assert_eq!(latest(&pre).unwrap().version, "2.0.0-rc.2");
        assert!(latest(&[]).is_none());
    }

    #[test]
    fn names_versions_and_endpoints() {
        assert!(valid_type_name("acme-source"));
        assert!(!valid_type_name("a"));
        assert!(!valid_type_name("Acme"));
        assert!(!valid_type_name("9lives"));
        assert!(!valid_type_name(&"a".repeat(64)));
        assert!(parse_version("1.2.0").is_ok());
        assert!(parse_version("1.2.0-rc.1").is_ok());
        assert!(
            parse_version("1.2")
                .unwrap_err()
                .contains("MAJOR.MINOR.PATCH")
        );
        assert!(
            parse_version("1.2.0+abc")
                .unwrap_err()
                .contains("build metadata")
        );
        assert!(check_endpoint("api.example.com:443").is_ok());
        assert!(check_endpoint("[::1]:8080").is_ok());
        assert!(check_endpoint("api.example.com").is_err());
        assert!(check_endpoint("*.example.com:443").is_err());
        assert!(check_endpoint("x:0").is_err());
    }

    #[test]
    fn signatures_are_required_once_keys_exist() {
        use ed25519_dalek::Signer;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let keys = vec![(
            "release".to_string(),
            signing.verifying_key().to_bytes().to_vec(),
        )];
        let msg = signed_message("acme", "1.0.0", &"a".repeat(64));
        assert_eq!(verify_signature(&[], None, &msg).unwrap(), None);
        let e = verify_signature(&keys, None, &msg).unwrap_err();
        assert!(e.to_string().contains("release"), "{e}");
        assert!(e.to_string().contains("--sign-key"), "{e}");
        let good = VersionSignature {
            key_id: "release".into(),
            value: B64.encode(signing.sign(msg.as_bytes()).to_bytes()),
        };
        assert_eq!(
            verify_signature(&keys, Some(&good), &msg)
                .unwrap()
                .as_deref(),
            Some("release")
        );
        let other = signed_message("acme", "1.0.1", &"a".repeat(64));
        assert_eq!(
            verify_signature(&keys, Some(&good), &other)
                .unwrap_err()
                .problem()
                .status,
            403
        );
        let unknown = VersionSignature {
            key_id: "nope".into(),
            ..good.clone()
        };
        assert!(
            verify_signature(&keys, Some(&unknown), &msg)
                .unwrap_err()
                .to_string()
                .contains("accepted keys are release")
        );
        let garbage = VersionSignature {
            value: "!!".into(),
            ..good
        };
        assert_eq!(
            verify_signature(&keys, Some(&garbage), &msg)
                .unwrap_err()
                .problem()
                .status,
            422
        );
    }
}

//! `connectors`: sources and targets with their configuration; secrets sealed for agents.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use culvert_control_api::connectors::{
    CheckOutcome, Connector, ConnectorCreate, ConnectorKind, ConnectorUpdate, Validation,
    ValidationState,
};
use culvert_control_api::environments::{Environment, EnvironmentState};
use deadpool_postgres::GenericClient;
use serde_json::{Map, Value, json};
use tokio_postgres::Row;
use uuid::Uuid;

use super::listing::{self, SealedListing};
use super::{Outcome, Req, check_name, environments, method_not_allowed, registry};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_version, if_match, json_body, no_content, parse_id, reply};
use crate::idempotency;
use crate::master_keys::{KeySet, MasterKeys};
use crate::specs::TypeSpec;
use crate::store::Sql;
use crate::store::at_rest::{self, CONNECTOR_CONFIG};

/// Column 5 is the configuration, sealed at rest.
const COLUMNS: &str = "c.id, c.name, c.environment_id, c.connector_type, c.kind, c.config_sealed, c.secret_names,
    c.created_at, c.updated_at, c.version,
    (select row_to_json(v) from (select id, state, checks, requested_at, finished_at from validations
        where connector_id = c.id order by requested_at desc limit 1) v),
    c.type_version, c.component_digest, c.seq";

fn validation_from(v: &Value) -> ApiResult<Validation> {
    let state = v["state"].as_str().and_then(ValidationState::parse);
    let parse_time = |k: &str| {
        v[k].as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    Ok(Validation {
        id: v["id"]
            .as_str()
            .and_then(|s| Uuid::try_parse(s).ok())
            .ok_or_else(|| ApiError::Internal("validation id".into()))?,
        state: state.ok_or_else(|| ApiError::Internal("validation state".into()))?,
        checks: serde_json::from_value(v["checks"].clone()).unwrap_or_default(),
        requested_at: parse_time("requested_at")
            .ok_or_else(|| ApiError::Internal("requested_at".into()))?,
        finished_at: parse_time("finished_at"),
    })
}

const SEALED: usize = 5;

fn from_row(r: &Row, keys: &KeySet) -> ApiResult<Connector> {
    let id: Uuid = r.get(0);
    let config = at_rest::open_json(keys, CONNECTOR_CONFIG, &id.to_string(), r.get(SEALED))?;
    let validation: Option<Value> = r.get(10);
    Ok(Connector {
        id,
        name: r.get(1),
        environment_id: r.get(2),
        connector_type: r.get(3),
        type_version: r.get(11),
        digest: r.get(12),
        kind: if r.get::<_, &str>(4) == "source" {
            ConnectorKind::Source
        } else {
            ConnectorKind::Target
        },
        config: config.as_object().cloned().unwrap_or_default(),
        secrets: r.get(6),
        validation: validation.as_ref().map(validation_from).transpose()?,
        created_at: r.get(7),
        updated_at: r.get(8),
        version: r.get(9),
    })
}

/// Load one connector, its configuration opened.
pub async fn load(
    client: &impl GenericClient,
    keys: &MasterKeys,
    id: Uuid,
) -> ApiResult<Connector> {
    let row = client
        .q_opt(
            &format!("select {COLUMNS} from connectors c where c.id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("connector", id))?;
    let set = at_rest::keys_for(keys, [row.get::<_, &str>(SEALED)]).await?;
    from_row(&row, &set)
}

/// The sealed secret fields of a connector, by field.
pub async fn sealed_secrets(
    client: &impl GenericClient,
    id: Uuid,
) -> ApiResult<BTreeMap<String, String>> {
    let row = client
        .q_one(
            "select sealed_secrets from connectors where id = $1",
            &[&id],
        )
        .await?;
    let text: Option<String> = row.get(0);
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// Seal secret values for an environment's agents, one envelope per field.
async fn seal(
    app: &App,
    env: &Environment,
    secrets: BTreeMap<String, String>,
) -> ApiResult<BTreeMap<String, String>> {
    if secrets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let key = app.env_keys.for_environment(env)?;
    let mut sealed = BTreeMap::new();
    for (field, value) in secrets {
        let envelope = culvert_sealing::seal(key.as_ref(), value.as_bytes())
            .await
            .map_err(|e| match e {
                culvert_sealing::SealError::Key(k) => crate::env_keys::key_error(k),
                other => ApiError::Internal(other.to_string()),
            })?;
        sealed.insert(field, envelope);
    }
    Ok(sealed)
}

/// `connectors`.
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = req
        .param("id")
        .map(|s| parse_id("connector", s))
        .transpose()?;
    match (req.method.clone(), id) {
        (Method::GET, None) => list(app, req).await,
        (Method::GET, Some(id)) => {
            let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
            let c = load(&ctx.conn().await?, &app.master_keys, id).await?;
            Ok(reply(StatusCode::OK, &c, Some(c.version)).into())
        }
        (Method::POST, None) => create(app, req).await,
        (Method::PATCH, Some(id)) => update(app, req, id).await,
        (Method::DELETE, Some(id)) => delete(app, req, id).await,
        _ => Err(method_not_allowed(&req)),
    }
}

async fn list(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let listing = SealedListing {
        select: format!("select {COLUMNS} from connectors c"),
        alias: "c",
        sealed: SEALED,
        by_environment: true,
        from_row,
    };
    listing::list_sealed(&ctx.conn().await?, &app.master_keys, &req, listing).await
}

async fn create(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let body: ConnectorCreate = json_body(&req.headers, &req.body)?;
    check_name("/name", &body.name, '-')?;
    let resolved = registry::resolve(&ctx.conn().await?, &body.connector_type).await?;
    let kind = resolved.spec.kind();
    resolved.spec.validate(&body.config)?;
    let (config, secrets) = resolved.spec.split_secrets(body.config.clone())?;
    let (type_version, digest) = resolved.pinned.clone().unzip();
    let (response, _) = idempotency::once(&ctx, &req.headers, &req.body, || async {
        let conn = ctx.conn().await?;
        let keys = &ctx.app.master_keys;
        let env = environments::load(&conn, keys, body.environment_id).await.map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::field(
                "/environment_id",
                format!("no environment with id {}", body.environment_id),
            ),
            other => other,
        })?;
        let names: Vec<String> = secrets.keys().cloned().collect();
        let sealed = seal(&ctx.app, &env, secrets).await?;
        let sealed = serde_json::to_string(&sealed).expect("sealed map");
        let id = Uuid::new_v4();
        let config = at_rest::seal_json(&*keys.current().await?, CONNECTOR_CONFIG, &id.to_string(), &Value::Object(config));
        conn.exec(
            "insert into connectors (id, environment_id, name, connector_type, kind, config_sealed, secret_names, sealed_secrets,
                 type_version, component_digest)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[&id, &body.environment_id, &body.name, &resolved.name, &kind.as_str(), &config, &names, &sealed,
              &type_version, &digest],
        )
        .await
        .map_err(|e| {
            crate::store::conflict_on_unique(e, || format!("a connector named {:?} exists in this environment", body.name))
        })?;
        let c = load(&conn, keys, id).await?;
        Ok((StatusCode::CREATED, serde_json::to_value(&c).expect("connector"), Some(c.version)))
    })
    .await?;
    Ok(response.into())
}

async fn update(app: Arc<App>, req: Req, id: Uuid) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let body: ConnectorUpdate = json_body(&req.headers, &req.body)?;
    let expected = if_match(&req.headers)?;
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    tx.exec("select 1 from connectors where id = $1 for update", &[&id])
        .await?;
    let keys = &app.master_keys;
    let current = load(&tx, keys, id).await?;
    check_version(expected, current.version)?;
    let (spec, pinned) = match (&current.type_version, &body.type_version) {
        (None, None) => (TypeSpec::first_party(&current.connector_type)?, None),
        (None, Some(_)) => {
            return Err(ApiError::field(
                "/type_version",
                format!(
                    "{} is built into the agent and has no versions",
                    current.connector_type
                ),
            ));
        }
        (Some(pinned), wanted) => {
            let v = wanted.as_deref().unwrap_or(pinned);
            let r = registry::pin(&tx, &current.connector_type, Some(v), "/type_version").await?;
            (r.spec, r.pinned)
        }
    };
    let secret_fields = spec.secret_fields();
    let mut config = current.config.clone();
    let mut kept: Vec<String> = current.secrets.clone();
    let mut new_secrets = BTreeMap::new();
    for (k, v) in body.config.unwrap_or_default() {
        // A secret of the previous version stays removable after a version change.
        let secret = secret_fields.contains(&k) || (v.is_null() && kept.contains(&k));
        match (v, secret) {
            (Value::Null, true) => kept.retain(|n| n != &k),
            (Value::Null, false) => {
                if config.remove(&k).is_none() {
                    return Err(ApiError::field(
                        &format!("/config/{k}"),
                        "is not set on this connector, so it cannot be removed",
                    ));
                }
            }
            (Value::String(s), true) => {
                kept.retain(|n| n != &k);
                new_secrets.insert(k, s);
            }
            (_, true) => return Err(ApiError::field(&format!("/config/{k}"), "must be a string")),
            (v, false) => {
                config.insert(k, v);
            }
        }
    }
    // Validate the result with placeholders for the secrets kept sealed.
    let mut full: Map<String, Value> = config.clone();
    for n in &kept {
        full.insert(n.clone(), Value::String(String::new()));
    }
    for (k, v) in &new_secrets {
        full.insert(k.clone(), Value::String(v.clone()));
    }
    spec.validate(&full)?;
    let mut sealed = sealed_secrets(&tx, id).await?;
    sealed.retain(|k, _| kept.contains(k));
    let env = environments::load(&tx, keys, current.environment_id).await?;
    sealed.extend(seal(&ctx.app, &env, new_secrets).await?);
    let names: Vec<String> = sealed.keys().cloned().collect();
    let sealed = serde_json::to_string(&sealed).expect("sealed map");
    let config = at_rest::seal_json(
        &*keys.current().await?,
        CONNECTOR_CONFIG,
        &id.to_string(),
        &Value::Object(config),
    );
    let (type_version, digest) = pinned.unzip();
    tx.exec(
        "update connectors set config_sealed = $2, secret_names = $3, sealed_secrets = $4,
             type_version = $5, component_digest = $6,
             version = version + 1, updated_at = now() where id = $1",
        &[&id, &config, &names, &sealed, &type_version, &digest],
    )
    .await?;
    let c = load(&tx, keys, id).await?;
    tx.commit().await?;
    Ok(reply(StatusCode::OK, &c, Some(c.version)).into())
}

async fn delete(app: Arc<App>, req: Req, id: Uuid) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let expected = if_match(&req.headers)?;
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    let c = load(&tx, &app.master_keys, id).await?;
    check_version(expected, c.version)?;
    let users: Vec<String> = tx
        .q(
            "select name from pipelines where source_id = $1 or target_id = $1",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "connector {} is used by pipeline(s) {}; delete them first",
            c.name,
            users.join(", ")
        )));
    }
    tx.exec("delete from connectors where id = $1", &[&id])
        .await?;
    tx.commit().await?;
    Ok(no_content().into())
}

/// `connector-validate` (payload path: it sends a `validate` message).
pub async fn validate(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = parse_id("connector", req.param("id").unwrap_or_default())?;
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let conn = ctx.conn().await?;
    let keys = &app.master_keys;
    let c = load(&conn, keys, id).await?;
    let env = environments::load(&conn, keys, c.environment_id).await?;
    if env.state != EnvironmentState::Ready {
        return Err(ApiError::Conflict(format!(
            "environment {} is {}; validation runs inside it once it is ready",
            env.name,
            env.state.as_str()
        )));
    }
    let vid = Uuid::new_v4();
    conn.exec(
        "insert into validations (id, connector_id, connector_version, state) values ($1, $2, $3, 'queued')",
        &[&vid, &id, &c.version],
    )
    .await?;
    let c = load(&conn, keys, id).await?;
    let v = c
        .validation
        .clone()
        .ok_or_else(|| ApiError::Internal("validation just inserted".into()))?;
    Ok(Outcome {
        response: reply(StatusCode::ACCEPTED, &v, None),
        messages: vec![("validate", json!({"validation_id": vid}))],
    })
}

/// Record the checks of a validation.
pub async fn finish_validation(
    client: &impl GenericClient,
    validation: Uuid,
    checks: &[CheckOutcome],
) -> ApiResult<bool> {
    let state = if !checks.is_empty() && checks.iter().all(|c| c.ok) {
        "passed"
    } else {
        "failed"
    };
    let n = client
        .exec(
            "update validations set state = $2, checks = $3, finished_at = now()
             where id = $1 and state in ('queued', 'running')",
            &[
                &validation,
                &state,
                &serde_json::to_value(checks).expect("checks"),
            ],
        )
        .await?;
    Ok(n == 1)
}

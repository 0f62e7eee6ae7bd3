//! `Idempotency-Key` on creates: a retried POST returns the first answer instead of
//! creating twice. Not used for API keys: their reply holds a secret that must not be stored.
//! The stored reply repeats the configuration that was created, so it is sealed at rest.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::reply;
use crate::store::Sql;
use crate::store::at_rest::{self, IDEMPOTENCY_BODY, idempotency_row};

/// A create's answer: status, body, version for the `ETag`.
pub type Created = (StatusCode, Value, Option<i64>);

/// Run `create` once per `(caller, Idempotency-Key)`; replays get the stored answer.
pub async fn once<F, Fut>(
    ctx: &Ctx,
    headers: &HeaderMap,
    body: &[u8],
    create: F,
) -> ApiResult<(Response, Value)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ApiResult<Created>>,
{
    let Some(key) = headers.get(culvert_control_api::IDEMPOTENCY_KEY) else {
        let (status, value, version) = create().await?;
        return Ok((reply(status, &value, version), value));
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 200 visible characters".into())
        })?
        .to_string();
    let hash = Sha256::digest(body).to_vec();
    let principal = ctx.principal.name();
    let conn = ctx.conn().await?;
    if let Some(row) = conn
        .q_opt(
            "select request_hash, status, body_sealed from idempotency_keys where principal = $1 and key = $2",
            &[&principal, &key],
        )
        .await?
    {
        let stored: Vec<u8> = row.get(0);
        if stored != hash {
            return Err(ApiError::Conflict(format!(
                "Idempotency-Key {key:?} was used for a different request; use a new key for a new request"
            )));
        }
        let status = StatusCode::from_u16(row.get::<_, i32>(1) as u16).unwrap_or(StatusCode::OK);
        let sealed: &str = row.get(2);
        let keys = at_rest::keys_for(&ctx.app.master_keys, [sealed]).await?;
        let body = at_rest::open_json(
            &keys,
            IDEMPOTENCY_BODY,
            &idempotency_row(&principal, &key),
            sealed,
        )?;
        let version = body.get("version").and_then(Value::as_i64);
        return Ok((reply(status, &body, version), body));
    }
    let (status, value, version) = create().await?;
    let sealed = at_rest::seal_json(
        &*ctx.app.master_keys.current().await?,
        IDEMPOTENCY_BODY,
        &idempotency_row(&principal, &key),
        &value,
    );
    conn.exec(
        "insert into idempotency_keys (principal, key, request_hash, status, body_sealed)
         values ($1, $2, $3, $4, $5) on conflict do nothing",
        &[&principal, &key, &hash, &(status.as_u16() as i32), &sealed],
    )
    .await?;
    Ok((reply(status, &value, version), value))
}

//! `api-keys`: create (the secret is shown once), list, revoke.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use culvert_control_api::keys::{ApiKey, ApiKeyCreate, ApiKeyCreated, Role};

use super::listing::{self, Listing};
use super::{Outcome, Req, method_not_allowed};
use crate::app::{App, Ctx};
use crate::auth::{self, Action, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, no_content, parse_id, reply};
use crate::store::Sql;

const COLUMNS: &str = "id, name, prefix, created_at, expires_at, seq";

fn from_row(r: &tokio_postgres::Row) -> ApiKey {
    ApiKey {
        id: r.get(0),
        name: r.get(1),
        role: Role::Admin,
        prefix: r.get(2),
        created_at: r.get(3),
        expires_at: r.get(4),
    }
}

/// `api-keys`.
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::ManageKeys).await?;
    let conn = ctx.conn().await?;
    match (req.method.clone(), req.param("id")) {
        (Method::GET, None) => {
            let listing = Listing {
                select: format!("select {COLUMNS} from api_keys k"),
                alias: "k",
                only: Some("k.revoked_at is null"),
                by_environment: false,
                from_row: |r| Ok(from_row(r)),
            };
            listing::list(&conn, &req, listing).await
        }
        (Method::GET, Some(id)) => {
            let id = parse_id("API key", id)?;
            let row = conn
                .q_opt(
                    &format!("select {COLUMNS} from api_keys where revoked_at is null and id = $1"),
                    &[&id],
                )
                .await?
                .ok_or_else(|| ApiError::not_found("API key", id))?;
            Ok(reply(StatusCode::OK, &from_row(&row), None).into())
        }
        (Method::POST, None) => {
            let body: ApiKeyCreate = json_body(&req.headers, &req.body)?;
            if body.name.trim().is_empty() || body.name.len() > 100 {
                return Err(ApiError::field("/name", "must be 1 to 100 characters"));
            }
            let days = match body.expires_in_days {
                None => 90,
                Some(d) if (1..=365).contains(&d) => d,
                Some(_) => {
                    return Err(ApiError::field("/expires_in_days", "must be from 1 to 365"));
                }
            };
            let (key, secret) = auth::create_api_key(&conn, &body.name, Role::Admin, days).await?;
            Ok(reply(StatusCode::CREATED, &ApiKeyCreated { key, secret }, None).into())
        }
        (Method::DELETE, Some(id)) => {
            let id = parse_id("API key", id)?;
            if matches!(ctx.principal, Principal::User { key_id, .. } if key_id == id) {
                return Err(ApiError::Conflict(
                    "a key cannot revoke itself; use another admin key".into(),
                ));
            }
            let n = conn
                .exec(
                    "update api_keys set revoked_at = now() where id = $1 and revoked_at is null",
                    &[&id],
                )
                .await?;
            if n == 0 {
                return Err(ApiError::not_found("API key", id));
            }
            auth::forget(id);
            Ok(no_content().into())
        }
        _ => Err(method_not_allowed(&req)),
    }
}

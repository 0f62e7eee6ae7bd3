//! `connector-types`: the connectors this platform runs and their configuration schemas:
//! the first-party types built into the agent and the types registered in the registry.

use std::sync::Arc;

use axum::http::StatusCode;

use super::{Outcome, Req, registry};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::reply;
use crate::specs;

/// `connector-types`.
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let conn = ctx.conn().await?;
    match req.param("name") {
        None => {
            let mut all = specs::all();
            all.extend(registry::registered_types(&conn).await?);
            Ok(reply(StatusCode::OK, &all, None).into())
        }
        Some(name) => {
            let t = match specs::get(name) {
                Some(t) => t,
                None => registry::registered_type(&conn, name)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no connector type {name:?}")))?,
            };
            Ok(reply(StatusCode::OK, &t, None).into())
        }
    }
}

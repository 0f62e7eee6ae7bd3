//! `connector-types`: the connectors this platform runs and their configuration schemas.

use std::sync::Arc;

use axum::http::StatusCode;

use super::{Outcome, Req};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::reply;
use crate::specs;

/// `connector-types`.
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    Ctx::new(&app, &req.headers, Action::Read).await?;
    match req.param("name") {
        None => Ok(reply(StatusCode::OK, &specs::all(), None).into()),
        Some(name) => {
            let t = specs::get(name)
                .ok_or_else(|| ApiError::NotFound(format!("no connector type {name:?}")))?;
            Ok(reply(StatusCode::OK, &t, None).into())
        }
    }
}

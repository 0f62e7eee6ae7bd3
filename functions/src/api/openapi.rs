//! `openapi`: the OpenAPI 3.1 document of the API.

use std::sync::{Arc, LazyLock};

use axum::http::StatusCode;

use super::{Outcome, Req};
use crate::app::App;
use crate::error::ApiResult;
use crate::extract::reply;

static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(crate::openapi_doc::document);

/// `openapi` (no authentication: the document holds no data).
pub async fn serve(_app: Arc<App>, _req: Req) -> ApiResult<Outcome> {
    Ok(reply(StatusCode::OK, &*DOCUMENT, None).into())
}

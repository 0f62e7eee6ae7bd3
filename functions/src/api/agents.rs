//! `agents`: the agents of every environment, for users.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use culvert_control_api::agents::{Agent, AgentHealth};
use tokio_postgres::Row;

use super::listing::{self, Listing};
use super::{Outcome, Req, method_not_allowed};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_id, reply};
use crate::store::Sql;

const COLUMNS: &str = "a.id, a.environment_id, a.name, a.version, a.healthy, a.registered_at, a.last_heartbeat_at,
    array(select pipeline_id from leases l where l.agent_id = a.id and not l.revoked order by pipeline_id), a.seq";

fn from_row(r: &Row) -> Agent {
    Agent {
        id: r.get(0),
        environment_id: r.get(1),
        name: r.get(2),
        version: r.get(3),
        health: if r.get(4) {
            AgentHealth::Healthy
        } else {
            AgentHealth::Unhealthy
        },
        registered_at: r.get(5),
        last_heartbeat_at: r.get(6),
        pipelines: r.get(7),
    }
}

/// `agents`.
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let conn = ctx.conn().await?;
    match (req.method.clone(), req.param("id")) {
        (Method::GET, Some(id)) => {
            let id = parse_id("agent", id)?;
            let row = conn
                .q_opt(
                    &format!("select {COLUMNS} from agents a where a.id = $1"),
                    &[&id],
                )
                .await?
                .ok_or_else(|| ApiError::not_found("agent", id))?;
            Ok(reply(StatusCode::OK, &from_row(&row), None).into())
        }
        (Method::GET, None) => {
            let listing = Listing {
                select: format!("select {COLUMNS} from agents a"),
                alias: "a",
                only: None,
                by_environment: true,
                from_row: |r| Ok(from_row(r)),
            };
            listing::list(&conn, &req, listing).await
        }
        _ => Err(method_not_allowed(&req)),
    }
}

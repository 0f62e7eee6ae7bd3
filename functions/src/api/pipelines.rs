//! `pipelines`: create, change, deploy, pause, resume, resync, delete, status.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use culvert_control_api::agents::PipelineCommand;
use culvert_control_api::connectors::ConnectorKind;
use culvert_control_api::pipelines::{
    ConnectorRun, DesiredState, Pipeline, PipelineConnectors, PipelineCreate, PipelineProgress,
    PipelineStatus, PipelineUpdate, ResyncRequest,
};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use super::listing::{self, Listing};
use super::{Outcome, Req, check_name, connectors, method_not_allowed};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_version, if_match, json_body, no_content, parse_id, reply};
use crate::idempotency;
use crate::store::Sql;

const COLUMNS: &str =
    "p.id, p.name, p.environment_id, p.source_id, p.target_id, p.tables, p.batch_rows, p.state,
    p.created_at, p.updated_at, p.version,
    (select json_build_object('connector_id', c.id, 'type', c.connector_type,
        'type_version', c.type_version, 'digest', c.component_digest)
     from connectors c where c.id = p.source_id),
    (select json_build_object('connector_id', c.id, 'type', c.connector_type,
        'type_version', c.type_version, 'digest', c.component_digest)
     from connectors c where c.id = p.target_id),
    p.seq";

/// Rows per change batch when the create does not say.
pub const DEFAULT_BATCH_ROWS: u32 = 5000;

fn from_row(r: &Row) -> ApiResult<Pipeline> {
    let tables: Value = r.get(5);
    let state: &str = r.get(7);
    let run = |i: usize| -> Option<ConnectorRun> {
        r.get::<_, Option<Value>>(i)
            .and_then(|v| serde_json::from_value(v).ok())
    };
    let connectors = match (run(11), run(12)) {
        (Some(source), Some(target)) => Some(PipelineConnectors { source, target }),
        _ => None,
    };
    Ok(Pipeline {
        id: r.get(0),
        name: r.get(1),
        environment_id: r.get(2),
        source_id: r.get(3),
        target_id: r.get(4),
        tables: serde_json::from_value(tables).map_err(|e| ApiError::Internal(e.to_string()))?,
        batch_rows: r.get::<_, i32>(6) as u32,
        state: DesiredState::parse(state)
            .ok_or_else(|| ApiError::Internal(format!("state {state}")))?,
        created_at: r.get(8),
        updated_at: r.get(9),
        version: r.get(10),
        connectors,
    })
}

/// Load one pipeline.
pub async fn load(client: &impl GenericClient, id: Uuid) -> ApiResult<Pipeline> {
    let row = client
        .q_opt(
            &format!("select {COLUMNS} from pipelines p where p.id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline", id))?;
    from_row(&row)
}

fn check_tables(pointer: &str, tables: &[String]) -> ApiResult<()> {
    if tables.is_empty() {
        return Err(ApiError::field(
            pointer,
            "select at least one table, for example public.*",
        ));
    }
    for (i, t) in tables.iter().enumerate() {
        let ok = matches!(t.split_once('.'), Some((s, n)) if !s.is_empty() && !n.is_empty())
            && !t.chars().any(|c| c.is_control() || c == '"');
        if !ok {
            return Err(ApiError::field(
                &format!("{pointer}/{i}"),
                "write tables as schema.name; `*` and `?` match any characters, for example sales.*",
            ));
        }
    }
    Ok(())
}

fn check_batch_rows(n: Option<u32>) -> ApiResult<u32> {
    match n {
        None => Ok(DEFAULT_BATCH_ROWS),
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("/batch_rows", "must be from 1 to 1000000")),
    }
}

/// `pipelines`.
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = req
        .param("id")
        .map(|s| parse_id("pipeline", s))
        .transpose()?;
    match (req.method.clone(), id) {
        (Method::GET, None) => list(app, req).await,
        (Method::GET, Some(id)) => {
            let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
            let p = load(&ctx.conn().await?, id).await?;
            Ok(reply(StatusCode::OK, &p, Some(p.version)).into())
        }
        (Method::POST, None) => create(app, req).await,
        (Method::PATCH, Some(id)) => update(app, req, id).await,
        (Method::DELETE, Some(id)) => delete(app, req, id).await,
        _ => Err(method_not_allowed(&req)),
    }
}

async fn list(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let listing = Listing {
        select: format!("select {COLUMNS} from pipelines p"),
        alias: "p",
        only: None,
        by_environment: true,
        from_row,
    };
    listing::list(&ctx.conn().await?, &req, listing).await
}

async fn create(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let body: PipelineCreate = json_body(&req.headers, &req.body)?;
    check_name("/name", &body.name, '_')?;
    check_tables("/tables", &body.tables)?;
    let batch_rows = check_batch_rows(body.batch_rows)?;
    let (response, _) = idempotency::once(&ctx, &req.headers, &req.body, || async {
        let conn = ctx.conn().await?;
        let keys = &ctx.app.master_keys;
        let missing = |pointer: &str, id: Uuid| {
            let pointer = pointer.to_string();
            move |e| match e {
                ApiError::NotFound(_) => ApiError::field(&pointer, format!("no connector with id {id}")),
                other => other,
            }
        };
        let source = connectors::load(&conn, keys, body.source_id)
            .await
            .map_err(missing("/source_id", body.source_id))?;
        let target = connectors::load(&conn, keys, body.target_id)
            .await
            .map_err(missing("/target_id", body.target_id))?;
        if source.kind != ConnectorKind::Source {
            return Err(ApiError::field("/source_id", format!("{} is a target connector", source.name)));
        }
        if target.kind != ConnectorKind::Target {
            return Err(ApiError::field("/target_id", format!("{} is a source connector", target.name)));
        }
        if source.environment_id != target.environment_id {
            return Err(ApiError::field(
                "/target_id",
                "source and target must be in the same environment (its agents reach both)",
            ));
        }
        let id = Uuid::new_v4();
        conn.exec(
            "insert into pipelines (id, name, environment_id, source_id, target_id, tables, batch_rows, state)
             values ($1, $2, $3, $4, $5, $6, $7, 'draft')",
            &[
                &id,
                &body.name,
                &source.environment_id,
                &body.source_id,
                &body.target_id,
                &serde_json::to_value(&body.tables).expect("tables"),
                &(batch_rows as i32),
            ],
        )
        .await
        .map_err(|e| crate::store::conflict_on_unique(e, || format!("a pipeline named {:?} exists", body.name)))?;
        let p = load(&conn, id).await?;
        Ok((StatusCode::CREATED, serde_json::to_value(&p).expect("pipeline"), Some(p.version)))
    })
    .await?;
    Ok(response.into())
}

async fn update(app: Arc<App>, req: Req, id: Uuid) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let body: PipelineUpdate = json_body(&req.headers, &req.body)?;
    let expected = if_match(&req.headers)?;
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    tx.exec("select 1 from pipelines where id = $1 for update", &[&id])
        .await?;
    let current = load(&tx, id).await?;
    check_version(expected, current.version)?;
    let tables = match body.tables {
        Some(t) => {
            check_tables("/tables", &t)?;
            t
        }
        None => current.tables,
    };
    let batch_rows = match body.batch_rows {
        Some(_) => check_batch_rows(body.batch_rows)?,
        None => current.batch_rows,
    };
    tx.exec(
        "update pipelines set tables = $2, batch_rows = $3, version = version + 1, updated_at = now() where id = $1",
        &[&id, &serde_json::to_value(&tables).expect("tables"), &(batch_rows as i32)],
    )
    .await?;
    let p = load(&tx, id).await?;
    tx.commit().await?;
    Ok(reply(StatusCode::OK, &p, Some(p.version)).into())
}

async fn delete(app: Arc<App>, req: Req, id: Uuid) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let expected = if_match(&req.headers)?;
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    let p = load(&tx, id).await?;
    check_version(expected, p.version)?;
    if p.state == DesiredState::Running {
        return Err(ApiError::Conflict(format!(
            "pipeline {} is running; pause it first (`culvert pipeline pause {}`)",
            p.name, p.name
        )));
    }
    // A paused pipeline may still be stopping on its agent; its lease goes with it.
    tx.exec("delete from pipelines where id = $1", &[&id])
        .await?;
    tx.commit().await?;
    Ok(no_content().into())
}

/// `pipeline-actions`: deploy, pause, resume, resync.
pub async fn action(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = parse_id("pipeline", req.param("id").unwrap_or_default())?;
    let action = req.param("action").unwrap_or_default().to_string();
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    tx.exec("select 1 from pipelines where id = $1 for update", &[&id])
        .await?;
    let p = load(&tx, id).await?;
    let to = match (action.as_str(), p.state) {
        ("deploy", DesiredState::Draft | DesiredState::Paused | DesiredState::Running) => {
            DesiredState::Running
        }
        ("resume", DesiredState::Paused | DesiredState::Running) => DesiredState::Running,
        ("resume", DesiredState::Draft) => {
            return Err(ApiError::Conflict(format!(
                "pipeline {} was never deployed; deploy it",
                p.name
            )));
        }
        ("pause", DesiredState::Running | DesiredState::Paused) => DesiredState::Paused,
        ("pause", DesiredState::Draft) => {
            return Err(ApiError::Conflict(format!(
                "pipeline {} is not deployed",
                p.name
            )));
        }
        ("resync", DesiredState::Running) => {
            let body: ResyncRequest = if req.body.is_empty() {
                ResyncRequest::default()
            } else {
                json_body(&req.headers, &req.body)?
            };
            for (i, t) in body.tables.iter().enumerate() {
                if !matches!(t.split_once('.'), Some((s, n)) if !s.is_empty() && !n.is_empty() && !t.contains(['*', '?']))
                {
                    return Err(ApiError::field(
                        &format!("/tables/{i}"),
                        "write a table as schema.name, without wildcards",
                    ));
                }
            }
            let cmd = PipelineCommand {
                id: Uuid::new_v4(),
                kind: "resync".into(),
                tables: body.tables,
            };
            tx.exec(
                "insert into pipeline_commands (id, pipeline_id, kind, tables) values ($1, $2, $3, $4)",
                &[&cmd.id, &id, &cmd.kind, &serde_json::to_value(&cmd.tables).expect("tables")],
            )
            .await?;
            tx.commit().await?;
            return Ok(reply(StatusCode::ACCEPTED, &cmd, None).into());
        }
        ("resync", _) => {
            return Err(ApiError::Conflict(format!(
                "pipeline {} is not running; resync needs a running pipeline",
                p.name
            )));
        }
        _ => {
            return Err(ApiError::NotFound(format!(
                "no action {action:?}; use deploy, pause, resume or resync"
            )));
        }
    };
    if to != p.state {
        tx.exec(
            "update pipelines set state = $2, version = version + 1, updated_at = now() where id = $1",
            &[&id, &to.as_str()],
        )
        .await?;
    }
    let p = load(&tx, id).await?;
    tx.commit().await?;
    Ok(reply(StatusCode::OK, &p, Some(p.version)).into())
}

/// `pipeline-status`.
pub async fn status(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = parse_id("pipeline", req.param("id").unwrap_or_default())?;
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let conn = ctx.conn().await?;
    let p = load(&conn, id).await?;
    let row = conn
        .q_one(
            "select l.agent_id, p.epoch, s.progress, s.reported_at, s.epoch
             from pipelines p left join leases l on l.pipeline_id = p.id
             left join pipeline_status s on s.pipeline_id = p.id where p.id = $1",
            &[&id],
        )
        .await?;
    let agent_id: Option<Uuid> = row.get(0);
    let epoch: i64 = row.get(1);
    let progress: Option<Value> = row.get(2);
    let progress: PipelineProgress = progress
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let reported_at = row.get(3);
    let current_report = row.get::<_, Option<i64>>(4) == Some(epoch);
    let phase = match p.state {
        DesiredState::Draft => "draft".to_string(),
        // The agent stops at its next heartbeat; until then the pipeline still runs.
        DesiredState::Paused if agent_id.is_some() => "pausing".to_string(),
        DesiredState::Paused => "paused".to_string(),
        DesiredState::Running if agent_id.is_none() => "waiting_for_agent".to_string(),
        DesiredState::Running if !current_report || progress.phase.is_empty() => {
            "starting".to_string()
        }
        DesiredState::Running => progress.phase.clone(),
    };
    let status = PipelineStatus {
        pipeline_id: id,
        state: p.state,
        phase,
        agent_id,
        epoch,
        progress,
        reported_at,
        connectors: p.connectors.clone(),
    };
    Ok(reply(StatusCode::OK, &status, None).into())
}

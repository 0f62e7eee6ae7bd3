//! The agent metadata service: register, heartbeat (status in, assignments out), reports.

use std::sync::Arc;

use axum::http::StatusCode;
use culvert_control_api::agents::{
    AgentRegister, AgentRegistered, AgentReport, Assignment, ConnectorDefinition, Heartbeat,
    HeartbeatReply, PipelineCommand, ValidationTask,
};
use culvert_control_api::connectors::Connector;
use deadpool_postgres::GenericClient;
use serde_json::Value;
use uuid::Uuid;

use super::{Outcome, Req, connectors, pipelines, registry};
use crate::app::{App, Ctx};
use crate::auth::{self, Action, CredentialKind, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, reply};
use crate::master_keys::MasterKeys;
use crate::scheduler;
use crate::store::Sql;

fn agent_of(ctx: &Ctx) -> ApiResult<(Uuid, Uuid)> {
    match ctx.principal {
        Principal::Agent {
            agent_id,
            environment_id,
        } => Ok((agent_id, environment_id)),
        Principal::User { .. } => Err(ApiError::Forbidden(
            "only agents call the agent protocol".into(),
        )),
    }
}

/// `agent-register`: trade the environment's registration token for an agent key.
pub async fn register(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let store = app.store().await?;
    let env = auth::registration_token(store, &req.headers).await?;
    let body: AgentRegister = json_body(&req.headers, &req.body)?;
    if body.environment_id != env {
        return Err(ApiError::Forbidden(
            "the registration token belongs to another environment".into(),
        ));
    }
    if body.name.is_empty() || body.name.len() > 200 || body.version.len() > 100 {
        return Err(ApiError::field("/name", "must be 1 to 200 characters"));
    }
    let id = Uuid::new_v4();
    let (key, hash) = auth::new_credential(CredentialKind::Agent, id);
    let mut conn = store.conn().await?;
    let tx = conn.transaction().await?;
    tx.exec(
        "insert into agents (id, environment_id, name, version, key_hash) values ($1, $2, $3, $4, $5)",
        &[&id, &env, &body.name, &body.version, &hash],
    )
    .await?;
    tx.exec(
        "update environments set state = 'ready', reason = null, updated_at = now()
         where id = $1 and state <> 'ready'",
        &[&env],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(agent = %id, environment = %env, name = %body.name, "agent registered");
    let reply_body = AgentRegistered {
        agent_id: id,
        agent_key: key,
        heartbeat_seconds: app.settings.heartbeat.as_secs() as u32,
        lease_seconds: app.settings.lease.as_secs() as u32,
    };
    Ok(reply(StatusCode::CREATED, &reply_body, None).into())
}

/// A connector as an agent runs it: for a registered type, with the pinned version's
/// component, egress and limits.
async fn definition(
    client: &impl GenericClient,
    c: &Connector,
    sealed: std::collections::BTreeMap<String, String>,
) -> ApiResult<ConnectorDefinition> {
    let (component, egress, limits) = match &c.type_version {
        Some(v) => {
            let (component, egress, limits) =
                registry::runtime(client, &c.connector_type, v).await?;
            (Some(component), egress, limits)
        }
        None => (None, Vec::new(), None),
    };
    Ok(ConnectorDefinition {
        connector_type: c.connector_type.clone(),
        kind: c.kind,
        config: c.config.clone(),
        sealed_secrets: sealed,
        type_version: c.type_version.clone(),
        component,
        egress,
        limits,
    })
}

async fn connector_definition(
    client: &impl GenericClient,
    keys: &MasterKeys,
    id: Uuid,
) -> ApiResult<ConnectorDefinition> {
    let c = connectors::load(client, keys, id).await?;
    let sealed = connectors::sealed_secrets(client, id).await?;
    definition(client, &c, sealed).await
}

async fn assignments(
    client: &impl GenericClient,
    keys: &MasterKeys,
    agent: Uuid,
) -> ApiResult<Vec<Assignment>> {
    let leases = client
        .q(
"select pipeline_id, epoch from leases where agent_id = $1 and not revoked order by pipeline_id",
            &[&agent],
        )
        .await?;
    let mut out = Vec::with_capacity(leases.len());
    for l in &leases {
        let pipeline_id: Uuid = l.get(0);
        let p = pipelines::load(client, pipeline_id).await?;
        let commands = client
            .q(
"select id, kind, tables from pipeline_commands where pipeline_id = $1 and done_at is null order by created_at",
                &[&pipeline_id],
            )
            .await?
            .iter()
            .map(|r| PipelineCommand {
                id: r.get(0),
                kind: r.get(1),
                tables: serde_json::from_value(r.get::<_, Value>(2)).unwrap_or_default(),
            })
            .collect();
        out.push(Assignment {
            pipeline_id,
            name: p.name.clone(),
            epoch: l.get(1),
            version: p.version,
            source: connector_definition(client, keys, p.source_id).await?,
            target: connector_definition(client, keys, p.target_id).await?,
            tables: p.tables.clone(),
            batch_rows: p.batch_rows,
            commands,
        });
    }
    Ok(out)
}

async fn claim_validations(
    client: &impl GenericClient,
    keys: &MasterKeys,
    agent: Uuid,
    env: Uuid,
) -> ApiResult<Vec<ValidationTask>> {
    let rows = client
        .q(
            "update validations set state = 'running', agent_id = $1, started_at = now()
             where id in (select v.id from validations v join connectors c on c.id = v.connector_id
                          where c.environment_id = $2 and v.state = 'queued'
                          order by v.requested_at limit 4 for update of v skip locked)
             returning id, connector_id",
            &[&agent, &env],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(ValidationTask {
            validation_id: r.get(0),
            connector: connector_definition(client, keys, r.get(1)).await?,
        });
    }
    Ok(out)
}

/// `agent-heartbeat`: record liveness and progress, renew leases, return assignments.
pub async fn heartbeat(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::AgentProtocol).await?;
    let (agent, env) = agent_of(&ctx)?;
    let body: Heartbeat = json_body(&req.headers, &req.body)?;
    let lease_secs = app.settings.lease.as_secs_f64();
    let mut conn = ctx.conn().await?;
    {
        let tx = conn.transaction().await?;
        tx.exec(
            "update agents set last_heartbeat_at = now(), healthy = not $2 where id = $1",
            &[&agent, &body.draining],
        )
        .await?;
        if !body.draining {
            // A heartbeating agent makes its environment usable again.
            tx.exec(
                "update environments set state = 'ready', reason = null, updated_at = now()
                 where id = $1 and state <> 'ready'",
                &[&env],
            )
            .await?;
        }
        let mut running = Vec::with_capacity(body.running.len());
        for r in &body.running {
            running.push(r.pipeline_id);
            // Only the current lease holder's reports count.
            let holds = tx
                .q_opt(
                    "select 1 from leases where pipeline_id = $1 and agent_id = $2 and epoch = $3",
                    &[&r.pipeline_id, &agent, &r.epoch],
                )
                .await?
                .is_some();
            if !holds {
                continue;
            }
            tx.exec(
                "insert into pipeline_status (pipeline_id, agent_id, epoch, progress, reported_at)
                 values ($1, $2, $3, $4, now())
                 on conflict (pipeline_id) do update set agent_id = $2, epoch = $3, progress = $4, reported_at = now()",
                &[&r.pipeline_id, &agent, &r.epoch, &serde_json::to_value(&r.progress).expect("progress")],
            )
            .await?;
            if !r.commands_done.is_empty() {
                tx.exec(
                    "update pipeline_commands set done_at = now() where pipeline_id = $1 and id = any($2) and done_at is null",
                    &[&r.pipeline_id, &r.commands_done],
                )
                .await?;
            }
        }
        tx.exec(
            "update leases set expires_at = now() + make_interval(secs => $2) where agent_id = $1 and not revoked",
            &[&agent, &lease_secs],
        )
        .await?;
        // A revoked lease ends once its agent no longer runs the pipeline; a draining
        // agent gives back every lease it no longer uses.
        tx.exec(
            "delete from leases where agent_id = $1 and (revoked or $3) and not (pipeline_id = any($2))",
            &[&agent, &running, &body.draining],
        )
        .await?;
        if body.draining {
            tx.exec("update agents set healthy = false where id = $1", &[&agent])
                .await?;
        }
        tx.commit().await?;
        if body.draining {
            scheduler::schedule(&mut conn, env, app.settings.lease).await?;
            return Ok(heartbeat_reply(&app, Vec::new(), Vec::new()));
        }
    }
    scheduler::schedule(&mut conn, env, app.settings.lease).await?;
    let assignments = assignments(&conn, &app.master_keys, agent).await?;
    let validations = claim_validations(&conn, &app.master_keys, agent, env).await?;
    Ok(heartbeat_reply(&app, assignments, validations))
}

fn heartbeat_reply(
    app: &App,
    assignments: Vec<Assignment>,
    validations: Vec<ValidationTask>,
) -> Outcome {
    let body = HeartbeatReply {
        assignments,
        validations,
        heartbeat_seconds: app.settings.heartbeat.as_secs() as u32,
        lease_seconds: app.settings.lease.as_secs() as u32,
    };
    reply(StatusCode::OK, &body, None).into()
}

/// `agent-reports`: validation results.
pub async fn report(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::AgentProtocol).await?;
    let (agent, _) = agent_of(&ctx)?;
    let body: AgentReport = json_body(&req.headers, &req.body)?;
    let conn = ctx.conn().await?;
    for v in &body.validations {
        let owner: Option<Option<Uuid>> = conn
            .q_opt(
                "select agent_id from validations where id = $1",
                &[&v.validation_id],
            )
            .await?
            .map(|r| r.get(0));
        match owner {
            None => return Err(ApiError::not_found("validation", v.validation_id)),
            Some(Some(a)) if a == agent => {
                connectors::finish_validation(&conn, v.validation_id, &v.checks).await?;
            }
            Some(_) => {
                return Err(ApiError::Conflict(format!(
                    "validation {} is not assigned to this agent",
                    v.validation_id
                )));
            }
        }
    }
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({"accepted": body.validations.len()}),
        None,
    )
    .into())
}

/// `agent-validation`: a validation container fetches its one validation (GET) and
/// reports its checks (POST), with the validation's one-time token.
pub async fn validation(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = crate::extract::parse_id("validation", req.param("id").unwrap_or_default())?;
    let store = app.store().await?;
    auth::validation_token(store, &req.headers, id).await?;
    let conn = store.conn().await?;
    match req.method {
        axum::http::Method::GET => {
            let row = conn
                .q_one(
                    "update validations set state = 'running', started_at = coalesce(started_at, now())
                     where id = $1 returning connector_id",
                    &[&id],
                )
                .await?;
            let task = ValidationTask {
                validation_id: id,
                connector: connector_definition(&conn, &app.master_keys, row.get(0)).await?,
            };
            Ok(reply(StatusCode::OK, &task, None).into())
        }
        axum::http::Method::POST => {
            let body: culvert_control_api::agents::ValidationReport =
                json_body(&req.headers, &req.body)?;
            if body.validation_id != id {
                return Err(ApiError::field(
                    "/validation_id",
                    "must be the validation of the URL",
                ));
            }
            connectors::finish_validation(&conn, id, &body.checks).await?;
            Ok(reply(StatusCode::OK, &serde_json::json!({"accepted": 1}), None).into())
        }
        _ => Err(super::method_not_allowed(&req)),
    }
}

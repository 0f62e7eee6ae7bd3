//! Queue and timer functions: provisioning, validation dispatch, housekeeping.

use std::sync::Arc;

use culvert_control_api::connectors::CheckOutcome;
use culvert_control_api::environments::Provider;
use serde_json::Value;
use uuid::Uuid;

use crate::api::{connectors, environments};
use crate::app::App;
use crate::auth::{self, CredentialKind};
use crate::bindings;
use crate::compute::AgentPool;
use crate::error::ApiError;
use crate::scheduler;
use crate::store::Sql;

/// Why a job failed; the host retries it and finally moves the message to the poison queue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The message is not what this function reads; retrying cannot help.
    #[error("the message is malformed: {0}")]
    Malformed(String),
    /// A transient failure.
    #[error("{0}")]
    Failed(String),
}

impl From<ApiError> for JobError {
    fn from(e: ApiError) -> JobError {
        JobError::Failed(e.to_string())
    }
}

impl From<tokio_postgres::Error> for JobError {
    fn from(e: tokio_postgres::Error) -> JobError {
        JobError::Failed(format!("control store: {e}"))
    }
}

fn id_field(msg: &Value, field: &str) -> Result<Uuid, JobError> {
    msg[field]
        .as_str()
        .and_then(|s| Uuid::try_parse(s).ok())
        .ok_or_else(|| JobError::Malformed(format!("`{field}` must be a UUID")))
}

fn last_attempt(dequeue_count: u32) -> bool {
    dequeue_count >= bindings::max_dequeue_count()
}

/// `provision`: make an environment's compute match what it asks for.
pub async fn provision(
    app: &Arc<App>,
    msg: &Value,
    dequeue_count: u32,
) -> Result<String, JobError> {
    let env_id = id_field(msg, "environment_id")?;
    let action = msg["action"].as_str().unwrap_or("ensure");
    let store = app.store().await?;
    let conn = store.conn().await?;
    if action == "remove" {
        if let Some(byoc) = &app.byoc
            && msg.get("scale_set_id").is_some()
        {
            return crate::byoc::jobs::remove(byoc, msg).await;
        }
        if let Some(compute) = &app.local_compute {
            compute
                .remove(env_id)
                .await
                .map_err(|e| JobError::Failed(e.to_string()))?;
        }
        return Ok(format!("agents of environment {env_id} stopped"));
    }
    let env = match environments::load(&conn, &app.master_keys, env_id).await {
        Ok(env) => env,
        Err(ApiError::NotFound(_)) => return Ok(format!("environment {env_id} no longer exists")),
        Err(e) => return Err(e.into()),
    };
    if env.provider == Provider::Azure {
        let Some(byoc) = &app.byoc else {
            return Ok(format!(
                "environment {} is an Azure environment and this control plane has no Azure settings",
                env.name
            ));
        };
        return match crate::byoc::jobs::provision(app, byoc, msg, &env).await {
            Err(e) if last_attempt(dequeue_count) => {
                conn.exec(
                    "update environments set reason = $2, updated_at = now() where id = $1",
                    &[
                        &env_id,
                        &format!("the agents' scale set could not be changed: {e}"),
                    ],
                )
                .await?;
                Err(e)
            }
            other => other,
        };
    }
    let compute = app.local_compute.as_ref().ok_or_else(|| {
        JobError::Failed(
            "no local compute provider is configured (CULVERT_LOCAL_COMPUTE_URL)".into(),
        )
    })?;
    let (token, hash) = auth::new_credential(CredentialKind::RegistrationToken, env_id);
    conn.exec(
        "update environments set agent_token_hash = $2 where id = $1",
        &[&env_id, &hash],
    )
    .await?;
    let pool = AgentPool {
        agents: env.agents,
        control_plane_url: &app.settings.public_url,
        registration_token: &token,
    };
    if let Err(e) = compute.ensure(env_id, &pool).await {
        if last_attempt(dequeue_count) {
            conn.exec(
                "update environments set state = 'error', reason = $2, updated_at = now() where id = $1",
                &[&env_id, &format!("agents could not be started: {e}")],
            )
            .await?;
        }
        return Err(JobError::Failed(e.to_string()));
    }
    Ok(format!(
        "environment {} runs {} agent(s)",
        env.name, env.agents
    ))
}

/// `validate`: make sure a queued validation has an agent to run it, or fail it clearly.
pub async fn validate(app: &Arc<App>, msg: &Value, dequeue_count: u32) -> Result<String, JobError> {
    let vid = id_field(msg, "validation_id")?;
    let store = app.store().await?;
    let conn = store.conn().await?;
    let Some(row) = conn
        .q_opt(
            "select v.state, e.name, (select count(*) from agents a where a.environment_id = e.id and a.healthy), e.provider, e.id, c.id
             from validations v join connectors c on c.id = v.connector_id join environments e on e.id = c.environment_id
             where v.id = $1",
            &[&vid],
        )
        .await?
    else {
        return Ok(format!("validation {vid} no longer exists"));
    };
    if row.get::<_, &str>(3) == "azure"
        && let Some(byoc) = &app.byoc
    {
        // Azure environments validate in a container group inside the customer's subnet.
        let env = environments::load(&conn, &app.master_keys, row.get(4)).await?;
        return crate::byoc::jobs::validate(app, byoc, vid, &env, row.get(5)).await;
    }
    let state: String = row.get(0);
    let env: String = row.get(1);
    let healthy: i64 = row.get(2);
    if state != "queued" || healthy > 0 {
        return Ok(format!(
            "validation {vid} is {state}; {healthy} agent(s) of {env} can run it"
        ));
    }
    if last_attempt(dequeue_count) {
        let check = CheckOutcome {
            name: "agent".into(),
            ok: false,
            message: format!(
                "no healthy agent in environment {env} could run the check; see `culvert agent list` and `culvert env get {env}`"
            ),
        };
        connectors::finish_validation(&conn, vid, &[check]).await?;
        return Ok(format!("validation {vid} failed: no agent"));
    }
    Err(JobError::Failed(format!(
        "no healthy agent in environment {env} yet"
    )))
}

/// `azure-poller`: registration of Azure environments and VNet peering states.
pub async fn azure_poller(app: &Arc<App>) -> Result<String, JobError> {
    match &app.byoc {
        Some(byoc) => crate::byoc::jobs::poll(app, byoc).await,
        None => Ok("no Azure settings; nothing to poll".into()),
    }
}

/// `housekeeping`: agent health, environment state, stale validations, leases.
pub async fn housekeeping(app: &Arc<App>) -> Result<String, JobError> {
    let store = app.store().await?;
    let mut conn = store.conn().await?;
    let lease = app.settings.lease.as_secs_f64();
    let unhealthy = conn
        .exec(
            "update agents set healthy = false
             where healthy and last_heartbeat_at < now() - make_interval(secs => $1)",
            &[&lease],
        )
        .await?;
    conn.exec(
        "delete from agents where not healthy and last_heartbeat_at < now() - interval '1 hour'",
        &[],
    )
    .await?;
    conn.exec(
        "update environments e set
             state = case when h.n > 0 then 'ready' when e.state = 'ready' or e.state = 'error' then 'error' else 'registering' end,
             reason = case when h.n > 0 then null
                           when e.state = 'ready' or e.state = 'error' then 'no agent has sent a heartbeat recently; the compute provider restarts them'
                           else 'waiting for agents to register' end,
             updated_at = case when e.state <> (case when h.n > 0 then 'ready' when e.state in ('ready', 'error') then 'error' else 'registering' end)
                               then now() else e.updated_at end
         from (select e2.id, (select count(*) from agents a where a.environment_id = e2.id and a.healthy) n
               from environments e2 where e2.provider = 'local') h
         where e.id = h.id",
        &[],
    )
    .await?;
    let stale = serde_json::to_value([CheckOutcome {
        name: "agent".into(),
        ok: false,
        message: "no agent reported a result within 2 minutes; check the environment's agents and validate again".into(),
    }])
    .expect("checks");
    let stale = conn
        .exec(
            "update validations set state = 'failed', checks = $1, finished_at = now()
             where state in ('queued', 'running') and requested_at < now() - interval '2 minutes'",
            &[&stale],
        )
        .await?;
    conn.exec(
        "delete from idempotency_keys where created_at < now() - interval '24 hours'",
        &[],
    )
    .await?;
    let envs: Vec<Uuid> = conn
        .q("select id from environments", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for env in envs {
        scheduler::schedule(&mut conn, env, app.settings.lease).await?;
    }
    Ok(format!(
        "{unhealthy} agent(s) marked unhealthy, {stale} stale validation(s) failed"
    ))
}

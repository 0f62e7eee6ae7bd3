//! The queue and timer work of Azure environments: registration and peering polls, the
//! scale set's changes, validation containers.

use std::sync::Arc;

use culvert_control_api::connectors::CheckOutcome;
use culvert_control_api::environments::Environment;
use serde_json::Value;
use uuid::Uuid;

use super::Byoc;
use super::compute::{self, Change};
use super::network::{self, DatabaseNetwork};
use super::peering::{self, Peer};
use super::registration::{self, Outcome};
use super::validation::{self, Ended};
use crate::api::byoc::{external_id, found};
use crate::api::{connectors, environments};
use crate::app::App;
use crate::auth::{self, CredentialKind};
use crate::jobs::JobError;
use crate::store::Sql;
use crate::store::at_rest::{self, ENVIRONMENT_AGENT_TOKEN};

/// Registration of Azure environments still waiting, and one poll of every live peering.
pub async fn poll(app: &Arc<App>, byoc: &Byoc) -> Result<String, JobError> {
    let store = app.store().await?;
    let conn = store.conn().await?;
    let waiting: Vec<Uuid> = conn
        .q(
            "select id from environments where provider = 'azure' and state in ('pending_bootstrap', 'error')",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut registered = 0;
    let mut failures = Vec::new();
    for id in waiting {
        match register_one(app, byoc, id).await {
            Ok(true) => registered += 1,
            Ok(false) => {}
            Err(e) => failures.push(format!("environment {id}: {e}")),
        }
    }
    let rows = conn
        .q(
            "select n.id, n.name, n.peer_subscription_id, n.peer_tenant_id, n.peer_resource_group, n.peer_vnet, n.peer_app_id, n.state, n.environment_id
             from network_connections n where n.state in ('APPROVED', 'PENDING_PEER', 'ACTIVE')",
            &[],
        )
        .await?;
    // Agents start on demand: a registered environment gets its scale set once one of its
    // pipelines is deployed.
    let wanted: Vec<Uuid> = conn
        .q(
            "select e.id from environments e where e.provider = 'azure' and e.state = 'ready' and e.compute_state = 'none'
             and exists (select 1 from pipelines p join connectors c on c.id = p.source_id
                         where c.environment_id = e.id and p.state = 'running')",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in wanted {
        let started = async {
            let env = environments::load(&conn, &app.master_keys, id).await?;
            provision(app, byoc, &serde_json::json!({"action": "ensure"}), &env).await
        };
        if let Err(e) = started.await {
            conn.exec(
                "update environments set reason = $2, updated_at = now() where id = $1 and reason is distinct from $2",
                &[&id, &format!("the agents' scale set could not be created: {e}")],
            )
            .await?;
            failures.push(format!("environment {id}: {e}"));
        }
    }
    let mut moved = 0;
    for r in rows {
        let env = match environments::load(&conn, &app.master_keys, r.get(8)).await {
            Ok(e) => e,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let Some(a) = env.azure.as_ref() else {
            continue;
        };
        let peer = Peer::from_row(&r);
        let name: String = r.get(1);
        let state: String = r.get(7);
        match peering::poll(byoc, &a.vnet_id, &name, &peer, &state).await {
            Ok(step) => {
                let n = conn
                    .exec(
                        "update network_connections set state = $2, reason = $3, updated_at = now(), version = version + 1
                         where id = $1 and (state <> $2 or reason is distinct from $3)",
                        &[&r.get::<_, Uuid>(0), &step.state, &step.reason],
                    )
                    .await?;
                moved += n;
            }
            Err(e) => failures.push(format!("network connection {name}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(format!(
            "{registered} environment(s) registered, {moved} network connection(s) moved"
        ))
    } else {
        Err(JobError::Failed(failures.join("; ")))
    }
}

/// Try to register one environment; whether it turned ready.
async fn register_one(app: &Arc<App>, byoc: &Byoc, id: Uuid) -> Result<bool, JobError> {
    let store = app.store().await?;
    let conn = store.conn().await?;
    let env = environments::load(&conn, &app.master_keys, id).await?;
    let ext = external_id(&conn, id).await?;
    match registration::register(byoc, &env, &ext).await? {
        Outcome::Ready(found) => {
            conn.exec(
                "update environments set state = 'ready', reason = null, azure_found = $2, updated_at = now(), version = version + 1 where id = $1",
                &[&id, &serde_json::to_value(&*found).expect("found")],
            )
            .await?;
            Ok(true)
        }
        Outcome::Missing(lines) => {
            // Nothing applied yet is the normal wait; a partial bootstrap is an error.
            let nothing = lines
                .iter()
                .all(|l| l.contains("apply the bootstrap bundle"));
            let state = if nothing && env.state.as_str() == "pending_bootstrap" {
                "pending_bootstrap"
            } else {
                "error"
            };
            conn.exec(
                "update environments set state = $2, reason = $3, updated_at = now()
                 where id = $1 and (state <> $2 or reason is distinct from $3)",
                &[&id, &state, &lines.join("; ")],
            )
            .await?;
            Ok(false)
        }
    }
}

/// `provision` for an Azure environment; one at a time per environment, so a redelivered
/// message waits for the first and then finds its work done.
pub async fn provision(
    app: &Arc<App>,
    byoc: &Byoc,
    msg: &Value,
    env: &Environment,
) -> Result<String, JobError> {
    let store = app.store().await?;
    let lock = store.conn().await?;
    let key = i64::from_be_bytes(env.id.as_bytes()[..8].try_into().expect("8 bytes"));
    lock.exec("select pg_advisory_lock($1)", &[&key]).await?;
    let result = provision_locked(app, byoc, msg, env).await;
    lock.exec("select pg_advisory_unlock($1)", &[&key]).await?;
    result
}

/// The scale set's registration token: the stored one, or a new one stored sealed (its hash
/// is what registration checks).
async fn registration_token(
    app: &Arc<App>,
    conn: &impl deadpool_postgres::GenericClient,
    env: &Environment,
) -> Result<String, JobError> {
    let row = conn
        .q_one(
            "select agent_token_sealed from environments where id = $1",
            &[&env.id],
        )
        .await?;
    let sealed: Option<String> = row.get(0);
    if let Some(sealed) = sealed {
        let keys = at_rest::keys_for(&app.master_keys, [sealed.as_str()]).await?;
        let v = at_rest::open_json(&keys, ENVIRONMENT_AGENT_TOKEN, &env.id.to_string(), &sealed)?;
        if let Some(t) = v.as_str() {
            return Ok(t.to_string());
        }
    }
    let (token, hash) = auth::new_credential(CredentialKind::RegistrationToken, env.id);
    let keys = app
        .master_keys
        .current()
        .await
        .map_err(|e| JobError::Failed(e.to_string()))?;
    let sealed = at_rest::seal_json(
        &keys,
        ENVIRONMENT_AGENT_TOKEN,
        &env.id.to_string(),
        &Value::String(token.clone()),
    );
    conn.exec(
        "update environments set agent_token_hash = $2, agent_token_sealed = $3 where id = $1",
        &[&env.id, &hash, &sealed],
    )
    .await?;
    Ok(token)
}

async fn provision_locked(
    app: &Arc<App>,
    byoc: &Byoc,
    msg: &Value,
    env: &Environment,
) -> Result<String, JobError> {
    let store = app.store().await?;
    let conn = store.conn().await?;
    let found = match found(&conn, env.id, &env.name).await {
        Ok(f) => f,
        Err(_) => {
            return Ok(format!(
                "environment {} has not registered; nothing to provision",
                env.name
            ));
        }
    };
    let row = conn
        .q_one(
            "select compute_state, agent_version from environments where id = $1",
            &[&env.id],
        )
        .await?;
    let (current, running): (String, Option<String>) = (row.get(0), row.get(1));
    let mut action = msg["action"].as_str().unwrap_or("ensure");
    if action == "resume" && current == "none" {
        // Resuming agents that never ran creates them.
        action = "ensure";
    }
    if action == "scale" {
        if current == "none" {
            return Ok(format!(
                "{} has no agents yet; they start with {} when its first pipeline is deployed",
                env.name, env.agents
            ));
        }
        action = "ensure";
    }
    let (change, state) = match action {
        "ensure" => (Change::Ensure, "running"),
        "pause" => (Change::Pause, "deallocated"),
        "resume" => (Change::Resume, "running"),
        "upgrade" => (Change::Upgrade, "running"),
        other => {
            return Err(JobError::Malformed(format!(
                "unknown provision action {other}"
            )));
        }
    };
    // Scaling keeps the version running; an upgrade names one or takes the current default.
    let version = match (msg["version"].as_str(), change) {
        (Some(v), _) => v.to_string(),
        (None, Change::Upgrade) => byoc.settings.agent_version.clone(),
        (None, _) => running.unwrap_or_else(|| byoc.settings.agent_version.clone()),
    };
    let model = match change {
        Change::Ensure | Change::Upgrade => {
            let token = registration_token(app, &conn, env).await?;
            Some(compute::model(byoc, env, &found, &token, &version)?)
        }
        Change::Pause | Change::Resume => None,
    };
    compute::apply(byoc, env, change, model.as_ref()).await?;
    conn.exec(
        "update environments set compute_state = $2, agent_version = $3, updated_at = now(),
             reason = case when reason like 'the agents'' scale set%' then null else reason end
         where id = $1",
        &[&env.id, &state, &version],
    )
    .await?;
    Ok(format!(
        "scale set of {}: {action} done ({} agent(s), version {version})",
        env.name, env.agents
    ))
}

/// Delete the scale set of a deleted environment.
pub async fn remove(byoc: &Byoc, msg: &Value) -> Result<String, JobError> {
    let Some(id) = msg["scale_set_id"].as_str() else {
        return Ok("no scale set to delete".into());
    };
    compute::remove(byoc, id).await?;
    Ok(format!("scale set {id} deleted"))
}

/// `validate` for an Azure environment: check the network rules, then run the connector's
/// check in a container group.
pub async fn validate(
    app: &Arc<App>,
    byoc: &Byoc,
    vid: Uuid,
    env: &Environment,
    connector_id: Uuid,
) -> Result<String, JobError> {
    let store = app.store().await?;
    let conn = store.conn().await?;
    let fail = |name: &str, message: String| CheckOutcome {
        name: name.into(),
        ok: false,
        message,
    };
    let found = match found(&conn, env.id, &env.name).await {
        Ok(f) => f,
        Err(e) => {
            connectors::finish_validation(&conn, vid, &[fail("environment", e.to_string())])
                .await?;
            return Ok(format!(
                "validation {vid} failed: environment not registered"
            ));
        }
    };
    let c = connectors::load(&conn, &app.master_keys, connector_id).await?;
    let row = conn
        .q_one(
            "select network from connectors where id = $1",
            &[&connector_id],
        )
        .await?;
    let net: Option<DatabaseNetwork> = row
        .get::<_, Option<Value>>(0)
        .and_then(|v| serde_json::from_value(v).ok());
    if let Some(net) = &net {
        let priority = network::priority(&conn, &c).await?;
        let steps = network::steps(byoc, env, &found, &c, net, priority).await?;
        let missing = network::missing(byoc, env, &found, &steps, net).await?;
        if !missing.is_empty() {
            let message = format!(
                "{}; run the network steps (culvert connector network-steps {}) and validate again",
                missing.join("; "),
                c.name
            );
            connectors::finish_validation(&conn, vid, &[fail("network", message)]).await?;
            return Ok(format!("validation {vid} failed: network rules missing"));
        }
    }
    let (token, hash) = auth::new_credential(CredentialKind::ValidationToken, vid);
    let n = conn
        .exec(
            "update validations set runner_token_hash = $2 where id = $1 and state in ('queued', 'running')",
            &[&vid, &hash],
        )
        .await?;
    if n == 0 {
        // Already finished (a redelivered message): only make sure the container is gone.
        validation::clean_up(byoc, env, vid).await?;
        return Ok(format!("validation {vid} already finished"));
    }
    let ended = validation::run(byoc, env, &found, vid, &token).await?;
    let state: String = conn
        .q_one("select state from validations where id = $1", &[&vid])
        .await?
        .get(0);
    if state == "passed" || state == "failed" {
        return Ok(format!("validation {vid} {state}"));
    }
    let message = match ended {
        Ended::Exited { code, log } => format!(
            "the validation container exited with {code} without reporting; its log ends with: {}",
            if log.is_empty() {
                "(empty)".into()
            } else {
                log
            }
        ),
        Ended::TimedOut { log } => format!(
            "the validation container did not finish within {} s and was deleted; its log ends with: {}",
            byoc.settings.validation_timeout.as_secs(),
            if log.is_empty() {
                "(empty)".into()
            } else {
                log
            }
        ),
    };
    connectors::finish_validation(&conn, vid, &[fail("container", message)]).await?;
    Ok(format!("validation {vid} failed in its container"))
}

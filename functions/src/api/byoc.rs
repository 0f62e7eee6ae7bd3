//! Azure environments: the bootstrap bundle, database discovery, scale-set actions,
//! per-connector network steps and VNet peering connections.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Outcome, Req, connectors, environments, method_not_allowed};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::byoc::network::{self, DatabaseNetwork};
use crate::byoc::peering::{self, Peer};
use crate::byoc::registration::Found;
use crate::byoc::{Byoc, discovery, inputs};
use crate::error::{ApiError, ApiResult};
use crate::extract::{json_body, no_content, parse_id, reply};
use crate::store::Sql;

/// Culvert's Azure side, or a 409 saying how to set it up.
pub fn byoc(app: &App) -> ApiResult<&Byoc> {
    app.byoc.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "this control plane is not set up for Azure environments: set CULVERT_AZURE_PRINCIPAL_ID and the other CULVERT_AZURE_* settings".into(),
        )
    })
}

/// The environment's external id, created on first use.
pub async fn external_id(
    conn: &impl deadpool_postgres::GenericClient,
    env: Uuid,
) -> ApiResult<String> {
    let fresh = format!("{:032x}", rand::random::<u128>());
    let row = conn
        .q_one(
            "update environments set external_id = coalesce(external_id, $2) where id = $1 returning external_id",
            &[&env, &fresh],
        )
        .await?;
    Ok(row.get(0))
}

/// What registration found for `env`, or a 409 while it has not registered.
pub async fn found(
    conn: &impl deadpool_postgres::GenericClient,
    env: Uuid,
    name: &str,
) -> ApiResult<Found> {
    let row = conn
        .q_one(
            "select azure_found from environments where id = $1",
            &[&env],
        )
        .await?;
    let v: Option<Value> = row.get(0);
    v.and_then(|v| serde_json::from_value(v).ok()).ok_or_else(|| {
        ApiError::Conflict(format!(
            "environment {name} has not registered yet: apply its bootstrap bundle (culvert env bootstrap {name}) and wait for it to turn ready"
        ))
    })
}

/// Reads need a reader's key; everything else a writer's.
fn read_or_write(req: &Req) -> Action {
    if req.method == Method::GET {
        Action::Read
    } else {
        Action::Write
    }
}

fn env_id(req: &Req) -> ApiResult<Uuid> {
    parse_id("environment", req.param("id").unwrap_or_default())
}

/// `environment-bootstrap`: `GET /v1/environments/{id}/bootstrap`.
pub async fn bootstrap(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = env_id(&req)?;
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let byoc = byoc(&app)?;
    let conn = ctx.conn().await?;
    let env = environments::load(&conn, &app.master_keys, id).await?;
    let ext = external_id(&conn, id).await?;
    let inputs = inputs::bootstrap_inputs(&byoc.settings, &env, &ext)?;
    let r = culvert_byoc::bootstrap::resource_names(&inputs);
    let resources = json!({
        "agent_identity_id": r.agent_identity_id,
        "validation_identity_id": r.validation_identity_id,
        "agent_nsg_id": r.agent_nsg_id,
        "private_endpoint_id": r.private_endpoint_id,
        "key_vault_id": r.key_vault_id,
        "role_definition_name": r.role_definition_name,
        "external_id": ext,
        "metadata_service_id": byoc.settings.metadata_service_id,
        "culvert_principal_id": byoc.settings.principal_id,
    });
    let (assignable_scopes, assignment_scopes) = culvert_byoc::bootstrap::role_scopes(&inputs);
    let actions = culvert_arm::operations::customer_role_actions();
    let role = json!({
        "name": r.role_definition_name,
        "actions": actions,
        "assignable_scopes": assignable_scopes,
        "assignment_scopes": assignment_scopes,
    });
    let bundle = culvert_byoc::bootstrap::render(&inputs, &actions);
    let files: serde_json::Map<String, Value> = bundle
        .files
        .into_iter()
        .map(|(name, text)| (name, Value::String(text)))
        .collect();
    Ok(reply(
        StatusCode::OK,
        &json!({"environment": env.name, "files": files, "resources": resources, "role": role, "fixes": culvert_byoc::bootstrap::FIXES}),
        None,
    )
    .into())
}

/// `environment-databases`: `GET /v1/environments/{id}/databases`.
pub async fn databases(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = env_id(&req)?;
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let byoc = byoc(&app)?;
    let conn = ctx.conn().await?;
    let env = environments::load(&conn, &app.master_keys, id).await?;
    let a = inputs::azure(&env)?;
    let items = discovery::list(byoc, &inputs::resource_group_id(a)).await?;
    Ok(reply(StatusCode::OK, &json!({"items": items}), None).into())
}

/// `environment-compute`: `POST /v1/environments/{id}/{pause|resume|upgrade}`.
pub async fn compute(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = env_id(&req)?;
    let action = req.param("action").unwrap_or_default().to_string();
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    byoc(&app)?;
    let conn = ctx.conn().await?;
    let env = environments::load(&conn, &app.master_keys, id).await?;
    inputs::azure(&env)?;
    found(&conn, id, &env.name).await?;
    let mut msg = json!({"environment_id": id, "action": action});
    if action == "upgrade" {
        let body: Value = if req.body.is_empty() {
            json!({})
        } else {
            json_body(&req.headers, &req.body)?
        };
        if let Some(v) = body.get("version") {
            let v = v.as_str().filter(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c))
            });
            let Some(v) = v else {
                return Err(ApiError::field("/version", "must be a version like 1.4.2"));
            };
            msg["version"] = json!(v);
        }
    }
    Ok(Outcome {
        response: reply(
            StatusCode::ACCEPTED,
            &json!({"environment": env.name, "action": action, "state": "queued"}),
            None,
        ),
        messages: vec![("provision", msg)],
    })
}

/// `connector-network`: `GET|PUT /v1/connectors/{id}/network`.
pub async fn connector_network(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = parse_id("connector", req.param("id").unwrap_or_default())?;
    let ctx = Ctx::new(&app, &req.headers, read_or_write(&req)).await?;
    let byoc = byoc(&app)?;
    let conn = ctx.conn().await?;
    let c = connectors::load(&conn, &app.master_keys, id).await?;
    let env = environments::load(&conn, &app.master_keys, c.environment_id).await?;
    inputs::azure(&env)?;
    match req.method {
        Method::PUT => {
            let body: DatabaseNetwork = json_body(&req.headers, &req.body)?;
            network::check(&body)?;
            conn.exec(
                "update connectors set network = $2, updated_at = now() where id = $1",
                &[&id, &serde_json::to_value(&body).expect("network")],
            )
            .await?;
            Ok(reply(StatusCode::OK, &body, None).into())
        }
        Method::GET => {
            let found = found(&conn, env.id, &env.name).await?;
            let row = conn
                .q_one("select network from connectors where id = $1", &[&id])
                .await?;
            let net: Option<Value> = row.get(0);
            let net: DatabaseNetwork = net.and_then(|v| serde_json::from_value(v).ok()).ok_or_else(|| {
                ApiError::Conflict(format!(
                    "connector {} has no database network yet: record it with `culvert connector network {} --db-nsg-id ID --db-subnet-prefix CIDR`",
                    c.name, c.name
                ))
            })?;
            let priority = network::priority(&conn, &c).await?;
            let steps = network::steps(byoc, &env, &found, &c, &net, priority).await?;
            let missing = network::missing(byoc, &env, &found, &steps, &net).await?;
            let rules: Vec<Value> = steps.rules.iter().map(network::rule_json).collect();
            Ok(reply(
                StatusCode::OK,
                &json!({"connector": c.name, "network": net, "script": steps.script, "rules": rules, "missing": missing}),
                None,
            )
            .into())
        }
        _ => Err(method_not_allowed(&req)),
    }
}

fn connection_json(
    r: &tokio_postgres::Row,
    agent_vnet_id: &str,
    agent_tenant: Option<&str>,
    byoc: &Byoc,
) -> Value {
    let peer = Peer::from_row(r);
    let name: String = r.get(1);
    let steps =
        culvert_byoc::peering_steps::render(&culvert_byoc::peering_steps::PeeringStepInputs {
            peer_subscription_id: peer.subscription_id.clone(),
            peer_tenant_id: peer.tenant_id.clone(),
            peer_resource_group: peer.resource_group.clone(),
            peer_vnet_name: peer.vnet.clone(),
            peer_app_id: peer.app_id.clone(),
            culvert_app_id: byoc.settings.app_id.clone(),
            culvert_tenant_id: byoc.settings.tenant_id.clone(),
            agent_vnet_id: agent_vnet_id.to_string(),
            agent_tenant_id: agent_tenant.unwrap_or(&peer.tenant_id).to_string(),
            connection_name: name.clone(),
        });
    json!({
        "id": r.get::<_, Uuid>(0),
        "name": name,
        "peer_subscription_id": peer.subscription_id,
        "peer_tenant_id": peer.tenant_id,
        "peer_resource_group": peer.resource_group,
        "peer_vnet": peer.vnet,
        "peer_app_id": peer.app_id,
        "state": r.get::<_, String>(7),
        "reason": r.get::<_, Option<String>>(8),
        "created_at": r.get::<_, chrono::DateTime<chrono::Utc>>(9),
        "updated_at": r.get::<_, chrono::DateTime<chrono::Utc>>(10),
        "peer_steps": steps,
    })
}

const CONNECTION_COLUMNS: &str = "id, name, peer_subscription_id, peer_tenant_id, peer_resource_group, peer_vnet, peer_app_id, state, reason, created_at, updated_at";

fn lower_id(pointer: &str, v: &Value, guid: bool) -> ApiResult<String> {
    let s = v.as_str().unwrap_or_default().trim().to_ascii_lowercase();
    let ok = if guid {
        Uuid::try_parse(&s).is_ok()
    } else {
        !s.is_empty()
            && s.len() <= 90
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
    };
    if ok {
        Ok(s)
    } else if guid {
        Err(ApiError::field(pointer, "must be a GUID"))
    } else {
        Err(ApiError::field(
            pointer,
            "must be an Azure resource name (letters, digits, -, _, ., parentheses)",
        ))
    }
}

/// `network-connections`: `GET|POST /v1/environments/{id}/network-connections`,
/// `GET|DELETE /v1/environments/{id}/network-connections/{name}`.
pub async fn network_connections(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = env_id(&req)?;
    let ctx = Ctx::new(&app, &req.headers, read_or_write(&req)).await?;
    let byoc = byoc(&app)?;
    let conn = ctx.conn().await?;
    let env = environments::load(&conn, &app.master_keys, id).await?;
    let vnet = inputs::azure(&env)?.vnet_id.clone();
    // The agent VNet's tenant, as registration found it on the environment's identities.
    let tenant = found(&conn, id, &env.name)
        .await
        .ok()
        .and_then(|f| f.tenant_id);
    let name = req.param("name").map(str::to_string);
    match (req.method.clone(), name) {
        (Method::GET, None) => {
            let rows = conn
                .q(&format!("select {CONNECTION_COLUMNS} from network_connections where environment_id = $1 order by name"), &[&id])
                .await?;
            let items: Vec<Value> = rows
                .iter()
                .map(|r| connection_json(r, &vnet, tenant.as_deref(), byoc))
                .collect();
            Ok(reply(StatusCode::OK, &json!({"items": items}), None).into())
        }
        (Method::GET, Some(name)) => {
            let r = conn
                .q_opt(&format!("select {CONNECTION_COLUMNS} from network_connections where environment_id = $1 and name = $2"), &[&id, &name])
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no network connection named {name} in environment {}", env.name)))?;
            Ok(reply(
                StatusCode::OK,
                &connection_json(&r, &vnet, tenant.as_deref(), byoc),
                None,
            )
            .into())
        }
        (Method::POST, None) => {
            let body: Value = json_body(&req.headers, &req.body)?;
            let known = [
                "name",
                "peer_subscription_id",
                "peer_tenant_id",
                "peer_resource_group",
                "peer_vnet",
                "peer_app_id",
            ];
            if let Some(k) = body
                .as_object()
                .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
            {
                return Err(ApiError::field(
                    &format!("/{k}"),
                    "is not a field of a network connection; remove it",
                ));
            }
            let cname = body["name"].as_str().unwrap_or_default().to_string();
            super::check_name("/name", &cname, '-')?;
            let values = [
                lower_id("/peer_subscription_id", &body["peer_subscription_id"], true)?,
                lower_id("/peer_tenant_id", &body["peer_tenant_id"], true)?,
                lower_id("/peer_resource_group", &body["peer_resource_group"], false)?,
                lower_id("/peer_vnet", &body["peer_vnet"], false)?,
                lower_id("/peer_app_id", &body["peer_app_id"], true)?,
            ];
            let cid = Uuid::new_v4();
            conn.exec(
                "insert into network_connections (id, environment_id, name, peer_subscription_id, peer_tenant_id, peer_resource_group, peer_vnet, peer_app_id, state, reason)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, 'APPROVED', 'Culvert creates its side of the peering')",
                &[&cid, &id, &cname, &values[0], &values[1], &values[2], &values[3], &values[4]],
            )
            .await
            .map_err(|e| crate::store::conflict_on_unique(e, || format!("a network connection named {cname:?} exists in environment {}", env.name)))?;
            let r = conn
                .q_one(
                    &format!("select {CONNECTION_COLUMNS} from network_connections where id = $1"),
                    &[&cid],
                )
                .await?;
            Ok(reply(
                StatusCode::CREATED,
                &connection_json(&r, &vnet, tenant.as_deref(), byoc),
                None,
            )
            .into())
        }
        (Method::DELETE, Some(name)) => {
            let n = conn
                .exec(
                    "select 1 from network_connections where environment_id = $1 and name = $2",
                    &[&id, &name],
                )
                .await?;
            if n == 0 {
                return Err(ApiError::NotFound(format!(
                    "no network connection named {name} in environment {}",
                    env.name
                )));
            }
            peering::remove(byoc, &vnet, &name).await?;
            conn.exec(
                "delete from network_connections where environment_id = $1 and name = $2",
                &[&id, &name],
            )
            .await?;
            Ok(no_content().into())
        }
        _ => Err(method_not_allowed(&req)),
    }
}

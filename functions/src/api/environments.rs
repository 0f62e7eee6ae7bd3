//! `environments`: create, list, get, change the agent count, delete.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use culvert_control_api::environments::{
    AzureSettings, Environment, EnvironmentCreate, EnvironmentState, EnvironmentUpdate, Provider,
};
use serde_json::json;
use tokio_postgres::Row;
use uuid::Uuid;

use super::listing::{self, SealedListing};
use super::{Outcome, Req, check_name, method_not_allowed};
use crate::app::{App, Ctx};
use crate::auth::Action;
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_version, if_match, json_body, no_content, parse_id, reply};
use crate::idempotency;
use crate::master_keys::{KeySet, MasterKeys};
use crate::store::Sql;
use crate::store::at_rest::{self, ENVIRONMENT_AZURE};
use crate::store::conflict_on_unique;

/// Column 3 is the Azure settings, sealed at rest.
const COLUMNS: &str = "e.id, e.name, e.provider, e.azure_sealed, e.agents, e.state, e.reason, e.created_at, e.updated_at, e.version,
    (select count(*) from agents a where a.environment_id = e.id and a.healthy)::integer, e.seq";

const SEALED: usize = 3;

/// What an Azure environment waits for; rendered when read, as it repeats sealed settings.
fn bootstrap_reason(a: &AzureSettings) -> String {
    format!(
        "apply the bootstrap bundle in subscription {} resource group {}",
        a.subscription_id, a.resource_group
    )
}

fn from_row(r: &Row, keys: &KeySet) -> ApiResult<Environment> {
    let id: Uuid = r.get(0);
    let provider = match r.get::<_, &str>(2) {
        "azure" => Provider::Azure,
        _ => Provider::Local,
    };
    let azure: Option<AzureSettings> = r
        .get::<_, Option<&str>>(SEALED)
        .map(|s| at_rest::open_json(keys, ENVIRONMENT_AZURE, &id.to_string(), s))
        .transpose()?
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let state: &str = r.get(5);
    let state = EnvironmentState::parse(state)
        .ok_or_else(|| ApiError::Internal(format!("state {state}")))?;
    let reason = match (r.get::<_, Option<String>>(6), &azure) {
        (None, Some(a)) if state == EnvironmentState::PendingBootstrap => Some(bootstrap_reason(a)),
        (reason, _) => reason,
    };
    Ok(Environment {
        id,
        name: r.get(1),
        provider,
        azure,
        agents: r.get::<_, i32>(4) as u32,
        state,
        reason,
        created_at: r.get(7),
        updated_at: r.get(8),
        version: r.get(9),
        healthy_agents: r.get::<_, i32>(10) as u32,
    })
}

/// Load one environment, its Azure settings opened.
pub async fn load(
    client: &impl deadpool_postgres::GenericClient,
    keys: &MasterKeys,
    id: Uuid,
) -> ApiResult<Environment> {
    let row = client
        .q_opt(
            &format!("select {COLUMNS} from environments e where e.id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("environment", id))?;
    let set = at_rest::keys_for(keys, row.get::<_, Option<&str>>(SEALED)).await?;
    from_row(&row, &set)
}

fn check_agents(n: Option<u32>) -> ApiResult<u32> {
    match n {
        None => Ok(1),
        Some(n) if (1..=32).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("/agents", "must be from 1 to 32")),
    }
}

fn check_arm_id(pointer: &str, id: &str, provider_path: &str) -> ApiResult<()> {
    let parts: Vec<&str> = id.split('/').collect();
    let ok = parts.len() >= 9
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
        && parts[5].eq_ignore_ascii_case("providers")
        && format!("{}/{}", parts[6], parts[7]).eq_ignore_ascii_case(provider_path)
        && parts.iter().skip(1).all(|p| !p.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            pointer,
            format!(
                "must be a resource id like /subscriptions/SUB/resourceGroups/RG/providers/{provider_path}/NAME"
            ),
        ))
    }
}

fn check_azure(a: &AzureSettings) -> ApiResult<()> {
    if Uuid::try_parse(&a.subscription_id).is_err() {
        return Err(ApiError::field(
            "/azure/subscription_id",
            "must be a subscription id (a GUID)",
        ));
    }
    if a.location.is_empty()
        || !a
            .location
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(ApiError::field(
            "/azure/location",
            "must be a region name such as eastus2",
        ));
    }
    let rg_ok = !a.resource_group.is_empty()
        && a.resource_group.len() <= 90
        && a.resource_group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c));
    if !rg_ok {
        return Err(ApiError::field(
            "/azure/resource_group",
            "must be 1 to 90 letters, digits, `-`, `_`, `.` or parentheses",
        ));
    }
    check_arm_id(
        "/azure/vnet_id",
        &a.vnet_id,
        "Microsoft.Network/virtualNetworks",
    )?;
    if a.subnet_ids.is_empty() {
        return Err(ApiError::field(
            "/azure/subnet_ids",
            "give at least one subnet of the VNet",
        ));
    }
    for (i, s) in a.subnet_ids.iter().enumerate() {
        let prefix = format!("{}/subnets/", a.vnet_id);
        let ok = s.len() > prefix.len()
            && s[..prefix.len()].eq_ignore_ascii_case(&prefix)
            && !s[prefix.len()..].contains('/');
        if !ok {
            return Err(ApiError::field(
                &format!("/azure/subnet_ids/{i}"),
                format!("must be a subnet of the VNet: {}/subnets/NAME", a.vnet_id),
            ));
        }
    }
    if let Some(kv) = &a.key_vault_id {
        check_arm_id("/azure/key_vault_id", kv, "Microsoft.KeyVault/vaults")?;
    }
    if !a.vnet_id.to_ascii_lowercase().starts_with(&format!(
        "/subscriptions/{}/",
        a.subscription_id.to_ascii_lowercase()
    )) {
        return Err(ApiError::field(
            "/azure/vnet_id",
            "must be in the environment's subscription",
        ));
    }
    Ok(())
}

/// The `provision` queue message that makes compute match an environment.
pub fn provision_message(id: Uuid) -> serde_json::Value {
    json!({"environment_id": id, "action": "ensure"})
}

/// `environments` (payload path: it sends `provision` messages).
pub async fn handle(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let id = req
        .param("id")
        .map(|s| parse_id("environment", s))
        .transpose()?;
    match (req.method.clone(), id) {
        (Method::GET, None) => list(app, req).await,
        (Method::GET, Some(id)) => {
            let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
            let env = load(&ctx.conn().await?, &app.master_keys, id).await?;
            Ok(reply(StatusCode::OK, &env, Some(env.version)).into())
        }
        (Method::POST, None) => create(app, req).await,
        (Method::PATCH, Some(id)) => update(app, req, id).await,
        (Method::DELETE, Some(id)) => delete(app, req, id).await,
        _ => Err(method_not_allowed(&req)),
    }
}

async fn list(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Read).await?;
    let listing = SealedListing {
        select: format!("select {COLUMNS} from environments e"),
        alias: "e",
        sealed: SEALED,
        by_environment: false,
        from_row,
    };
    listing::list_sealed(&ctx.conn().await?, &app.master_keys, &req, listing).await
}

async fn create(app: Arc<App>, req: Req) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let body: EnvironmentCreate = json_body(&req.headers, &req.body)?;
    check_name("/name", &body.name, '-')?;
    let agents = check_agents(body.agents)?;
    let (state, reason) = match (body.provider, &body.azure) {
        (Provider::Azure, None) => {
            return Err(ApiError::field(
                "/azure",
                "an azure environment needs its bootstrap inputs",
            ));
        }
        (Provider::Azure, Some(a)) => {
            check_azure(a)?;
            // The reason is rendered from the sealed settings when read (`bootstrap_reason`).
            (EnvironmentState::PendingBootstrap, None)
        }
        (Provider::Local, Some(_)) => {
            return Err(ApiError::field(
                "/azure",
                "a local environment takes no Azure settings; remove the field",
            ));
        }
        (Provider::Local, None) => {
            if ctx.app.local_compute.is_none() {
                return Err(ApiError::field(
                    "/provider",
                    "this control plane has no local compute provider; local environments need `culvert local up`",
                ));
            }
            (
                EnvironmentState::Registering,
                Some("starting agents".to_string()),
            )
        }
    };
    let provider = body.provider;
    let mut messages = Vec::new();
    let (response, created) = idempotency::once(&ctx, &req.headers, &req.body, || async {
        let conn = ctx.conn().await?;
        let keys = &ctx.app.master_keys;
        let id = Uuid::new_v4();
        let azure = match &body.azure {
            None => None,
            Some(a) => Some(at_rest::seal_json(
                &*keys.current().await?,
                ENVIRONMENT_AZURE,
                &id.to_string(),
                &serde_json::to_value(a).expect("settings"),
            )),
        };
        conn.exec(
            "insert into environments (id, name, provider, azure_sealed, agents, state, reason)
             values ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id,
                &body.name,
                &provider.as_str(),
                &azure,
                &(agents as i32),
                &state.as_str(),
                &reason,
            ],
        )
        .await
        .map_err(|e| {
            conflict_on_unique(e, || format!("an environment named {:?} exists", body.name))
        })?;
        let env = load(&conn, keys, id).await?;
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(&env).expect("environment"),
            Some(env.version),
        ))
    })
    .await?;
    let id = created["id"].as_str().and_then(|s| Uuid::try_parse(s).ok());
    if let (Provider::Local, Some(id)) = (provider, id) {
        // Also on a replay: provisioning is idempotent, and the first message may be lost.
        messages.push(("provision", provision_message(id)));
    }
    Ok(Outcome { response, messages })
}

async fn update(app: Arc<App>, req: Req, id: Uuid) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let body: EnvironmentUpdate = json_body(&req.headers, &req.body)?;
    let expected = if_match(&req.headers)?;
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    let env = load(&tx, &app.master_keys, id).await?;
    check_version(expected, env.version)?;
    let agents = match body.agents {
        Some(_) => check_agents(body.agents)?,
        None => env.agents,
    };
    tx.exec(
        "update environments set agents = $2, version = version + 1, updated_at = now() where id = $1",
        &[&id, &(agents as i32)],
    )
    .await?;
    let env = load(&tx, &app.master_keys, id).await?;
    tx.commit().await?;
    // Azure environments: the scale set follows the agent count once it exists (the job
    // waits for one being created and then scales it).
    let messages = match env.provider {
        Provider::Local => vec![("provision", provision_message(id))],
        Provider::Azure => vec![(
            "provision",
            json!({"environment_id": id, "action": "scale"}),
        )],
    };
    Ok(Outcome {
        response: reply(StatusCode::OK, &env, Some(env.version)),
        messages,
    })
}

async fn delete(app: Arc<App>, req: Req, id: Uuid) -> ApiResult<Outcome> {
    let ctx = Ctx::new(&app, &req.headers, Action::Write).await?;
    let expected = if_match(&req.headers)?;
    let mut conn = ctx.conn().await?;
    let tx = conn.transaction().await?;
    let env = load(&tx, &app.master_keys, id).await?;
    check_version(expected, env.version)?;
    let used: i64 = tx
        .q_one(
            "select count(*) from connectors where environment_id = $1",
            &[&id],
        )
        .await?
        .get(0);
    if used > 0 {
        return Err(ApiError::Conflict(format!(
            "environment {} still has {used} connector(s); delete its pipelines and connectors first",
            env.name
        )));
    }
    tx.exec("delete from environments where id = $1", &[&id])
        .await?;
    tx.commit().await?;
    let messages = match env.provider {
        Provider::Local => vec![(
            "provision",
            json!({"environment_id": id, "action": "remove"}),
        )],
        // The row is gone when the job runs: the message carries the scale set's id.
        Provider::Azure => vec![(
            "provision",
            json!({"environment_id": id, "action": "remove",
                   "scale_set_id": crate::byoc::compute::scale_set_id(&env)?}),
        )],
    };
    Ok(Outcome {
        response: no_content(),
        messages,
    })
}

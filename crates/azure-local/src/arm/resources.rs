//! The generic resource engine: subscriptions, resource groups, and PUT/GET/DELETE/list/POST on
//! any typed resource, with provider-specific behaviour plugged in through [`providers`].
//!
//! PUT replaces everything the client owns (`properties`, `tags`, `sku`, `identity`, ...) and
//! keeps what the server owns (`id` as first written, `name`, `type`, `location`, and the
//! provider's server-set properties such as `provisioningState`). Resources are created only
//! inside an existing resource group and, when nested, an existing parent.

use super::error::ArmError;
use super::ids::{self, Collection, ResourceId};
use super::lro::{self, About, OperationKind, Status};
use super::providers::{self, Kind, PutCx};
use super::store::{ArmData, Record};
use super::{Reply, Request, links, paging, rbac};
use axum::http::{HeaderName, StatusCode, header};
use serde_json::{Map, Value, json};

// What `GET /subscriptions/{s}/providers` reports as registered.
const NAMESPACES: &[&str] = &[
    "Microsoft.Authorization",
    "Microsoft.Compute",
    "Microsoft.ContainerInstance",
    "Microsoft.DBforMariaDB",
    "Microsoft.DBforMySQL",
    "Microsoft.DBforPostgreSQL",
    "Microsoft.KeyVault",
    "Microsoft.ManagedIdentity",
    "Microsoft.Network",
    "Microsoft.Resources",
    "Microsoft.Sql",
    "Microsoft.Storage",
];

/// `GET /subscriptions`: every configured subscription.
pub fn list_subscriptions(req: &Request<'_>) -> Reply {
    let value: Vec<Value> = req
        .svc
        .settings()
        .arm
        .subscriptions
        .iter()
        .map(|s| subscription_body(req, &s.id))
        .collect();
    Reply::json(StatusCode::OK, json!({ "value": value }))
}

/// `GET /subscriptions/{s}`.
pub fn subscription(req: &Request<'_>, s: &str) -> Reply {
    let id = req
        .svc
        .subscription(s)
        .map(|c| c.id.clone())
        .unwrap_or_default();
    Reply::json(StatusCode::OK, subscription_body(req, &id))
}

fn subscription_body(req: &Request<'_>, id: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{id}"),
        "subscriptionId": id,
        "tenantId": req.svc.tenant_of(id),
        "displayName": id,
        "state": "Enabled",
        "authorizationSource": "RoleBased",
    })
}

/// `GET /subscriptions/{s}/providers`.
pub fn list_providers(s: &str) -> Reply {
    let value: Vec<Value> = NAMESPACES.iter().map(|ns| provider(s, ns)).collect();
    Reply::json(StatusCode::OK, json!({ "value": value }))
}

/// One resource provider, always registered.
pub fn provider(s: &str, ns: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{s}/providers/{ns}"),
        "namespace": ns,
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": [],
    })
}

/// `GET /subscriptions/{s}/resourceGroups`.
pub fn list_groups(req: &Request<'_>, s: &str) -> Result<Reply, ArmError> {
    let items = req.svc.store().read(|d| {
        let prefix = format!("/subscriptions/{}/resourcegroups/", s.to_ascii_lowercase());
        d.resources
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(_, r)| r.body.clone())
            .collect::<Vec<Value>>()
    });
    let body = paging::page(req, &format!("/subscriptions/{s}/resourcegroups"), items)?;
    Ok(Reply::json(StatusCode::OK, body))
}

/// `PUT /subscriptions/{s}/resourceGroups/{rg}`.
pub fn put_group(req: &Request<'_>, s: &str, rg: &str) -> Result<Reply, ArmError> {
    let mut body = req.json_object()?;
    let id = ids::resource_group_id(s, rg);
    req.svc.store().update(|d| {
        let old = d.get(&id).cloned();
        let location = match (&old, body.get("location").and_then(Value::as_str)) {
            (Some(o), Some(new)) => {
                let old_loc = o.body["location"].as_str().unwrap_or_default().to_owned();
                check_location(&old_loc, new, rg, rg)?;
                old_loc
            }
            (Some(o), None) => o.body["location"].as_str().unwrap_or_default().to_owned(),
            (None, Some(new)) => new.to_owned(),
            (None, None) => {
                return Err(ArmError::bad_request(
                    "LocationRequired",
                    "The location property is required for this definition.",
                ));
            }
        };
        let mut out = json!({
            "id": old.as_ref().map(|o| o.id().to_owned()).unwrap_or_else(|| id.clone()),
            "name": old.as_ref().and_then(|o| o.body["name"].as_str().map(str::to_owned)).unwrap_or_else(|| rg.to_owned()),
            "type": "Microsoft.Resources/resourceGroups",
            "location": location,
            "properties": {"provisioningState": "Succeeded"},
        });
        for k in ["tags", "managedBy"] {
            if let Some(v) = body.remove(k) {
                out[k] = v;
            }
        }
        d.insert(Record::new(out.clone()));
        let status = if old.is_some() { StatusCode::OK } else { StatusCode::CREATED };
        Ok(Reply::json(status, out))
    })
}

/// `GET /subscriptions/{s}/resourceGroups/{rg}`.
pub fn get_group(req: &Request<'_>, id: &str, rg: &str) -> Result<Reply, ArmError> {
    req.svc.store().read(|d| match d.get(id) {
        Some(r) => Ok(Reply::json(StatusCode::OK, r.body.clone())),
        None => Err(ArmError::resource_group_not_found(rg)),
    })
}

/// `HEAD /subscriptions/{s}/resourceGroups/{rg}`: 204 if it exists, 404 otherwise.
pub fn head_group(req: &Request<'_>, id: &str) -> Result<Reply, ArmError> {
    let exists = req.svc.store().read(|d| d.contains(id));
    Ok(Reply::empty(if exists {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }))
}

/// `DELETE /subscriptions/{s}/resourceGroups/{rg}`: deletes everything in it (long-running).
pub fn delete_group(req: &Request<'_>, s: &str, rg: &str) -> Result<Reply, ArmError> {
    let id = ids::resource_group_id(s, rg);
    req.svc.store().update(|d| {
        let group = d
            .get(&id)
            .cloned()
            .ok_or_else(|| ArmError::resource_group_not_found(rg))?;
        let mut effects = Vec::new();
        remove_with_hooks(d, group.id(), &mut effects);
        let about = About {
            resource_id: group.id().to_owned(),
            subscription: s.to_owned(),
            namespace: "Microsoft.Resources".to_owned(),
            location: group.body["location"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let op = lro::begin(
            d,
            OperationKind::Delete,
            about,
            req.svc.settings().arm.lro_polls,
        );
        let mut reply = accepted(req, d, &op);
        reply.effects = effects;
        Ok(reply)
    })
}

/// Whether `id` is an operation status URL (`.../providers/{ns}/locations/{l}/operations/{id}`
/// or `.../operationResults/{id}`).
pub fn is_operation(id: &ResourceId) -> bool {
    id.types.len() == 2
        && id.types[0].eq_ignore_ascii_case("locations")
        && (id.types[1].eq_ignore_ascii_case("operations")
            || id.types[1].eq_ignore_ascii_case("operationResults"))
        && ids::key(&id.scope) == ids::key(&format!("/subscriptions/{}", id.subscription))
}

/// A status poll: `operations/{id}` answers the status body, `operationResults/{id}` answers
/// 202 while running and then the result (the resource for a PUT, 204 otherwise).
pub fn poll_operation(req: &Request<'_>, id: &ResourceId) -> Result<Reply, ArmError> {
    let op_id = id.name().to_owned();
    let polled = req
        .svc
        .store()
        .update(|d| Ok::<_, ArmError>(lro::poll(d, &op_id)))?;
    let (op, status) = polled.ok_or_else(|| {
        ArmError::not_found(
            "OperationNotFound",
            format!("The operation '{op_id}' could not be found."),
        )
    })?;
    if id.types[1].eq_ignore_ascii_case("operations") {
        return Ok(Reply::json(
            StatusCode::OK,
            lro::status_body(&op_id, &op, status),
        ));
    }
    if status == Status::InProgress {
        let urls = lro::urls(req.base_url, &op_id, &op, &req.api_version);
        return Ok(Reply::empty(StatusCode::ACCEPTED)
            .header(header::LOCATION, urls.location)
            .header(header::RETRY_AFTER, "0"));
    }
    if op.kind == OperationKind::Put
        && let Some(rid) = ids::parse_resource(&op.resource_id)
    {
        let kind = Kind::of(&rid.type_key());
        let view = req
            .svc
            .store()
            .read(|d| providers::lookup(kind, d, &rid).map(|r| providers::view(kind, d, r)));
        if let Some(view) = view {
            return Ok(Reply::json(StatusCode::OK, view));
        }
    }
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

/// `PUT` on a typed resource.
pub fn put_resource(req: &Request<'_>, id: &ResourceId) -> Result<Reply, ArmError> {
    let body = req.json_object()?;
    let kind = Kind::of(&id.type_key());
    let refs = links::references(&body);
    req.svc.store().update(|d| {
        check_container(d, id)?;
        let linked: Vec<(String, String)> = refs
            .iter()
            .map(|l| (l.action.to_owned(), l.id.clone()))
            .collect();
        rbac::require_linked(d, &req.caller, &id.action("write"), &id.id(), &linked)?;
        if let Some(missing) = refs.iter().find(|l| !d.contains(&l.id)) {
            return Err(ArmError::invalid_reference(&missing.id, &id.id()));
        }
        let old = providers::lookup(kind, d, id).cloned();
        let mut record = build(id, old.as_ref(), body)?;
        let mut cx = PutCx {
            req,
            id,
            old: old.as_ref(),
            effects: Vec::new(),
        };
        providers::prepare(kind, &mut cx, d, &mut record)?;
        let effects = cx.effects;
        if kind.has_provisioning_state() {
            let state = match (kind.is_lro(), old.is_some()) {
                (false, _) => "Succeeded",
                (true, false) => "Creating",
                (true, true) => "Updating",
            };
            record.body["properties"]["provisioningState"] = json!(state);
        }
        let location = record.body["location"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let stored_id = record.id().to_owned();
        d.insert(record);
        let op = kind.is_lro().then(|| {
            lro::begin(
                d,
                OperationKind::Put,
                About::resource(id, &location),
                req.svc.settings().arm.lro_polls,
            )
        });
        let view = d
            .get(&stored_id)
            .map(|r| providers::view(kind, d, r))
            .unwrap_or(Value::Null);
        let status = if old.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let mut reply = Reply::json(status, view);
        if let Some(op) = op {
            let urls = lro::urls(req.base_url, &op, &d.operations[&op], &req.api_version);
            reply = reply
                .header(
                    HeaderName::from_static("azure-asyncoperation"),
                    urls.async_operation,
                )
                .header(header::RETRY_AFTER, "0");
        }
        reply.effects = effects;
        Ok(reply)
    })
}

/// `GET` on a typed resource (counts as a poll of its running PUT operation, if any).
pub fn get_resource(req: &Request<'_>, id: &ResourceId) -> Result<Reply, ArmError> {
    let kind = Kind::of(&id.type_key());
    let store = req.svc.store();
    if let Some(op) =
        store.read(|d| providers::lookup(kind, d, id).and_then(|r| lro::pending(d, r.id())))
    {
        store.update(|d| {
            lro::poll(d, &op);
            Ok::<_, ArmError>(())
        })?;
    }
    store.read(|d| {
        let record = require(d, id)?;
        Ok(Reply::json(
            StatusCode::OK,
            providers::view(kind, d, record),
        ))
    })
}

/// `DELETE` on a typed resource: 202 and an operation, 204 if it does not exist.
pub fn delete_resource(req: &Request<'_>, id: &ResourceId) -> Result<Reply, ArmError> {
    let kind = Kind::of(&id.type_key());
    req.svc.store().update(|d| {
        if let Some(rg) = &id.resource_group
            && !d.contains(&ids::resource_group_id(&id.subscription, rg))
        {
            return Err(ArmError::resource_group_not_found(rg));
        }
        let Some(record) = providers::lookup(kind, d, id).cloned() else {
            return Ok(Reply::empty(StatusCode::NO_CONTENT));
        };
        let mut effects = Vec::new();
        remove_with_hooks(d, record.id(), &mut effects);
        let mut reply = if kind.deletes_synchronously() {
            Reply::json(StatusCode::OK, providers::view(kind, d, &record))
        } else {
            let location = record.body["location"].as_str().unwrap_or_default();
            let op = lro::begin(
                d,
                OperationKind::Delete,
                About::resource(id, location),
                req.svc.settings().arm.lro_polls,
            );
            accepted(req, d, &op)
        };
        reply.effects = effects;
        Ok(reply)
    })
}

/// `GET` on a collection: a provider view (`instanceView`, `logs`, ...) or a paged list.
pub fn get_collection(req: &Request<'_>, c: &Collection) -> Result<Reply, ArmError> {
    req.svc.store().read(|d| {
        if let Some(reply) = providers::collection(req, d, c) {
            return reply;
        }
        match c.owner() {
            Some(owner) => {
                require(d, &owner)?;
            }
            None => {
                if let Some(rg) = &c.resource_group
                    && !d.contains(&ids::resource_group_id(&c.subscription, rg))
                {
                    return Err(ArmError::resource_group_not_found(rg));
                }
            }
        }
        let type_key = c.type_key();
        let subscription_wide = c.owner().is_none()
            && ids::key(&c.scope) == ids::key(&format!("/subscriptions/{}", c.subscription));
        let records: Vec<&Record> = if subscription_wide {
            d.within(&c.scope, &type_key).map(|(_, r)| r).collect()
        } else {
            d.children(&c.container(), &type_key)
                .map(|(_, r)| r)
                .collect()
        };
        let items = records
            .into_iter()
            .map(|r| providers::view(Kind::of(&type_key), d, r))
            .collect();
        Ok(Reply::json(
            StatusCode::OK,
            paging::page(req, &c.path(), items)?,
        ))
    })
}

/// The stored record `id` names, or the 404 Resource Manager gives for it.
pub fn require<'d>(d: &'d ArmData, id: &ResourceId) -> Result<&'d Record, ArmError> {
    check_container(d, id)?;
    providers::lookup(Kind::of(&id.type_key()), d, id).ok_or_else(|| not_found(id))
}

/// `POST {resource}/{action}`: applied at once, reported through a 202 operation.
pub fn post_action(req: &Request<'_>, c: &Collection) -> Result<Reply, ArmError> {
    let owner = c.owner().ok_or_else(|| {
        ArmError::bad_request(
            "InvalidResourceType",
            format!(
                "The resource type '{}' does not support actions.",
                c.type_name()
            ),
        )
    })?;
    let body = req.json_or_null()?;
    let kind = Kind::of(&owner.type_key());
    req.svc.store().update(|d| {
        let location = require(d, &owner)?.body["location"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut effects = Vec::new();
        providers::action(kind, req, d, &owner, c.last(), &body, &mut effects)?;
        let op = lro::begin(
            d,
            OperationKind::Action,
            About::resource(&owner, &location),
            req.svc.settings().arm.lro_polls,
        );
        let mut reply = accepted(req, d, &op);
        reply.effects = effects;
        Ok(reply)
    })
}

fn accepted(req: &Request<'_>, d: &ArmData, op: &str) -> Reply {
    let urls = lro::urls(req.base_url, op, &d.operations[op], &req.api_version);
    Reply::empty(StatusCode::ACCEPTED)
        .header(header::LOCATION, urls.location)
        .header(header::RETRY_AFTER, "0")
}

fn remove_with_hooks(d: &mut ArmData, id: &str, effects: &mut Vec<super::processes::Effect>) {
    for r in d.remove_tree(id) {
        if let Some(rid) = ids::parse_resource(r.id()) {
            providers::on_delete(Kind::of(&rid.type_key()), d, &r, effects);
        }
    }
}

/// The resource group, parent resource, or (for extension resources) scope resource must exist.
pub fn check_container(d: &ArmData, id: &ResourceId) -> Result<(), ArmError> {
    if let Some(rg) = &id.resource_group
        && !d.contains(&ids::resource_group_id(&id.subscription, rg))
    {
        return Err(ArmError::resource_group_not_found(rg));
    }
    if let Some(parent) = id.parent() {
        if !d.contains(&parent.id()) {
            return Err(ArmError::not_found(
                "ParentResourceNotFound",
                format!(
                    "Can not perform requested operation on nested resource. Parent resource '{}' not found.",
                    parent.names.join("/")
                ),
            ));
        }
    } else if id.is_extension() && !d.contains(&id.scope) {
        return Err(match ids::parse_resource(&id.scope) {
            Some(scope) => not_found(&scope),
            None => ArmError::not_found(
                "NotFound",
                format!("The scope '{}' was not found.", id.scope),
            ),
        });
    }
    Ok(())
}

/// 404 `ResourceNotFound` for `id`.
pub fn not_found(id: &ResourceId) -> ArmError {
    let mut what = id.namespace.clone();
    for (t, n) in id.types.iter().zip(&id.names) {
        what.push_str(&format!("/{t}/{n}"));
    }
    ArmError::resource_not_found(&what, id.resource_group.as_deref())
}

fn normalize_location(l: &str) -> String {
    l.to_ascii_lowercase().replace(' ', "")
}

fn check_location(old: &str, new: &str, name: &str, rg: &str) -> Result<(), ArmError> {
    if normalize_location(old) == normalize_location(new) {
        return Ok(());
    }
    Err(ArmError::bad_request(
        "InvalidResourceLocation",
        format!(
            "The resource '{name}' already exists in location '{old}' in resource group '{rg}'. A resource with the same name cannot be created in location '{new}'. Please select a new resource name."
        ),
    ))
}

// The stored body for a PUT: the client's fields, the server's identity fields, and the old
// record's internal state carried over (minus any finished operation marker).
fn build(
    id: &ResourceId,
    old: Option<&Record>,
    mut body: Map<String, Value>,
) -> Result<Record, ArmError> {
    let properties = match body.remove("properties") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(ArmError::invalid_content(
                "The request content was invalid and could not be deserialized: 'properties' must be an object.",
            ));
        }
    };
    for k in ["id", "name", "type", "etag", "systemData"] {
        body.remove(k);
    }
    let mut out = Map::new();
    match old {
        Some(o) => {
            out.insert("id".into(), o.body["id"].clone());
            out.insert("name".into(), o.body["name"].clone());
            out.insert("type".into(), o.body["type"].clone());
            if let Some(old_loc) = o.body["location"].as_str() {
                if let Some(new) = body.get("location").and_then(Value::as_str) {
                    check_location(
                        old_loc,
                        new,
                        id.name(),
                        id.resource_group.as_deref().unwrap_or_default(),
                    )?;
                }
                body.insert("location".into(), json!(old_loc));
            }
        }
        None => {
            out.insert("id".into(), json!(id.id()));
            out.insert("name".into(), json!(id.name()));
            out.insert("type".into(), json!(id.type_name()));
        }
    }
    out.extend(body);
    out.insert("properties".into(), properties);
    let mut record = Record::new(Value::Object(out));
    if let Some(o) = old {
        record.internal = o.internal.clone();
        record.internal.remove(lro::PENDING);
    }
    Ok(record)
}

//! User-assigned managed identities: the server sets `properties.principalId`, `clientId` and
//! `tenantId`. An identity whose id matches a configured identity's `resource_id` gets that
//! identity's object and client ids (so the token endpoint issues tokens for it); any other gets
//! GUIDs derived from its id, stable across re-creation and restarts.

use super::PutCx;
use crate::arm::derive;
use crate::arm::error::ArmError;
use crate::arm::store::{ArmData, Record};
use serde_json::{Value, json};

/// Sets the server-owned ids; an update keeps the ids the identity already has.
pub fn prepare(cx: &mut PutCx<'_, '_>, record: &mut Record) -> Result<(), ArmError> {
    let id = cx.id.id();
    let configured = cx.req.svc.settings().identities.iter().find(|i| {
        i.resource_id
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(&id))
    });
    let kept = |field: &str| {
        cx.old
            .and_then(|o| o.body["properties"][field].as_str())
            .map(str::to_owned)
    };
    let principal = kept("principalId")
        .or_else(|| configured.map(|c| c.object_id.clone()))
        .unwrap_or_else(|| derive::guid("principal", &id));
    let client = kept("clientId")
        .or_else(|| configured.map(|c| c.client_id.clone()))
        .unwrap_or_else(|| derive::guid("client", &id));
    let props = &mut record.body["properties"];
    props["tenantId"] = json!(cx.req.svc.tenant_of(&cx.id.subscription));
    props["principalId"] = json!(principal);
    props["clientId"] = json!(client);
    Ok(())
}

/// Fills each `identity.userAssignedIdentities` entry of `body` with the identity's
/// `principalId` and `clientId`, as Azure reports them on the resource using it.
pub fn decorate(data: &ArmData, body: &mut Value) {
    let Some(map) = body
        .get_mut("identity")
        .and_then(|i| i.get_mut("userAssignedIdentities"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (id, entry) in map.iter_mut() {
        if let Some(identity) = data.get(id) {
            let props = &identity.body["properties"];
            *entry = json!({"principalId": props["principalId"], "clientId": props["clientId"]});
        }
    }
}

//! Long-running operations, Azure style.
//!
//! A PUT of a slow resource type answers at once with `provisioningState` "Creating" or
//! "Updating" and an `Azure-AsyncOperation` URL; DELETE and POST actions answer 202 with a
//! `Location` URL. Both carry `Retry-After: 0`. Time is counted in polls, not seconds, so tests
//! are deterministic: an operation answers "InProgress" (or 202) to its first `lro_polls` status
//! GETs and then succeeds. A GET of the resource itself counts as a poll too, so a client that
//! only watches `provisioningState` also sees it finish.

use super::clock;
use super::store::ArmData;
use crate::state::{new_guid, now_unix};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The internal entry of a record whose PUT operation is still running (holds the op id).
pub const PENDING: &str = "pending_operation";
// Finished operations are kept this long so late polls still get an answer.
const KEEP_FINISHED_SECS: i64 = 3600;

/// What an operation does when it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// A create or update: the resource's `provisioningState` becomes "Succeeded".
    Put,
    /// A delete (already applied when the request was answered).
    Delete,
    /// A POST action (already applied when the request was answered).
    Action,
}

/// One operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRecord {
    /// The resource the operation is about.
    pub resource_id: String,
    /// The subscription, for the status URL.
    pub subscription: String,
    /// The provider namespace, for the status URL.
    pub namespace: String,
    /// The location, for the status URL.
    pub location: String,
    /// What it does.
    pub kind: OperationKind,
    /// Polls left that answer "InProgress".
    pub remaining: u32,
    /// Unix seconds.
    pub started: i64,
    /// Unix seconds, once finished.
    #[serde(default)]
    pub ended: Option<i64>,
}

/// The status a poll reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still running.
    InProgress,
    /// Done.
    Succeeded,
}

/// Where an operation's status is polled.
pub struct Urls {
    /// The `Azure-AsyncOperation` URL.
    pub async_operation: String,
    /// The `Location` URL.
    pub location: String,
}

/// What an operation is about.
pub struct About {
    /// The resource id.
    pub resource_id: String,
    /// Its subscription.
    pub subscription: String,
    /// The provider namespace that answers status polls.
    pub namespace: String,
    /// The resource's location (empty when it has none).
    pub location: String,
}

impl About {
    /// An operation on the typed resource `id`, whose body names `location`.
    pub fn resource(id: &super::ids::ResourceId, location: &str) -> Self {
        Self {
            resource_id: id.id(),
            subscription: id.subscription.clone(),
            namespace: id.namespace.clone(),
            location: location.to_owned(),
        }
    }
}

/// Starts an operation; returns its id.
pub fn begin(data: &mut ArmData, kind: OperationKind, about: About, polls: u32) -> String {
    let now = now_unix();
    data.operations
        .retain(|_, op| op.ended.is_none_or(|e| now - e < KEEP_FINISHED_SECS));
    let id = new_guid();
    data.operations.insert(
        id.clone(),
        OperationRecord {
            location: if about.location.is_empty() {
                "local".to_owned()
            } else {
                about.location.to_ascii_lowercase().replace(' ', "")
            },
            resource_id: about.resource_id.clone(),
            subscription: about.subscription,
            namespace: about.namespace,
            kind,
            remaining: polls,
            started: now,
            ended: None,
        },
    );
    if kind == OperationKind::Put
        && let Some(r) = data.get_mut(&about.resource_id)
    {
        r.set_internal(PENDING, &id);
    }
    id
}

/// Counts one poll of operation `id`; finishes it when its polls are used up.
pub fn poll(data: &mut ArmData, id: &str) -> Option<(OperationRecord, Status)> {
    let op = data.operations.get_mut(id)?;
    if op.ended.is_none() && op.remaining > 0 {
        op.remaining -= 1;
        return Some((op.clone(), Status::InProgress));
    }
    if op.ended.is_none() {
        op.ended = Some(now_unix());
        let op = op.clone();
        if op.kind == OperationKind::Put
            && let Some(r) = data.get_mut(&op.resource_id)
            && r.internal.get(PENDING).and_then(Value::as_str) == Some(id)
        {
            r.internal.remove(PENDING);
            r.body["properties"]["provisioningState"] = json!("Succeeded");
        }
    }
    Some((data.operations[id].clone(), Status::Succeeded))
}

/// The PUT operation still running on the resource `id`, if any.
pub fn pending(data: &ArmData, id: &str) -> Option<String> {
    data.get(id)?
        .internal
        .get(PENDING)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The status URLs of operation `id`, absolute under `base` (the URL the client used).
pub fn urls(base: &str, id: &str, op: &OperationRecord, api_version: &str) -> Urls {
    let prefix = format!(
        "{base}/subscriptions/{}/providers/{}/locations/{}",
        op.subscription, op.namespace, op.location
    );
    Urls {
        async_operation: format!("{prefix}/operations/{id}?api-version={api_version}"),
        location: format!("{prefix}/operationResults/{id}?api-version={api_version}"),
    }
}

/// The body of an `Azure-AsyncOperation` status GET.
pub fn status_body(id: &str, op: &OperationRecord, status: Status) -> Value {
    let mut body = json!({
        "id": format!(
            "/subscriptions/{}/providers/{}/locations/{}/operations/{id}",
            op.subscription, op.namespace, op.location
        ),
        "name": id,
        "status": match status {
            Status::InProgress => "InProgress",
            Status::Succeeded => "Succeeded",
        },
        "startTime": clock::rfc3339(op.started),
    });
    if let Some(end) = op.ended {
        body["endTime"] = json!(clock::rfc3339(end));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm::ids::parse_resource;
    use crate::arm::store::Record;

    #[test]
    fn put_operation_reports_in_progress_then_marks_the_resource_succeeded() {
        let id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/v";
        let mut data = ArmData::default();
        data.insert(Record::new(
            json!({"id": id, "properties": {"provisioningState": "Creating"}}),
        ));
        let op = begin(
            &mut data,
            OperationKind::Put,
            About::resource(&parse_resource(id).unwrap(), "East US"),
            2,
        );
        assert_eq!(pending(&data, id).as_deref(), Some(op.as_str()));
        assert_eq!(poll(&mut data, &op).unwrap().1, Status::InProgress);
        assert_eq!(poll(&mut data, &op).unwrap().1, Status::InProgress);
        assert_eq!(data.get(id).unwrap().provisioning_state(), Some("Creating"));
        let (rec, status) = poll(&mut data, &op).unwrap();
        assert_eq!(status, Status::Succeeded);
        assert_eq!(rec.location, "eastus");
        assert_eq!(
            data.get(id).unwrap().provisioning_state(),
            Some("Succeeded")
        );
        assert_eq!(pending(&data, id), None);
        assert_eq!(poll(&mut data, &op).unwrap().1, Status::Succeeded);
        let body = status_body(&op, &rec, Status::Succeeded);
        assert_eq!(body["status"], "Succeeded");
        assert!(body["endTime"].is_string());
        let u = urls("https://h:1", &op, &rec, "2024-07-01");
        assert_eq!(
            u.location,
            format!(
                "https://h:1/subscriptions/s/providers/Microsoft.Compute/locations/eastus/operationResults/{op}?api-version=2024-07-01"
            )
        );
        assert!(poll(&mut data, "nope").is_none());
    }
}

//! Container groups (`Microsoft.ContainerInstance/containerGroups`).
//!
//! When the stand-in has an agent binary and the first container's `command[0]` is a file named
//! `culvert-agent`, creating the group runs that binary once with the rest of `command` and the
//! container's `environmentVariables` (see [`crate::arm::processes`]); the group then reports
//! "Pending" → "Running" → "Succeeded"/"Failed" and the container's `currentState` becomes
//! `{"state":"Terminated","exitCode":N,"finishTime":...}`. Any other group stays "Running" until
//! it is deleted. `secureValue`s are kept server-side and never returned, as in Azure.
//! `GET .../containers/{name}/logs` answers `{"content":"<stdout and stderr>"}`.

use super::{PutCx, identity};
use crate::arm::error::ArmError;
use crate::arm::ids::Collection;
use crate::arm::processes::Effect;
use crate::arm::store::{ArmData, Record};
use crate::arm::{Reply, Request, clock, resources};
use crate::state::{new_guid, now_unix};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The internal entry holding a group's [`RunState`].
pub const STATE: &str = "container_group";
/// The internal entry holding secure environment values: container → name → value.
pub const SECURE: &str = "secure_values";
/// The file name of `command[0]` that makes the stand-in run its agent binary.
pub const AGENT_COMMAND: &str = "culvert-agent";

/// Server-side state of a group's run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Random per creation, so a late exit of an earlier group of the same name is ignored.
    pub run_id: String,
    /// Whether the first container runs as a process.
    pub process: bool,
    /// Unix seconds.
    pub started: i64,
    /// The process's exit code, once it ended.
    pub exit_code: Option<i32>,
    /// Unix seconds, once it ended.
    pub finished: Option<i64>,
    /// Why it ended, when not by itself.
    pub detail: Option<String>,
}

/// The process to run for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The group's run id.
    pub run_id: String,
    /// The first container's name.
    pub container: String,
    /// `command[1..]`.
    pub args: Vec<String>,
    /// `environmentVariables`, secure values included.
    pub env: Vec<(String, String)>,
}

type Secure = BTreeMap<String, BTreeMap<String, String>>;

/// Validates the containers, moves secure values out of the body, and plans the run.
pub fn prepare(
    cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    let mut secure: Secure = cx.old.map(|o| o.internal(SECURE)).unwrap_or_default();
    let containers = record.body["properties"]["containers"]
        .as_array_mut()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ArmError::invalid_content("properties.containers must list at least one container.")
        })?;
    for c in containers.iter_mut() {
        let name = c["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ArmError::invalid_content("Every container needs a name."))?
            .to_owned();
        if c["properties"]["image"].as_str().is_none_or(str::is_empty) {
            return Err(ArmError::invalid_content(format!(
                "Container '{name}' needs properties.image."
            )));
        }
        for var in c["properties"]["environmentVariables"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let (Some(var_name), Some(value)) =
                (var["name"].as_str(), var["secureValue"].as_str())
            {
                secure
                    .entry(name.clone())
                    .or_default()
                    .insert(var_name.to_owned(), value.to_owned());
            }
            if let Some(m) = var.as_object_mut() {
                m.remove("secureValue");
            }
        }
    }
    let first_command = record.body["properties"]["containers"][0]["properties"]["command"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let state = match cx.old {
        Some(old) => old.internal(STATE),
        None => RunState {
            run_id: new_guid(),
            process: cx.req.svc.settings().arm.agent_binary.is_some()
                && first_command.rsplit('/').next() == Some(AGENT_COMMAND),
            started: now_unix(),
            ..RunState::default()
        },
    };
    record.set_internal(STATE, &state);
    record.set_internal(SECURE, &secure);
    identity::decorate(data, &mut record.body);
    cx.effects.push(Effect::ContainerGroup(cx.id.key()));
    Ok(())
}

/// The process a group should be running now, if any.
pub fn launch(record: &Record) -> Option<Launch> {
    let state: RunState = record.internal(STATE);
    if !state.process || state.exit_code.is_some() {
        return None;
    }
    let secure: Secure = record.internal(SECURE);
    let first = &record.body["properties"]["containers"][0];
    let container = first["name"].as_str()?.to_owned();
    let args = first["properties"]["command"]
        .as_array()?
        .iter()
        .skip(1)
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| a.to_string())
        })
        .collect();
    let env = first["properties"]["environmentVariables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let name = v["name"].as_str()?;
            let value = v["value"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| secure.get(&container)?.get(name).cloned())?;
            Some((name.to_owned(), value))
        })
        .collect();
    Some(Launch {
        run_id: state.run_id,
        container,
        args,
        env,
    })
}

/// Records the end of run `run_id`; false if the group has moved on to another run.
pub fn record_exit(record: &mut Record, run_id: &str, code: i32, detail: Option<String>) -> bool {
    let mut state: RunState = record.internal(STATE);
    if state.run_id != run_id || state.exit_code.is_some() {
        return false;
    }
    state.exit_code = Some(code);
    state.finished = Some(now_unix());
    state.detail = detail;
    record.set_internal(STATE, &state);
    true
}

/// The group with its instance view and each container's current state.
pub fn view(record: &Record) -> Value {
    let mut body = record.body.clone();
    let state: RunState = record.internal(STATE);
    let provisioned = record.provisioning_state() == Some("Succeeded");
    let group_state = match state.exit_code {
        Some(0) => "Succeeded",
        Some(_) => "Failed",
        None if !provisioned => "Pending",
        None => "Running",
    };
    body["properties"]["instanceView"] = json!({"state": group_state, "events": []});
    let started = clock::rfc3339(state.started);
    if let Some(containers) = body["properties"]["containers"].as_array_mut() {
        for (i, c) in containers.iter_mut().enumerate() {
            let current = match state.exit_code {
                Some(code) if i == 0 => json!({
                    "state": "Terminated",
                    "exitCode": code,
                    "startTime": started,
                    "finishTime": clock::rfc3339(state.finished.unwrap_or(state.started)),
                    "detailStatus": state.detail.clone().unwrap_or_else(|| {
                        if code == 0 { "Completed".into() } else { "Error".into() }
                    }),
                }),
                _ if !provisioned => {
                    json!({"state": "Waiting", "detailStatus": "ContainerCreating"})
                }
                _ => json!({"state": "Running", "startTime": started, "detailStatus": ""}),
            };
            c["properties"]["instanceView"] =
                json!({"restartCount": 0, "currentState": current, "events": []});
        }
    }
    body
}

/// `GET {group}/containers/{name}/logs`.
pub fn logs(req: &Request<'_>, data: &ArmData, c: &Collection) -> Result<Reply, ArmError> {
    let container = c.owner().expect("logs hang off a container");
    let group = container
        .parent()
        .expect("a container is nested in its group");
    let record = resources::require(data, &group)?;
    let known = record.body["properties"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|x| x["name"].as_str() == Some(container.name()));
    if !known {
        return Err(resources::not_found(&container));
    }
    let name = record.body["name"].as_str().unwrap_or_default();
    let content =
        std::fs::read_to_string(req.svc.processes().container_log(name, container.name()))
            .unwrap_or_default();
    Ok(Reply::json(StatusCode::OK, json!({ "content": content })))
}

/// Marks a run that was interrupted by a restart of the stand-in as ended.
pub fn interrupt(record: &mut Record) -> bool {
    let run_id = record.internal::<RunState>(STATE).run_id;
    launch(record).is_some()
        && record_exit(
            record,
            &run_id,
            137,
            Some("Killed: culvert-azure-local stopped while the container ran".into()),
        )
}

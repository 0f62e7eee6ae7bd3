//! Virtual machine scale sets (`Microsoft.Compute/virtualMachineScaleSets`), Uniform mode with a
//! Manual upgrade policy: `sku.capacity` instances, each with its own power state and the model
//! version it runs. A PUT that changes `properties.virtualMachineProfile` makes a new model;
//! existing instances keep theirs until `POST .../manualUpgrade`, new instances get the latest.
//!
//! Actions (`POST`, 202 + `Location`): `deallocate`, `powerOff`, `start`, `restart`,
//! `manualUpgrade`, each for the body's `instanceIds` (`["*"]` or absent: every instance).
//! Views: `GET .../instanceView` and `GET .../virtualMachines`. Running instances run a process
//! when the stand-in has an agent binary (see [`crate::arm::processes`]).

use super::{PutCx, identity, unknown_action};
use crate::arm::error::ArmError;
use crate::arm::ids::{Collection, ResourceId};
use crate::arm::processes::{Effect, ProcStatus};
use crate::arm::store::{ArmData, Record};
use crate::arm::{Reply, Request, clock, paging, resources};
use crate::state::new_guid;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The internal entry holding a scale set's [`ScaleSetState`].
pub const STATE: &str = "scale_set";
// Enough for any test; Azure's own limit is 1000.
const MAX_CAPACITY: u64 = 100;

/// Server-side state of a scale set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScaleSetState {
    /// Random per creation, so a re-created scale set never reuses an old instance's disk.
    pub uid: String,
    /// The latest model version.
    pub model: u64,
    /// The next instance id to hand out.
    pub next_index: u32,
    /// The instances, by ascending id.
    pub instances: Vec<Instance>,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    /// The instance id.
    pub index: u32,
    /// The model version it runs.
    pub model: u64,
    /// Bumped by `restart`, so its process restarts.
    pub boot: u64,
    /// Its power state.
    pub power: Power,
    /// The `customData` of its model.
    pub custom_data: Option<String>,
}

/// An instance's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    /// Running.
    Running,
    /// Powered off (still allocated).
    Stopped,
    /// Deallocated.
    Deallocated,
}

impl Power {
    fn code(self) -> &'static str {
        match self {
            Self::Running => "PowerState/running",
            Self::Stopped => "PowerState/stopped",
            Self::Deallocated => "PowerState/deallocated",
        }
    }
}

/// What the process supervisor needs to run one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The instance id.
    pub index: u32,
    /// Changes whenever the instance must restart (new model or `restart`).
    pub generation: String,
    /// Changes whenever the instance's files must be written again (new model).
    pub disk: String,
    /// The model's `customData`.
    pub custom_data: Option<String>,
}

/// Applies capacity and model changes; carries the power states over.
pub fn prepare(
    cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    if record.body["sku"].is_null()
        && let Some(old) = cx.old
    {
        record.body["sku"] = old.body["sku"].clone();
    }
    let capacity = match &record.body["sku"]["capacity"] {
        Value::Null => 0,
        v => v.as_u64().filter(|c| *c <= MAX_CAPACITY).ok_or_else(|| {
            ArmError::bad_request(
                "InvalidParameter",
                format!("The value of parameter sku.capacity is invalid: it must be an integer from 0 to {MAX_CAPACITY}."),
            )
        })?,
    };
    let profile = record.body["properties"]["virtualMachineProfile"].clone();
    let custom_data = profile["osProfile"]["customData"]
        .as_str()
        .map(str::to_owned);
    if let Some(cd) = &custom_data
        && base64::engine::general_purpose::STANDARD
            .decode(cd)
            .is_err()
    {
        return Err(ArmError::bad_request(
            "InvalidParameter",
            "Custom data in OSProfile must be in Base64 encoding and with a maximum length of 87380 characters.",
        ));
    }
    let mut state: ScaleSetState = cx.old.map(|o| o.internal(STATE)).unwrap_or_default();
    if cx.old.is_none() {
        state.uid = new_guid();
    }
    let old_profile = cx
        .old
        .map(|o| &o.body["properties"]["virtualMachineProfile"]);
    if old_profile != Some(&profile) {
        state.model += 1;
    }
    while (state.instances.len() as u64) < capacity {
        state.instances.push(Instance {
            index: state.next_index,
            model: state.model,
            boot: 0,
            power: Power::Running,
            custom_data: custom_data.clone(),
        });
        state.next_index += 1;
    }
    state.instances.truncate(capacity as usize);
    record.set_internal(STATE, &state);
    let created = cx
        .old
        .map(|o| o.body["properties"]["timeCreated"].clone())
        .unwrap_or_else(|| json!(clock::now()));
    let props = &mut record.body["properties"];
    props["uniqueId"] = json!(state.uid);
    props["timeCreated"] = created;
    identity::decorate(data, &mut record.body);
    cx.effects.push(Effect::ScaleSet(cx.id.key()));
    Ok(())
}

/// Applies a POST action to the selected instances.
pub fn action(
    data: &mut ArmData,
    owner: &ResourceId,
    name: &str,
    body: &Value,
    api_version: &str,
    effects: &mut Vec<Effect>,
) -> Result<(), ArmError> {
    let verb = name.to_ascii_lowercase();
    if !ACTIONS.contains(&verb.as_str()) {
        return Err(unknown_action(owner, name, api_version));
    }
    let record = data
        .get_mut(&owner.id())
        .expect("the caller checked it exists");
    let mut state: ScaleSetState = record.internal(STATE);
    let selected = selected(&state, body)?;
    let latest_data = record.body["properties"]["virtualMachineProfile"]["osProfile"]["customData"]
        .as_str()
        .map(str::to_owned);
    let latest_model = state.model;
    for inst in state
        .instances
        .iter_mut()
        .filter(|i| selected.contains(&i.index))
    {
        match verb.as_str() {
            "deallocate" => inst.power = Power::Deallocated,
            "poweroff" => inst.power = Power::Stopped,
            "start" => inst.power = Power::Running,
            "restart" => {
                inst.power = Power::Running;
                inst.boot += 1;
            }
            _ => {
                inst.model = latest_model;
                inst.custom_data.clone_from(&latest_data);
            }
        }
    }
    record.set_internal(STATE, &state);
    effects.push(Effect::ScaleSet(owner.key()));
    Ok(())
}

// The POST actions a scale set has, lowercase.
const ACTIONS: &[&str] = &[
    "deallocate",
    "poweroff",
    "start",
    "restart",
    "manualupgrade",
];

fn selected(state: &ScaleSetState, body: &Value) -> Result<Vec<u32>, ArmError> {
    let all: Vec<u32> = state.instances.iter().map(|i| i.index).collect();
    let Some(ids) = body["instanceIds"].as_array() else {
        return Ok(all);
    };
    let mut out = Vec::new();
    for v in ids {
        let text = v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string());
        if text == "*" {
            return Ok(all);
        }
        match text.parse::<u32>() {
            Ok(i) if all.contains(&i) => out.push(i),
            _ => {
                return Err(ArmError::bad_request(
                    "InvalidParameter",
                    format!(
                        "The provided instanceId {text} is not an active Virtual Machine Scale Set VM instanceId."
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The instances that should be running now.
pub fn plans(record: &Record) -> Vec<Plan> {
    let state: ScaleSetState = record.internal(STATE);
    state
        .instances
        .iter()
        .filter(|i| i.power == Power::Running)
        .map(|i| Plan {
            index: i.index,
            generation: format!("{}:{}:{}", state.uid, i.model, i.boot),
            disk: format!("{}:{}", state.uid, i.model),
            custom_data: i.custom_data.clone(),
        })
        .collect()
}

/// `GET .../instanceView`: provisioning and power states, with per-state instance counts.
/// An instance whose process has exited counts as `ProvisioningState/failed`.
pub fn instance_view(
    req: &Request<'_>,
    data: &ArmData,
    owner: &ResourceId,
) -> Result<Reply, ArmError> {
    let record = resources::require(data, owner)?;
    let state: ScaleSetState = record.internal(STATE);
    let mut summary: BTreeMap<&str, u64> = BTreeMap::new();
    for inst in &state.instances {
        *summary
            .entry(instance_provisioning(req, owner, inst))
            .or_default() += 1;
        *summary.entry(inst.power.code()).or_default() += 1;
    }
    let provisioning = record
        .provisioning_state()
        .unwrap_or("Succeeded")
        .to_ascii_lowercase();
    let mut statuses = vec![json!({
        "code": format!("ProvisioningState/{provisioning}"),
        "level": "Info",
        "displayStatus": record.provisioning_state().unwrap_or("Succeeded"),
    })];
    if let Some(power) = overall_power(&state) {
        statuses.push(json!({"code": power.code(), "level": "Info"}));
    }
    let summary: Vec<Value> = summary
        .into_iter()
        .map(|(code, count)| json!({"code": code, "count": count}))
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        json!({"virtualMachine": {"statusesSummary": summary}, "statuses": statuses}),
    ))
}

/// `GET .../virtualMachines`: one entry per instance, with `latestModelApplied`.
pub fn list_instances(
    req: &Request<'_>,
    data: &ArmData,
    c: &Collection,
) -> Result<Reply, ArmError> {
    let owner = c.owner().expect("a nested collection has an owner");
    let record = resources::require(data, &owner)?;
    let state: ScaleSetState = record.internal(STATE);
    let name = record.body["name"].as_str().unwrap_or_default();
    let items = state
        .instances
        .iter()
        .map(|inst| {
            let provisioning = instance_provisioning(req, &owner, inst);
            json!({
                "instanceId": inst.index.to_string(),
                "id": format!("{}/virtualMachines/{}", record.id(), inst.index),
                "name": format!("{name}_{}", inst.index),
                "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
                "location": record.body["location"],
                "properties": {
                    "latestModelApplied": inst.model == state.model,
                    "provisioningState": if provisioning.ends_with("failed") { "Failed" } else { "Succeeded" },
                    "instanceView": {"statuses": [{"code": provisioning}, {"code": inst.power.code()}]},
                },
            })
        })
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        paging::page(req, &c.path(), items)?,
    ))
}

fn instance_provisioning(req: &Request<'_>, owner: &ResourceId, inst: &Instance) -> &'static str {
    match req
        .svc
        .processes()
        .instance_status(&owner.key(), inst.index)
    {
        Some(ProcStatus::Exited(_) | ProcStatus::FailedToStart(_))
            if inst.power == Power::Running =>
        {
            "ProvisioningState/failed"
        }
        _ => "ProvisioningState/succeeded",
    }
}

fn overall_power(state: &ScaleSetState) -> Option<Power> {
    let powers: Vec<Power> = state.instances.iter().map(|i| i.power).collect();
    if powers.is_empty() {
        None
    } else if powers.contains(&Power::Running) {
        Some(Power::Running)
    } else if powers.contains(&Power::Stopped) {
        Some(Power::Stopped)
    } else {
        Some(Power::Deallocated)
    }
}

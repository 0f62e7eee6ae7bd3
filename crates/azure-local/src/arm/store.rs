//! Persistent Resource Manager state: every resource (resource groups included) and the
//! long-running operations, in `arm.json` next to the vault state, replaced atomically on
//! each change.

use super::ids;
use super::lro::OperationRecord;
use crate::fsutil;
use crate::state::StateError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The state file's name inside `--state-dir`.
pub const ARM_STATE_FILE: &str = "arm.json";
const FORMAT_VERSION: u32 = 1;

/// One stored resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The body as GET returns it, before computed views are added.
    pub body: Value,
    /// Server-side state that is never returned as is (power state, secure values, ...),
    /// one entry per concern, owned by the provider module that writes it.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub internal: Map<String, Value>,
}

impl Record {
    /// A record with this body and no internal state.
    pub fn new(body: Value) -> Self {
        Self {
            body,
            internal: Map::new(),
        }
    }

    /// The internal entry `name`, or its default when absent or unreadable.
    pub fn internal<T: DeserializeOwned + Default>(&self, name: &str) -> T {
        self.internal
            .get(name)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// Replaces the internal entry `name`.
    pub fn set_internal<T: Serialize>(&mut self, name: &str, value: &T) {
        let v = serde_json::to_value(value).expect("internal state serializes");
        self.internal.insert(name.to_owned(), v);
    }

    /// The canonical id, as first written.
    pub fn id(&self) -> &str {
        self.body["id"].as_str().unwrap_or_default()
    }

    /// `properties.provisioningState`.
    pub fn provisioning_state(&self) -> Option<&str> {
        self.body["properties"]["provisioningState"].as_str()
    }
}

/// Everything that survives a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmData {
    /// Bumped if the layout changes incompatibly.
    pub format_version: u32,
    /// Resources by lowercase id, resource groups included.
    #[serde(default)]
    pub resources: BTreeMap<String, Record>,
    /// Long-running operations by id.
    #[serde(default)]
    pub operations: BTreeMap<String, OperationRecord>,
}

impl Default for ArmData {
    fn default() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            resources: BTreeMap::new(),
            operations: BTreeMap::new(),
        }
    }
}

impl ArmData {
    /// The resource with this id (any case).
    pub fn get(&self, id: &str) -> Option<&Record> {
        self.resources.get(&ids::key(id))
    }

    /// The resource with this id, for changing.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Record> {
        self.resources.get_mut(&ids::key(id))
    }

    /// Whether the resource exists.
    pub fn contains(&self, id: &str) -> bool {
        self.resources.contains_key(&ids::key(id))
    }

    /// Stores a resource under its body's id.
    pub fn insert(&mut self, record: Record) {
        self.resources.insert(ids::key(record.id()), record);
    }

    /// Removes a resource and everything nested in or scoped to it; returns them, deepest first.
    pub fn remove_tree(&mut self, id: &str) -> Vec<Record> {
        let k = ids::key(id);
        let prefix = format!("{k}/");
        let doomed: Vec<String> = self
            .resources
            .keys()
            .filter(|key| **key == k || key.starts_with(&prefix))
            .cloned()
            .collect();
        let mut removed: Vec<Record> = doomed
            .iter()
            .rev()
            .filter_map(|key| self.resources.remove(key))
            .collect();
        // Children sort after their parents, so reversing puts them first.
        removed.sort_by_key(|r| std::cmp::Reverse(r.id().len()));
        removed
    }

    /// Records of `type_key` (lowercase type) whose container is `container` (any case).
    pub fn children<'a>(
        &'a self,
        container: &str,
        type_key: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Record)> + 'a {
        let container = ids::key(container);
        self.resources.iter().filter(move |(k, _)| {
            ids::parse_resource(k)
                .is_some_and(|r| r.type_key() == type_key && ids::key(&r.container()) == container)
        })
    }

    /// Records of `type_key` anywhere under `scope`.
    pub fn within<'a>(
        &'a self,
        scope: &str,
        type_key: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Record)> + 'a {
        let scope = scope.to_owned();
        self.resources.iter().filter(move |(k, _)| {
            ids::covers(&scope, k)
                && ids::parse_resource(k).is_some_and(|r| r.type_key() == type_key)
        })
    }
}

/// The state, shared by all requests; every change is persisted before it becomes visible.
pub struct ArmStore {
    path: PathBuf,
    data: Mutex<ArmData>,
}

impl ArmStore {
    /// Opens (or starts empty) the state under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let (path, data) =
            fsutil::load_versioned(dir, ARM_STATE_FILE, FORMAT_VERSION, |d: &ArmData| {
                d.format_version
            })?;
        let data = data.unwrap_or_default();
        Ok(Self {
            path,
            data: Mutex::new(data),
        })
    }

    /// Runs `f` on a read-only view.
    pub fn read<R>(&self, f: impl FnOnce(&ArmData) -> R) -> R {
        f(&self.lock())
    }

    /// Applies `f` to a copy, persists the result, then publishes it; if `f` or the write
    /// fails, nothing changes.
    pub fn update<R, E>(&self, f: impl FnOnce(&mut ArmData) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StateError>,
    {
        let mut data = self.lock();
        let mut next = data.clone();
        let result = f(&mut next)?;
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(&self.path, &bytes).map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })?;
        *data = next;
        Ok(result)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ArmData> {
        // Changes are applied to a copy and swapped in whole, so a poisoned lock still guards
        // consistent data.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RG: &str = "/subscriptions/s/resourceGroups/rg";

    fn rec(id: &str) -> Record {
        Record::new(json!({"id": id, "properties": {}}))
    }

    #[test]
    fn records_survive_reopen_and_failed_updates_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArmStore::open(dir.path()).unwrap();
        store
            .update(|d| {
                d.insert(rec(RG));
                Ok::<_, StateError>(())
            })
            .unwrap();
        let failed: Result<(), StateError> = store.update(|d| {
            d.resources.clear();
            Err(StateError::Corrupt {
                path: PathBuf::new(),
                message: "test".into(),
            })
        });
        assert!(failed.is_err());
        drop(store);
        let store = ArmStore::open(dir.path()).unwrap();
        assert!(store.read(|d| d.contains("/SUBSCRIPTIONS/s/resourcegroups/RG")));
    }

    #[test]
    fn remove_tree_takes_nested_and_extension_resources_deepest_first() {
        let mut d = ArmData::default();
        let vnet = format!("{RG}/providers/Microsoft.Network/virtualNetworks/v");
        let vnet2 = format!("{RG}/providers/Microsoft.Network/virtualNetworks/v2");
        for id in [
            RG.to_owned(),
            vnet.clone(),
            format!("{vnet}/subnets/a"),
            format!("{vnet}/providers/Microsoft.Authorization/roleAssignments/g"),
            vnet2.clone(),
        ] {
            d.insert(rec(&id));
        }
        let removed: Vec<String> = d
            .remove_tree(&vnet)
            .iter()
            .map(|r| r.id().to_owned())
            .collect();
        assert_eq!(removed.len(), 3);
        assert_eq!(removed.last().unwrap(), &vnet);
        assert!(d.contains(&vnet2));
        assert_eq!(
            d.children(RG, "microsoft.network/virtualnetworks").count(),
            1
        );
        assert_eq!(
            d.within("/subscriptions/s", "microsoft.network/virtualnetworks")
                .count(),
            1
        );
    }

    #[test]
    fn internal_entries_round_trip() {
        let mut r = rec(RG);
        assert_eq!(r.internal::<Vec<u32>>("x"), Vec::<u32>::new());
        r.set_internal("x", &vec![1u32, 2]);
        assert_eq!(r.internal::<Vec<u32>>("x"), vec![1, 2]);
    }
}

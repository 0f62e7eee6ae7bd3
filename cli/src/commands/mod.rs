//! The resource commands: one module per resource of the API.

pub mod agent;
pub mod api_key;
pub mod byoc;
pub mod connector;
pub mod connector_dev;
pub mod env;
pub mod pipeline;
pub mod registry;

use std::collections::HashMap;

use culvert_control_api::environments::Environment;
use uuid::Uuid;

use crate::api::Api;

/// Environment names by id, to show names rather than ids in tables; empty when listing fails
/// because a table without names is still better than no table.
pub async fn environment_names(api: &Api) -> HashMap<Uuid, String> {
    match api.list_all::<Environment>("/v1/environments", &[]).await {
        Ok(list) => list.items.into_iter().map(|e| (e.id, e.name)).collect(),
        Err(_) => HashMap::new(),
    }
}

/// The name for `id` from `names`, or the id itself.
pub fn name_or_id(names: &HashMap<Uuid, String>, id: Uuid) -> String {
    names.get(&id).cloned().unwrap_or_else(|| id.to_string())
}

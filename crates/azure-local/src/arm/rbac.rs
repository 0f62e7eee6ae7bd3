//! Role-based access control over the stored role definitions and assignments.
//!
//! A principal may perform an action at a scope if an assignment at that scope or an ancestor
//! (subscription, resource group, parent resource) names it and references a definition one of
//! whose permission blocks lists the action in `actions` (with `*` wildcards, case-insensitive,
//! as Azure matches them) and not in `notActions`. `dataActions`, `notDataActions` and
//! assignment conditions are stored and returned but not evaluated: data-plane access in this
//! stand-in goes through the vaults' access policies.

use super::auth::Caller;
use super::error::ArmError;
use super::ids;
use super::store::{ArmData, Record};
use serde::Deserialize;

/// The role definition type, lowercase.
pub const ROLE_DEFINITIONS: &str = "microsoft.authorization/roledefinitions";
/// The role assignment type, lowercase.
pub const ROLE_ASSIGNMENTS: &str = "microsoft.authorization/roleassignments";

/// One permission block of a role definition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// Allowed control-plane actions (wildcards allowed).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Control-plane actions subtracted from `actions`.
    #[serde(default)]
    pub not_actions: Vec<String>,
    /// Data-plane actions (stored only).
    #[serde(default)]
    pub data_actions: Vec<String>,
    /// Data-plane actions subtracted (stored only).
    #[serde(default)]
    pub not_data_actions: Vec<String>,
}

/// Whether `pattern` (with `*` matching any run of characters) matches `action`, ignoring case.
pub fn matches(pattern: &str, action: &str) -> bool {
    let p: Vec<u8> = pattern.to_ascii_lowercase().into_bytes();
    let a: Vec<u8> = action.to_ascii_lowercase().into_bytes();
    let (mut pi, mut ai) = (0, 0);
    // Position of the last `*` seen and where in `action` it started matching, to backtrack.
    let mut star: Option<(usize, usize)> = None;
    while ai < a.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ai));
            pi += 1;
        } else if pi < p.len() && p[pi] == a[ai] {
            pi += 1;
            ai += 1;
        } else if let Some((sp, sa)) = star {
            pi = sp + 1;
            ai = sa + 1;
            star = Some((sp, sa + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether some block of `permissions` allows `action`.
pub fn permits(permissions: &[Permission], action: &str) -> bool {
    permissions.iter().any(|p| {
        p.actions.iter().any(|x| matches(x, action))
            && !p.not_actions.iter().any(|x| matches(x, action))
    })
}

/// The role definition a `roleDefinitionId` names, looked up by its GUID (the last segment),
/// since Azure accepts the same definition under any scope prefix.
pub fn find_definition<'a>(data: &'a ArmData, role_definition_id: &str) -> Option<&'a Record> {
    let guid = role_definition_id.rsplit('/').next()?;
    data.resources.iter().find_map(|(k, r)| {
        let id = ids::parse_resource(k)?;
        (id.type_key() == ROLE_DEFINITIONS && id.name().eq_ignore_ascii_case(guid)).then_some(r)
    })
}

/// The permission blocks of a stored role definition.
pub fn permissions_of(definition: &Record) -> Vec<Permission> {
    serde_json::from_value(definition.body["properties"]["permissions"].clone()).unwrap_or_default()
}

/// Whether `principal` may perform `action` at `scope`.
pub fn allowed(data: &ArmData, principal: &str, action: &str, scope: &str) -> bool {
    data.resources.iter().any(|(k, r)| {
        let Some(id) = ids::parse_resource(k) else {
            return false;
        };
        let props = &r.body["properties"];
        id.type_key() == ROLE_ASSIGNMENTS
            && props["principalId"]
                .as_str()
                .is_some_and(|p| p.eq_ignore_ascii_case(principal))
            && ids::covers(&id.scope, scope)
            && props["roleDefinitionId"]
                .as_str()
                .and_then(|d| find_definition(data, d))
                .is_some_and(|d| permits(&permissions_of(d), action))
    })
}

/// Refuses unless `caller` may perform `action` at `scope`.
pub fn require(data: &ArmData, caller: &Caller, action: &str, scope: &str) -> Result<(), ArmError> {
    if caller.owner || allowed(data, &caller.oid, action, scope) {
        return Ok(());
    }
    tracing::info!(oid = %caller.oid, action, scope, "authorization failed");
    Err(ArmError::forbidden(
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            caller.appid, caller.oid
        ),
    ))
}

/// Refuses unless `caller` may perform every `(action, scope)` in `linked`, which a request for
/// `action` on `scope` needs on the resources its body references.
pub fn require_linked(
    data: &ArmData,
    caller: &Caller,
    action: &str,
    scope: &str,
    linked: &[(String, String)],
) -> Result<(), ArmError> {
    if caller.owner {
        return Ok(());
    }
    let missing: Vec<&(String, String)> = linked
        .iter()
        .filter(|(a, s)| !allowed(data, &caller.oid, a, s))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let actions: Vec<&str> = missing.iter().map(|(a, _)| a.as_str()).collect();
    let scopes: Vec<&str> = missing.iter().map(|(_, s)| s.as_str()).collect();
    tracing::info!(oid = %caller.oid, action, scope, linked = ?actions, "linked authorization failed");
    Err(ArmError::forbidden(
        "LinkedAuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' has permission to perform action '{action}' on scope '{scope}'; however, it does not have permission to perform action(s) '{}' on the linked scope(s) '{}' (respectively) or the linked scope(s) are invalid.",
            caller.appid,
            caller.oid,
            actions.join(","),
            scopes.join(",")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RG: &str = "/subscriptions/s/resourceGroups/rg";

    #[test]
    fn wildcards_match_like_azure() {
        assert!(matches(
            "*",
            "Microsoft.Compute/virtualMachineScaleSets/read"
        ));
        assert!(matches(
            "microsoft.compute/*",
            "Microsoft.Compute/virtualMachineScaleSets/write"
        ));
        assert!(matches(
            "*/read",
            "Microsoft.Network/virtualNetworks/subnets/read"
        ));
        assert!(matches(
            "Microsoft.Compute/*/action",
            "Microsoft.Compute/virtualMachineScaleSets/deallocate/action"
        ));
        assert!(!matches(
            "*/read",
            "Microsoft.Network/virtualNetworks/write"
        ));
        assert!(!matches("Microsoft.Compute/*", "Microsoft.Network/x/read"));
        assert!(!matches(
            "Microsoft.Compute/virtualMachineScaleSets/read",
            "Microsoft.Compute/virtualMachineScaleSets/readx"
        ));
    }

    #[test]
    fn not_actions_subtract_within_their_block() {
        let p: Vec<Permission> = serde_json::from_value(json!([
            {"actions": ["Microsoft.Compute/*"], "notActions": ["*/delete"]},
        ]))
        .unwrap();
        assert!(permits(
            &p,
            "Microsoft.Compute/virtualMachineScaleSets/write"
        ));
        assert!(!permits(
            &p,
            "Microsoft.Compute/virtualMachineScaleSets/delete"
        ));
    }

    fn data() -> ArmData {
        let mut d = ArmData::default();
        d.insert(Record::new(json!({
            "id": "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/D1",
            "properties": {"permissions": [{"actions": ["*/read"]}], "assignableScopes": [RG]}
        })));
        d.insert(Record::new(json!({
            "id": format!("{RG}/providers/Microsoft.Authorization/roleAssignments/a1"),
            "properties": {"principalId": "P", "roleDefinitionId": "/subscriptions/other/providers/Microsoft.Authorization/roleDefinitions/d1"}
        })));
        d
    }

    #[test]
    fn assignments_apply_at_their_scope_and_below() {
        let d = data();
        let vnet = format!("{RG}/providers/Microsoft.Network/virtualNetworks/v");
        assert!(allowed(
            &d,
            "p",
            "Microsoft.Network/virtualNetworks/read",
            &vnet
        ));
        assert!(!allowed(
            &d,
            "p",
            "Microsoft.Network/virtualNetworks/write",
            &vnet
        ));
        assert!(!allowed(
            &d,
            "p",
            "Microsoft.Network/virtualNetworks/read",
            "/subscriptions/s"
        ));
        assert!(!allowed(
            &d,
            "q",
            "Microsoft.Network/virtualNetworks/read",
            &vnet
        ));
    }

    #[test]
    fn denial_messages_have_azures_shape() {
        let caller = Caller {
            appid: "app".into(),
            oid: "p".into(),
            owner: false,
        };
        let d = data();
        let e = require(
            &d,
            &caller,
            "Microsoft.Compute/virtualMachineScaleSets/write",
            RG,
        )
        .unwrap_err();
        assert_eq!(e.code, "AuthorizationFailed");
        assert_eq!(
            e.message,
            "The client 'app' with object id 'p' does not have authorization to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' over scope '/subscriptions/s/resourceGroups/rg' or the scope is invalid. If access was recently granted, please refresh your credentials."
        );
        let linked = vec![(
            "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action".to_owned(),
            "/x/y".to_owned(),
        )];
        let e = require_linked(&d, &caller, "A/b/write", "/s", &linked).unwrap_err();
        assert_eq!(e.code, "LinkedAuthorizationFailed");
        assert!(e.message.contains("perform action(s) 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '/x/y' (respectively)"), "{}", e.message);
        let owner = Caller {
            owner: true,
            ..caller
        };
        require(&d, &owner, "anything", "/").unwrap();
    }
}

//! Role definitions and role assignments (`Microsoft.Authorization`), at any scope.
//!
//! Definitions are found by their GUID whatever scope prefix a `roleDefinitionId` uses. An
//! assignment must reference an existing definition and lie within one of its
//! `assignableScopes`. Lists honour `$filter=principalId eq '{id}'`, `assignedTo('{id}')`,
//! `atScope()` (assignments) and `roleName eq '{name}'` (definitions).

use super::PutCx;
use crate::arm::error::ArmError;
use crate::arm::ids::{self, Collection};
use crate::arm::rbac::{self, Permission, ROLE_ASSIGNMENTS, ROLE_DEFINITIONS};
use crate::arm::store::{ArmData, Record};
use crate::arm::{Reply, Request, clock, paging};
use axum::http::StatusCode;
use serde_json::{Value, json};

/// Validates a custom role definition and sets its server fields.
pub fn prepare_definition(
    cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    let props = &record.body["properties"];
    let role_name = props["roleName"]
        .as_str()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ArmError::invalid_content("properties.roleName is required."))?
        .to_owned();
    serde_json::from_value::<Vec<Permission>>(props["permissions"].clone()).map_err(|e| {
        ArmError::invalid_content(format!("properties.permissions is not valid: {e}."))
    })?;
    let scopes_ok = props["assignableScopes"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
    if !scopes_ok {
        return Err(ArmError::bad_request(
            "RoleDefinitionHasNoAssignableScopes",
            "The role definition must have at least one assignable scope.",
        ));
    }
    let guid = cx.id.name().to_ascii_lowercase();
    let clash = data.resources.iter().any(|(k, r)| {
        ids::parse_resource(k).is_some_and(|id| {
            id.type_key() == ROLE_DEFINITIONS
                && id.name().to_ascii_lowercase() != guid
                && r.body["properties"]["roleName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&role_name))
        })
    });
    if clash {
        return Err(ArmError::conflict(
            "RoleDefinitionWithSameNameExists",
            "A custom role with the same name already exists in this directory. Use a different name.",
        ));
    }
    stamp(cx, record);
    record.body["properties"]["type"] = json!("CustomRole");
    Ok(())
}

/// Validates a role assignment against its definition and the existing assignments.
pub fn prepare_assignment(
    cx: &mut PutCx<'_, '_>,
    data: &mut ArmData,
    record: &mut Record,
) -> Result<(), ArmError> {
    let scope = cx.id.scope.clone();
    let props = &record.body["properties"];
    let definition_id = props["roleDefinitionId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ArmError::invalid_content("properties.roleDefinitionId is required."))?
        .to_owned();
    let principal = props["principalId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ArmError::invalid_content("properties.principalId is required."))?
        .to_owned();
    let guid = definition_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let definition = rbac::find_definition(data, &definition_id).ok_or_else(|| {
        ArmError::bad_request(
            "RoleDefinitionDoesNotExist",
            format!("The specified role definition with ID '{guid}' does not exist."),
        )
    })?;
    let assignable: Vec<&str> = definition.body["properties"]["assignableScopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !assignable.iter().any(|s| ids::covers(s, &scope)) {
        return Err(ArmError::bad_request(
            "InvalidCreateRoleAssignmentRequest",
            format!(
                "The request to create role assignment '{}' is not valid. Role assignment scope '{scope}' must match one of the role definition's assignable scopes: '{}'.",
                cx.id.name(),
                assignable.join("', '")
            ),
        ));
    }
    if let Some(old) = cx.old {
        let o = &old.body["properties"];
        let same_principal = o["principalId"]
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case(&principal));
        let same_role = o["roleDefinitionId"]
            .as_str()
            .and_then(|d| d.rsplit('/').next())
            .is_some_and(|g| g.eq_ignore_ascii_case(&guid));
        if !same_principal || !same_role {
            return Err(ArmError::conflict(
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            ));
        }
    }
    let own_key = cx.id.key();
    let duplicate = assignments(data).any(|(k, id, r)| {
        *k != own_key
            && ids::key(&id.scope) == ids::key(&scope)
            && r.body["properties"]["principalId"]
                .as_str()
                .is_some_and(|p| p.eq_ignore_ascii_case(&principal))
            && r.body["properties"]["roleDefinitionId"]
                .as_str()
                .and_then(|d| d.rsplit('/').next())
                .is_some_and(|g| g.eq_ignore_ascii_case(&guid))
    });
    if duplicate {
        return Err(ArmError::conflict(
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ));
    }
    stamp(cx, record);
    let props = &mut record.body["properties"];
    props["scope"] = json!(
        cx.old
            .map(|o| o.body["properties"]["scope"].clone())
            .unwrap_or(json!(scope))
    );
    if props["principalType"].is_null() {
        props["principalType"] = json!("User");
    }
    Ok(())
}

/// Lists assignments at, above and (without `atScope()`) below the scope, filtered.
pub fn list_assignments(
    req: &Request<'_>,
    data: &ArmData,
    c: &Collection,
) -> Result<Reply, ArmError> {
    require_scope(data, c)?;
    let mut at_scope = false;
    let mut principal: Option<String> = None;
    for clause in clauses(req.param("$filter")) {
        if clause.eq_ignore_ascii_case("atScope()") {
            at_scope = true;
        } else if let Some(v) =
            quoted_after(&clause, "principalId eq").or_else(|| quoted_after(&clause, "assignedTo("))
        {
            principal = Some(v);
        } else {
            return Err(unsupported_filter(&clause));
        }
    }
    let items = assignments(data)
        .filter(|(_, id, _)| {
            ids::covers(&id.scope, &c.scope) || (!at_scope && ids::covers(&c.scope, &id.scope))
        })
        .filter(|(_, _, r)| {
            principal.as_ref().is_none_or(|p| {
                r.body["properties"]["principalId"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(p))
            })
        })
        .map(|(_, _, r)| r.body.clone())
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        paging::page(req, &c.path(), items)?,
    ))
}

/// Lists the definitions assignable at, above or below the scope, optionally by `roleName`.
pub fn list_definitions(
    req: &Request<'_>,
    data: &ArmData,
    c: &Collection,
) -> Result<Reply, ArmError> {
    require_scope(data, c)?;
    let mut role_name: Option<String> = None;
    for clause in clauses(req.param("$filter")) {
        match quoted_after(&clause, "roleName eq") {
            Some(v) => role_name = Some(v),
            None => return Err(unsupported_filter(&clause)),
        }
    }
    let items = data
        .resources
        .iter()
        .filter(|(k, _)| ids::parse_resource(k).is_some_and(|id| id.type_key() == ROLE_DEFINITIONS))
        .filter(|(_, r)| {
            r.body["properties"]["assignableScopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|s| ids::covers(s, &c.scope) || ids::covers(&c.scope, s))
        })
        .filter(|(_, r)| {
            role_name.as_ref().is_none_or(|n| {
                r.body["properties"]["roleName"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(n))
            })
        })
        .map(|(_, r)| r.body.clone())
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        paging::page(req, &c.path(), items)?,
    ))
}

fn assignments(data: &ArmData) -> impl Iterator<Item = (&String, ids::ResourceId, &Record)> {
    data.resources.iter().filter_map(|(k, r)| {
        let id = ids::parse_resource(k)?;
        (id.type_key() == ROLE_ASSIGNMENTS).then_some((k, id, r))
    })
}

fn stamp(cx: &PutCx<'_, '_>, record: &mut Record) {
    let now = clock::now();
    let props = &mut record.body["properties"];
    let created_on = cx.old.map(|o| o.body["properties"]["createdOn"].clone());
    let created_by = cx.old.map(|o| o.body["properties"]["createdBy"].clone());
    props["createdOn"] = created_on.unwrap_or_else(|| json!(now));
    props["createdBy"] = created_by.unwrap_or_else(|| json!(cx.req.caller.oid));
    props["updatedOn"] = json!(now);
    props["updatedBy"] = json!(cx.req.caller.oid);
}

fn require_scope(data: &ArmData, c: &Collection) -> Result<(), ArmError> {
    if let Some(rg) = &c.resource_group
        && !data.contains(&ids::resource_group_id(&c.subscription, rg))
    {
        return Err(ArmError::resource_group_not_found(rg));
    }
    if let Some(scope) = ids::parse_resource(&c.scope) {
        crate::arm::resources::require(data, &scope)?;
    }
    Ok(())
}

fn clauses(filter: Option<&str>) -> Vec<String> {
    let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Vec::new();
    };
    let lower = f.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(pos) = lower[start..].find(" and ") {
        out.push(f[start..start + pos].trim().to_owned());
        start += pos + 5;
    }
    out.push(f[start..].trim().to_owned());
    out
}

// The single-quoted value after `prefix` (case-insensitive), e.g. `principalId eq 'x'` → `x`.
fn quoted_after(clause: &str, prefix: &str) -> Option<String> {
    let rest = clause.get(..prefix.len())?;
    if !rest.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let value = clause[prefix.len()..].trim();
    let value = value.strip_suffix(')').unwrap_or(value).trim();
    value
        .strip_prefix('\'')?
        .strip_suffix('\'')
        .map(str::to_owned)
}

fn unsupported_filter(clause: &str) -> ArmError {
    ArmError::bad_request(
        "UnsupportedQuery",
        format!("The filter '{clause}' is not supported."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_split_and_values_extracted() {
        assert_eq!(
            clauses(Some("atScope() and principalId eq 'abc'")),
            vec!["atScope()".to_owned(), "principalId eq 'abc'".to_owned()]
        );
        assert_eq!(
            quoted_after("principalId eq 'abc'", "principalId eq").as_deref(),
            Some("abc")
        );
        assert_eq!(
            quoted_after("PRINCIPALID EQ 'abc'", "principalId eq").as_deref(),
            Some("abc")
        );
        assert_eq!(
            quoted_after("assignedTo('x')", "assignedTo(").as_deref(),
            Some("x")
        );
        assert_eq!(quoted_after("roleName eq abc", "roleName eq"), None);
        assert!(clauses(None).is_empty());
    }
}

//! What an ARM failure means, said so that the reader knows what to do about it.

use crate::operations::{Operation, PEER_VNET};

/// Why an ARM request failed. Each message is one line naming what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmError {
    /// 403 `AuthorizationFailed` / `LinkedAuthorizationFailed`: the identity lacks an action.
    #[error("{}", authorization_text(action, scope))]
    Authorization {
        /// The missing action(s), comma-separated when several (linked actions).
        action: String,
        /// The scope Azure checked the action on.
        scope: String,
        /// Azure's own message.
        message: String,
    },
    /// 403 for another reason (an Azure Policy assignment, a deny assignment).
    #[error(
        "Azure refused the request ({code}): {message}; an Azure Policy or deny assignment on the environment blocks it"
    )]
    Forbidden {
        /// Azure's error code.
        code: String,
        /// Azure's message.
        message: String,
    },
    /// 404: the resource or its resource group does not exist.
    #[error("Azure found no such resource: {message}")]
    NotFound {
        /// Azure's message.
        message: String,
    },
    /// 409: the resource is busy or in a state that forbids the change.
    #[error(
        "Azure refused the change because of a conflict ({code}): {message}; let the resource's running operation finish, then retry"
    )]
    Conflict {
        /// Azure's error code.
        code: String,
        /// Azure's message.
        message: String,
    },
    /// 400 and other 4xx: the request or a setting it carries is invalid.
    #[error(
        "Azure rejected the request as invalid ({code}): {message}; check the environment's settings"
    )]
    BadRequest {
        /// Azure's error code.
        code: String,
        /// Azure's message.
        message: String,
    },
    /// The long-running operation ended `Failed` or `Canceled`.
    #[error("the Azure operation failed ({code}): {message}")]
    OperationFailed {
        /// Azure's error code.
        code: String,
        /// Azure's message.
        message: String,
    },
    /// 408, 429 or 5xx, still so after the retries.
    #[error(
        "Azure Resource Manager still answered HTTP {status} after retrying: {message}; try again later"
    )]
    Transient {
        /// The last HTTP status.
        status: u16,
        /// Azure's message.
        message: String,
    },
    /// A long-running operation did not finish in time.
    #[error(
        "timed out waiting for {what}; the operation may still complete in Azure, so look at the resource before retrying"
    )]
    Timeout {
        /// What was awaited.
        what: String,
    },
    /// No HTTP exchange: connection refused, TLS failure, endpoint misconfigured.
    #[error(
        "cannot reach Azure Resource Manager: {0}; check the endpoint and the network path to it"
    )]
    Transport(String),
    /// No token, or Azure rejected it (401).
    #[error(
        "cannot authenticate to Azure Resource Manager: {0}; check the control plane's identity"
    )]
    Credential(String),
    /// ARM answered something this client cannot use (bad JSON, a link to another host).
    #[error("Azure Resource Manager answered something this client cannot use: {0}")]
    Protocol(String),
}

impl ArmError {
    /// Whether the same call may succeed if simply tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            ArmError::Transient { .. } | ArmError::Transport(_) | ArmError::Timeout { .. } => true,
            // ARM serialises operations per resource; this one clears when the other finishes.
            ArmError::Conflict { code, .. } => {
                code.eq_ignore_ascii_case("AnotherOperationInProgress")
            }
            _ => false,
        }
    }
}

fn authorization_text(action: &str, scope: &str) -> String {
    if action.contains(PEER_VNET) {
        return format!(
            "Azure refused {action} on {scope}: the owner of that virtual network has not granted it to Culvert; ask them to apply their peering steps"
        );
    }
    match resource_group_of(scope) {
        Some(group) => format!(
            "Azure refused {action} on {scope}: the Culvert role in resource group {group} lacks it; re-apply the bootstrap bundle"
        ),
        None => format!(
            "Azure refused {action} on {scope}: the Culvert role on that scope lacks it; re-apply the bootstrap bundle"
        ),
    }
}

fn resource_group_of(scope: &str) -> Option<&str> {
    let mut parts = scope.split('/');
    parts.find(|p| p.eq_ignore_ascii_case("resourceGroups"))?;
    parts.next().filter(|g| !g.is_empty())
}

/// Collapses line breaks and runs of spaces, so a message stays one line.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `{"error":{"code","message"}}`, or the bare `{"code","message"}` some providers send.
pub(crate) fn error_body(body: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error").unwrap_or(&value);
    let text = |key: &str| {
        error
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(one_line)
            .unwrap_or_default()
    };
    let (code, message) = (text("code"), text("message"));
    (!code.is_empty() || !message.is_empty()).then_some((code, message))
}

// The text in single quotes after `marker`, e.g. the action after "perform action".
fn quoted_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let start = text.find(marker)? + marker.len();
    let rest = text[start..].trim_start().strip_prefix('\'')?;
    let end = rest.find('\'')?;
    Some(&rest[..end]).filter(|s| !s.is_empty())
}

/// The error for a non-success answer to `op` on `path`.
pub(crate) fn from_status(status: u16, body: &[u8], op: &Operation, path: &str) -> ArmError {
    let path = path.split('?').next().unwrap_or_default();
    let (code, message) = error_body(body).unwrap_or_default();
    let code = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        code
    };
    let message = if message.is_empty() {
        format!("HTTP {status} from {} {path}", op.method)
    } else {
        message
    };
    match status {
        401 => ArmError::Credential(format!("Azure rejected the token ({code}): {message}")),
        403 => forbidden(code, message, op, path),
        404 => ArmError::NotFound { message },
        409 => ArmError::Conflict { code, message },
        408 | 429 | 500..=599 => ArmError::Transient { status, message },
        400..=499 => ArmError::BadRequest { code, message },
        _ => ArmError::Protocol(format!(
            "unexpected HTTP {status} from {} {path}: {message}",
            op.method
        )),
    }
}

fn forbidden(code: String, message: String, op: &Operation, path: &str) -> ArmError {
    if code.eq_ignore_ascii_case("AuthorizationFailed") {
        ArmError::Authorization {
            action: quoted_after(&message, "perform action")
                .unwrap_or(op.action)
                .to_owned(),
            scope: quoted_after(&message, "over scope")
                .unwrap_or(path)
                .to_owned(),
            message,
        }
    } else if code.eq_ignore_ascii_case("LinkedAuthorizationFailed") {
        // The first "perform action '…'" names what the identity may do; the linked ones follow.
        let action = match quoted_after(&message, "perform action(s)") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
            None => op.linked_actions.join(", "),
        };
        ArmError::Authorization {
            action,
            scope: quoted_after(&message, "linked scope(s)")
                .unwrap_or(path)
                .to_owned(),
            message,
        }
    } else {
        ArmError::Forbidden { code, message }
    }
}

/// The error of a long-running operation that ended `Failed` or `Canceled` (its `error` object).
pub(crate) fn operation_failed(status: &str, error: Option<&serde_json::Value>) -> ArmError {
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(serde_json::Value::as_str)
            .map(one_line)
            .filter(|s| !s.is_empty())
    };
    ArmError::OperationFailed {
        code: text("code").unwrap_or_else(|| status.to_owned()),
        message: text("message").unwrap_or_else(|| format!("the operation ended {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::{peerings, vmss};
    use serde_json::json;

    const RG: &str = "/subscriptions/0000/resourceGroups/rg-data";

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"error": {"code": code, "message": message}})).unwrap()
    }

    #[test]
    fn authorization_failed_names_the_action_scope_and_group() {
        let scope = format!("{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/pool");
        let message = format!(
            "The client 'app' with object id 'oid' does not have authorization to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
        );
        let e = from_status(
            403,
            &body("AuthorizationFailed", &message),
            &vmss::GET,
            &scope,
        );
        assert_eq!(
            e,
            ArmError::Authorization {
                action: "Microsoft.Compute/virtualMachineScaleSets/write".into(),
                scope: scope.clone(),
                message,
            }
        );
        let text = e.to_string();
        assert!(text.starts_with("Azure refused Microsoft.Compute/virtualMachineScaleSets/write on /subscriptions/0000/"), "{text}");
        assert!(
            text.contains(
                "the Culvert role in resource group rg-data lacks it; re-apply the bootstrap bundle"
            ),
            "{text}"
        );
        assert!(!text.contains('\n'));
        assert!(!e.is_transient());
    }

    #[test]
    fn linked_authorization_failed_names_the_linked_actions() {
        let subnet = format!("{RG}/providers/Microsoft.Network/virtualNetworks/v/subnets/s");
        let message = format!(
            "The client 'app' with object id 'oid' has permission to perform action 'Microsoft.Compute/virtualMachineScaleSets/write' on scope '{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/pool'; however, it does not have permission to perform action(s) 'Microsoft.Network/virtualNetworks/subnets/join/action,Microsoft.Network/networkSecurityGroups/join/action' on the linked scope(s) '{subnet}' (respectively) or the linked scope(s) are invalid."
        );
        let e = from_status(
            403,
            &body("LinkedAuthorizationFailed", &message),
            &vmss::CREATE_OR_UPDATE,
            "/x",
        );
        match &e {
            ArmError::Authorization { action, scope, .. } => {
                assert_eq!(
                    action,
                    "Microsoft.Network/virtualNetworks/subnets/join/action, Microsoft.Network/networkSecurityGroups/join/action"
                );
                assert_eq!(scope, &subnet);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_peer_grant_points_at_the_peer() {
        let remote = "/subscriptions/9999/resourceGroups/theirs/providers/Microsoft.Network/virtualNetworks/hub";
        let message = format!(
            "The client 'a' with object id 'o' has permission to perform action 'Microsoft.Network/virtualNetworks/virtualNetworkPeerings/write' on scope 'x'; however, it does not have permission to perform action(s) '{PEER_VNET}' on the linked scope(s) '{remote}' (respectively) or the linked scope(s) are invalid."
        );
        let e = from_status(
            403,
            &body("LinkedAuthorizationFailed", &message),
            &peerings::CREATE,
            "/x",
        );
        assert!(
            e.to_string()
                .contains("ask them to apply their peering steps"),
            "{e}"
        );
    }

    #[test]
    fn unparsable_refusals_fall_back_to_the_operation() {
        let e = from_status(
            403,
            &body("AuthorizationFailed", "no quotes here"),
            &vmss::DELETE,
            "/p?api-version=1",
        );
        assert_eq!(
            e,
            ArmError::Authorization {
                action: vmss::DELETE.action.into(),
                scope: "/p".into(),
                message: "no quotes here".into(),
            }
        );
        let e = from_status(
            403,
            &body("RequestDisallowedByPolicy", "denied by policy 'x'"),
            &vmss::DELETE,
            "/p",
        );
        assert!(
            matches!(e, ArmError::Forbidden { ref code, .. } if code == "RequestDisallowedByPolicy")
        );
    }

    #[test]
    fn statuses_map_to_kinds() {
        let op = &vmss::GET;
        assert!(
            matches!(from_status(404, &body("ResourceNotFound", "gone"), op, "/p"), ArmError::NotFound { message } if message == "gone")
        );
        assert!(
            matches!(from_status(400, &body("InvalidRequestContent", "bad"), op, "/p"), ArmError::BadRequest { code, .. } if code == "InvalidRequestContent")
        );
        let busy = from_status(409, &body("AnotherOperationInProgress", "busy"), op, "/p");
        assert!(busy.is_transient());
        assert!(!from_status(409, &body("Conflict", "x"), op, "/p").is_transient());
        let e = from_status(503, b"", op, "/subscriptions/s?api-version=1");
        assert_eq!(
            e,
            ArmError::Transient {
                status: 503,
                message: "HTTP 503 from GET /subscriptions/s".into()
            }
        );
        assert!(e.is_transient());
        assert!(matches!(
            from_status(401, b"", op, "/p"),
            ArmError::Credential(_)
        ));
        // A bare error object and a multi-line message.
        let bare =
            serde_json::to_vec(&json!({"code": "Bad", "message": "line one\nline  two"})).unwrap();
        assert_eq!(
            from_status(422, &bare, op, "/p"),
            ArmError::BadRequest {
                code: "Bad".into(),
                message: "line one line two".into()
            }
        );
    }

    #[test]
    fn failed_operations_carry_azures_error() {
        let e = operation_failed(
            "Failed",
            Some(&json!({"code": "OSProvisioningTimedOut", "message": "took too long"})),
        );
        assert_eq!(
            e.to_string(),
            "the Azure operation failed (OSProvisioningTimedOut): took too long"
        );
        let e = operation_failed("Canceled", None);
        assert_eq!(
            e,
            ArmError::OperationFailed {
                code: "Canceled".into(),
                message: "the operation ended Canceled".into()
            }
        );
    }
}

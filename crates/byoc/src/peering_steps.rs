//! The peer side of a VNet peering between the agents' VNet and a database's VNet, possibly
//! in another tenant: the published peering guide's steps 1–10 and 13–14, for Culvert.
//!
//! Culvert's control plane creates the peering from the agents' VNet; for that it needs
//! `Microsoft.Network/virtualNetworks/peer/action` on the peer VNet, which this script grants
//! to Culvert's service principal through a role holding that one action. The peer creates
//! the other half with an application of its own that can sign in to both tenants.

use serde_json::json;

use crate::quote::{one_line, shell_word};

/// The action that lets a principal target a VNet with a peering, and nothing else.
pub const PEER_ACTION: &str = "Microsoft.Network/virtualNetworks/peer/action";

/// What the peer-side steps need. Ids are lowercased in the script, as the peering guide
/// requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeeringStepInputs {
    /// Subscription of the peer VNet.
    pub peer_subscription_id: String,
    /// Entra tenant of the peer VNet.
    pub peer_tenant_id: String,
    /// Resource group of the peer VNet.
    pub peer_resource_group: String,
    /// Name of the peer VNet.
    pub peer_vnet_name: String,
    /// Application (client) id of the peer's multi-tenant application.
    pub peer_app_id: String,
    /// Application id of Culvert's control-plane application.
    pub culvert_app_id: String,
    /// Tenant that owns Culvert's application.
    pub culvert_tenant_id: String,
    /// Resource id of the agents' VNet.
    pub agent_vnet_id: String,
    /// Tenant of the agents' VNet (the environment's tenant).
    pub agent_tenant_id: String,
    /// Name of the peering connection, used for both halves.
    pub connection_name: String,
}

/// `/subscriptions/SUB` of a resource id, lowercased.
fn subscription_scope(resource_id: &str) -> String {
    let parts: Vec<&str> = resource_id.split('/').collect();
    match parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("subscriptions"))
    {
        Some(i) if i + 1 < parts.len() => {
            format!("/subscriptions/{}", parts[i + 1]).to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

fn role_json(name: &str, description: &str, actions: &[&str], scope: &str) -> String {
    json!({
        "Name": name,
        "Description": description,
        "Actions": actions,
        "NotActions": [],
        "AssignableScopes": [scope],
    })
    .to_string()
}

/// The script the peer's administrator runs.
pub fn render(inputs: &PeeringStepInputs) -> String {
    let low = |s: &str| s.trim().to_ascii_lowercase();
    let peer_sub = low(&inputs.peer_subscription_id);
    let peer_rg = low(&inputs.peer_resource_group);
    let peer_vnet = low(&inputs.peer_vnet_name);
    let peer_vnet_id = format!(
        "/subscriptions/{peer_sub}/resourcegroups/{peer_rg}/providers/microsoft.network/virtualnetworks/{peer_vnet}"
    );
    let agent_vnet_id = low(&inputs.agent_vnet_id);
    let agent_scope = subscription_scope(&agent_vnet_id);
    let culvert_role = format!("culvert-vnet-peer-{peer_sub}");
    let writer_role = format!("culvert-peering-writer-{peer_sub}");
    let agent_role = format!(
        "culvert-vnet-peer-{}",
        agent_scope.trim_start_matches("/subscriptions/")
    );
    let culvert_role_json = role_json(
        &culvert_role,
        "Lets Culvert target VNets in scope with a peering (but not peer from them)",
        &[PEER_ACTION],
        &format!("/subscriptions/{peer_sub}"),
    );
    let writer_role_json = role_json(
        &writer_role,
        "Lets the peering application create peerings from VNets in scope",
        &[
            "Microsoft.Network/virtualNetworks/read",
            "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/read",
            "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/write",
        ],
        &format!("/subscriptions/{peer_sub}"),
    );
    let agent_role_json = role_json(
        &agent_role,
        "Lets a peering application target the VNet of the Culvert agents with a peering",
        &[PEER_ACTION],
        &agent_scope,
    );
    let q = shell_word;
    format!(
        r#"#!/usr/bin/env bash
# Culvert VNet peering "{connection_comment}": the peer side.
#
# Run by an administrator of the peer tenant (Entra role Application Administrator or more,
# and Owner or User Access Administrator on the peer VNet). It lets Culvert peer the agents'
# VNet with your VNet, then creates the peering from your VNet to the agents' VNet. Running it
# again reuses what exists; only the application's client secret is added anew.
set -euo pipefail

PEER_TENANT_ID={peer_tenant}
PEER_SUBSCRIPTION_ID={peer_sub}
PEER_RESOURCE_GROUP={peer_rg}
PEER_VNET_NAME={peer_vnet}
PEER_VNET_ID={peer_vnet_id}
PEER_APP_ID={peer_app}
CULVERT_APP_ID={culvert_app}
CULVERT_TENANT_ID={culvert_tenant}
AGENT_VNET_ID={agent_vnet_id}
AGENT_TENANT_ID={agent_tenant}
CONNECTION_NAME={connection}

CULVERT_ROLE={culvert_role}
WRITER_ROLE={writer_role}
AGENT_ROLE={agent_role}
CULVERT_ROLE_JSON={culvert_role_json}
WRITER_ROLE_JSON={writer_role_json}
AGENT_ROLE_JSON={agent_role_json}

lower() {{ printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }}

retry() {{ # attempts, seconds between them, command...
  local attempts=$1 delay=$2 i
  shift 2
  for ((i = 1; ; i++)); do
    if "$@"; then return 0; fi
    if [ "$i" -ge "$attempts" ]; then return 1; fi
    echo "Retrying in ${{delay}}s: role changes take a few minutes to reach every region." >&2
    sleep "$delay"
  done
}}

ensure_role() {{ # name, assignable scope, definition (JSON)
  if [ -z "$(az role definition list --name "$1" --scope "$2" --query '[0].id' --output tsv)" ]; then
    az role definition create --role-definition "$3" --output none
  fi
}}

# 1. Sign in as an administrator of the peer tenant, in the peer VNet's subscription.
az account clear
az login --tenant "$PEER_TENANT_ID" --output none
az account set --subscription "$PEER_SUBSCRIPTION_ID"

# 10. The tenant (checked first: every step below acts in it).
if [ "$(lower "$(az account show --query tenantId --output tsv)")" != "$PEER_TENANT_ID" ]; then
  echo "Signed in to another tenant than $PEER_TENANT_ID." >&2
  exit 1
fi

# 2. Your peering application: Culvert knows it by its appId, so it must exist already.
if ! az ad app show --id "$PEER_APP_ID" --output none 2>/dev/null; then
  echo "Application $PEER_APP_ID does not exist in tenant $PEER_TENANT_ID. Create it with" >&2
  echo "  az ad app create --display-name culvert-peering --sign-in-audience AzureADMultipleOrgs" >&2
  echo "and give its appId to Culvert as the connection's peer application." >&2
  exit 1
fi
# It signs in to the agents' tenant too.
az ad app update --id "$PEER_APP_ID" --sign-in-audience AzureADMultipleOrgs

# 3. Its service principal here.
az ad sp show --id "$PEER_APP_ID" --output none 2>/dev/null || az ad sp create --id "$PEER_APP_ID" --output none
PEER_SP_ID="$(az ad sp show --id "$PEER_APP_ID" --query id --output tsv)"

# 4. A client secret for it, kept in this shell only (appended: existing secrets keep working).
PEER_APP_SECRET="$(az ad app credential reset --id "$PEER_APP_ID" --append \
  --display-name "culvert-peering-$CONNECTION_NAME" --years 1 --query password --output tsv)"

# 5. Your VNet.
FOUND_VNET_ID="$(az network vnet show --subscription "$PEER_SUBSCRIPTION_ID" --resource-group "$PEER_RESOURCE_GROUP" \
  --name "$PEER_VNET_NAME" --query id --output tsv)"
if [ "$(lower "$FOUND_VNET_ID")" != "$PEER_VNET_ID" ]; then
  echo "VNet $PEER_VNET_NAME not found in resource group $PEER_RESOURCE_GROUP of $PEER_SUBSCRIPTION_ID." >&2
  exit 1
fi

# 6. Your application may create peerings from your VNet, and do nothing else with it.
ensure_role "$WRITER_ROLE" "/subscriptions/$PEER_SUBSCRIPTION_ID" "$WRITER_ROLE_JSON"
retry 10 30 az role assignment create --assignee-object-id "$PEER_SP_ID" --assignee-principal-type ServicePrincipal \
  --role "$WRITER_ROLE" --scope "$PEER_VNET_ID" --output none

# 7. Culvert's service principal here; it must be Culvert's own application.
az ad sp show --id "$CULVERT_APP_ID" --output none 2>/dev/null || az ad sp create --id "$CULVERT_APP_ID" --output none
CULVERT_SP_ID="$(az ad sp show --id "$CULVERT_APP_ID" --query id --output tsv)"
if [ "$(lower "$(az ad sp show --id "$CULVERT_APP_ID" --query appOwnerOrganizationId --output tsv)")" != "$CULVERT_TENANT_ID" ]; then
  echo "Application $CULVERT_APP_ID is not registered by Culvert's tenant $CULVERT_TENANT_ID; stopping." >&2
  exit 1
fi

# 8. A role that only lets its holder target VNets with a peering.
ensure_role "$CULVERT_ROLE" "/subscriptions/$PEER_SUBSCRIPTION_ID" "$CULVERT_ROLE_JSON"

# 9. Culvert holds it on your VNet only.
retry 10 30 az role assignment create --assignee-object-id "$CULVERT_SP_ID" --assignee-principal-type ServicePrincipal \
  --role "$CULVERT_ROLE" --scope "$PEER_VNET_ID" --output none

# Your application must also be allowed to target the agents' VNet.
if [ "$AGENT_TENANT_ID" = "$PEER_TENANT_ID" ]; then
  ensure_role "$AGENT_ROLE" "$(printf '%s' "$AGENT_VNET_ID" | cut -d/ -f1-3)" "$AGENT_ROLE_JSON"
  retry 10 30 az role assignment create --assignee-object-id "$PEER_SP_ID" --assignee-principal-type ServicePrincipal \
    --role "$AGENT_ROLE" --scope "$AGENT_VNET_ID" --output none
else
  cat <<EOF
An administrator of tenant $AGENT_TENANT_ID (where the agents' VNet is) runs, once:
  az ad sp create --id $PEER_APP_ID
  az role definition create --role-definition '$AGENT_ROLE_JSON'
  az role assignment create --assignee-object-id "\$(az ad sp show --id $PEER_APP_ID --query id --output tsv)" \\
    --assignee-principal-type ServicePrincipal --role $AGENT_ROLE --scope $AGENT_VNET_ID
EOF
  if [ -t 0 ]; then
    read -r -p "Press Enter once that is done. " _
  fi
fi

# 13. Sign in as your application, in your tenant and in the agents' tenant, so that ARM can
# check its permission on both VNets.
login_as_app() {{
  az account clear
  az login --service-principal --username "$PEER_APP_ID" --password="$PEER_APP_SECRET" \
    --tenant "$PEER_TENANT_ID" --output none || return 1
  if [ "$AGENT_TENANT_ID" != "$PEER_TENANT_ID" ]; then
    az login --service-principal --username "$PEER_APP_ID" --password="$PEER_APP_SECRET" \
      --tenant "$AGENT_TENANT_ID" --output none || return 1
  fi
  az account set --subscription "$PEER_SUBSCRIPTION_ID"
}}

# 14. The peering from your VNet to the agents' VNet; traffic flows only with --allow-vnet-access.
create_peering() {{
  login_as_app || return 1
  if az network vnet peering show --subscription "$PEER_SUBSCRIPTION_ID" --resource-group "$PEER_RESOURCE_GROUP" \
    --vnet-name "$PEER_VNET_NAME" --name "$CONNECTION_NAME" --output none 2>/dev/null; then
    return 0
  fi
  az network vnet peering create --name "$CONNECTION_NAME" --remote-vnet "$AGENT_VNET_ID" \
    --vnet-name "$PEER_VNET_NAME" --resource-group "$PEER_RESOURCE_GROUP" \
    --subscription "$PEER_SUBSCRIPTION_ID" --allow-vnet-access --output none
}}
retry 10 60 create_peering

echo "Peering $CONNECTION_NAME: $(az network vnet peering show --subscription "$PEER_SUBSCRIPTION_ID" \
  --resource-group "$PEER_RESOURCE_GROUP" --vnet-name "$PEER_VNET_NAME" --name "$CONNECTION_NAME" \
  --query peeringState --output tsv)"
echo "It turns Connected once Culvert has created its half; the Culvert console shows the connection as ACTIVE."
"#,
        connection_comment = one_line(&inputs.connection_name),
        peer_tenant = q(&low(&inputs.peer_tenant_id)),
        peer_sub = q(&peer_sub),
        peer_rg = q(&peer_rg),
        peer_vnet = q(&peer_vnet),
        peer_vnet_id = q(&peer_vnet_id),
        peer_app = q(&low(&inputs.peer_app_id)),
        culvert_app = q(&low(&inputs.culvert_app_id)),
        culvert_tenant = q(&low(&inputs.culvert_tenant_id)),
        agent_vnet_id = q(&agent_vnet_id),
        agent_tenant = q(&low(&inputs.agent_tenant_id)),
        connection = q(&inputs.connection_name),
        culvert_role = q(&culvert_role),
        writer_role = q(&writer_role),
        agent_role = q(&agent_role),
        culvert_role_json = q(&culvert_role_json),
        writer_role_json = q(&writer_role_json),
        agent_role_json = q(&agent_role_json),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> PeeringStepInputs {
        PeeringStepInputs {
            peer_subscription_id: "AAAAAAAA-1111-2222-3333-444444444444".into(),
            peer_tenant_id: "BBBBBBBB-1111-2222-3333-444444444444".into(),
            peer_resource_group: "DB-Network".into(),
            peer_vnet_name: "DB-VNet".into(),
            peer_app_id: "CCCCCCCC-1111-2222-3333-444444444444".into(),
            culvert_app_id: "DDDDDDDD-1111-2222-3333-444444444444".into(),
            culvert_tenant_id: "EEEEEEEE-1111-2222-3333-444444444444".into(),
            agent_vnet_id: "/subscriptions/FFFFFFFF-1111-2222-3333-444444444444/resourceGroups/Net/providers/Microsoft.Network/virtualNetworks/Agents".into(),
            agent_tenant_id: "99999999-1111-2222-3333-444444444444".into(),
            connection_name: "orders-db".into(),
        }
    }

    #[test]
    fn every_input_is_in_the_script_lowercased() {
        let i = inputs();
        let s = render(&i);
        for value in [
            &i.peer_subscription_id,
            &i.peer_tenant_id,
            &i.peer_resource_group,
            &i.peer_vnet_name,
            &i.peer_app_id,
            &i.culvert_app_id,
            &i.culvert_tenant_id,
            &i.agent_vnet_id,
            &i.agent_tenant_id,
        ] {
            assert!(
                s.contains(&format!("'{}'", value.to_lowercase())),
                "missing {value}"
            );
            if *value != value.to_lowercase() {
                assert!(!s.contains(value.as_str()), "{value} is not lowercased");
            }
        }
        assert!(s.contains("CONNECTION_NAME='orders-db'"));
        assert!(s.contains(
            "PEER_VNET_ID='/subscriptions/aaaaaaaa-1111-2222-3333-444444444444/resourcegroups/db-network/providers/microsoft.network/virtualnetworks/db-vnet'"
        ));
    }

    #[test]
    fn script_follows_the_guide_steps() {
        let s = render(&inputs());
        assert!(s.contains("\nset -euo pipefail\n"));
        let order = [
            "# 1. ",
            "az login --tenant",
            "# 10. ",
            "# 2. ",
            "# 3. ",
            "az ad sp create --id \"$PEER_APP_ID\"",
            "# 4. ",
            "az ad app credential reset",
            "# 5. ",
            "# 6. ",
            "# 7. ",
            "az ad sp create --id \"$CULVERT_APP_ID\"",
            "# 8. ",
            "# 9. ",
            "# 13. ",
            "az login --service-principal",
            "# 14. ",
            "az network vnet peering create",
        ];
        let mut at = 0;
        for step in order {
            let found = s[at..]
                .find(step)
                .unwrap_or_else(|| panic!("{step} missing or out of order"));
            at += found + step.len();
        }
        assert!(s.contains("--remote-vnet \"$AGENT_VNET_ID\""));
        assert!(s.contains("--allow-vnet-access"));
        // Culvert's role holds the one peering action, on the peer subscription.
        let role = role_definition(&s, "CULVERT_ROLE_JSON");
        assert_eq!(role["Actions"], json!([PEER_ACTION]));
        assert_eq!(
            role["AssignableScopes"],
            json!(["/subscriptions/aaaaaaaa-1111-2222-3333-444444444444"])
        );
        assert_eq!(
            role["Name"],
            "culvert-vnet-peer-aaaaaaaa-1111-2222-3333-444444444444"
        );
        assert!(s.contains("--role \"$CULVERT_ROLE\" --scope \"$PEER_VNET_ID\""));
        // The secret is never printed.
        assert!(!s.contains("echo \"$PEER_APP_SECRET"));
    }

    /// The role definition a `NAME='{...}'` line of the script holds.
    fn role_definition(script: &str, name: &str) -> serde_json::Value {
        let line = script
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}='")))
            .unwrap_or_else(|| panic!("no {name}"));
        serde_json::from_str(line.strip_suffix('\'').unwrap()).unwrap()
    }

    #[test]
    fn the_agent_subscription_scopes_the_agent_side_role() {
        let s = render(&inputs());
        assert!(s.contains("AGENT_ROLE='culvert-vnet-peer-ffffffff-1111-2222-3333-444444444444'"));
        let role = role_definition(&s, "AGENT_ROLE_JSON");
        assert_eq!(
            role["AssignableScopes"],
            json!(["/subscriptions/ffffffff-1111-2222-3333-444444444444"])
        );
        let writer = role_definition(&s, "WRITER_ROLE_JSON");
        assert!(writer["Actions"].as_array().unwrap().contains(&json!(
            "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/write"
        )));
    }
}

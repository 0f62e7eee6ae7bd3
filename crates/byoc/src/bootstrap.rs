//! The Terraform bundle that bootstraps an environment in the customer's subscription.
//!
//! `main.tf` is the same for every environment except for the role's action list, which is
//! the control plane's operation catalogue; every per-environment value goes to
//! `terraform.tfvars`, quoted as HCL. [`resource_names`] computes the ARM ids the module
//! creates, the way `main.tf` names them, so registration can find them.

use std::collections::HashSet;

use crate::quote::{hcl_string, one_line};

/// What a bootstrap needs to know about an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapInputs {
    /// Culvert's id of the environment (a GUID).
    pub environment_id: String,
    /// The environment's display name; only shown in comments and the README.
    pub environment_name: String,
    /// The customer's subscription.
    pub subscription_id: String,
    /// Azure region, short form (`eastus2`).
    pub location: String,
    /// Existing resource group where Culvert's resources go.
    pub resource_group: String,
    /// Resource id of the customer's VNet.
    pub vnet_id: String,
    /// Resource ids of the VNet's subnets for agents; the first holds the private endpoint.
    pub subnet_ids: Vec<String>,
    /// Resource id of an existing Key Vault, or `None` to have the module create one.
    pub key_vault_id: Option<String>,
    /// The value that ties this bootstrap to the environment (tags, endpoint request message).
    pub external_id: String,
    /// Entra tenant of Culvert's control-plane application.
    pub culvert_tenant_id: String,
    /// Application (client) id of Culvert's control-plane application.
    pub culvert_app_id: String,
    /// Object id of that application's service principal in the customer's tenant.
    pub culvert_principal_id: String,
    /// Resource id of the Private Link Service of Culvert's metadata service.
    pub metadata_service_id: String,
    /// Resource id of Culvert's container registry.
    pub container_registry_id: String,
    /// Public IPv4 addresses or ranges the control plane reaches Key Vault from.
    pub control_plane_ip_ranges: Vec<String>,
}

/// The files of a bootstrap bundle, in the order a reader should open them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `(file name, content)`: `main.tf`, `terraform.tfvars`, `README.md`.
    pub files: Vec<(String, String)>,
}

impl Bundle {
    /// The content of file `name`, if the bundle has it.
    pub fn file(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
    }
}

/// The ARM ids of what the bootstrap creates, named exactly as `main.tf` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedResources {
    /// The agents' user-assigned identity.
    pub agent_identity_id: String,
    /// The validation containers' user-assigned identity.
    pub validation_identity_id: String,
    /// The agents' network security group.
    pub agent_nsg_id: String,
    /// The private endpoint to Culvert's metadata service.
    pub private_endpoint_id: String,
    /// The Key Vault holding the keys: the one given, or the one the module creates.
    pub key_vault_id: String,
    /// The vault's URI, `https://NAME.vault.azure.net/`.
    pub key_vault_uri: String,
    /// Display name of the control plane's custom role (unique in the tenant).
    pub role_definition_name: String,
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether `id` is `/subscriptions/S/resourceGroups/RG/providers/{provider}/NAME` (ARM ids
/// are case-insensitive), with `provider` like `microsoft.network/virtualnetworks`.
fn is_resource_id(id: &str, provider: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    let wanted: Vec<&str> = provider.split('/').collect();
    parts.len() == 6 + wanted.len() + 1
        && parts[0].is_empty()
        && lower[1] == "subscriptions"
        && !parts[2].is_empty()
        && lower[3] == "resourcegroups"
        && !parts[4].is_empty()
        && lower[5] == "providers"
        && lower[6..6 + wanted.len()] == wanted
        && !parts[parts.len() - 1].is_empty()
}

/// An IPv4 address or CIDR range Key Vault's firewall takes (a `/32` is written bare).
fn is_ip_rule(range: &str) -> bool {
    let (addr, prefix) = match range.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (range, None),
    };
    let addr_ok = addr.parse::<std::net::Ipv4Addr>().is_ok();
    let prefix_ok = match prefix {
        None => true,
        Some(p) => matches!(p.parse::<u8>(), Ok(n) if n <= 30 || n == 32),
    };
    addr_ok && prefix_ok
}

impl BootstrapInputs {
    /// Every input `main.tf`'s validations or Azure would refuse, each with what is expected.
    pub fn problems(&self) -> Vec<InputError> {
        let mut out = Vec::new();
        let mut bad =
            |field: &'static str, problem: String| out.push(InputError { field, problem });
        for (field, value) in [
            ("environment_id", &self.environment_id),
            ("subscription_id", &self.subscription_id),
            ("culvert_tenant_id", &self.culvert_tenant_id),
            ("culvert_app_id", &self.culvert_app_id),
            ("culvert_principal_id", &self.culvert_principal_id),
        ] {
            if !is_guid(value) {
                bad(field, format!("`{value}` is not a GUID"));
            }
        }
        if self.location.is_empty()
            || !self
                .location
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            bad(
                "location",
                format!(
                    "`{}` is not a region's short name such as eastus2",
                    self.location
                ),
            );
        }
        let rg = &self.resource_group;
        if rg.is_empty()
            || rg.len() > 90
            || !rg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad(
                "resource_group",
                format!(
                    "`{rg}` must be 1 to 90 letters, digits, hyphens or underscores (identity names are built from it)"
                ),
            );
        }
        if !is_resource_id(&self.vnet_id, "microsoft.network/virtualnetworks") {
            bad(
                "vnet_id",
                format!("`{}` is not a virtual network resource id", self.vnet_id),
            );
        } else if !self.vnet_id.to_ascii_lowercase().starts_with(&format!(
            "/subscriptions/{}/",
            self.subscription_id.to_ascii_lowercase()
        )) {
            bad(
                "vnet_id",
                format!(
                    "`{}` is not in subscription {}",
                    self.vnet_id, self.subscription_id
                ),
            );
        }
        if self.subnet_ids.is_empty() {
            bad("subnet_ids", "at least one subnet is needed".to_string());
        }
        let subnet_prefix = format!("{}/subnets/", self.vnet_id.to_ascii_lowercase());
        for s in &self.subnet_ids {
            let rest = s.to_ascii_lowercase();
            let name = rest.strip_prefix(&subnet_prefix).unwrap_or_default();
            if name.is_empty() || name.contains('/') {
                bad("subnet_ids", format!("`{s}` is not a subnet of the VNet"));
            }
        }
        if let Some(kv) = &self.key_vault_id
            && !is_resource_id(kv, "microsoft.keyvault/vaults")
        {
            bad(
                "key_vault_id",
                format!("`{kv}` is not a Key Vault resource id (use None to have one created)"),
            );
        }
        let ext = &self.external_id;
        if ext.is_empty()
            || ext.len() > 64
            || !ext
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            bad(
                "external_id",
                "must be 1 to 64 letters, digits, '.', '_' or '-'".to_string(),
            );
        }
        if !is_resource_id(
            &self.metadata_service_id,
            "microsoft.network/privatelinkservices",
        ) {
            bad(
                "metadata_service_id",
                format!(
                    "`{}` is not a Private Link Service resource id",
                    self.metadata_service_id
                ),
            );
        }
        if !is_resource_id(
            &self.container_registry_id,
            "microsoft.containerregistry/registries",
        ) {
            bad(
                "container_registry_id",
                format!(
                    "`{}` is not a container registry resource id",
                    self.container_registry_id
                ),
            );
        }
        for r in &self.control_plane_ip_ranges {
            if !is_ip_rule(r) {
                bad(
                    "control_plane_ip_ranges",
                    format!("`{r}` is not an IPv4 address or a CIDR range of /30 or wider"),
                );
            }
        }
        out
    }

    /// The first of [`BootstrapInputs::problems`], if any.
    pub fn validate(&self) -> Result<(), InputError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Name of the key that seals connector credentials (`culvert_azure::keyvault::CREDENTIALS_KEY`).
pub const CREDENTIALS_KEY_NAME: &str = "culvert-credentials";
/// Name of the key that wraps buffer data keys (`culvert_azure::keyvault::BUFFER_KEY`).
pub const BUFFER_KEY_NAME: &str = "culvert-buffer";

/// An input the module would refuse (its variable validations) or that would fail in Azure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InputError {
    /// The `BootstrapInputs` field.
    pub field: &'static str,
    /// What is wrong with it, and what is expected.
    pub problem: String,
}

/// Every way this bundle differs from the published BYOC guide's Terraform, and why.
pub const FIXES: &[&str] = &[
    "The networking entries of the role's actions list had no commas between them, a syntax error that stopped `terraform plan`; the list is now generated from the control plane's operation catalogue.",
    "The role's actions are exactly the ARM actions the control plane calls (least privilege). Added: `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action` (attaching identities to scale sets and container groups), identity read, VNet, subnet and private endpoint read, VNet peering read/write/delete and role-assignment read. Removed what it never calls: storage account management, list-keys and SAS, registry pull (the identities pull, not the control plane), disks, scale-set extensions, VM and network-interface reads, container exec/start/stop/restart, Key Vault read, SQL database reads.",
    "The role has no data actions: the Key Vault data actions only matter to vaults in Azure RBAC mode (this vault uses access policies) and the control plane reads and writes no blobs.",
    "The custom role is defined at the resource group, where it is assigned, instead of at the subscription.",
    "A VNet in another resource group: the role's assignable scopes add that resource group and a second role assignment (count-gated) grants the role on the VNet itself. The guide parsed the VNet's resource group but granted nothing there, so joining its subnets failed with LinkedAuthorizationFailed. Assignable scopes cannot name a single resource, hence the resource group as assignable scope and the VNet as assignment scope.",
    "The role assignment carries no condition. The guide's `@Request[Microsoft.Authorization/roleAssignments:...]` condition only applies to role-assignment writes, which the role does not hold, and Azure supports assignment conditions only for storage data actions and role-assignment writes; this role holds neither. The external id moved to the private endpoint's request message and the tags.",
    "The role's name includes the environment id: custom role names are unique across a tenant, and two resource groups of the same name (two environments, or two subscriptions) collided.",
    "The control plane's Key Vault access policy names the vault's tenant (yours, where Culvert's service principal lives), not Culvert's tenant.",
    "Key Vault permissions follow what the code does: the control plane only encrypts credentials (key Encrypt; the guide's Get, List and secret Set/List were never used and secret List would reveal every secret name); agents decrypt credentials and wrap/unwrap buffer data keys (Decrypt, WrapKey, UnwrapKey; no secret access); validation containers only decrypt (Decrypt).",
    "The guide created no keys, so the control plane had nothing to encrypt with: the module creates `culvert-credentials` (encrypt/decrypt only) and `culvert-buffer` (wrapKey/unwrapKey only), RSA 3072, and an access policy that lets the account running Terraform create them in a vault it creates.",
    "Deleted keys stay soft-deleted (`purge_soft_deleted_keys_on_destroy = false`): with purge protection on, the provider's default purge on destroy fails.",
    "The vault's firewall admitted only the agent subnets, which locked the control plane out of encrypting: `ip_rules` holds `control_plane_ip_ranges`, plus `deployer_ip_ranges` for the machine running Terraform; the agent subnets need the `Microsoft.KeyVault` service endpoint.",
    "The vault's name comes from the environment id: vault names are global, and the guide's md5 of the resource group name collided between customers using the same resource group name.",
    "The private endpoint to Culvert's Private Link Service is a manual connection (`is_manual_connection = true`, `request_message = \"culvert:<environment id>:<external id>\"`) that Culvert approves at registration, and sets no `subresource_names` (those are for PaaS resources).",
    "The AcrPull assignments are scoped to the registry's resource id; the guide built a subscription path out of Culvert's tenant id and a guessed resource group.",
    "The agents' HTTPS rule to the metadata service targets the private endpoint's IP (`/32`); `PrivateEndpoint` is not a service tag.",
    "The agents' NSG is associated with every agent subnet; the guide never associated it, so its rules applied nowhere.",
    "NSG rules are separate `azurerm_network_security_rule` resources: inline `security_rule` blocks are authoritative, so re-applying would delete the per-connector rules the network steps add to this NSG.",
    "The `bootstrap_timestamp` output (`timestamp()`) is gone: it changed on every plan.",
    "Unused parts are gone: the `azuread` provider, `data \"azurerm_subnet\"`, `data \"azurerm_subscription\"` and the `existing_kv_rg` local.",
    "Resource ids are parsed case-insensitively (`lower()` before `index(..., \"resourcegroups\")`): ARM returns `resourcegroups` as often as `resourceGroups`.",
    "The provider is pinned to `var.subscription_id`; the guide asked for a subscription id but applied to whichever subscription the Azure CLI had selected.",
    "Preconditions stop the plan early when the VNet is in another subscription or region or a subnet is not in the VNet, and every id variable is validated.",
    "Outputs carry what registration needs: role definition id, both role assignment ids, each identity's resource, client and principal ids, the vault's id and URI, both key ids, the private endpoint's id and IP, the agents' NSG id.",
    "The README has Culvert's application get a service principal in your tenant before the apply (`az ad sp create`); without it the role assignment and the access policy have no principal.",
    "azurerm provider 4.x instead of the guide's 3.x; 4.x requires the explicit subscription the provider is now pinned to.",
];

const ROLE_ACTIONS_MARK: &str = "%%ROLE_ACTIONS%%";
const IDENTITIES_MARK: &str = "%%IDENTITIES%%";
const ACCESS_POLICIES_MARK: &str = "%%ACCESS_POLICIES%%";
const ACR_PULL_MARK: &str = "%%ACR_PULL%%";

/// The managed identities: resource name, name prefix, what it is attached to.
const IDENTITIES: &[(&str, &str, &str)] = &[
    (
        "agent",
        "culvert-agent-identity",
        "Attached to the agents' scale set.",
    ),
    (
        "validation",
        "culvert-validation-identity",
        "Attached to the container groups that validate a connector before it runs.",
    ),
];

/// The access policies on the vault: resource name, principal, key permissions, why.
const ACCESS_POLICIES: &[(&str, &str, &str, &str)] = &[
    (
        "control_plane",
        "var.culvert_principal_id",
        r#"["Encrypt"]"#,
        "The control plane only ever encrypts credentials with the key; it cannot decrypt them.\n\
         # The vault is in your tenant, so is the policy, whoever's application the principal is.",
    ),
    (
        "agent",
        "azurerm_user_assigned_identity.agent.principal_id",
        r#"["Decrypt", "WrapKey", "UnwrapKey"]"#,
        "Agents open credentials and wrap and unwrap their buffers' data keys.",
    ),
    (
        "validation",
        "azurerm_user_assigned_identity.validation.principal_id",
        r#"["Decrypt"]"#,
        "Validations open credentials to test them, and touch no buffer.",
    ),
];

fn identity_tf(name: &str, prefix: &str, comment: &str) -> String {
    format!(
        r#"# {comment}
resource "azurerm_user_assigned_identity" "{name}" {{
  name                = "{prefix}-${{var.resource_group_name}}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = local.common_tags
}}
"#
    )
}

fn access_policy_tf(name: &str, object_id: &str, permissions: &str, comment: &str) -> String {
    format!(
        r#"# {comment}
resource "azurerm_key_vault_access_policy" "{name}" {{
  key_vault_id    = local.key_vault_id
  tenant_id       = data.azurerm_client_config.current.tenant_id
  object_id       = {object_id}
  key_permissions = {permissions}
}}
"#
    )
}

/// Lets identity `identity` pull agent images from Culvert's registry.
fn acr_pull_tf(identity: &str) -> String {
    format!(
        r#"resource "azurerm_role_assignment" "{identity}_acr_pull" {{
  scope                = var.culvert_container_registry_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.{identity}.principal_id
  principal_type       = "ServicePrincipal"
}}
"#
    )
}

/// `blocks` one after another, separated by blank lines.
fn blocks(blocks: impl IntoIterator<Item = String>) -> String {
    blocks.into_iter().collect::<Vec<_>>().join("\n")
}

/// The module. The `%%…%%` marks are substituted; everything else comes from variables.
const MAIN_TF: &str = r##"# Culvert bring-your-own-cloud bootstrap for Azure.
#
# Creates what Culvert's control plane needs to run replication agents in your VNet, and
# nothing more: a custom role holding exactly the ARM actions the control plane calls, managed
# identities for the agents and the validation containers, a Key Vault (unless you bring one)
# with the two keys that protect connector credentials and buffers, the agents' network
# security group, and a private endpoint to Culvert's metadata service. Every value is in
# terraform.tfvars; this file is the same for every environment.

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
  }
}

provider "azurerm" {
  # Pinned, so that `az account set` to another subscription cannot redirect the apply.
  subscription_id = var.subscription_id
  features {
    key_vault {
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = true
      # The vault has purge protection: purging its keys on destroy would fail.
      purge_soft_deleted_keys_on_destroy = false
      recover_soft_deleted_keys          = true
    }
  }
}

# =============================================================================
# Inputs
# =============================================================================

variable "subscription_id" {
  description = "Your Azure subscription, where everything below is created"
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a subscription id (a GUID)."
  }
}

variable "environment_id" {
  description = "Culvert's id of this environment"
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.environment_id))
    error_message = "environment_id must be the environment's id (a GUID) as the Culvert console shows it."
  }
}

variable "location" {
  description = "Azure region of the VNet, in its short form (for example eastus2)"
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be a region's short name, such as eastus2 or westeurope."
  }
}

variable "resource_group_name" {
  description = "Existing resource group where Culvert's resources are created and its agents run"
  type        = string
  validation {
    # Identity names are built from it, and they allow only these characters.
    condition     = can(regex("^[a-zA-Z0-9_-]{1,90}$", var.resource_group_name))
    error_message = "resource_group_name must be 1 to 90 letters, digits, hyphens or underscores."
  }
}

variable "vnet_id" {
  description = "Resource id of your existing VNet where the agents run"
  type        = string
  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\\.network/virtualnetworks/[^/]+$", var.vnet_id))
    error_message = "vnet_id must look like /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/NAME."
  }
}

variable "private_subnet_ids" {
  description = "Resource ids of the VNet's subnets where agents and the private endpoint go; the first one holds the private endpoint"
  type        = list(string)
  validation {
    condition     = length(var.private_subnet_ids) > 0
    error_message = "At least one subnet must be given."
  }
  validation {
    condition     = alltrue([for s in var.private_subnet_ids : can(regex("(?i)^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\\.network/virtualnetworks/[^/]+/subnets/[^/]+$", s))])
    error_message = "Every subnet id must look like .../virtualNetworks/NAME/subnets/SUBNET."
  }
}

variable "credentials_key_vault_id" {
  description = "Resource id of an existing Key Vault (access-policy mode) to hold Culvert's keys; empty to create one"
  type        = string
  default     = ""
  validation {
    condition     = var.credentials_key_vault_id == "" || can(regex("(?i)^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\\.keyvault/vaults/[^/]+$", var.credentials_key_vault_id))
    error_message = "credentials_key_vault_id must be empty or look like /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/NAME."
  }
}

variable "external_id" {
  description = "Value from the Culvert console that ties this bootstrap to the environment"
  type        = string
  sensitive   = true
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,64}$", var.external_id))
    error_message = "external_id must be the value the Culvert console shows (letters, digits, '.', '_', '-')."
  }
}

variable "culvert_tenant_id" {
  description = "Entra tenant of Culvert's control-plane application"
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.culvert_tenant_id))
    error_message = "culvert_tenant_id must be a tenant id (a GUID)."
  }
}

variable "culvert_app_id" {
  description = "Application (client) id of Culvert's multi-tenant control-plane application"
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.culvert_app_id))
    error_message = "culvert_app_id must be an application id (a GUID)."
  }
}

variable "culvert_principal_id" {
  description = "Object id of the service principal of Culvert's application in your tenant"
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.culvert_principal_id))
    error_message = "culvert_principal_id must be an object id (a GUID)."
  }
}

variable "culvert_metadata_service_id" {
  description = "Resource id of the Private Link Service of Culvert's metadata service"
  type        = string
  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\\.network/privatelinkservices/[^/]+$", var.culvert_metadata_service_id))
    error_message = "culvert_metadata_service_id must be a Private Link Service resource id."
  }
}

variable "culvert_container_registry_id" {
  description = "Resource id of the container registry that serves Culvert's agent images"
  type        = string
  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\\.containerregistry/registries/[^/]+$", var.culvert_container_registry_id))
    error_message = "culvert_container_registry_id must be a container registry resource id."
  }
}

variable "control_plane_ip_ranges" {
  description = "Public IPv4 addresses or ranges the control plane reaches the Key Vault from"
  type        = list(string)
  validation {
    # Key Vault takes single addresses without a prefix and refuses /31 and /32 ranges.
    condition     = alltrue([for r in var.control_plane_ip_ranges : can(cidrhost(strcontains(r, "/") ? r : "${r}/32", 0)) && !endswith(r, "/31") && !endswith(r, "/32")])
    error_message = "control_plane_ip_ranges must be IPv4 addresses or CIDR ranges of /30 or wider."
  }
}

variable "deployer_ip_ranges" {
  description = "Public IPv4 addresses of the machine running Terraform, when it is not in one of the agent subnets: it creates the vault's keys"
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for r in var.deployer_ip_ranges : can(cidrhost(strcontains(r, "/") ? r : "${r}/32", 0)) && !endswith(r, "/31") && !endswith(r, "/32")])
    error_message = "deployer_ip_ranges must be IPv4 addresses or CIDR ranges of /30 or wider."
  }
}

# =============================================================================
# Derived values
# =============================================================================

locals {
  # ARM ids are case-insensitive and come back as `resourcegroups` as often as
  # `resourceGroups`: find the segments in a lowered copy, take the values from the original.
  vnet_parts             = split("/", var.vnet_id)
  vnet_parts_lower       = split("/", lower(var.vnet_id))
  vnet_subscription_id   = local.vnet_parts_lower[index(local.vnet_parts_lower, "subscriptions") + 1]
  vnet_resource_group    = local.vnet_parts[index(local.vnet_parts_lower, "resourcegroups") + 1]
  vnet_name              = local.vnet_parts[length(local.vnet_parts) - 1]
  vnet_resource_group_id = "/subscriptions/${local.vnet_subscription_id}/resourceGroups/${local.vnet_resource_group}"
  vnet_in_other_rg       = lower(local.vnet_resource_group) != lower(var.resource_group_name)

  primary_subnet_id = var.private_subnet_ids[0]

  create_key_vault = var.credentials_key_vault_id == ""
  # Vault names are global DNS names: derived from the environment id, which is unique,
  # rather than from the resource group name, which other customers may share.
  key_vault_name      = "culvert-kv-${substr(replace(lower(var.environment_id), "-", ""), 0, 12)}"
  existing_vault_name = local.create_key_vault ? "" : element(split("/", var.credentials_key_vault_id), 8)
  key_vault_id        = local.create_key_vault ? azurerm_key_vault.credentials[0].id : var.credentials_key_vault_id
  key_vault_uri       = local.create_key_vault ? azurerm_key_vault.credentials[0].vault_uri : "https://${lower(local.existing_vault_name)}.vault.azure.net/"

  common_tags = {
    "culvert:environment-id" = var.environment_id
    "culvert:external-id"    = var.external_id
    "culvert:managed"        = "true"
  }
}

data "azurerm_client_config" "current" {}

data "azurerm_resource_group" "target" {
  name = var.resource_group_name
}

data "azurerm_virtual_network" "agents" {
  name                = local.vnet_name
  resource_group_name = local.vnet_resource_group

  lifecycle {
    precondition {
      condition     = local.vnet_subscription_id == lower(var.subscription_id)
      error_message = "vnet_id must be a VNet of subscription ${var.subscription_id}."
    }
    precondition {
      condition     = alltrue([for s in var.private_subnet_ids : startswith(lower(s), "${lower(var.vnet_id)}/subnets/")])
      error_message = "Every id in private_subnet_ids must be a subnet of vnet_id."
    }
    postcondition {
      condition     = lower(replace(self.location, " ", "")) == var.location
      error_message = "The VNet is in ${self.location}, not in ${var.location}: the agents and the private endpoint must be in the VNet's region."
    }
  }
}

# =============================================================================
# The control plane's role: exactly the ARM actions it calls
# =============================================================================

resource "azurerm_role_definition" "control_plane" {
  # Role names are unique across the whole tenant.
  name        = "culvert-control-plane-${var.environment_id}"
  scope       = data.azurerm_resource_group.target.id
  description = "Lets Culvert's control plane run replication agents for environment ${var.environment_id}"

  permissions {
    actions = [
%%ROLE_ACTIONS%%
    ]
    not_actions = []
    # No data actions: the vault uses access policies and the control plane reads no blobs.
    data_actions     = []
    not_data_actions = []
  }

  # Assignable scopes can only be resource groups or wider: the VNet's resource group is
  # listed, and the assignment there is made on the VNet alone.
  assignable_scopes = concat([data.azurerm_resource_group.target.id], local.vnet_in_other_rg ? [local.vnet_resource_group_id] : [])
}

resource "azurerm_role_assignment" "control_plane" {
  scope              = data.azurerm_resource_group.target.id
  role_definition_id = azurerm_role_definition.control_plane.role_definition_resource_id
  principal_id       = var.culvert_principal_id
  principal_type     = "ServicePrincipal"
  description        = "Culvert control plane (application ${var.culvert_app_id} of tenant ${var.culvert_tenant_id}), environment ${var.environment_id}"
}

# Scale sets and containers join the VNet's subnets, and peerings are created on the VNet:
# when it lives in another resource group, the role is granted on the VNet itself too.
resource "azurerm_role_assignment" "control_plane_vnet" {
  count              = local.vnet_in_other_rg ? 1 : 0
  scope              = data.azurerm_virtual_network.agents.id
  role_definition_id = azurerm_role_definition.control_plane.role_definition_resource_id
  principal_id       = var.culvert_principal_id
  principal_type     = "ServicePrincipal"
  description        = "Culvert control plane (application ${var.culvert_app_id} of tenant ${var.culvert_tenant_id}), environment ${var.environment_id}, agents' VNet"
}

# =============================================================================
# Managed identities
# =============================================================================

%%IDENTITIES%%

# =============================================================================
# Key Vault and keys
# =============================================================================

resource "azurerm_key_vault" "credentials" {
  count                      = local.create_key_vault ? 1 : 0
  name                       = local.key_vault_name
  location                   = var.location
  resource_group_name        = var.resource_group_name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  soft_delete_retention_days = 90
  purge_protection_enabled   = true

  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
    # The control plane encrypts from its public addresses; Terraform creates the keys from
    # the deployer's. The agent subnets need the Microsoft.KeyVault service endpoint.
    ip_rules                   = concat(var.control_plane_ip_ranges, var.deployer_ip_ranges)
    virtual_network_subnet_ids = var.private_subnet_ids
  }

  tags = local.common_tags
}

# Whoever runs Terraform creates the keys. Only on a vault this module creates: on your own
# vault you already hold access, and a second policy for the same principal would conflict.
resource "azurerm_key_vault_access_policy" "deployer" {
  count           = local.create_key_vault ? 1 : 0
  key_vault_id    = local.key_vault_id
  tenant_id       = data.azurerm_client_config.current.tenant_id
  object_id       = data.azurerm_client_config.current.object_id
  key_permissions = ["Create", "Delete", "Get", "GetRotationPolicy", "Recover", "Update"]
}

# Seals connector credentials: the control plane encrypts, agents and validations decrypt.
resource "azurerm_key_vault_key" "credentials" {
  name         = "culvert-credentials"
  key_vault_id = local.key_vault_id
  key_type     = "RSA"
  key_size     = 3072
  key_opts     = ["encrypt", "decrypt"]
  tags         = local.common_tags
  depends_on   = [azurerm_key_vault_access_policy.deployer]
}

# Wraps the data keys of the agents' buffers.
resource "azurerm_key_vault_key" "buffer" {
  name         = "culvert-buffer"
  key_vault_id = local.key_vault_id
  key_type     = "RSA"
  key_size     = 3072
  key_opts     = ["wrapKey", "unwrapKey"]
  tags         = local.common_tags
  depends_on   = [azurerm_key_vault_access_policy.deployer]
}

%%ACCESS_POLICIES%%

# =============================================================================
# Private endpoint to Culvert's metadata service
# =============================================================================

resource "azurerm_private_endpoint" "metadata" {
  name                = "culvert-metadata-endpoint-${var.resource_group_name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = local.primary_subnet_id

  private_service_connection {
    name                           = "culvert-metadata-connection"
    private_connection_resource_id = var.culvert_metadata_service_id
    # Culvert approves the connection when it registers the environment, recognising it by
    # this message; a Private Link Service takes no subresource names.
    is_manual_connection = true
    request_message      = "culvert:${var.environment_id}:${var.external_id}"
  }

  tags = local.common_tags
}

# =============================================================================
# The agents' network security group
# =============================================================================

# A subnet has one NSG: per-connector rules are added to this one later. The rules below are
# separate resources so that re-applying this module leaves those connector rules in place.
resource "azurerm_network_security_group" "agent" {
  name                = "culvert-agent-nsg-${var.resource_group_name}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = local.common_tags
}

resource "azurerm_network_security_rule" "agent_metadata" {
  name                        = "culvert-metadata-https"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.agent.name
  priority                    = 100
  direction                   = "Outbound"
  access                      = "Allow"
  protocol                    = "Tcp"
  source_port_range           = "*"
  destination_port_range      = "443"
  source_address_prefix       = "VirtualNetwork"
  destination_address_prefix  = "${azurerm_private_endpoint.metadata.private_service_connection[0].private_ip_address}/32"
  description                 = "Agents to Culvert's metadata service through the private endpoint"
}

resource "azurerm_network_security_rule" "agent_storage" {
  name                        = "culvert-storage-https"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.agent.name
  priority                    = 110
  direction                   = "Outbound"
  access                      = "Allow"
  protocol                    = "Tcp"
  source_port_range           = "*"
  destination_port_range      = "443"
  source_address_prefix       = "VirtualNetwork"
  destination_address_prefix  = "Storage.${var.location}"
  description                 = "Agents to Azure Storage, for their buffers"
}

resource "azurerm_network_security_rule" "agent_key_vault" {
  name                        = "culvert-key-vault-https"
  resource_group_name         = var.resource_group_name
  network_security_group_name = azurerm_network_security_group.agent.name
  priority                    = 120
  direction                   = "Outbound"
  access                      = "Allow"
  protocol                    = "Tcp"
  source_port_range           = "*"
  destination_port_range      = "443"
  source_address_prefix       = "VirtualNetwork"
  destination_address_prefix  = "AzureKeyVault.${var.location}"
  description                 = "Agents to Key Vault, to open credentials and buffer keys"
}

resource "azurerm_subnet_network_security_group_association" "agent" {
  for_each                  = toset(var.private_subnet_ids)
  subnet_id                 = each.value
  network_security_group_id = azurerm_network_security_group.agent.id
}

# =============================================================================
# Pulling agent images from Culvert's registry
# =============================================================================

%%ACR_PULL%%

# =============================================================================
# What registration reads back
# =============================================================================

output "environment_id" {
  description = "Culvert's id of this environment"
  value       = var.environment_id
}

output "control_plane_role_definition_id" {
  description = "Resource id of the control plane's custom role"
  value       = azurerm_role_definition.control_plane.role_definition_resource_id
}

output "control_plane_role_assignment_id" {
  description = "Id of the role assignment on the resource group"
  value       = azurerm_role_assignment.control_plane.id
}

output "control_plane_vnet_role_assignment_id" {
  description = "Id of the role assignment on the VNet, when it is in another resource group (else null)"
  value       = one(azurerm_role_assignment.control_plane_vnet[*].id)
}

output "agent_identity_resource_id" {
  description = "Resource id of the agents' managed identity"
  value       = azurerm_user_assigned_identity.agent.id
}

output "agent_identity_client_id" {
  description = "Client id of the agents' managed identity"
  value       = azurerm_user_assigned_identity.agent.client_id
}

output "agent_identity_principal_id" {
  description = "Principal (object) id of the agents' managed identity"
  value       = azurerm_user_assigned_identity.agent.principal_id
}

output "validation_identity_resource_id" {
  description = "Resource id of the validation containers' managed identity"
  value       = azurerm_user_assigned_identity.validation.id
}

output "validation_identity_client_id" {
  description = "Client id of the validation containers' managed identity"
  value       = azurerm_user_assigned_identity.validation.client_id
}

output "validation_identity_principal_id" {
  description = "Principal (object) id of the validation containers' managed identity"
  value       = azurerm_user_assigned_identity.validation.principal_id
}

output "key_vault_id" {
  description = "Resource id of the Key Vault holding Culvert's keys"
  value       = local.key_vault_id
}

output "key_vault_uri" {
  description = "URI of the Key Vault holding Culvert's keys"
  value       = local.key_vault_uri
}

output "credentials_key_id" {
  description = "Versionless id of the key that seals connector credentials"
  value       = azurerm_key_vault_key.credentials.versionless_id
}

output "buffer_key_id" {
  description = "Versionless id of the key that wraps buffer data keys"
  value       = azurerm_key_vault_key.buffer.versionless_id
}

output "metadata_endpoint_id" {
  description = "Resource id of the private endpoint to Culvert's metadata service"
  value       = azurerm_private_endpoint.metadata.id
}

output "metadata_endpoint_ip" {
  description = "Private IP address of the metadata service in your VNet"
  value       = azurerm_private_endpoint.metadata.private_service_connection[0].private_ip_address
}

output "agent_nsg_id" {
  description = "Resource id of the agents' network security group"
  value       = azurerm_network_security_group.agent.id
}
"##;

/// Render the bundle for `inputs`; `role_actions` are the ARM actions of the control plane's
/// customer-scope operations (`culvert_arm::operations::customer_role_actions()`).
pub fn render(inputs: &BootstrapInputs, role_actions: &[&str]) -> Bundle {
    Bundle {
        files: vec![
            ("main.tf".to_string(), main_tf(role_actions)),
            ("terraform.tfvars".to_string(), tfvars(inputs)),
            ("README.md".to_string(), readme(inputs)),
        ],
    }
}

/// `main.tf` with the role's actions (duplicates, which ARM compares case-insensitively, dropped).
pub fn main_tf(role_actions: &[&str]) -> String {
    let mut seen = HashSet::new();
    let mut lines = String::new();
    for action in role_actions {
        if seen.insert(action.to_ascii_lowercase()) {
            lines.push_str("      ");
            lines.push_str(&hcl_string(action));
            lines.push_str(",\n");
        }
    }
    let identities = blocks(
        IDENTITIES
            .iter()
            .map(|(name, prefix, comment)| identity_tf(name, prefix, comment)),
    );
    let policies = blocks(
        ACCESS_POLICIES
            .iter()
            .map(|(name, object_id, perms, comment)| {
                access_policy_tf(name, object_id, perms, comment)
            }),
    );
    let acr_pull = blocks(IDENTITIES.iter().map(|(name, ..)| acr_pull_tf(name)));
    MAIN_TF
        .replace(&format!("{ROLE_ACTIONS_MARK}\n"), &lines)
        .replace(&format!("{IDENTITIES_MARK}\n"), &identities)
        .replace(&format!("{ACCESS_POLICIES_MARK}\n"), &policies)
        .replace(&format!("{ACR_PULL_MARK}\n"), &acr_pull)
}

/// A single `/32` address is written bare: Key Vault refuses `/32` ranges.
fn ip_rule(range: &str) -> &str {
    range.strip_suffix("/32").unwrap_or(range)
}

fn hcl_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(hcl_string).collect();
    if items.is_empty() {
        return "[]".to_string();
    }
    let mut out = String::from("[\n");
    for item in items {
        out.push_str("  ");
        out.push_str(&item);
        out.push_str(",\n");
    }
    out.push(']');
    out
}

/// `terraform.tfvars` with this environment's values.
pub fn tfvars(inputs: &BootstrapInputs) -> String {
    let kv = inputs.key_vault_id.as_deref().unwrap_or("");
    let kv_note = if kv.is_empty() {
        "# Empty: the module creates a Key Vault for Culvert's keys."
    } else {
        "# Your Key Vault (access-policy mode); the module adds Culvert's keys and access policies."
    };
    format!(
        r#"# Culvert environment "{name}" ({id}).
# Values for main.tf; main.tf itself is the same for every environment.

subscription_id     = {sub}
environment_id      = {env}
location            = {location}
resource_group_name = {rg}
vnet_id             = {vnet}
private_subnet_ids = {subnets}

{kv_note}
credentials_key_vault_id = {kv}

external_id                   = {external}
culvert_tenant_id             = {tenant}
culvert_app_id                = {app}
culvert_principal_id          = {principal}
culvert_metadata_service_id   = {pls}
culvert_container_registry_id = {acr}
control_plane_ip_ranges = {ranges}

# The public IPv4 address of the machine running Terraform, if it is not in one of the agent
# subnets and the module creates the Key Vault: Terraform creates the keys through the vault's
# firewall. For example ["203.0.113.7"].
deployer_ip_ranges = []
"#,
        name = one_line(&inputs.environment_name),
        id = one_line(&inputs.environment_id),
        sub = hcl_string(&inputs.subscription_id),
        env = hcl_string(&inputs.environment_id),
        location = hcl_string(&inputs.location),
        rg = hcl_string(&inputs.resource_group),
        vnet = hcl_string(&inputs.vnet_id),
        subnets = hcl_list(inputs.subnet_ids.iter().map(String::as_str)),
        kv = hcl_string(kv),
        external = hcl_string(&inputs.external_id),
        tenant = hcl_string(&inputs.culvert_tenant_id),
        app = hcl_string(&inputs.culvert_app_id),
        principal = hcl_string(&inputs.culvert_principal_id),
        pls = hcl_string(&inputs.metadata_service_id),
        acr = hcl_string(&inputs.container_registry_id),
        ranges = hcl_list(inputs.control_plane_ip_ranges.iter().map(|r| ip_rule(r))),
    )
}

fn key_vault_name(environment_id: &str) -> String {
    let compact: String = environment_id
        .to_ascii_lowercase()
        .chars()
        .filter(|c| *c != '-')
        .take(12)
        .collect();
    format!("culvert-kv-{compact}")
}

/// The ARM ids the module creates for `inputs`, built as `main.tf` builds their names.
pub fn resource_names(inputs: &BootstrapInputs) -> ExpectedResources {
    let rg = &inputs.resource_group;
    let rg_id = format!(
        "/subscriptions/{}/resourceGroups/{rg}",
        inputs.subscription_id
    );
    let (key_vault_id, vault_name) = match inputs.key_vault_id.as_deref() {
        Some(id) if !id.is_empty() => (
            id.to_string(),
            id.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        _ => {
            let name = key_vault_name(&inputs.environment_id);
            (
                format!("{rg_id}/providers/Microsoft.KeyVault/vaults/{name}"),
                name,
            )
        }
    };
    ExpectedResources {
        agent_identity_id: format!(
            "{rg_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/culvert-agent-identity-{rg}"
        ),
        validation_identity_id: format!(
            "{rg_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/culvert-validation-identity-{rg}"
        ),
        agent_nsg_id: format!(
            "{rg_id}/providers/Microsoft.Network/networkSecurityGroups/culvert-agent-nsg-{rg}"
        ),
        private_endpoint_id: format!(
            "{rg_id}/providers/Microsoft.Network/privateEndpoints/culvert-metadata-endpoint-{rg}"
        ),
        key_vault_uri: format!(
            "https://{}.vault.azure.net/",
            vault_name.to_ascii_lowercase()
        ),
        key_vault_id,
        role_definition_name: format!("culvert-control-plane-{}", inputs.environment_id),
    }
}

/// Where the module makes the control plane's role assignable and where it assigns it, as
/// `main.tf` decides: the resource group, plus the VNet's resource group (assignable) and the
/// VNet itself (assigned) when the VNet lives in another resource group.
pub fn role_scopes(inputs: &BootstrapInputs) -> (Vec<String>, Vec<String>) {
    let rg_id = format!(
        "/subscriptions/{}/resourceGroups/{}",
        inputs.subscription_id, inputs.resource_group
    );
    let parts: Vec<&str> = inputs.vnet_id.split('/').collect();
    let after = |key: &str| {
        parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case(key))
            .and_then(|i| parts.get(i + 1))
            .copied()
            .unwrap_or_default()
    };
    let (vnet_sub, vnet_rg) = (after("subscriptions"), after("resourceGroups"));
    if vnet_rg.eq_ignore_ascii_case(&inputs.resource_group) {
        return (vec![rg_id.clone()], vec![rg_id]);
    }
    let vnet_rg_id = format!("/subscriptions/{vnet_sub}/resourceGroups/{vnet_rg}");
    (
        vec![rg_id.clone(), vnet_rg_id],
        vec![rg_id, inputs.vnet_id.clone()],
    )
}

/// The README: what the bundle creates, how to apply it, what happens next, how it differs
/// from the published guide.
pub fn readme(inputs: &BootstrapInputs) -> String {
    let names = resource_names(inputs);
    let name = one_line(&inputs.environment_name);
    let sub = one_line(&inputs.subscription_id);
    let rg = one_line(&inputs.resource_group);
    let app = one_line(&inputs.culvert_app_id);
    let principal = one_line(&inputs.culvert_principal_id);
    let (vault, vault_needs) = match inputs.key_vault_id.as_deref() {
        Some(id) if !id.is_empty() => (
            format!("your Key Vault `{}`", one_line(id)),
            format!(
                "Your Key Vault uses the access-policy permission model, lets your account create \
                 keys (Create, Get, Delete, GetRotationPolicy, Recover, Update), and its firewall \
                 admits the machine running Terraform, the agent subnets and the control plane's \
                 addresses ({}).",
                one_line(&inputs.control_plane_ip_ranges.join(", "))
            ),
        ),
        _ => (
            format!("a new Key Vault `{}`", names.key_vault_uri),
            "Every agent subnet has the `Microsoft.KeyVault` service endpoint (the new vault's \
             firewall admits the agent subnets), and Terraform runs either from one of those \
             subnets or from an address you list in `deployer_ip_ranges` (it creates the keys \
             through the vault's firewall)."
                .to_string(),
        ),
    };
    let mut fixes = String::new();
    for fix in FIXES {
        fixes.push_str("- ");
        fixes.push_str(fix);
        fixes.push('\n');
    }
    format!(
        r#"# Culvert bootstrap: environment "{name}"

This Terraform module prepares subscription `{sub}` for Culvert's replication agents. It
creates no compute: agents start later, when you deploy a connector. It creates:

- a custom role `{role}` holding exactly the ARM actions Culvert's control plane calls,
  assigned to Culvert's service principal on resource group `{rg}` (and on your VNet when the
  VNet is in another resource group);
- managed identities for the agents and for the containers that validate connectors, with
  pull access to Culvert's container registry;
- two keys in {vault}: `{cred_key}` seals connector credentials (the control plane
  may only encrypt with it, agents decrypt) and `{buffer_key}` wraps the agents' buffer keys;
- the agents' network security group `culvert-agent-nsg-{rg}`, associated with the agent
  subnets;
- a private endpoint to Culvert's metadata service in the first agent subnet.

`main.tf` is the same for every environment; `terraform.tfvars` holds this environment's
values.

## Before you apply

- Terraform 1.5 or later and the Azure CLI.
- Your account can create role definitions and role assignments and the resources above in
  resource group `{rg}` and on the VNet (Owner, or Contributor with User Access
  Administrator), and can create role assignments on Culvert's registry
  (`culvert_container_registry_id`), where the two AcrPull assignments are made.
- The agent subnets have no network security group yet: the module associates its own.
- {vault_needs}

## Apply

```sh
az login
az account set --subscription {sub}
az account show --query "{{subscription: id, tenant: tenantId, user: user.name}}" --output table

# Culvert's application needs a service principal in your tenant (once per tenant).
az ad sp show --id {app} --query id --output tsv || az ad sp create --id {app} --query id --output tsv
```

The last command must print `{principal}` (`culvert_principal_id`): the object id of
Culvert's service principal that this control plane looks for. If it prints another id, your
subscription is in another Entra tenant than the one this control plane manages: stop here and
send Culvert your tenant id (`az account show --query tenantId`). Applying with another id
would grant the role to a principal the control plane never acts as.

```sh
terraform init
terraform plan -out culvert.tfplan
terraform apply culvert.tfplan
terraform output
```

## What happens next

Once the apply completes, Culvert's control plane registers the environment on its own: it
finds the identities, the network security group, the private endpoint and the Key Vault by
their resource ids, checks its role assignment, and approves the private endpoint's
connection, whose request message names this environment. The environment turns "Ready" in
the Culvert console within a few minutes.

Each connector then comes with its own network steps: a script that adds the connector's
rules to `culvert-agent-nsg-{rg}` and to your database's network security group.

`terraform destroy` removes it all again. Keys and a vault created here stay soft-deleted for
90 days (the vault has purge protection), and applying again recovers them.

## Why the role assignment has no condition

Azure supports role assignment conditions only for storage data actions and for
role-assignment writes. Culvert's role holds neither: its control plane encrypts through
the vault's access policy, never reads or writes blobs, and cannot assign roles. A
condition would have nothing to restrict. What binds
this bootstrap to the environment is the external id in the private endpoint's request
message, which Culvert checks before it approves the connection.

## Differences from the published guide

{fixes}"#,
        role = names.role_definition_name,
        cred_key = CREDENTIALS_KEY_NAME,
        buffer_key = BUFFER_KEY_NAME,
    )
}

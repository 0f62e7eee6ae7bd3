//! ARM resource ids: `/subscriptions/{s}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`
//! with optional child `/{type}/{name}` pairs. The keywords and all comparisons are
//! case-insensitive, as in ARM; the parts keep the case they were given in.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::operations::Method;

/// Why a string is not a resource id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{id}` is not an Azure resource id of the form /subscriptions/{{id}}/resourceGroups/{{group}}/providers/{{namespace}}/{{type}}/{{name}}: {reason}"
)]
pub struct IdError {
    id: String,
    reason: &'static str,
}

/// A resource in a resource group, possibly a child of another (a subnet of a VNet).
#[derive(Debug, Clone)]
pub struct ResourceId {
    subscription: String,
    resource_group: String,
    namespace: String,
    // (type, name) from the top-level resource down; never empty.
    segments: Vec<(String, String)>,
}

fn keyword(segment: &str, expected: &str) -> bool {
    segment.eq_ignore_ascii_case(expected)
}

impl ResourceId {
    /// Parse an id; a query string or trailing slash is not accepted.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let err = |reason| IdError {
            id: id.to_owned(),
            reason,
        };
        let rest = id
            .strip_prefix('/')
            .ok_or_else(|| err("it must start with /"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("it has an empty segment"));
        }
        if parts.iter().any(|p| p.contains(['?', '#'])) {
            return Err(err("it has a query or fragment"));
        }
        if parts.len() < 8 {
            return Err(err("it is too short"));
        }
        if !keyword(parts[0], "subscriptions")
            || !keyword(parts[2], "resourceGroups")
            || !keyword(parts[4], "providers")
        {
            return Err(err(
                "expected subscriptions, resourceGroups and providers segments",
            ));
        }
        let tail = &parts[6..];
        if !tail.len().is_multiple_of(2) {
            return Err(err("a resource type has no name"));
        }
        Ok(ResourceId {
            subscription: parts[1].to_owned(),
            resource_group: parts[3].to_owned(),
            namespace: parts[5].to_owned(),
            segments: tail
                .chunks(2)
                .map(|c| (c[0].to_owned(), c[1].to_owned()))
                .collect(),
        })
    }

    /// A top-level resource; `resource_type` is `{namespace}/{type}`, e.g. `Microsoft.Network/virtualNetworks`.
    pub fn new(
        subscription: &str,
        resource_group: &str,
        resource_type: &str,
        name: &str,
    ) -> Result<Self, IdError> {
        Self::parse(&format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{resource_type}/{name}"
        ))
    }

    /// The subscription id.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The resource group name.
    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }

    /// The provider namespace, e.g. `Microsoft.Network`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The full type, e.g. `Microsoft.Network/virtualNetworks/subnets`.
    pub fn resource_type(&self) -> String {
        let mut t = self.namespace.clone();
        for (ty, _) in &self.segments {
            t.push('/');
            t.push_str(ty);
        }
        t
    }

    /// The resource's own name (the last one).
    pub fn name(&self) -> &str {
        &self.segments[self.segments.len() - 1].1
    }

    /// The names from the top-level resource down, e.g. `["vnet", "subnet"]`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|(_, n)| n.as_str())
    }

    /// The resource this one is a child of; `None` for a top-level resource.
    pub fn parent(&self) -> Option<ResourceId> {
        (self.segments.len() > 1).then(|| {
            let mut parent = self.clone();
            parent.segments.pop();
            parent
        })
    }

    /// A child resource, e.g. `vnet.child("subnets", "agents")`.
    pub fn child(&self, child_type: &str, name: &str) -> Result<ResourceId, IdError> {
        Self::parse(&format!("{self}/{child_type}/{name}"))
    }

    /// The path of an action on this resource, e.g. `{id}/deallocate`.
    pub fn action_path(&self, action: &str) -> String {
        format!("{self}/{action}")
    }

    /// The resource group's own path, `/subscriptions/{s}/resourceGroups/{rg}`.
    pub fn resource_group_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }

    /// The RBAC action a request with `method` on this resource needs, e.g.
    /// `Microsoft.Network/virtualNetworks/subnets/read`.
    pub fn rbac_action(&self, method: Method) -> String {
        format!("{}/{}", self.resource_type(), method.rbac_verb())
    }

    fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/{}",
            self.subscription, self.resource_group, self.namespace
        )?;
        for (ty, name) in &self.segments {
            write!(f, "/{ty}/{name}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ResourceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

// ARM ids are case-insensitive: the service may echo `resourcegroups` or a lower-cased type.
impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ResourceId {}

impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// The RBAC action a request needs, derived from its path alone: a resource
/// (`…/{type}/{name}`), a collection (`…/{type}`, listed with GET), a read-only view
/// (`…/{name}/instanceView`) or an action (`…/{name}/deallocate`, with POST). The path may be
/// at resource-group or subscription scope and may carry a query. `None` when no
/// `providers/{namespace}/{type}` part is found.
pub fn request_action(method: Method, path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Extension resources nest providers; the last one names the type the request addresses.
    let providers = parts.iter().rposition(|p| keyword(p, "providers"))?;
    let namespace = parts.get(providers + 1)?;
    let rest = &parts[providers + 2..];
    if rest.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut action = (*namespace).to_owned();
    for (i, segment) in rest.iter().enumerate() {
        // Even positions are types (or, last and alone, a collection, view or action).
        if i % 2 == 0 {
            action.push('/');
            action.push_str(segment);
        }
    }
    action.push('/');
    action.push_str(method.rbac_verb());
    Some(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBNET: &str = "/subscriptions/0000-1111/resourceGroups/rg-data/providers/Microsoft.Network/virtualNetworks/vnet-a/subnets/agents";

    #[test]
    fn parses_a_child_resource() {
        let id = ResourceId::parse(SUBNET).unwrap();
        assert_eq!(id.subscription(), "0000-1111");
        assert_eq!(id.resource_group(), "rg-data");
        assert_eq!(id.namespace(), "Microsoft.Network");
        assert_eq!(
            id.resource_type(),
            "Microsoft.Network/virtualNetworks/subnets"
        );
        assert_eq!(id.name(), "agents");
        assert_eq!(id.names().collect::<Vec<_>>(), ["vnet-a", "agents"]);
        assert_eq!(id.to_string(), SUBNET);
        assert_eq!(
            id.resource_group_path(),
            "/subscriptions/0000-1111/resourceGroups/rg-data"
        );
    }

    #[test]
    fn keywords_and_equality_ignore_case() {
        let lower = ResourceId::parse(&SUBNET.to_ascii_lowercase()).unwrap();
        let given = ResourceId::parse(SUBNET).unwrap();
        assert_eq!(lower, given);
        // The parts keep the case they came with.
        assert_eq!(lower.namespace(), "microsoft.network");
        let mut set = std::collections::HashSet::new();
        set.insert(given);
        assert!(set.contains(&lower));
        let other = ResourceId::parse(&SUBNET.replace("agents", "others")).unwrap();
        assert_ne!(lower, other);
    }

    #[test]
    fn builds_children_and_parents() {
        let vnet =
            ResourceId::new("s", "rg", "Microsoft.Network/virtualNetworks", "vnet-a").unwrap();
        assert_eq!(vnet.parent(), None);
        let subnet = vnet.child("subnets", "agents").unwrap();
        assert_eq!(
            subnet.resource_type(),
            "Microsoft.Network/virtualNetworks/subnets"
        );
        assert_eq!(subnet.parent(), Some(vnet.clone()));
        assert_eq!(
            vnet.action_path("peer"),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet-a/peer"
        );
        assert!(vnet.child("subnets", "a/b").is_err());
        assert!(ResourceId::new("s", "rg", "Microsoft.Network", "x").is_err());
    }

    #[test]
    fn refuses_what_is_not_an_id() {
        for bad in [
            "",
            "subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/",
            "/subscriptions/s/resourceGroups//providers/Microsoft.Network/virtualNetworks/v",
            "/subscriptions/s/groups/rg/providers/Microsoft.Network/virtualNetworks/v",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v?api-version=1",
        ] {
            let e = ResourceId::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("is not an Azure resource id"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rbac_actions_follow_the_type_and_method() {
        let id = ResourceId::parse(SUBNET).unwrap();
        assert_eq!(
            id.rbac_action(Method::Get),
            "Microsoft.Network/virtualNetworks/subnets/read"
        );
        assert_eq!(
            id.parent().unwrap().rbac_action(Method::Put),
            "Microsoft.Network/virtualNetworks/write"
        );
        assert_eq!(
            id.rbac_action(Method::Delete),
            "Microsoft.Network/virtualNetworks/subnets/delete"
        );
    }

    #[test]
    fn request_actions_cover_collections_views_and_actions() {
        let vmss = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool";
        let cases = [
            (Method::Get, vmss.to_owned(), "Microsoft.Compute/virtualMachineScaleSets/read"),
            (Method::Put, vmss.to_owned(), "Microsoft.Compute/virtualMachineScaleSets/write"),
            (
                Method::Post,
                format!("{vmss}/deallocate"),
                "Microsoft.Compute/virtualMachineScaleSets/deallocate/action",
            ),
            (
                Method::Get,
                format!("{vmss}/instanceView"),
                "Microsoft.Compute/virtualMachineScaleSets/instanceView/read",
            ),
            (
                Method::Get,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/job/containers/main/logs?tail=100".to_owned(),
                "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
            ),
            (
                Method::Get,
                "/subscriptions/s/providers/Microsoft.Sql/servers".to_owned(),
                "Microsoft.Sql/servers/read",
            ),
            (
                Method::Get,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments?$filter=principalId eq 'x'".to_owned(),
                "Microsoft.Authorization/roleAssignments/read",
            ),
            (
                Method::Get,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/privateLinkServices/pls/privateEndpointConnections".to_owned(),
                "Microsoft.Network/privateLinkServices/privateEndpointConnections/read",
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                request_action(method, &path).as_deref(),
                Some(expected),
                "{path}"
            );
        }
        assert_eq!(
            request_action(Method::Get, "/subscriptions/s/resourceGroups/rg"),
            None
        );
        assert_eq!(
            request_action(Method::Get, "/subscriptions/s/providers/Microsoft.Sql"),
            None
        );
    }
}

//! Resource Manager paths: what a request addresses, and the RBAC action it needs.
//!
//! `/subscriptions/{s}[/resourceGroups/{rg}]/providers/{ns}/{type}/{name}[/{type}/{name}]...`
//! names a resource (an even number of segments after the namespace) or, with one type more
//! than names, a collection, a view (`.../instanceView`) or an action (`POST .../deallocate`).
//! A `providers/{ns}/...` part may hang off another resource (extension resources such as
//! `{vnet id}/providers/Microsoft.Authorization/roleAssignments/{guid}`).
//!
//! Ids are case-insensitive: [`key`] is the lookup form; the text as first written is echoed.

/// The lookup form of an id or scope.
pub fn key(id: &str) -> String {
    id.trim_end_matches('/').to_ascii_lowercase()
}

/// Whether `scope` is `target` or one of its ancestors (case-insensitive, whole segments).
pub fn covers(scope: &str, target: &str) -> bool {
    let (scope, target) = (key(scope), key(target));
    scope.is_empty()
        || target == scope
        || (target.starts_with(&scope) && target.as_bytes().get(scope.len()) == Some(&b'/'))
}

/// `{namespace}/{type}/{type}...`, e.g. `Microsoft.Network/virtualNetworks/subnets`.
fn full_type(namespace: &str, types: &[String]) -> String {
    format!("{namespace}/{}", types.join("/"))
}

/// A typed resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    /// The subscription id, as written.
    pub subscription: String,
    /// The resource group, when the resource lives in one.
    pub resource_group: Option<String>,
    /// What the provider part hangs off: the subscription, the resource group, or another
    /// resource for extension resources.
    pub scope: String,
    /// The provider namespace, e.g. `Microsoft.Network`.
    pub namespace: String,
    /// Type segments, e.g. `["virtualNetworks", "subnets"]`.
    pub types: Vec<String>,
    /// One name per type.
    pub names: Vec<String>,
}

impl ResourceId {
    /// The canonical id text.
    pub fn id(&self) -> String {
        let mut s = format!("{}/providers/{}", self.scope, self.namespace);
        for (t, n) in self.types.iter().zip(&self.names) {
            s.push('/');
            s.push_str(t);
            s.push('/');
            s.push_str(n);
        }
        s
    }

    /// The lookup key.
    pub fn key(&self) -> String {
        key(&self.id())
    }

    /// The resource type, e.g. `Microsoft.Network/virtualNetworks/subnets`.
    pub fn type_name(&self) -> String {
        full_type(&self.namespace, &self.types)
    }

    /// The resource type in lowercase.
    pub fn type_key(&self) -> String {
        self.type_name().to_ascii_lowercase()
    }

    /// The last name.
    pub fn name(&self) -> &str {
        self.names.last().map(String::as_str).unwrap_or_default()
    }

    /// The parent resource of a nested resource (`{vnet}` for a subnet).
    pub fn parent(&self) -> Option<ResourceId> {
        (self.types.len() > 1).then(|| ResourceId {
            types: self.types[..self.types.len() - 1].to_vec(),
            names: self.names[..self.names.len() - 1].to_vec(),
            ..self.clone()
        })
    }

    /// The id of what contains this resource: its parent, or its scope.
    pub fn container(&self) -> String {
        self.parent()
            .map(|p| p.id())
            .unwrap_or_else(|| self.scope.clone())
    }

    /// The RBAC action for `verb` (`read`, `write`, `delete`) on this resource type.
    pub fn action(&self, verb: &str) -> String {
        format!("{}/{verb}", self.type_name())
    }

    /// Whether the scope is another resource (an extension resource).
    pub fn is_extension(&self) -> bool {
        key(&self.scope).contains("/providers/")
    }
}

/// A collection, view or action: one type more than names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// The subscription id, as written.
    pub subscription: String,
    /// The resource group, if any.
    pub resource_group: Option<String>,
    /// What the provider part hangs off.
    pub scope: String,
    /// The provider namespace.
    pub namespace: String,
    /// Type segments; one more than `names`.
    pub types: Vec<String>,
    /// Names of the owning resource chain.
    pub names: Vec<String>,
}

impl Collection {
    /// The resource that owns this collection, view or action, if it is not a scope-level list.
    pub fn owner(&self) -> Option<ResourceId> {
        (!self.names.is_empty()).then(|| ResourceId {
            subscription: self.subscription.clone(),
            resource_group: self.resource_group.clone(),
            scope: self.scope.clone(),
            namespace: self.namespace.clone(),
            types: self.types[..self.names.len()].to_vec(),
            names: self.names.clone(),
        })
    }

    /// The id of the owner, or the scope for scope-level lists.
    pub fn container(&self) -> String {
        self.owner()
            .map(|o| o.id())
            .unwrap_or_else(|| self.scope.clone())
    }

    /// The full type, e.g. `Microsoft.Network/virtualNetworks/virtualNetworkPeerings`.
    pub fn type_name(&self) -> String {
        full_type(&self.namespace, &self.types)
    }

    /// The full type in lowercase.
    pub fn type_key(&self) -> String {
        self.type_name().to_ascii_lowercase()
    }

    /// The last type segment (the child type, view or action name).
    pub fn last(&self) -> &str {
        self.types.last().map(String::as_str).unwrap_or_default()
    }

    /// The canonical path text.
    pub fn path(&self) -> String {
        let mut s = self.container();
        if self.names.is_empty() {
            s.push_str("/providers/");
            s.push_str(&self.namespace);
        }
        s.push('/');
        s.push_str(self.last());
        s
    }
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/subscriptions`
    Subscriptions,
    /// `/subscriptions/{s}`
    Subscription(String),
    /// `/subscriptions/{s}/resourceGroups`
    ResourceGroups(String),
    /// `/subscriptions/{s}/resourceGroups/{rg}`
    ResourceGroup(String, String),
    /// `/subscriptions/{s}/providers`
    Providers(String),
    /// `/subscriptions/{s}/providers/{ns}`
    Provider(String, String),
    /// A typed resource.
    Resource(ResourceId),
    /// A collection, view or action.
    Collection(Collection),
}

impl Target {
    /// The subscription the path names, if any.
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Self::Subscriptions => None,
            Self::Subscription(s)
            | Self::ResourceGroups(s)
            | Self::ResourceGroup(s, _)
            | Self::Providers(s)
            | Self::Provider(s, _) => Some(s),
            Self::Resource(r) => Some(&r.subscription),
            Self::Collection(c) => Some(&c.subscription),
        }
    }
}

/// The canonical id of a resource group.
pub fn resource_group_id(subscription: &str, rg: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{rg}")
}

/// Parses a request path (or a stored id); `None` if it is not a Resource Manager path.
pub fn parse(path: &str) -> Option<Target> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.strip_prefix('/')?.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) || !segs[0].eq_ignore_ascii_case("subscriptions") {
        return None;
    }
    let is = |i: usize, word: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(word));
    if segs.len() == 1 {
        return Some(Target::Subscriptions);
    }
    let sub = segs[1].to_owned();
    let mut scope = format!("/subscriptions/{sub}");
    let mut rg = None;
    let mut i = 2;
    if segs.len() == 2 {
        return Some(Target::Subscription(sub));
    }
    if is(2, "resourcegroups") {
        match segs.len() {
            3 => return Some(Target::ResourceGroups(sub)),
            4 => return Some(Target::ResourceGroup(sub, segs[3].to_owned())),
            _ => {}
        }
        rg = Some(segs[3].to_owned());
        scope = resource_group_id(&sub, segs[3]);
        i = 4;
    }
    if !is(i, "providers") {
        return None;
    }
    if rg.is_none() {
        match segs.len() - i {
            1 => return Some(Target::Providers(sub)),
            2 => return Some(Target::Provider(sub, segs[i + 1].to_owned())),
            _ => {}
        }
    }
    loop {
        let namespace = (*segs.get(i + 1)?).to_owned();
        let start = i + 2;
        // Another `providers` after a complete type/name chain starts an extension resource.
        let next = (start..segs.len()).find(|&k| {
            (k - start) % 2 == 0 && k > start && segs[k].eq_ignore_ascii_case("providers")
        });
        let rest = &segs[start..next.unwrap_or(segs.len())];
        if rest.is_empty() {
            return None;
        }
        let types: Vec<String> = rest.iter().step_by(2).map(|s| (*s).to_owned()).collect();
        let names: Vec<String> = rest
            .iter()
            .skip(1)
            .step_by(2)
            .map(|s| (*s).to_owned())
            .collect();
        let id = ResourceId {
            subscription: sub.clone(),
            resource_group: rg.clone(),
            scope: scope.clone(),
            namespace,
            types,
            names,
        };
        match next {
            Some(k) => {
                scope = id.id();
                i = k;
            }
            None if id.types.len() == id.names.len() => return Some(Target::Resource(id)),
            None => {
                let ResourceId {
                    subscription,
                    resource_group,
                    scope,
                    namespace,
                    types,
                    names,
                } = id;
                return Some(Target::Collection(Collection {
                    subscription,
                    resource_group,
                    scope,
                    namespace,
                    types,
                    names,
                }));
            }
        }
    }
}

/// Parses a resource id; `None` unless it names a typed resource.
pub fn parse_resource(id: &str) -> Option<ResourceId> {
    match parse(id)? {
        Target::Resource(r) => Some(r),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VNET: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v";

    #[test]
    fn resource_group_keyword_is_case_insensitive_and_canonicalized() {
        assert_eq!(
            parse("/subscriptions/s1/resourcegroups/RG"),
            Some(Target::ResourceGroup("s1".into(), "RG".into()))
        );
        let r = parse_resource(
            "/SUBSCRIPTIONS/s1/resourcegroups/rg/PROVIDERS/Microsoft.Network/virtualNetworks/v/",
        )
        .unwrap();
        assert_eq!(r.id(), VNET);
        assert_eq!(r.key(), VNET.to_ascii_lowercase());
    }

    #[test]
    fn nested_resources_have_parents_and_actions() {
        let s = parse_resource(&format!("{VNET}/subnets/a")).unwrap();
        assert_eq!(s.type_name(), "Microsoft.Network/virtualNetworks/subnets");
        assert_eq!(s.name(), "a");
        assert_eq!(s.parent().unwrap().id(), VNET);
        assert_eq!(s.container(), VNET);
        assert_eq!(
            s.action("read"),
            "Microsoft.Network/virtualNetworks/subnets/read"
        );
        let v = parse_resource(VNET).unwrap();
        assert_eq!(v.container(), "/subscriptions/s1/resourceGroups/rg");
    }

    #[test]
    fn odd_paths_are_collections_views_and_actions() {
        let Some(Target::Collection(c)) = parse(&format!("{VNET}/virtualNetworkPeerings")) else {
            panic!()
        };
        assert_eq!(c.owner().unwrap().id(), VNET);
        assert_eq!(
            c.type_name(),
            "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"
        );
        assert_eq!(c.path(), format!("{VNET}/virtualNetworkPeerings"));
        let Some(Target::Collection(c)) =
            parse("/subscriptions/s1/providers/Microsoft.Sql/servers")
        else {
            panic!()
        };
        assert_eq!(c.owner(), None);
        assert_eq!(c.container(), "/subscriptions/s1");
        assert_eq!(
            c.path(),
            "/subscriptions/s1/providers/Microsoft.Sql/servers"
        );
        assert_eq!(
            parse("/subscriptions/s1/providers"),
            Some(Target::Providers("s1".into()))
        );
    }

    #[test]
    fn extension_resources_hang_off_their_scope() {
        let id = format!("{VNET}/providers/Microsoft.Authorization/roleAssignments/g1");
        let r = parse_resource(&id).unwrap();
        assert_eq!(r.scope, VNET);
        assert!(r.is_extension());
        assert_eq!(r.type_name(), "Microsoft.Authorization/roleAssignments");
        assert_eq!(r.id(), id);
        let sub_level = parse_resource(
            "/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/d1",
        )
        .unwrap();
        assert_eq!(sub_level.scope, "/subscriptions/s1");
        assert!(!sub_level.is_extension());
    }

    #[test]
    fn malformed_paths_are_refused() {
        for p in [
            "",
            "/",
            "/foo",
            "/subscriptions//x",
            "/subscriptions/s/resourceGroups/rg/x",
            "/subscriptions/s/resourceGroups/rg/providers",
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    #[test]
    fn covers_matches_whole_segments_only() {
        assert!(covers("/subscriptions/S1", VNET));
        assert!(covers(VNET, VNET));
        assert!(!covers("/subscriptions/s", VNET));
        assert!(covers("/", VNET));
        assert!(!covers(VNET, "/subscriptions/s1"));
    }
}

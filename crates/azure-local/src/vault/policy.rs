//! Vault access policies (the `enableRbacAuthorization=false` model): per identity, a set of
//! key permissions and a set of secret permissions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A key permission, spelled as Azure spells it in access policies and 403 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyPermission {
    /// Read a key's public part and attributes.
    Get,
    /// List keys and key versions.
    List,
    /// Change a key's attributes.
    Update,
    /// Create a key or a new version of it.
    Create,
    /// Import a key.
    Import,
    /// Delete a key.
    Delete,
    /// Recover a deleted key.
    Recover,
    /// Back a key up.
    Backup,
    /// Restore a key backup.
    Restore,
    /// Decrypt with a key.
    Decrypt,
    /// Encrypt with a key.
    Encrypt,
    /// Unwrap a key with a key.
    UnwrapKey,
    /// Wrap a key with a key.
    WrapKey,
    /// Verify a signature.
    Verify,
    /// Sign a digest.
    Sign,
    /// Purge a deleted key.
    Purge,
    /// Release a key.
    Release,
    /// Rotate a key (new version with the same parameters).
    Rotate,
    /// Read a key's rotation policy.
    GetRotationPolicy,
    /// Set a key's rotation policy.
    SetRotationPolicy,
}

impl KeyPermission {
    /// Every key permission, in Azure's documented order.
    pub const ALL: [KeyPermission; 20] = [
        Self::Get,
        Self::List,
        Self::Update,
        Self::Create,
        Self::Import,
        Self::Delete,
        Self::Recover,
        Self::Backup,
        Self::Restore,
        Self::Decrypt,
        Self::Encrypt,
        Self::UnwrapKey,
        Self::WrapKey,
        Self::Verify,
        Self::Sign,
        Self::Purge,
        Self::Release,
        Self::Rotate,
        Self::GetRotationPolicy,
        Self::SetRotationPolicy,
    ];

    /// The permission's name as Azure writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Update => "update",
            Self::Create => "create",
            Self::Import => "import",
            Self::Delete => "delete",
            Self::Recover => "recover",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Decrypt => "decrypt",
            Self::Encrypt => "encrypt",
            Self::UnwrapKey => "unwrapKey",
            Self::WrapKey => "wrapKey",
            Self::Verify => "verify",
            Self::Sign => "sign",
            Self::Purge => "purge",
            Self::Release => "release",
            Self::Rotate => "rotate",
            Self::GetRotationPolicy => "getrotationpolicy",
            Self::SetRotationPolicy => "setrotationpolicy",
        }
    }
}

impl fmt::Display for KeyPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret permission, spelled as Azure spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretPermission {
    /// Read a secret value.
    Get,
    /// List secrets and secret versions (without values).
    List,
    /// Set a secret (new version).
    Set,
    /// Delete a secret.
    Delete,
    /// Recover a deleted secret.
    Recover,
    /// Back a secret up.
    Backup,
    /// Restore a secret backup.
    Restore,
    /// Purge a deleted secret.
    Purge,
}

impl SecretPermission {
    /// Every secret permission.
    pub const ALL: [SecretPermission; 8] = [
        Self::Get,
        Self::List,
        Self::Set,
        Self::Delete,
        Self::Recover,
        Self::Backup,
        Self::Restore,
        Self::Purge,
    ];

    /// The permission's name as Azure writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Set => "set",
            Self::Delete => "delete",
            Self::Recover => "recover",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Purge => "purge",
        }
    }
}

impl fmt::Display for SecretPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The permission one vault operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// A permission on keys.
    Key(KeyPermission),
    /// A permission on secrets.
    Secret(SecretPermission),
}

impl Permission {
    /// The permission family as it appears in Azure's 403 message ("keys" / "secrets").
    pub fn family(self) -> &'static str {
        match self {
            Self::Key(_) => "keys",
            Self::Secret(_) => "secrets",
        }
    }

    /// The permission's own name ("decrypt", "wrapKey", "get", ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Key(p) => p.as_str(),
            Self::Secret(p) => p.as_str(),
        }
    }
}

/// A permission name in a config that Azure does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {family} permission '{name}' (known: all, {known})")]
pub struct UnknownPermission {
    /// "key" or "secret".
    pub family: &'static str,
    /// The name as written.
    pub name: String,
    /// The accepted names, comma-separated.
    pub known: String,
}

/// Parses key permission names case-insensitively, as ARM does; "all" grants every one.
pub fn parse_key_permissions(
    names: &[String],
) -> Result<BTreeSet<KeyPermission>, UnknownPermission> {
    parse_names(names, &KeyPermission::ALL, KeyPermission::as_str, "key")
}

/// Parses secret permission names case-insensitively; "all" grants every one.
pub fn parse_secret_permissions(
    names: &[String],
) -> Result<BTreeSet<SecretPermission>, UnknownPermission> {
    parse_names(
        names,
        &SecretPermission::ALL,
        SecretPermission::as_str,
        "secret",
    )
}

fn parse_names<P: Copy + Ord>(
    names: &[String],
    all: &[P],
    as_str: fn(P) -> &'static str,
    family: &'static str,
) -> Result<BTreeSet<P>, UnknownPermission> {
    let mut out = BTreeSet::new();
    for name in names {
        if name.eq_ignore_ascii_case("all") {
            out.extend(all.iter().copied());
            continue;
        }
        match all.iter().find(|p| as_str(**p).eq_ignore_ascii_case(name)) {
            Some(p) => {
                out.insert(*p);
            }
            None => {
                return Err(UnknownPermission {
                    family,
                    name: name.clone(),
                    known: all
                        .iter()
                        .map(|p| as_str(*p))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    Ok(out)
}

/// The effective permissions of one identity on one vault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Key permissions.
    pub keys: BTreeSet<KeyPermission>,
    /// Secret permissions.
    pub secrets: BTreeSet<SecretPermission>,
}

/// All access policies of one vault, keyed by identity object id.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicies {
    by_object_id: BTreeMap<String, Grants>,
}

impl AccessPolicies {
    /// Adds one policy entry; Azure unions entries that name the same object id.
    pub fn add(&mut self, object_id: &str, grants: Grants) {
        let entry = self
            .by_object_id
            .entry(object_id.to_ascii_lowercase())
            .or_default();
        entry.keys.extend(grants.keys);
        entry.secrets.extend(grants.secrets);
    }

    /// Whether the identity with this object id holds the permission.
    pub fn allows(&self, object_id: &str, permission: Permission) -> bool {
        let Some(grants) = self.by_object_id.get(&object_id.to_ascii_lowercase()) else {
            return false;
        };
        match permission {
            Permission::Key(p) => grants.keys.contains(&p),
            Permission::Secret(p) => grants.secrets.contains(&p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn key_permissions_parse_case_insensitively() {
        let p = parse_key_permissions(&names(&["Get", "WRAPKEY", "unwrapKey"])).unwrap();
        assert!(p.contains(&KeyPermission::Get));
        assert!(p.contains(&KeyPermission::WrapKey));
        assert!(p.contains(&KeyPermission::UnwrapKey));
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn all_grants_everything() {
        let p = parse_secret_permissions(&names(&["all"])).unwrap();
        assert_eq!(p.len(), SecretPermission::ALL.len());
    }

    #[test]
    fn unknown_permission_is_named() {
        let err = parse_key_permissions(&names(&["get", "frobnicate"])).unwrap_err();
        assert_eq!(err.name, "frobnicate");
        assert!(
            err.to_string()
                .contains("unknown key permission 'frobnicate'")
        );
    }

    #[test]
    fn policies_union_and_match_object_ids_case_insensitively() {
        let mut policies = AccessPolicies::default();
        let mut g = Grants::default();
        g.keys.insert(KeyPermission::Get);
        policies.add("ABC", g);
        let mut g = Grants::default();
        g.keys.insert(KeyPermission::Decrypt);
        policies.add("abc", g);
        assert!(policies.allows("abc", Permission::Key(KeyPermission::Get)));
        assert!(policies.allows("aBc", Permission::Key(KeyPermission::Decrypt)));
        assert!(!policies.allows("abc", Permission::Key(KeyPermission::Encrypt)));
        assert!(!policies.allows("other", Permission::Key(KeyPermission::Get)));
    }
}

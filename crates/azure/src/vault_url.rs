//! Key Vault object URLs: `https://VAULT/{keys|secrets}/NAME[/VERSION]`.

use azure_core::http::Url;

/// A vault object URL split into the vault's base URL, the object name and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultObject {
    /// `https://VAULT/`.
    pub vault: Url,
    /// The key or secret name.
    pub name: String,
    /// The version, when the URL names one.
    pub version: Option<String>,
}

/// Parse `url` as an object of `collection` (`keys` or `secrets`); the error says what was expected.
pub fn parse(url: &str, collection: &str) -> Result<VaultObject, String> {
    let bad = |why: &str| {
        format!(
            "`{url}` is not a Key Vault {} URL ({why}); expected https://VAULT.vault.azure.net/{collection}/NAME",
            collection.trim_end_matches('s')
        )
    };
    let parsed = Url::parse(url).map_err(|_| bad("not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("scheme must be https"));
    }
    let segments: Vec<&str> = parsed
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let (name, version) = match segments.as_slice() {
        [c, name] if *c == collection => (*name, None),
        [c, name, version] if *c == collection => (*name, Some(version.to_string())),
        _ => return Err(bad(&format!("the path must be /{collection}/NAME"))),
    };
    let mut vault = parsed.clone();
    vault.set_path("/");
    vault.set_query(None);
    vault.set_fragment(None);
    Ok(VaultObject {
        vault,
        name: name.to_string(),
        version,
    })
}

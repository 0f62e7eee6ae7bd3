//! The pipeline file (`culvert-agent run --pipeline FILE`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::limits::Limits;

/// One side of a pipeline.
#[derive(Debug, Clone)]
pub struct ConnectorSection {
    /// First-party name or path to a `.wasm` component.
    pub connector: String,
    /// Everything else in the section, handed to the connector as JSON.
    pub settings: Map<String, Value>,
    /// Extra `host:port` endpoints the connector may reach.
    pub egress: Vec<(String, u16)>,
    /// Limits of this connector instance.
    pub limits: Limits,
}

/// Where and how much to buffer.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// `file:///path`, `https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix`, or the
    /// emulator's `http://127.0.0.1:PORT/devstoreaccount1/CONTAINER/prefix`.
    pub url: String,
    /// Bytes the buffer may hold before the source waits.
    pub max_bytes: u64,
    /// The key-encryption key of segment data keys: `file:///abs/keyring.json` or a Key
    /// Vault key URL. `None`: a keyring next to a directory buffer (blob buffers need one).
    pub key: Option<String>,
    /// Segments encrypted under one data key before a fresh one is made.
    pub segments_per_key: u64,
}

/// Data keys are replaced after this many segments unless `segments_per_key` says otherwise.
pub const DEFAULT_SEGMENTS_PER_KEY: u64 = 256;

/// Whether a buffer URL names blob storage rather than a local directory.
fn is_blob_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// Check the form of `buffer.key`; the key itself is opened when the buffer is.
fn check_key(key: &str) -> Result<()> {
    let parsed = url::Url::parse(key).map_err(|e| {
        anyhow::anyhow!(
            "`buffer.key` `{key}` is not a URL ({e}); use file:///absolute/keyring.json or https://VAULT.vault.azure.net/keys/NAME"
        )
    })?;
    match parsed.scheme() {
        "file" => {
            parsed.to_file_path().map_err(|_| {
                anyhow::anyhow!("`buffer.key` `{key}` is not an absolute file:// path")
            })?;
        }
        "https" | "http" => {
            let segments: Vec<&str> = parsed
                .path_segments()
                .map(|s| s.filter(|p| !p.is_empty()).collect())
                .unwrap_or_default();
            match segments.as_slice() {
                ["keys", _] => {}
                ["keys", _, _] => bail!(
                    "`buffer.key` `{key}` names a key version; name the key without one so a rotation takes effect"
                ),
                _ => bail!(
                    "`buffer.key` `{key}` is not a Key Vault key URL; expected https://VAULT.vault.azure.net/keys/NAME"
                ),
            }
            let loopback = matches!(
                parsed.host(),
                Some(url::Host::Ipv4(ip)) if ip.is_loopback()
            ) || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
                || parsed.host_str() == Some("localhost");
            if parsed.scheme() == "http" && !loopback {
                bail!(
                    "`buffer.key` `{key}` must use https (http is only for a local stand-in on 127.0.0.1)"
                );
            }
        }
        other => bail!(
            "`buffer.key` scheme `{other}` is not supported; use file:///absolute/keyring.json or https://VAULT.vault.azure.net/keys/NAME"
        ),
    }
    Ok(())
}

/// A pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Pipeline name.
    pub name: String,
    /// Source side.
    pub source: ConnectorSection,
    /// Target side.
    pub target: ConnectorSection,
    /// Buffer between them.
    pub buffer: BufferConfig,
    /// Rows per change batch.
    pub batch_rows: u32,
}

fn take_str(t: &mut toml::Table, key: &str, section: &str) -> Result<Option<String>> {
    match t.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(other) => bail!(
            "`{section}.{key}` must be a string, not {}",
            other.type_str()
        ),
    }
}

/// Parse an egress endpoint `host:port`; `what` names where it was given in errors.
pub fn parse_endpoint(s: &str, what: &str) -> Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{what} `{s}` must be host:port"))?;
    let port = port
        .parse()
        .with_context(|| format!("{what} `{s}` has an invalid port"))?;
    Ok((host.to_string(), port))
}

fn section(root: &mut toml::Table, key: &str, defaults: &Limits) -> Result<ConnectorSection> {
    let mut t = match root.remove(key) {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("`{key}` must be a table ([{key}])"),
        None => bail!("missing [{key}] section"),
    };
    let connector = take_str(&mut t, "connector", key)?.with_context(|| {
        format!(
            "`{key}.connector` is required, for example connector = \"postgres-{}\"",
            if key == "source" { "source" } else { "target" }
        )
    })?;
    let limits = match t.remove("limits") {
        Some(v) => {
            let mut merged = toml::Table::try_from(defaults).unwrap_or_default();
            if let toml::Value::Table(over) = v {
                merged.extend(over);
            }
            toml::Value::Table(merged)
                .try_into()
                .with_context(|| format!("invalid `{key}.limits`"))?
        }
        None => *defaults,
    };
    let egress = match t.remove("egress") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .with_context(|| format!("`{key}.egress` entries must be strings"))
                    .and_then(|s| parse_endpoint(s, &format!("`{key}.egress` entry")))
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("`{key}.egress` must be an array of \"host:port\" strings"),
    };
    let settings = match serde_json::to_value(&t)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Ok(ConnectorSection {
        connector,
        settings,
        egress,
        limits,
    })
}

impl serde::Serialize for Limits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Limits", 3)?;
        st.serialize_field("memory_mib", &self.memory_mib)?;
        st.serialize_field("cpu_seconds_per_call", &self.cpu_seconds_per_call)?;
        st.serialize_field("call_timeout_seconds", &self.call_timeout_seconds)?;
        st.end()
    }
}

impl PipelineConfig {
    /// Read and validate a pipeline file.
    pub fn load(path: &Path) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read pipeline file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("pipeline file {}", path.display()))
    }

    /// Parse pipeline TOML.
    pub fn parse(text: &str) -> Result<PipelineConfig> {
        let mut root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.to_string().trim()))?;
        let name = take_str(&mut root, "name", "pipeline")?
            .context("`name` is required, for example name = \"orders\"")?;
        if name.is_empty()
            || name.len() > 48
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                "`name` must be 1 to 48 letters, digits, `_` or `-` (it names the replication slot); got `{name}`"
            );
        }
        let defaults: Limits = match root.remove("limits") {
            Some(v) => v.try_into().context("invalid [limits]")?,
            None => Limits::default(),
        };
        let batch_rows = match root.remove("batch_rows") {
            None => 50_000,
            Some(toml::Value::Integer(n)) if n > 0 && n <= 10_000_000 => n as u32,
            Some(_) => bail!("`batch_rows` must be an integer between 1 and 10000000"),
        };
        let mut source = section(&mut root, "source", &defaults)?;
        let target = section(&mut root, "target", &defaults)?;
        let buffer = match root.remove("buffer") {
            Some(toml::Value::Table(mut b)) => {
                let url = take_str(&mut b, "url", "buffer")?.context("`buffer.url` is required, for example url = \"file:///var/lib/culvert/orders\"")?;
                let max_bytes = match b.remove("max_bytes") {
                    None => 256 << 20,
                    Some(toml::Value::Integer(n)) if n >= 1 << 20 => n as u64,
                    Some(_) => bail!("`buffer.max_bytes` must be an integer of at least 1048576"),
                };
                let key = take_str(&mut b, "key", "buffer")?;
                if let Some(key) = &key {
                    check_key(key)?;
                } else if is_blob_url(&url) {
                    bail!(
                        "`buffer.key` is required for a blob storage buffer: segments are encrypted before they leave the agent; \
                         set key = \"https://VAULT.vault.azure.net/keys/NAME\" (or file:///absolute/keyring.json)"
                    );
                }
                let segments_per_key = match b.remove("segments_per_key") {
                    None => DEFAULT_SEGMENTS_PER_KEY,
                    Some(toml::Value::Integer(n)) if (1..=1_000_000).contains(&n) => n as u64,
                    Some(_) => {
                        bail!("`buffer.segments_per_key` must be an integer between 1 and 1000000")
                    }
                };
                if let Some(k) = b.keys().next() {
                    bail!(
                        "unknown key `buffer.{k}`; expected url, max_bytes, key, segments_per_key"
                    );
                }
                BufferConfig {
                    url,
                    max_bytes,
                    key,
                    segments_per_key,
                }
            }
            Some(_) => bail!("`buffer` must be a table"),
            None => bail!("missing [buffer] section with url = \"file:///...\""),
        };
        if let Some(k) = root.keys().next() {
            bail!("unknown key `{k}`; expected name, batch_rows, limits, source, target, buffer");
        }
        // The slot and publication default to the pipeline name, so two pipelines never share one.
        let slot_name = name.replace('-', "_").to_ascii_lowercase();
        for key in ["slot", "publication"] {
            source
                .settings
                .entry(key)
                .or_insert_with(|| Value::String(format!("culvert_{slot_name}")));
        }
        Ok(PipelineConfig {
            name,
            source,
            target,
            buffer,
            batch_rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "orders"
[source]
connector = "postgres-source"
host = "127.0.0.1"
port = 5432
user = "postgres"
database = "app"
tables = ["public.*"]
[source.limits]
memory_mib = 64
[target]
connector = "postgres-target"
host = "127.0.0.1"
port = 5433
user = "postgres"
database = "replica"
[buffer]
url = "file:///tmp/x"
"#;

    #[test]
    fn parses_and_fills_defaults() {
        let c = PipelineConfig::parse(GOOD).unwrap();
        assert_eq!(c.name, "orders");
        assert_eq!(c.source.settings["slot"], "culvert_orders");
        assert_eq!(c.source.limits.memory_mib, 64);
        assert_eq!(c.target.limits, Limits::default());
        assert_eq!(c.source.settings["tables"][0], "public.*");
        assert!(!c.target.settings.contains_key("connector"));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = PipelineConfig::parse(&GOOD.replace("name = \"orders\"", "name = \"bad name\""))
            .unwrap_err();
        assert!(e.to_string().contains("`name` must be"), "{e}");
        let e = PipelineConfig::parse(&GOOD.replace("[buffer]\nurl = \"file:///tmp/x\"", ""))
            .unwrap_err();
        assert!(e.to_string().contains("[buffer]"), "{e}");
        let e = PipelineConfig::parse(&format!("extra = 1\n{GOOD}")).unwrap_err();
        assert!(e.to_string().contains("unknown key `extra`"), "{e}");
    }

    fn with_buffer(buffer: &str) -> Result<PipelineConfig> {
        PipelineConfig::parse(&GOOD.replace("[buffer]\nurl = \"file:///tmp/x\"", buffer))
    }

    #[test]
    fn buffer_key_and_rotation() {
        let c = PipelineConfig::parse(GOOD).unwrap();
        assert_eq!(c.buffer.key, None);
        assert_eq!(c.buffer.segments_per_key, DEFAULT_SEGMENTS_PER_KEY);
        let c = with_buffer(
            "[buffer]\nurl = \"https://acct.blob.core.windows.net/c/orders\"\n\
             key = \"https://v.vault.azure.net/keys/buffer\"\nsegments_per_key = 16",
        )
        .unwrap();
        assert_eq!(
            c.buffer.key.as_deref(),
            Some("https://v.vault.azure.net/keys/buffer")
        );
        assert_eq!(c.buffer.segments_per_key, 16);
        with_buffer("[buffer]\nurl = \"file:///tmp/x\"\nkey = \"file:///etc/culvert/ring.json\"")
            .unwrap();
        with_buffer("[buffer]\nurl = \"file:///tmp/x\"\nkey = \"http://127.0.0.1:8200/keys/k\"")
            .unwrap();

        let e =
            with_buffer("[buffer]\nurl = \"https://acct.blob.core.windows.net/c/p\"").unwrap_err();
        assert!(e.to_string().contains("`buffer.key` is required"), "{e}");
        let e =
            with_buffer("[buffer]\nurl = \"file:///tmp/x\"\nkey = \"http://vault.example/keys/k\"")
                .unwrap_err();
        assert!(e.to_string().contains("must use https"), "{e}");
        let e = with_buffer(
            "[buffer]\nurl = \"file:///tmp/x\"\nkey = \"https://v.vault.azure.net/secrets/k\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a Key Vault key URL"), "{e}");
        let e = with_buffer("[buffer]\nurl = \"file:///tmp/x\"\nsegments_per_key = 0").unwrap_err();
        assert!(e.to_string().contains("segments_per_key"), "{e}");
        let e = with_buffer("[buffer]\nurl = \"file:///tmp/x\"\nkeys = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown key `buffer.keys`"), "{e}");
    }
}

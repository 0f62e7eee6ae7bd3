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
    /// `file:///path`.
    pub url: String,
    /// Bytes the buffer may hold before the source waits.
    pub max_bytes: u64,
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

fn parse_endpoint(s: &str, section: &str) -> Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("`{section}.egress` entry `{s}` must be host:port"))?;
    let port = port
        .parse()
        .with_context(|| format!("`{section}.egress` entry `{s}` has an invalid port"))?;
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
                    .and_then(|s| parse_endpoint(s, key))
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
                if let Some(k) = b.keys().next() {
                    bail!("unknown key `buffer.{k}`");
                }
                BufferConfig { url, max_bytes }
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
}

//! Turning what the control plane assigns into the agent's own pipeline configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use culvert_control_api::agents::{Assignment, ConnectorDefinition};
use culvert_control_api::connectors::ConnectorKind;
use culvert_sealing::{KeyEncryptionKey, SealError};
use serde_json::{Map, Value};

use super::components::{ComponentError, Components};
use crate::config::PipelineConfig;

/// The key that opens connector secrets, if this agent has one.
pub type SecretsKey<'a> = Option<&'a dyn KeyEncryptionKey>;

/// Whether an error came from a key service or the component store that may answer later.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<SealError>()
            .is_some_and(|s| matches!(s, SealError::Key(k) if k.is_transient()))
            || c.downcast_ref::<ComponentError>()
                .is_some_and(ComponentError::is_transient)
    })
}

/// Names the pipeline section gives meaning to; a connector setting never sets them.
const SECTION_KEYS: &[&str] = &["connector", "egress", "limits"];

/// The verified component file of a registered connector (`None` for a first-party one).
pub async fn component_path(
    def: &ConnectorDefinition,
    components: &Components,
) -> Result<Option<PathBuf>> {
    let Some(c) = &def.component else {
        return Ok(None);
    };
    let path = components.path_for(c).await.with_context(|| {
        format!(
            "{} connector {} {}",
            def.kind.as_str(),
            def.connector_type,
            def.type_version.as_deref().unwrap_or("")
        )
    })?;
    Ok(Some(path))
}

/// The component files of both sides of an assignment.
#[derive(Debug, Clone, Default)]
pub struct ComponentPaths {
    /// Source.
    pub source: Option<PathBuf>,
    /// Target.
    pub target: Option<PathBuf>,
}

impl ComponentPaths {
    /// Fetch (or find in the cache) what the assignment's connectors need.
    pub async fn fetch(a: &Assignment, components: &Components) -> Result<ComponentPaths> {
        Ok(ComponentPaths {
            source: component_path(&a.source, components).await?,
            target: component_path(&a.target, components).await?,
        })
    }
}

/// The configuration a connector runs with: plain settings plus opened secrets.
pub async fn connector_settings(
    def: &ConnectorDefinition,
    key: SecretsKey<'_>,
) -> Result<Map<String, Value>> {
    let mut settings = def.config.clone();
    for (field, sealed) in &def.sealed_secrets {
        let key = key.context(
            "the connector has sealed secrets but this agent has no key to open them (start it with --key-vault or --sealing-key)",
        )?;
        let plain = culvert_sealing::open(key, sealed).await.with_context(|| {
            format!(
                "cannot open the sealed `{field}` of the {} connector",
                def.connector_type
            )
        })?;
        let text =
            String::from_utf8(plain).with_context(|| format!("sealed `{field}` is not text"))?;
        settings.insert(field.clone(), Value::String(text));
    }
    Ok(settings)
}

async fn section(
    def: &ConnectorDefinition,
    key: SecretsKey<'_>,
    extra: BTreeMap<&str, Value>,
    component: Option<&Path>,
) -> Result<toml::Value> {
    let mut settings = connector_settings(def, key).await?;
    for k in SECTION_KEYS {
        settings.remove(*k);
    }
    // A registered type runs the verified file; first-party types are found by name.
    let connector = match (&def.component, component) {
        (None, _) => def.connector_type.clone(),
        (Some(_), Some(path)) => path.display().to_string(),
        (Some(c), None) => bail!(
            "the {} connector's component {} has not been fetched",
            def.connector_type,
            c.digest
        ),
    };
    settings.insert("connector".into(), Value::String(connector));
    if !def.egress.is_empty() {
        settings.insert("egress".into(), serde_json::to_value(&def.egress)?);
    }
    if let Some(limits) = &def.limits {
        settings.insert("limits".into(), serde_json::to_value(limits)?);
    }
    for (k, v) in extra {
        settings.insert(k.into(), v);
    }
    // TOML has no null: a null setting means "not set".
    settings.retain(|_, v| !v.is_null());
    toml::Value::try_from(Value::Object(settings)).context("connector settings")
}

/// Where an agent keeps its pipelines' buffers.
#[derive(Debug, Clone)]
pub struct BufferPlace {
    /// Base URL; each pipeline gets `{base}/{pipeline id}`.
    pub base: String,
    /// The `[buffer] key` every pipeline uses (a Key Vault key URL or a key file URL).
    pub key: String,
}

impl BufferPlace {
    /// Buffers in `state_dir/buffers`, keys in a local key file there.
    pub fn local(state_dir: &Path) -> BufferPlace {
        BufferPlace {
            base: format!("file://{}", state_dir.join("buffers").display()),
            key: format!(
                "file://{}",
                state_dir.join("keys/buffer-keyring.json").display()
            ),
        }
    }

    fn url_for(&self, id: &uuid::Uuid) -> Result<String> {
        let url = format!("{}/{id}", self.base.trim_end_matches('/'));
        if let Some(path) = url.strip_prefix("file://") {
            std::fs::create_dir_all(path).with_context(|| format!("cannot create {path}"))?;
        }
        Ok(url)
    }
}

/// The pipeline configuration of an assignment.
pub async fn pipeline_config(
    a: &Assignment,
    key: SecretsKey<'_>,
    buffers: &BufferPlace,
    components: &ComponentPaths,
) -> Result<PipelineConfig> {
    let mut root = toml::Table::new();
    root.insert("name".into(), toml::Value::String(a.name.clone()));
    root.insert(
        "batch_rows".into(),
        toml::Value::Integer(i64::from(a.batch_rows)),
    );
    let tables = BTreeMap::from([("tables", serde_json::to_value(&a.tables)?)]);
    let source = section(&a.source, key, tables, components.source.as_deref()).await?;
    root.insert("source".into(), source);
    let fence = BTreeMap::from([("fence_epoch", Value::from(a.epoch))]);
    let target = section(&a.target, key, fence, components.target.as_deref()).await?;
    root.insert("target".into(), target);
    let mut b = toml::Table::new();
    b.insert(
        "url".into(),
        toml::Value::String(buffers.url_for(&a.pipeline_id)?),
    );
    b.insert("key".into(), toml::Value::String(buffers.key.clone()));
    root.insert("buffer".into(), toml::Value::Table(b));
    let text = toml::to_string(&root)?;
    PipelineConfig::parse(&text).with_context(|| format!("pipeline {} as assigned", a.name))
}

/// A configuration that runs `check` on one connector: the connector on its own side and
/// its first-party counterpart, never instantiated, on the other.
pub async fn check_config(
    def: &ConnectorDefinition,
    key: SecretsKey<'_>,
    state_dir: &Path,
    component: Option<&Path>,
) -> Result<PipelineConfig> {
    let (own, other, other_type) = match def.kind {
        ConnectorKind::Source => ("source", "target", "postgres-target"),
        ConnectorKind::Target => ("target", "source", "postgres-source"),
    };
    let mut root = toml::Table::new();
    root.insert("name".into(), toml::Value::String("validation".into()));
    root.insert(
        own.into(),
        section(def, key, BTreeMap::new(), component).await?,
    );
    let mut placeholder = toml::Table::new();
    placeholder.insert("connector".into(), toml::Value::String(other_type.into()));
    root.insert(other.into(), toml::Value::Table(placeholder));
    let mut b = toml::Table::new();
    b.insert(
        "url".into(),
        toml::Value::String(format!("file://{}", state_dir.join("validation").display())),
    );
    root.insert("buffer".into(), toml::Value::Table(b));
    if def.connector_type.is_empty() {
        bail!("the connector definition has no type");
    }
    PipelineConfig::parse(&toml::to_string(&root)?).context("connector as given for validation")
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn def(kind: ConnectorKind, ty: &str, sealed: BTreeMap<String, String>) -> ConnectorDefinition {
        let config = serde_json::json!({"host": "127.0.0.1", "port": 5432, "user": "u", "database": "d", "sslmode": null});
        ConnectorDefinition {
            connector_type: ty.into(),
            kind,
            config: config.as_object().unwrap().clone(),
            sealed_secrets: sealed,
            type_version: None,
            component: None,
            egress: Vec::new(),
            limits: None,
        }
    }

    #[tokio::test]
    async fn assignments_become_pipelines_with_opened_secrets_and_a_fence() {
        let key = culvert_sealing::OpeningKey::generate();
        let public = culvert_sealing::SealingKey::from_pem(&key.public_pem()).unwrap();
        let sealed = culvert_sealing::seal(&public, b"s3cret").await.unwrap();
        let sealed = BTreeMap::from([("password".to_string(), sealed)]);
        let a = Assignment {
            pipeline_id: Uuid::new_v4(),
            name: "orders".into(),
            epoch: 7,
            version: 1,
            source: def(ConnectorKind::Source, "postgres-source", sealed),
            target: def(ConnectorKind::Target, "postgres-target", BTreeMap::new()),
            tables: vec!["public.*".into()],
            batch_rows: 5000,
            commands: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let place = BufferPlace::local(dir.path());
        let none = ComponentPaths::default();
        let cfg = pipeline_config(&a, Some(&key), &place, &none)
            .await
            .unwrap();
        assert_eq!(cfg.source.settings["password"], "s3cret");
        assert_eq!(cfg.source.settings["tables"][0], "public.*");
        assert_eq!(cfg.target.settings["fence_epoch"], 7);
        assert!(!cfg.source.settings.contains_key("sslmode"));
        assert_eq!(cfg.batch_rows, 5000);
        assert!(cfg.buffer.url.ends_with(&a.pipeline_id.to_string()));
        let e = pipeline_config(&a, None, &place, &none).await.unwrap_err();
        assert!(format!("{e:#}").contains("--key-vault"), "{e:#}");
        assert!(!is_transient(&e));
        let check = check_config(&a.target, None, dir.path(), None)
            .await
            .unwrap();
        assert_eq!(check.target.connector, "postgres-target");
        assert_eq!(check.source.connector, "postgres-source");
    }

    #[tokio::test]
    async fn registered_connectors_run_their_verified_file_with_the_versions_egress_and_limits() {
        use culvert_control_api::registry::{ComponentRef, ConnectorLimits};
        let mut source = def(ConnectorKind::Source, "acme-source", BTreeMap::new());
        source
            .config
            .insert("egress".into(), serde_json::json!(["evil:1"]));
        source.type_version = Some("1.2.0".into());
        source.component = Some(ComponentRef {
            digest: "ab".repeat(32),
            size: 10,
        });
        source.egress = vec!["api.example.com:443".into()];
        source.limits = Some(ConnectorLimits {
            memory_mib: Some(64),
            ..ConnectorLimits::default()
        });
        let a = Assignment {
            pipeline_id: Uuid::new_v4(),
            name: "orders".into(),
            epoch: 1,
            version: 1,
            source,
            target: def(ConnectorKind::Target, "postgres-target", BTreeMap::new()),
            tables: vec!["public.*".into()],
            batch_rows: 100,
            commands: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let place = BufferPlace::local(dir.path());
        let e = pipeline_config(&a, None, &place, &ComponentPaths::default())
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("has not been fetched"), "{e:#}");
        let file = dir.path().join("components/x.wasm");
        let paths = ComponentPaths {
            source: Some(file.clone()),
            target: None,
        };
        let cfg = pipeline_config(&a, None, &place, &paths).await.unwrap();
        assert_eq!(cfg.source.connector, file.display().to_string());
        assert_eq!(
            cfg.source.egress,
            vec![("api.example.com".to_string(), 443)]
        );
        assert_eq!(cfg.source.limits.memory_mib, 64);
        assert_eq!(
            cfg.source.limits.cpu_seconds_per_call,
            crate::limits::Limits::default().cpu_seconds_per_call
        );
        assert!(!cfg.source.settings.contains_key("egress"));
        assert_eq!(cfg.target.connector, "postgres-target");
        let check = check_config(&a.source, None, dir.path(), Some(&file))
            .await
            .unwrap();
        assert_eq!(check.source.connector, file.display().to_string());
    }
}

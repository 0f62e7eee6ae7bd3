//! `culvert connector`: sources and targets, their configuration and validation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use culvert_control_api::connectors::{
    Connector, ConnectorCreate, ConnectorType, ConnectorUpdate, Validation, ValidationState,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{environment_names, name_or_id};
use crate::api::Api;
use crate::exit::{Failure, Kind};
use crate::output::{self, Output, Table, fields};
use crate::output::{out, outln};
use crate::resolve;

/// `culvert connector ...`.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// List the connector types and their settings.
    Types,
    /// Create a connector.
    Create {
        /// Name: lowercase letters, digits and `-`, unique in its environment.
        name: String,
        /// Environment (name or id) whose agents reach the database.
        #[arg(long)]
        env: String,
        /// Connector type, for example postgres-source, or a registered type pinned to a
        /// version such as acme-source@1.2.0 (see `culvert connector types`).
        #[arg(long = "type")]
        connector_type: String,
        /// A setting; VALUE is a number or true/false when it reads as one, else a string. Repeat.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
        set: Vec<(String, Value)>,
        /// A JSON file with the settings (an object); --set overrides its fields.
        #[arg(long, value_name = "FILE.json")]
        config: Option<PathBuf>,
        /// A secret setting read from environment variable ENVVAR, so it stays out of shell history
        /// and the process list. Repeat.
        #[arg(long = "secret-env", value_name = "KEY=ENVVAR", value_parser = parse_secret_env)]
        secret_env: Vec<(String, String)>,
    },
    /// List connectors.
    List {
        /// Only this environment's (name or id).
        #[arg(long)]
        env: Option<String>,
    },
    /// Show one connector, with its latest validation.
    Get {
        /// Name or id.
        name: String,
    },
    /// Change settings (a merge patch: only the named fields change).
    Update {
        /// Name or id.
        name: String,
        /// A setting to change, as for create. Repeat.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
        set: Vec<(String, Value)>,
        /// A setting to remove. Repeat.
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        /// A secret setting read from environment variable ENVVAR. Repeat.
        #[arg(long = "secret-env", value_name = "KEY=ENVVAR", value_parser = parse_secret_env)]
        secret_env: Vec<(String, String)>,
        /// Run another version of the registered type (see `culvert connector versions TYPE`).
        #[arg(long, value_name = "SEMVER")]
        type_version: Option<String>,
    },
    /// Delete a connector (no pipeline may use it).
    Delete {
        /// Name or id.
        name: String,
    },
    /// Start a new connector project from a template (no control plane needed).
    New {
        /// Connector name: lowercase letters, digits and `-`.
        name: String,
        /// Language of the project.
        #[arg(long, value_enum)]
        lang: super::connector_dev::Lang,
        /// Source or destination.
        #[arg(long, value_enum)]
        kind: super::connector_dev::ProjectKind,
        /// Directory to create [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the conformance kit on a component in the agent's sandbox (no control plane needed).
    Test {
        /// The component, for example dist/NAME.wasm.
        component: PathBuf,
        /// JSON file with the configuration to test with.
        #[arg(long, value_name = "FILE.json")]
        config: PathBuf,
        /// `max-rows` the kit passes to every `next`.
        #[arg(long, default_value_t = 1000)]
        max_rows: u32,
        /// A source's read stops after this many rows.
        #[arg(long, default_value_t = 200_000)]
        read_rows: u64,
        /// A source's read stops after this many seconds.
        #[arg(long, default_value_t = 120)]
        read_seconds: u64,
        /// Linear memory cap of the connector, as a pipeline would set it.
        #[arg(long, default_value_t = 512)]
        memory_mib: u64,
        /// CPU seconds one call may use, as a pipeline would set it.
        #[arg(long, default_value_t = 60.0)]
        cpu_seconds_per_call: f64,
        /// An endpoint the connector may reach besides those its configuration names. Repeat.
        #[arg(long, value_name = "HOST:PORT")]
        egress: Vec<String>,
        /// Table selection for a source (glob such as `public.*`). Repeat.
        #[arg(long = "table", value_name = "GLOB")]
        tables: Vec<String>,
    },
    /// Publish a component as a version of a registered connector type (uploads it first).
    Publish(super::registry::PublishArgs),
    /// Record where a connector's database sits (Azure environments), for its network steps.
    Network(super::byoc::Network),
    /// Print the pre-filled NSG commands that let the agents reach a connector's database,
    /// and which rules are still missing (Azure environments).
    NetworkSteps {
        /// Connector name or id.
        name: String,
        /// Environment of the connector (when the name is not unique).
        #[arg(long)]
        env: Option<String>,
        /// Print only the script.
        #[arg(long)]
        script: bool,
    },
    /// List the versions of a registered connector type.
    Versions {
        /// Connector type.
        name: String,
    },
    /// Create an ed25519 key pair for signing published connector versions.
    Keygen {
        /// Private key file to create (PKCS#8 PEM, mode 0600); the public key goes to FILE.pub.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check the connector from inside its environment.
    Validate {
        /// Name or id.
        name: String,
        /// Wait for the result and print each check.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

/// Parse `KEY=VALUE`: the value is JSON when it is a JSON number or boolean, else a string.
pub fn parse_set(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?}: the key is empty; write KEY=VALUE"));
    }
    let value = match serde_json::from_str::<Value>(v) {
        Ok(n @ (Value::Number(_) | Value::Bool(_))) if v.trim() == v => n,
        _ => Value::String(v.to_string()),
    };
    Ok((k.to_string(), value))
}

/// Parse `KEY=ENVVAR`.
pub fn parse_secret_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?}: write KEY=ENVVAR, naming the environment variable that holds the secret"
        )),
    }
}

/// The configuration from a file, `--set` values and secrets from the environment (via `lookup`).
pub fn build_config(
    base: Option<Map<String, Value>>,
    set: &[(String, Value)],
    secret_env: &[(String, String)],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Map<String, Value>, Failure> {
    let mut config = base.unwrap_or_default();
    for (k, v) in set {
        config.insert(k.clone(), v.clone());
    }
    for (k, var) in secret_env {
        let secret = lookup(var).ok_or_else(|| {
            Failure::new(
                Kind::Invalid,
                format!("--secret-env {k}={var}: environment variable {var} is not set"),
            )
        })?;
        config.insert(k.clone(), Value::String(secret));
    }
    Ok(config)
}

fn read_config(path: &PathBuf) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --config {}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Failure::new(
            Kind::Invalid,
            format!("--config {}: must hold a JSON object", path.display()),
        )
        .into()),
        Err(e) => Err(Failure::new(
            Kind::Invalid,
            format!("--config {}: not valid JSON: {e}", path.display()),
        )
        .into()),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn settings_summary(spec: &Value) -> String {
    let required: Vec<&str> = spec["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = spec["properties"].as_object() else {
        return String::new();
    };
    props
        .iter()
        .map(|(k, p)| {
            let mut s = k.clone();
            if !required.contains(&k.as_str()) {
                s.push('?');
            }
            if p["x-culvert-secret"].as_bool() == Some(true) {
                s.push_str(" (secret)");
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn types_table(types: &[ConnectorType]) -> String {
    let mut t = Table::new(&["TYPE", "KIND", "SETTINGS (? optional)"]);
    for ty in types {
        t.row(vec![
            match &ty.latest_version {
                Some(v) => format!("{} (latest {v})", ty.name),
                None => ty.name.clone(),
            },
            ty.kind.as_str().into(),
            settings_summary(&ty.spec),
        ]);
    }
    t.render()
}

fn checks_text(v: &Validation) -> String {
    let width = v
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in &v.checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        let line = format!("{mark} {:<width$}  {}", c.name, c.message);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn detail(c: &Connector, env_name: &str) -> String {
    let config = if c.config.is_empty() {
        "-".to_string()
    } else {
        c.config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut pairs = vec![
        ("name", c.name.clone()),
        ("id", c.id.to_string()),
        ("environment", env_name.to_string()),
        (
            "type",
            match &c.type_version {
                Some(v) => format!("{}@{v}", c.connector_type),
                None => c.connector_type.clone(),
            },
        ),
        ("digest", output::or_dash(c.digest.clone())),
        ("kind", c.kind.as_str().to_string()),
        ("config", config),
        (
            "secrets",
            if c.secrets.is_empty() {
                "-".into()
            } else {
                c.secrets.join(", ")
            },
        ),
    ];
    match &c.validation {
        None => pairs.push(("validation", "never run".into())),
        Some(v) => pairs.push((
            "validation",
            format!(
                "{} (requested {}{})",
                v.state.as_str(),
                output::time(v.requested_at),
                v.finished_at
                    .map(|t| format!(", finished {}", output::time(t)))
                    .unwrap_or_default()
            ),
        )),
    }
    pairs.push(("created", output::time(c.created_at)));
    pairs.push(("updated", output::time(c.updated_at)));
    pairs.push(("version", c.version.to_string()));
    let mut out = fields(&pairs);
    if let Some(v) = &c.validation {
        out.push_str(&checks_text(v));
    }
    out
}

fn list_table(items: &[Connector], envs: &std::collections::HashMap<uuid::Uuid, String>) -> String {
    if items.is_empty() {
        return "no connectors; see `culvert connector types` and `culvert connector create`\n"
            .into();
    }
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "ENVIRONMENT",
        "TYPE",
        "KIND",
        "VALIDATION",
        "SECRETS",
    ]);
    for c in items {
        t.row(vec![
            c.name.clone(),
            c.id.to_string(),
            name_or_id(envs, c.environment_id),
            c.connector_type.clone(),
            c.kind.as_str().into(),
            c.validation
                .as_ref()
                .map(|v| v.state.as_str())
                .unwrap_or("-")
                .into(),
            c.secrets.join(","),
        ]);
    }
    t.render()
}

/// Run a `connector` command.
pub async fn run(api: &Api, cmd: ConnectorCommand) -> Result<()> {
    match cmd {
        ConnectorCommand::New { .. } | ConnectorCommand::Test { .. } => {
            unreachable!("handled before connecting: they need no control plane")
        }
        ConnectorCommand::Publish(args) => super::registry::publish(api, args).await?,
        ConnectorCommand::Versions { name } => super::registry::versions(api, &name).await?,
        ConnectorCommand::Network(n) => super::byoc::network(api, n).await?,
        ConnectorCommand::NetworkSteps { name, env, script } => {
            super::byoc::network_steps(api, &name, env.as_deref(), script).await?
        }
        ConnectorCommand::Keygen { out } => super::registry::keygen(&out, api.output)?,
        ConnectorCommand::Types => {
            let a = api.get::<Vec<ConnectorType>>("/v1/connector-types").await?;
            api.show(&a, |t| types_table(t));
        }
        ConnectorCommand::Create {
            name,
            env,
            connector_type,
            set,
            config,
            secret_env,
        } => {
            let base = config.as_ref().map(read_config).transpose()?;
            let config = build_config(base, &set, &secret_env, env_var)?;
            let environment_id = resolve::environment(api, &env).await.context("--env")?;
            let body = ConnectorCreate {
                name,
                environment_id,
                connector_type,
                config,
            };
            let a = api.create::<_, Connector>("/v1/connectors", &body).await?;
            api.show(&a, |c| detail(c, &env));
            if api.output == Output::Table {
                eprintln!(
                    "check it from inside the environment: culvert connector validate {} --wait",
                    a.value.name
                );
            }
        }
        ConnectorCommand::List { env } => {
            let filter = match env {
                Some(e) => vec![(
                    "environment_id",
                    resolve::environment(api, &e).await?.to_string(),
                )],
                None => Vec::new(),
            };
            let list = api.list_all::<Connector>("/v1/connectors", &filter).await?;
            let envs = if api.output == Output::Table {
                environment_names(api).await
            } else {
                Default::default()
            };
            api.show_list(&list, |items| list_table(items, &envs));
        }
        ConnectorCommand::Get { name } => {
            let id = resolve::connector(api, &name, None).await?;
            let a = api
                .get::<Connector>(&format!("/v1/connectors/{id}"))
                .await?;
            let envs = if api.output == Output::Table {
                environment_names(api).await
            } else {
                Default::default()
            };
            api.show(&a, |c| detail(c, &name_or_id(&envs, c.environment_id)));
        }
        ConnectorCommand::Update {
            name,
            set,
            unset,
            secret_env,
            type_version,
        } => {
            let mut patch = build_config(None, &set, &secret_env, env_var)?;
            for k in unset {
                patch.insert(k, Value::Null);
            }
            if patch.is_empty() && type_version.is_none() {
                return Err(Failure::new(
                    Kind::Invalid,
                    "nothing to change: give --set, --unset, --secret-env or --type-version",
                )
                .into());
            }
            let id = resolve::connector(api, &name, None).await?;
            let path = format!("/v1/connectors/{id}");
            let current = api.get::<Connector>(&path).await?;
            let body = ConnectorUpdate {
                config: Some(patch),
                type_version,
            };
            let a = api
                .patch::<_, Connector>(&path, &body, current.etag.as_deref())
                .await?;
            let envs = if api.output == Output::Table {
                environment_names(api).await
            } else {
                Default::default()
            };
            api.show(&a, |c| detail(c, &name_or_id(&envs, c.environment_id)));
        }
        ConnectorCommand::Delete { name } => {
            let id = resolve::connector(api, &name, None).await?;
            api.delete(&format!("/v1/connectors/{id}")).await?;
            if api.output == Output::Table {
                outln!("deleted connector {name}");
            }
        }
        ConnectorCommand::Validate {
            name,
            wait,
            timeout,
        } => {
            validate(api, &name, wait, Duration::from_secs(timeout)).await?;
        }
    }
    Ok(())
}

async fn validate(api: &Api, name: &str, wait: bool, timeout: Duration) -> Result<()> {
    let id = resolve::connector(api, name, None).await?;
    let started = api
        .post::<_, Validation>(
            &format!("/v1/connectors/{id}/validate"),
            &serde_json::json!({}),
        )
        .await?;
    if !wait {
        api.show(&started, |v| {
            format!(
                "validation {} is {}; see the result with `culvert connector get {name}`\n",
                v.id,
                v.state.as_str()
            )
        });
        return Ok(());
    }
    let path = format!("/v1/connectors/{id}");
    let deadline = Instant::now() + timeout;
    loop {
        let a = api.get::<Connector>(&path).await?;
        let current = a
            .value
            .validation
            .as_ref()
            .filter(|v| v.id == started.value.id);
        if let Some(v) =
            current.filter(|v| matches!(v.state, ValidationState::Passed | ValidationState::Failed))
        {
            match api.output {
                Output::Json => {
                    #[derive(serde::Deserialize)]
                    struct Part<'a> {
                        #[serde(borrow)]
                        validation: &'a RawValue,
                    }
                    let part: Part =
                        serde_json::from_str(a.raw.get()).context("validation in the connector")?;
                    outln!("{}", part.validation.get());
                }
                Output::Table => out!("{}", checks_text(v)),
            }
            if v.state == ValidationState::Failed {
                return Err(Failure::new(
                    Kind::Other,
                    format!("validation of {} failed", a.value.name),
                )
                .into());
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let state = current.map(|v| v.state.as_str()).unwrap_or("queued");
            return Err(Failure::new(
                Kind::Other,
                format!(
                    "validation of {} is still {state} after {}s; are the environment's agents healthy? (`culvert agent list`)",
                    a.value.name,
                    timeout.as_secs()
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_values_are_numbers_booleans_or_strings() {
        assert_eq!(
            parse_set("port=5432").unwrap(),
            ("port".into(), json!(5432))
        );
        assert_eq!(
            parse_set("ratio=0.5").unwrap(),
            ("ratio".into(), json!(0.5))
        );
        assert_eq!(parse_set("ssl=true").unwrap(), ("ssl".into(), json!(true)));
        assert_eq!(
            parse_set("host=db.example.com").unwrap(),
            ("host".into(), json!("db.example.com"))
        );
        assert_eq!(parse_set("dsn=a=b").unwrap(), ("dsn".into(), json!("a=b")));
        assert_eq!(parse_set("empty=").unwrap(), ("empty".into(), json!("")));
        assert_eq!(parse_set("n=null").unwrap(), ("n".into(), json!("null")));
        assert_eq!(
            parse_set("list=[1,2]").unwrap(),
            ("list".into(), json!("[1,2]"))
        );
        assert_eq!(parse_set("q=\"x\"").unwrap(), ("q".into(), json!("\"x\"")));
        assert_eq!(parse_set("p= 5432").unwrap(), ("p".into(), json!(" 5432")));
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("=1").is_err());
    }

    #[test]
    fn secret_env_names_a_variable() {
        assert_eq!(
            parse_secret_env("password=PGPASSWORD").unwrap(),
            ("password".into(), "PGPASSWORD".into())
        );
        assert!(parse_secret_env("password").is_err());
        assert!(parse_secret_env("password=").is_err());
    }

    #[test]
    fn config_merges_file_sets_and_secrets() {
        let base = json!({"host": "a", "port": 1}).as_object().cloned();
        let lookup = |v: &str| (v == "PW").then(|| "s3cret".to_string());
        let cfg = build_config(
            base,
            &[("port".into(), json!(5432))],
            &[("password".into(), "PW".into())],
            lookup,
        )
        .unwrap();
        assert_eq!(
            Value::Object(cfg),
            json!({"host": "a", "port": 5432, "password": "s3cret"})
        );
        let e =
            build_config(None, &[], &[("password".into(), "MISSING".into())], lookup).unwrap_err();
        assert_eq!(e.kind, Kind::Invalid);
        assert!(e.message.contains("MISSING is not set"), "{}", e.message);
    }

    #[test]
    fn settings_summary_marks_optional_and_secret_fields() {
        let spec = json!({
            "required": ["host"],
            "properties": {"host": {}, "port": {}, "password": {"x-culvert-secret": true}}
        });
        let s = settings_summary(&spec);
        assert!(s.contains("host,") || s.starts_with("host"), "{s}");
        assert!(s.contains("port?"), "{s}");
        assert!(s.contains("password? (secret)"), "{s}");
    }
}

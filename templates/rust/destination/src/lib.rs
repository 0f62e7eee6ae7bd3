//! `{{name}}`: a Culvert destination connector.
//!
//! As generated it writes one newline-delimited JSON blob per batch into an Azure Blob
//! Storage container, through the agent's `http-send` (the connector itself has no
//! network access), and keeps the committed position in a `_committed` blob next to
//! the data. Replace `describe_batch` and the blob layout with what your system needs.

use culvert_connector_sdk::config::{JsonSchema, egress, parse_config, secret, spec_of};
use culvert_connector_sdk::http::{Request, Response};
use culvert_connector_sdk::position::{from_hex, is_after, to_hex};
use culvert_connector_sdk::{
    Batch, BatchKind, CheckResult, ConnectorError, Destination, Result, Writer, export_destination,
};
use serde::Deserialize;

/// Blob service REST API version sent with every request.
const API_VERSION: &str = "2021-12-02";

/// Configuration of `{{name}}`.
///
/// Unknown fields are accepted on purpose: the agent may add its own (for example `fence_epoch`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(title = "{{name}}")]
struct Config {
    /// Container URL, for example `http://127.0.0.1:10000/devstoreaccount1/mycontainer`.
    /// The agent allows HTTP requests to its host and port.
    #[schemars(transform = egress)]
    container_url: String,
    /// Shared access signature (the query string, with or without the leading `?`)
    /// granting read, create and write on the container's blobs.
    #[schemars(transform = secret)]
    sas: String,
    /// Text put in front of every blob name, for example `culvert/`.
    #[serde(default)]
    prefix: String,
    /// For benchmarks only: skip every request and keep the position in memory, so the
    /// connector measures the sandbox boundary alone. Not durable.
    #[serde(default)]
    discard: bool,
}

impl Config {
    /// Parse and validate; errors name the field and say how to fix it.
    fn load(config: &str) -> Result<Config> {
        let cfg: Config = parse_config(config)?;
        let url = cfg.container_url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                ConnectorError::config(format!(
                    "field `container_url` must start with http:// or https://, got `{url}`"
                ))
            })?;
        if url.contains(['?', '#']) {
            return Err(ConnectorError::config(
                "field `container_url` must not carry a query string; put the SAS in `sas`",
            ));
        }
        if !rest.trim_end_matches('/').contains('/') {
            return Err(ConnectorError::config(format!(
                "field `container_url` must name a container, like http://host:port/account/container; got `{url}`"
            )));
        }
        Ok(cfg)
    }

    /// The URL of a blob, with the SAS attached.
    fn blob_url(&self, name: &str) -> String {
        let sas = self.sas.trim().trim_start_matches('?');
        let base = self.container_url.trim().trim_end_matches('/');
        let path = encode_path(&format!("{}{name}", self.prefix));
        if sas.is_empty() {
            format!("{base}/{path}")
        } else {
            format!("{base}/{path}?{sas}")
        }
    }

    fn get(&self, name: &str) -> Result<Response> {
        Request::get(self.blob_url(name))
            .header("x-ms-version", API_VERSION)
            .send()
    }

    fn put(&self, name: &str, content_type: &str, body: Vec<u8>) -> Result<()> {
        let response = Request::put(self.blob_url(name))
            .header("x-ms-version", API_VERSION)
            .header("x-ms-blob-type", "BlockBlob")
            .header("content-type", content_type)
            .body(body)
            .send()?;
        ensure_ok(self, response)?;
        Ok(())
    }
}

/// Blob names may hold any character; escape all but the unreserved ones and `/`.
fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The response on success; otherwise an error that says what to do about the usual
/// storage failures (Blob Storage names them in the `x-ms-error-code` header).
fn ensure_ok(cfg: &Config, response: Response) -> Result<Response> {
    if response.is_success() {
        return Ok(response);
    }
    let code = response.header("x-ms-error-code").unwrap_or("").to_string();
    let e = match response.error_for_status() {
        Ok(response) => return Ok(response),
        Err(e) => e,
    };
    Err(match code.as_str() {
        "ContainerNotFound" => ConnectorError::config(format!(
            "container {} does not exist; create it or fix `container_url`",
            cfg.container_url
        )),
        c if c.starts_with("Authentication") || c.starts_with("Authorization") => {
            ConnectorError::auth(format!(
                "{}; check that `sas` is valid, not expired and grants read, create and write",
                e.message
            ))
        }
        _ => e,
    })
}

struct {{name_pascal}};

impl Destination for {{name_pascal}} {
    type Writer = {{name_pascal}}Writer;

    fn spec() -> String {
        spec_of::<Config>()
    }

    fn check(config: &str) -> Vec<CheckResult> {
        let cfg = match Config::load(config) {
            Ok(cfg) => cfg,
            Err(e) => return vec![CheckResult::failed("config", e.message)],
        };
        if cfg.discard {
            return vec![CheckResult::ok("config")];
        }
        // A blob that does not exist: answers BlobNotFound when the container and SAS
        // are fine, ContainerNotFound or an authentication error otherwise.
        let probe = cfg.get(".culvert-check").and_then(|r| match r.status {
            404 if r.header("x-ms-error-code") == Some("BlobNotFound") => Ok(()),
            _ => ensure_ok(&cfg, r).map(|_| ()),
        });
        vec![
            CheckResult::ok("config"),
            CheckResult::from_result("container", probe),
        ]
    }
}

/// Writes `{prefix}{pipeline}/{hex(position)}.ndjson` per batch, then records the
/// position in `{prefix}{pipeline}/_committed`.
struct {{name_pascal}}Writer {
    cfg: Config,
    pipeline: String,
    /// The committed position once read from storage.
    committed: Option<Option<Vec<u8>>>,
}

impl {{name_pascal}}Writer {
    fn committed_blob(&self) -> String {
        format!("{}/_committed", self.pipeline)
    }
}

impl Writer for {{name_pascal}}Writer {
    fn open(config: &str, pipeline: &str) -> Result<Self> {
        Ok({{name_pascal}}Writer {
            cfg: Config::load(config)?,
            pipeline: pipeline.to_string(),
            committed: None,
        })
    }

    fn committed(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(known) = &self.committed {
            return Ok(known.clone());
        }
        if self.cfg.discard {
            return Ok(None);
        }
        let response = self.cfg.get(&self.committed_blob())?;
        let position = match response.status {
            404 if response.header("x-ms-error-code") != Some("ContainerNotFound") => None,
            _ => Some(from_hex(&ensure_ok(&self.cfg, response)?.text())?),
        };
        self.committed = Some(position.clone());
        Ok(position)
    }

    fn apply(&mut self, batch: Batch) -> Result<Vec<u8>> {
        let committed = self.committed()?;
        if !is_after(&batch.position, committed.as_deref()) {
            // Replayed after a restart: already stored.
            return Ok(batch.position);
        }
        if self.cfg.discard {
            self.committed = Some(Some(batch.position.clone()));
            return Ok(batch.position);
        }
        if !batch.tables.is_empty() {
            let name = format!("{}/{}.ndjson", self.pipeline, to_hex(&batch.position));
            self.cfg
                .put(&name, "application/x-ndjson", describe_batch(&batch))?;
        }
        self.cfg.put(
            &self.committed_blob(),
            "text/plain",
            to_hex(&batch.position).into_bytes(),
        )?;
        self.committed = Some(Some(batch.position.clone()));
        Ok(batch.position)
    }
}

/// One JSON line per table in the batch.
fn describe_batch(batch: &Batch) -> Vec<u8> {
    let kind = match batch.kind {
        BatchKind::Snapshot => "snapshot",
        BatchKind::Changes => "changes",
        BatchKind::Heartbeat => "heartbeat",
    };
    let mut out = Vec::new();
    for t in &batch.tables {
        let line = serde_json::json!({
            "table": t.table.to_string(),
            "kind": kind,
            "rows": t.row_count,
            "first_of_table": t.first_of_table,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

export_destination!({{name_pascal}});

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use culvert_connector_sdk::http::mock;
    use culvert_connector_sdk::{TableRef, TableRows};

    use super::*;

    const CONFIG: &str =
        r#"{"container_url": "http://127.0.0.1:10000/acct/c", "sas": "?sig=x", "prefix": "p/"}"#;

    /// An in-memory container answering like Blob Storage.
    fn fake_storage() -> Rc<RefCell<BTreeMap<String, Vec<u8>>>> {
        let blobs = Rc::new(RefCell::new(BTreeMap::new()));
        let store = blobs.clone();
        mock::set_handler(move |r| {
            let (path, query) = r.url.split_once('?').unwrap_or((&r.url, ""));
            assert_eq!(query, "sig=x");
            let name = path
                .strip_prefix("http://127.0.0.1:10000/acct/c/")
                .unwrap()
                .to_string();
            match r.method.as_str() {
                "PUT" => {
                    store.borrow_mut().insert(name, r.body.clone());
                    Ok((201, vec![], vec![]))
                }
                _ => match store.borrow().get(&name) {
                    Some(body) => Ok((200, vec![], body.clone())),
                    None => Ok((
                        404,
                        vec![("x-ms-error-code".into(), "BlobNotFound".into())],
                        vec![],
                    )),
                },
            }
        });
        blobs
    }

    fn batch(position: u8) -> Batch {
        Batch::snapshot(
            vec![0, position],
            vec![TableRows {
                table: TableRef::new("demo", "items"),
                first_of_table: position == 1,
                row_count: 3,
                ipc: Vec::new(),
            }],
        )
    }

    #[test]
    fn writes_blobs_and_commits() {
        let blobs = fake_storage();
        let mut w = {{name_pascal}}Writer::open(CONFIG, "pipe").unwrap();
        assert_eq!(w.committed().unwrap(), None);
        assert_eq!(w.apply(batch(1)).unwrap(), vec![0, 1]);
        assert_eq!(w.apply(batch(2)).unwrap(), vec![0, 2]);
        let stored = blobs.borrow();
        assert_eq!(
            String::from_utf8(stored["p/pipe/0001.ndjson"].clone()).unwrap(),
            "{\"first_of_table\":true,\"kind\":\"snapshot\",\"rows\":3,\"table\":\"demo.items\"}\n"
        );
        assert_eq!(stored["p/pipe/_committed"], b"0002");
        drop(stored);
        let mut reopened = {{name_pascal}}Writer::open(CONFIG, "pipe").unwrap();
        assert_eq!(reopened.committed().unwrap(), Some(vec![0, 2]));
        mock::clear_handler();
    }

    #[test]
    fn replays_are_no_ops() {
        let blobs = fake_storage();
        let mut w = {{name_pascal}}Writer::open(CONFIG, "pipe").unwrap();
        w.apply(batch(2)).unwrap();
        blobs.borrow_mut().remove("p/pipe/0002.ndjson");
        assert_eq!(w.apply(batch(1)).unwrap(), vec![0, 1]);
        assert_eq!(w.apply(batch(2)).unwrap(), vec![0, 2]);
        assert_eq!(blobs.borrow().len(), 1);
        mock::clear_handler();
    }

    #[test]
    fn config_errors_name_the_field() {
        let results = {{name_pascal}}::check(r#"{"container_url": "ftp://x/c", "sas": "s"}"#);
        assert!(!results[0].ok);
        assert!(results[0].message.contains("`container_url`"));
        let results = {{name_pascal}}::check(r#"{"container_url": "http://x/c"}"#);
        assert!(results[0].message.contains("`sas`"));
    }

    #[test]
    fn check_probes_the_container() {
        fake_storage();
        let results = {{name_pascal}}::check(CONFIG);
        assert!(results.iter().all(|r| r.ok), "{results:?}");
        mock::clear_handler();
    }
}

//! A source connector whose `open` misbehaves as its configuration's `mode` says:
//! `spin` loops forever, `memory` allocates without end, `connect` dials the `target`
//! address, `read-file` reads the `path` file. The agent must stop each with a clear error.

use std::io::{Read, Write};

use culvert_connector_sdk::{
    Batch, CheckResult, ConnectorError, Result, Source, TableInfo, TableRef, export_source,
};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    path: String,
}

fn fail(message: String) -> ConnectorError {
    ConnectorError::internal(message)
}

struct Component;

/// Never constructed successfully unless the sandbox lets the misbehaviour through.
struct Reader;

impl culvert_connector_sdk::Reader for Reader {
    fn open(config: &str, _selection: Vec<String>, _resume: Option<Vec<u8>>) -> Result<Self> {
        let cfg: Config = serde_json::from_str(config).map_err(|e| fail(e.to_string()))?;
        match cfg.mode.as_str() {
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "connect" => {
                let mut stream = std::net::TcpStream::connect(cfg.target.as_str())
                    .map_err(|e| fail(format!("connect to {} refused: {e}", cfg.target)))?;
                let _ = stream.write_all(b"leak");
                Err(fail(format!("connected to {}", cfg.target)))
            }
            "read-file" => {
                let mut text = String::new();
                std::fs::File::open(&cfg.path)
                    .and_then(|mut f| f.read_to_string(&mut text))
                    .map_err(|e| fail(format!("reading {} failed: {e}", cfg.path)))?;
                Err(fail(format!("read host file: {text}")))
            }
            other => Err(fail(format!("unknown mode {other}"))),
        }
    }

    fn next(&mut self, _max_rows: u32) -> Result<Option<Batch>> {
        Ok(None)
    }
}

impl Source for Component {
    type Reader = Reader;

    fn spec() -> String {
        r#"{"type":"object","properties":{"mode":{"type":"string"}},"required":["mode"]}"#
            .to_string()
    }

    /// Passes for any readable configuration, so the misbehaviour is reached in `open`.
    fn check(config: &str) -> Vec<CheckResult> {
        let parsed = serde_json::from_str::<Config>(config).map(|_| ());
        vec![CheckResult::from_result("config", parsed)]
    }

    fn discover(_config: &str) -> Result<Vec<TableInfo>> {
        Ok(Vec::new())
    }

    fn resync(_config: &str, _selection: Vec<String>, _tables: Vec<TableRef>) -> Result<String> {
        Err(fail("this connector has nothing to resync".to_string()))
    }
}

export_source!(Component);

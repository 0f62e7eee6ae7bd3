//! `{{name}}`: a Culvert source connector.
//!
//! As generated it produces a deterministic table `demo.items` (`rows` rows, then
//! nothing more), which is enough to run the conformance kit and a pipeline end to end.
//! Replace `fetch_rows` and the schema with reads from your own system.

use culvert_connector_sdk::config::{JsonSchema, parse_config, spec_of};
use culvert_connector_sdk::position::{decode_u64, encode_u64};
use culvert_connector_sdk::rows::{Column, TableRowsBuilder, TableSchema, Value};
use culvert_connector_sdk::{
    Batch, CheckResult, ConnectorError, Reader, Result, Source, TableInfo, TableRef, export_source,
};
use serde::Deserialize;

/// Configuration of `{{name}}`.
///
/// Unknown fields are accepted on purpose: the agent may add its own (for example `tables`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(title = "{{name}}")]
struct Config {
    /// Rows in the snapshot of `demo.items`.
    rows: u64,
    /// Most rows in one batch (the agent may ask for fewer).
    #[serde(default = "default_batch_rows")]
    batch_rows: u32,
}

fn default_batch_rows() -> u32 {
    1000
}

/// Parse and validate the configuration; errors name the field and say how to fix it.
fn load(config: &str) -> Result<Config> {
    let cfg: Config = parse_config(config)?;
    if cfg.batch_rows == 0 {
        return Err(ConnectorError::config(
            "field `batch_rows` must be at least 1; it caps the rows of one batch",
        ));
    }
    Ok(cfg)
}

/// The one table this connector produces.
fn items() -> Result<TableSchema> {
    TableSchema::new(
        TableRef::new("demo", "items"),
        vec![
            Column::bigint("id").primary_key(),
            Column::text("name"),
            Column::double("amount"),
        ],
    )
}

struct {{name_pascal}};

impl Source for {{name_pascal}} {
    type Reader = {{name_pascal}}Reader;

    fn spec() -> String {
        spec_of::<Config>()
    }

    fn check(config: &str) -> Vec<CheckResult> {
        vec![CheckResult::from_result("config", load(config))]
    }

    fn discover(config: &str) -> Result<Vec<TableInfo>> {
        let cfg = load(config)?;
        Ok(vec![items()?.table_info(cfg.rows)])
    }
}

/// Streams `demo.items`. The position is the number of rows delivered so far
/// (big-endian u64), so resuming after position `p` continues with row `p + 1`.
struct {{name_pascal}}Reader {
    cfg: Config,
    schema: TableSchema,
    /// Id of the next row to deliver (1-based).
    next_id: u64,
    /// Whether the selection includes the table at all.
    selected: bool,
}

impl Reader for {{name_pascal}}Reader {
    fn open(config: &str, selection: Vec<String>, resume: Option<Vec<u8>>) -> Result<Self> {
        let cfg = load(config)?;
        let schema = items()?;
        let delivered = match resume {
            Some(position) => decode_u64(&position)?,
            None => 0,
        };
        if delivered > cfg.rows {
            return Err(ConnectorError::state(format!(
                "the pipeline resumes after row {delivered} but `rows` is {}; raise `rows` or reset the pipeline",
                cfg.rows
            )));
        }
        Ok({{name_pascal}}Reader {
            selected: schema.table().is_selected(&selection),
            cfg,
            schema,
            next_id: delivered + 1,
        })
    }

    fn next(&mut self, max_rows: u32) -> Result<Option<Batch>> {
        if !self.selected || self.next_id > self.cfg.rows {
            // Everything was delivered: an idle source answers "nothing new".
            return Ok(None);
        }
        let limit = u64::from(self.cfg.batch_rows.min(max_rows).max(1));
        let last = self.cfg.rows.min(self.next_id + limit - 1);
        let mut rows = TableRowsBuilder::new(&self.schema).first_of_table(self.next_id == 1);
        for (id, name, amount) in fetch_rows(self.next_id, last) {
            rows.append_row(&[Value::from(id as i64), name.into(), amount.into()])?;
        }
        self.next_id = last + 1;
        Ok(Some(Batch::snapshot(
            encode_u64(last),
            vec![rows.finish()?],
        )))
    }
}

/// Rows `first..=last` of `demo.items`: the place to read from your own system.
fn fetch_rows(first: u64, last: u64) -> impl Iterator<Item = (u64, String, f64)> {
    (first..=last).map(|id| (id, format!("item {id}"), id as f64 * 1.25))
}

export_source!({{name_pascal}});

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(config: &str, resume: Option<Vec<u8>>) -> Vec<Batch> {
        let mut reader = {{name_pascal}}Reader::open(config, Vec::new(), resume).unwrap();
        std::iter::from_fn(|| reader.next(400).unwrap()).collect()
    }

    #[test]
    fn snapshot_then_idle() {
        let batches = read_all(r#"{"rows": 1000, "batch_rows": 300}"#, None);
        let counts: Vec<u32> = batches.iter().map(|b| b.tables[0].row_count).collect();
        assert_eq!(counts, vec![300, 300, 300, 100]);
        assert!(batches[0].tables[0].first_of_table);
        assert!(!batches[1].tables[0].first_of_table);
        assert!(batches.windows(2).all(|w| w[0].position < w[1].position));
    }

    #[test]
    fn resume_continues_exactly() {
        let config = r#"{"rows": 10, "batch_rows": 3}"#;
        let all = read_all(config, None);
        let rest = read_all(config, Some(all[1].position.clone()));
        assert_eq!(rest, all[2..].to_vec());
    }

    #[test]
    fn bad_config_fails_check() {
        let results = {{name_pascal}}::check(r#"{"rows": 5, "batch_rows": 0}"#);
        assert!(!results[0].ok);
        assert!(results[0].message.contains("`batch_rows`"));
        assert!(!{{name_pascal}}::check(r#"{"rows": "many"}"#)[0].ok);
        assert!({{name_pascal}}::check(r#"{"rows": 5}"#)[0].ok);
    }
}

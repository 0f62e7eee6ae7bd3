//! Source checks: `check`, `discover`, reading until caught up, and a resume after a
//! simulated crash compared through the reference destination.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::Value;
use wasmtime::component::ResourceAny;

use super::common::{self, CheckLine};
use super::model::{self, Model};
use super::report::Report;
use super::{Options, Subject};
use crate::batch::{Batch, Kind};
use crate::bindings::source as src;
use crate::sandbox::Instance;

type Inst = Instance<src::Source>;

async fn check(i: &mut Inst, config: &str) -> Result<Vec<CheckLine>> {
    Ok(i.call("check", |s, w| {
        w.culvert_connector_source_connector().call_check(s, config)
    })
    .await
    .map_err(|e| anyhow!(e))?
    .into_iter()
    .map(|r| (r.name, r.ok, r.message))
    .collect())
}

/// An open reader and its instance; dropping it is the simulated crash.
struct Reading {
    inst: Inst,
    reader: ResourceAny,
    slowest: Duration,
}

impl Reading {
    async fn open(subject: &Subject, opts: &Options, resume: Option<&[u8]>) -> Result<Reading> {
        let mut inst = subject.source().await?;
        let config = Value::Object(opts.config.clone()).to_string();
        let selection = opts.selection.clone();
        let reader = inst
            .call("open", |s, w| async move {
                w.culvert_connector_source_connector()
                    .reader()
                    .call_open(s, &config, &selection, resume)
                    .await
            })
            .await
            .map_err(|e| anyhow!(e))?
            .map_err(|e| anyhow!("`open` failed ({:?}): {}", e.kind, e.message))?;
        Ok(Reading {
            inst,
            reader,
            slowest: Duration::ZERO,
        })
    }

    async fn next(&mut self, max_rows: u32) -> Result<Option<Batch>> {
        let reader = self.reader;
        let started = Instant::now();
        let batch = self
            .inst
            .call("next", |s, w| async move {
                w.culvert_connector_source_connector()
                    .reader()
                    .call_next(s, reader, max_rows)
                    .await
            })
            .await
            .map_err(|e| anyhow!(e))?
            .map_err(|e| anyhow!("`next` failed ({:?}): {}", e.kind, e.message))?;
        self.slowest = self.slowest.max(started.elapsed());
        Ok(batch.map(Batch::from))
    }

    async fn ack(&mut self, position: &[u8]) -> Result<()> {
        let reader = self.reader;
        self.inst
            .call("ack", |s, w| async move {
                w.culvert_connector_source_connector()
                    .reader()
                    .call_ack(s, reader, position)
                    .await
            })
            .await
            .map_err(|e| anyhow!(e))?
            .map_err(|e| anyhow!("`ack` failed ({:?}): {}", e.kind, e.message))
    }
}

/// Why a read stopped.
#[derive(Debug, PartialEq)]
enum Stop {
    /// `next` returned nothing `idle_polls` times in a row: caught up.
    Idle,
    /// The row or time budget ran out.
    Budget,
    /// The position reached the one asked for.
    Reached,
}

/// Read batches, checking each against the contract as it arrives.
async fn read(
    reading: &mut Reading,
    opts: &Options,
    after: Option<&[u8]>,
    until: Option<&[u8]>,
) -> Result<(Vec<Batch>, Stop)> {
    let started = Instant::now();
    let mut batches: Vec<Batch> = Vec::new();
    let mut rows = 0u64;
    let mut idle = 0;
    let mut last: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
    loop {
        if until.is_some() && last.as_deref() >= until {
            return Ok((batches, Stop::Reached));
        }
        if rows >= opts.read_rows || started.elapsed() >= opts.read_time {
            return Ok((batches, Stop::Budget));
        }
        let Some(batch) = reading.next(opts.max_rows).await? else {
            idle += 1;
            if idle >= opts.idle_polls {
                return Ok((batches, Stop::Idle));
            }
            continue;
        };
        idle = 0;
        let n = batches.len() + 1;
        validate(&batch, opts.max_rows).map_err(|e| anyhow!("batch {n}: {e}"))?;
        if let Some(prev) = &last {
            let data = batch.kind != Kind::Heartbeat;
            if (data && batch.position <= *prev) || batch.position < *prev {
                return Err(anyhow!(
                    "batch {n}: position {} is not after the previous position {}; positions must increase byte-wise with every batch that carries rows",
                    hex::encode(&batch.position),
                    hex::encode(prev)
                ));
            }
        }
        reading.ack(&batch.position).await?;
        rows += batch.rows();
        last = Some(batch.position.clone());
        batches.push(batch);
    }
}

/// The contract of one batch on its own.
fn validate(batch: &Batch, max_rows: u32) -> Result<(), String> {
    if batch.position.is_empty() {
        return Err("the position is empty; every batch must carry the position it reaches".into());
    }
    if batch.kind == Kind::Heartbeat && !batch.tables.is_empty() {
        return Err("a heartbeat carries tables; heartbeats only move the position".into());
    }
    if batch.rows() > max_rows as u64 {
        return Err(format!(
            "{} rows in one batch, more than max-rows = {max_rows}",
            batch.rows()
        ));
    }
    let mut seen = HashSet::new();
    for t in &batch.tables {
        let name = format!("{}.{}", t.namespace, t.name);
        if t.name.is_empty() {
            return Err("a table-rows has an empty table name".into());
        }
        if !seen.insert(name.clone()) {
            return Err(format!(
                "table {name} appears twice in one batch; put all its rows in one table-rows"
            ));
        }
        if t.first_of_table && batch.kind != Kind::Snapshot {
            return Err(format!(
                "table {name}: first-of-table is only meaningful in snapshot batches"
            ));
        }
        let decoded = model::decode(t).map_err(|e| format!("table {name}: {e}"))?;
        if let Some(rb) = decoded.first() {
            let schema = rb.schema();
            let skip = if batch.kind == Kind::Changes { 4 } else { 0 };
            if let Some(f) = schema
                .fields()
                .iter()
                .skip(skip)
                .find(|f| !f.metadata().contains_key("culvert.type"))
            {
                return Err(format!(
                    "table {name}: column `{}` has no `culvert.type` field metadata; destinations create columns from it",
                    f.name()
                ));
            }
            if batch.kind == Kind::Snapshot
                && schema
                    .fields()
                    .iter()
                    .any(|f| f.name().starts_with("__culvert_"))
            {
                return Err(format!(
                    "table {name}: snapshot rows carry `__culvert_` columns; only changes batches do"
                ));
            }
        }
    }
    Ok(())
}

fn apply_all(batches: &[Batch]) -> Result<Model, String> {
    let mut m = Model::default();
    for (i, b) in batches.iter().enumerate() {
        m.apply(b).map_err(|e| format!("batch {}: {e}", i + 1))?;
    }
    Ok(m)
}

/// Run the source checks.
pub(crate) async fn run(
    report: &mut Report,
    subject: &Subject,
    opts: &Options,
    validator: &jsonschema::Validator,
) {
    let mut inst = match subject.source().await {
        Ok(i) => i,
        Err(e) => return report.fail("instantiate", format!("{e:#}")),
    };
    for (what, config) in common::bad_configs(validator, &opts.config) {
        let answer = check(&mut inst, &config).await;
        common::judge_bad(report, &what, answer);
        if report.lines.last().map(|l| l.outcome) == Some(super::Outcome::Fail) {
            // A trap poisons the instance; later checks need a fresh one.
            if let Ok(fresh) = subject.source().await {
                inst = fresh;
            }
        }
    }
    let config = Value::Object(opts.config.clone()).to_string();
    let answer = check(&mut inst, &config).await;
    if !common::judge_good(report, answer) {
        return report.skip("read", "not run: `check` fails with this configuration");
    }
    discover(report, &mut inst, &config).await;
    let mut peak = inst.peak_memory();
    drop(inst);

    let mut first = match Reading::open(subject, opts, None).await {
        Ok(r) => r,
        Err(e) => return report.fail("read", format!("{e:#}")),
    };
    let (batches, stop) = match read(&mut first, opts, None, None).await {
        Ok(r) => r,
        Err(e) => return report.fail("read", format!("{e:#}")),
    };
    peak = peak.max(first.inst.peak_memory());
    let mut slowest = first.slowest;
    drop(first);
    let model = match apply_all(&batches) {
        Ok(m) => m,
        Err(e) => return report.fail("read", e),
    };
    let rows: u64 = batches.iter().map(Batch::rows).sum();
    let bytes: u64 = batches.iter().map(Batch::bytes).sum();
    let tables: Vec<String> = model
        .row_counts()
        .iter()
        .map(|(t, n)| format!("{t} ({n})"))
        .collect();
    report.pass(
        "read",
        format!(
            "{} batches, {rows} rows, {:.1} MiB of Arrow, {}; every batch decodes, fits max-rows = {} and advances the position\ntables: {}",
            batches.len(),
            bytes as f64 / (1 << 20) as f64,
            match stop {
                Stop::Idle => "then caught up".to_string(),
                _ => format!(
                    "stopped at the kit's budget ({} rows / {} s)",
                    opts.read_rows,
                    opts.read_time.as_secs()
                ),
            },
            opts.max_rows,
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(", ")
            }
        ),
    );
    if model.anomalies.is_empty() {
        report.pass(
            "no-duplicates",
            "no key is inserted twice or deleted while absent",
        );
    } else {
        report.fail(
            "no-duplicates",
            format!(
                "{} anomalies, first: {}",
                model.anomalies.len(),
                model.anomalies[0]
            ),
        );
    }

    let data: Vec<usize> = (0..batches.len())
        .filter(|&i| batches[i].kind != Kind::Heartbeat)
        .collect();
    if data.len() < 2 {
        report.skip(
            "resume",
            "fewer than two batches with rows: nothing to resume in the middle of (give a configuration with more data, or a smaller --max-rows)",
        );
    } else {
        let k = data[(data.len() - 1) / 2];
        match resume(subject, opts, &batches, k, stop == Stop::Idle).await {
            Ok((resumed, s)) => {
                slowest = slowest.max(s.0);
                peak = peak.max(s.1);
                let mut replayed = batches[..=k].to_vec();
                replayed.extend(resumed);
                match apply_all(&replayed) {
                    Err(e) => report.fail("resume", format!("after resuming: {e}")),
                    Ok(after) => match model.difference(&after) {
                        None if after.anomalies.len() == model.anomalies.len() => report.pass(
                            "resume",
                            format!(
                                "crash after batch {} of {}, resumed from position {}: the destination ends identical, with no duplicates",
                                k + 1,
                                batches.len(),
                                hex::encode(&batches[k].position)
                            ),
                        ),
                        None => report.fail(
                            "resume",
                            format!(
                                "resumed from position {}: {}",
                                hex::encode(&batches[k].position),
                                after.anomalies.last().cloned().unwrap_or_default()
                            ),
                        ),
                        Some(diff) => report.fail(
                            "resume",
                            format!(
                                "resumed from position {} the destination differs from an uninterrupted run: {diff}; a source must continue exactly after the position it is given",
                                hex::encode(&batches[k].position)
                            ),
                        ),
                    },
                }
            }
            Err(e) => report.fail("resume", format!("{e:#}")),
        }
    }
    common::judge_limits(report, &opts.limits, peak, slowest);
}

/// Read again from `batches[k]`'s position in a fresh instance, up to where the first run got.
async fn resume(
    subject: &Subject,
    opts: &Options,
    batches: &[Batch],
    k: usize,
    first_run_complete: bool,
) -> Result<(Vec<Batch>, (Duration, usize))> {
    let from = batches[k].position.clone();
    let last = batches.last().map(|b| b.position.clone());
    let mut reading = Reading::open(subject, opts, Some(&from)).await?;
    let until = if first_run_complete {
        None
    } else {
        last.as_deref()
    };
    let (resumed, stop) = read(&mut reading, opts, Some(&from), until).await?;
    if !first_run_complete && stop != Stop::Reached {
        return Err(anyhow!(
            "resumed from {} the source did not reach the first run's last position {} within the budget",
            hex::encode(&from),
            last.map(hex::encode).unwrap_or_default()
        ));
    }
    if until.is_some() && resumed.last().map(|b| &b.position) != last.as_ref() {
        return Err(anyhow!(
            "resumed from {} the source's batches end at {} rather than at the first run's {}; with the same max-rows a source should cut the same batches",
            hex::encode(&from),
            resumed
                .last()
                .map(|b| hex::encode(&b.position))
                .unwrap_or_default(),
            last.map(hex::encode).unwrap_or_default()
        ));
    }
    Ok((resumed, (reading.slowest, reading.inst.peak_memory())))
}

async fn discover(report: &mut Report, inst: &mut Inst, config: &str) {
    let answer = inst
        .call("discover", |s, w| {
            w.culvert_connector_source_connector()
                .call_discover(s, config)
        })
        .await;
    let tables = match answer {
        Err(e) => return report.fail("discover", e.to_string()),
        Ok(Err(e)) => {
            return report.fail(
                "discover",
                format!("`discover` failed ({:?}): {}", e.kind, e.message),
            );
        }
        Ok(Ok(t)) => t,
    };
    let mut names = HashSet::new();
    for t in &tables {
        let name = format!("{}.{}", t.table.namespace, t.table.name);
        let problem = if t.table.name.is_empty() {
            Some("a table has an empty name".to_string())
        } else if !names.insert(name.clone()) {
            Some(format!("table {name} is reported twice"))
        } else if t.columns.is_empty() {
            Some(format!("table {name} has no columns"))
        } else {
            let mut cols = HashSet::new();
            let mut ordinals: Vec<u16> = t.columns.iter().filter_map(|c| c.key_ordinal).collect();
            ordinals.sort_unstable();
            if let Some(c) = t.columns.iter().find(|c| !cols.insert(c.name.as_str())) {
                Some(format!("table {name}: column `{}` appears twice", c.name))
            } else if let Some(c) = t
                .columns
                .iter()
                .find(|c| c.name.is_empty() || c.type_name.is_empty())
            {
                Some(format!(
                    "table {name}: a column has an empty name or type-name (`{}`)",
                    c.name
                ))
            } else if ordinals
                .iter()
                .enumerate()
                .any(|(i, o)| *o as usize != i + 1)
            {
                Some(format!(
                    "table {name}: key ordinals {ordinals:?} are not 1..{}",
                    ordinals.len()
                ))
            } else {
                None
            }
        };
        if let Some(p) = problem {
            return report.fail("discover", p);
        }
    }
    let listed: Vec<String> = tables
        .iter()
        .take(8)
        .map(|t| format!("{}.{}", t.table.namespace, t.table.name))
        .collect();
    report.pass(
        "discover",
        format!(
            "{} tables, well-formed{}",
            tables.len(),
            if listed.is_empty() {
                String::new()
            } else {
                format!(": {}", listed.join(", "))
            }
        ),
    );
}

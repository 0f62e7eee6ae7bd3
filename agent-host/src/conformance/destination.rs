//! Destination checks: `check`, then the kit's batches applied under a fresh pipeline
//! name, a simulated crash, a replay of everything, and one more batch.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::Value;
use wasmtime::component::ResourceAny;

use super::common::{self, CheckLine};
use super::report::Report;
use super::synthetic;
use super::{Options, Subject};
use crate::batch::{Batch, Kind};
use crate::bindings::destination as dst;
use crate::sandbox::Instance;

type Inst = Instance<dst::Destination>;

async fn check(i: &mut Inst, config: &str) -> Result<Vec<CheckLine>> {
    Ok(i.call("check", |s, w| {
        w.culvert_connector_destination_connector()
            .call_check(s, config)
    })
    .await
    .map_err(|e| anyhow!(e))?
    .into_iter()
    .map(|r| (r.name, r.ok, r.message))
    .collect())
}

/// An open writer and its instance; dropping it is the simulated crash.
struct Writing {
    inst: Inst,
    writer: ResourceAny,
    slowest: Duration,
}

impl Writing {
    async fn open(subject: &Subject, opts: &Options, pipeline: &str) -> Result<Writing> {
        let mut inst = subject.destination().await?;
        let config = Value::Object(opts.config.clone()).to_string();
        let writer = inst
            .call("open", |s, w| async move {
                w.culvert_connector_destination_connector()
                    .writer()
                    .call_open(s, &config, pipeline)
                    .await
            })
            .await
            .map_err(|e| anyhow!(e))?
            .map_err(|e| anyhow!("`open` failed ({:?}): {}", e.kind, e.message))?;
        Ok(Writing {
            inst,
            writer,
            slowest: Duration::ZERO,
        })
    }

    async fn committed(&mut self) -> Result<Option<Vec<u8>>> {
        let writer = self.writer;
        self.inst
            .call("committed", |s, w| async move {
                w.culvert_connector_destination_connector()
                    .writer()
                    .call_committed(s, writer)
                    .await
            })
            .await
            .map_err(|e| anyhow!(e))?
            .map_err(|e| anyhow!("`committed` failed ({:?}): {}", e.kind, e.message))
    }

    async fn apply(&mut self, batch: &Batch) -> Result<Vec<u8>> {
        let writer = self.writer;
        let wire: dst::culvert::connector::types::Batch = batch.clone().into();
        let started = Instant::now();
        let answer = self
            .inst
            .call("apply", |s, w| async move {
                w.culvert_connector_destination_connector()
                    .writer()
                    .call_apply(s, writer, &wire)
                    .await
            })
            .await
            .map_err(|e| anyhow!(e))?
            .map_err(|e| anyhow!("`apply` failed ({:?}): {}", e.kind, e.message));
        self.slowest = self.slowest.max(started.elapsed());
        answer
    }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Snapshot => "snapshot",
        Kind::Changes => "changes",
        Kind::Heartbeat => "heartbeat",
    }
}

/// Apply `batches` in order; every answer must be the batch's own position.
async fn apply_all(w: &mut Writing, batches: &[Batch], what: &str) -> Result<()> {
    for (i, b) in batches.iter().enumerate() {
        let got = w
            .apply(b)
            .await
            .map_err(|e| anyhow!("{what}: batch {} ({}): {e:#}", i + 1, describe(b.kind)))?;
        if got != b.position {
            return Err(anyhow!(
                "{what}: batch {} ({}) returned position {} instead of its own {}",
                i + 1,
                describe(b.kind),
                hex::encode(&got),
                hex::encode(&b.position)
            ));
        }
    }
    Ok(())
}

fn hex_opt(p: &Option<Vec<u8>>) -> String {
    p.as_ref().map(hex::encode).unwrap_or_else(|| "none".into())
}

/// Run the destination checks.
pub(crate) async fn run(
    report: &mut Report,
    subject: &Subject,
    opts: &Options,
    validator: &jsonschema::Validator,
) {
    let mut inst = match subject.destination().await {
        Ok(i) => i,
        Err(e) => return report.fail("instantiate", format!("{e:#}")),
    };
    for (what, config) in common::bad_configs(validator, &opts.config) {
        let answer = check(&mut inst, &config).await;
        common::judge_bad(report, &what, answer);
        if report.lines.last().map(|l| l.outcome) == Some(super::Outcome::Fail)
            && let Ok(fresh) = subject.destination().await
        {
            inst = fresh;
        }
    }
    let config = Value::Object(opts.config.clone()).to_string();
    let answer = check(&mut inst, &config).await;
    if !common::judge_good(report, answer) {
        return report.skip("apply", "not run: `check` fails with this configuration");
    }
    let mut peak = inst.peak_memory();
    drop(inst);

    let pipeline = format!(
        "culvert-kit-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let batches = synthetic::batches();
    let (head, tail) = batches.split_at(batches.len() - 1);
    let mut slowest = Duration::ZERO;

    let mut w = match Writing::open(subject, opts, &pipeline).await {
        Ok(w) => w,
        Err(e) => return report.fail("apply", format!("{e:#}")),
    };
    match w.committed().await {
        Ok(None) => {}
        Ok(Some(p)) => {
            return report.fail(
                "apply",
                format!(
                    "a new pipeline `{pipeline}` already has committed position {}; positions must be kept per pipeline name",
                    hex::encode(p)
                ),
            );
        }
        Err(e) => return report.fail("apply", format!("{e:#}")),
    }
    if let Err(e) = apply_all(&mut w, head, "first run").await {
        return report.fail("apply", format!("{e:#}"));
    }
    let last = head.last().map(|b| b.position.clone());
    match w.committed().await {
        Ok(c) if c == last => report.pass(
            "apply",
            format!(
                "{} batches (snapshot in two chunks, heartbeat, inserts, updates, a key change, a delete, a transaction over two batches) into {}.{} of pipeline `{pipeline}`; committed = {}",
                head.len(),
                synthetic::NAMESPACE,
                synthetic::TABLE,
                hex_opt(&c)
            ),
        ),
        Ok(c) => {
            return report.fail(
                "apply",
                format!(
                    "after applying every batch `committed` is {} instead of {}",
                    hex_opt(&c),
                    hex_opt(&last)
                ),
            );
        }
        Err(e) => return report.fail("apply", format!("{e:#}")),
    }
    slowest = slowest.max(w.slowest);
    peak = peak.max(w.inst.peak_memory());
    // The simulated crash: the instance goes away without any call telling it.
    drop(w);

    let mut w = match Writing::open(subject, opts, &pipeline).await {
        Ok(w) => w,
        Err(e) => return report.fail("crash-recovery", format!("reopening: {e:#}")),
    };
    match w.committed().await {
        Ok(c) if c == last => report.pass(
            "crash-recovery",
            format!(
                "a fresh instance after the crash reports committed = {}",
                hex_opt(&c)
            ),
        ),
        Ok(c) => {
            return report.fail(
                "crash-recovery",
                format!(
                    "after a crash a fresh instance reports committed = {} but {} was applied; positions must be stored durably with the data they belong to",
                    hex_opt(&c),
                    hex_opt(&last)
                ),
            );
        }
        Err(e) => return report.fail("crash-recovery", format!("{e:#}")),
    }
    // The agent replays what it cannot prove was applied: every batch again.
    match apply_all(&mut w, head, "replay").await {
        Err(e) => report.fail(
            "replay",
            format!("{e:#}; a batch at or before the committed position must be a no-op that returns its position"),
        ),
        Ok(()) => match w.committed().await {
            Ok(c) if c == last => report.pass(
                "replay",
                "re-applying every batch is accepted and leaves committed where it was",
            ),
            Ok(c) => report.fail(
                "replay",
                format!(
                    "after replaying, committed moved to {} (expected {})",
                    hex_opt(&c),
                    hex_opt(&last)
                ),
            ),
            Err(e) => report.fail("replay", format!("{e:#}")),
        },
    }
    match apply_all(&mut w, tail, "after the replay").await {
        Err(e) => report.fail("continue", format!("{e:#}")),
        Ok(()) => match w.committed().await {
            Ok(c) if c.as_deref() == tail.last().map(|b| b.position.as_slice()) => report.pass(
                "continue",
                format!(
                    "the next batch applies after the replay; committed = {}",
                    hex_opt(&c)
                ),
            ),
            Ok(c) => report.fail(
                "continue",
                format!("after the next batch committed is {}", hex_opt(&c)),
            ),
            Err(e) => report.fail("continue", format!("{e:#}")),
        },
    }
    slowest = slowest.max(w.slowest);
    peak = peak.max(w.inst.peak_memory());
    common::judge_limits(report, &opts.limits, peak, slowest);
}

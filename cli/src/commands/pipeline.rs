//! `culvert pipeline`: pipelines, their lifecycle, status and a live snapshot progress view.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Subcommand;
use culvert_control_api::agents::PipelineCommand as ApiCommand;
use culvert_control_api::connectors::Connector;
use culvert_control_api::pipelines::{
    Pipeline, PipelineCreate, PipelineStatus, PipelineUpdate, ResyncRequest,
};
use uuid::Uuid;

use super::{environment_names, name_or_id};
use crate::api::Api;
use crate::exit::{Failure, Kind};
use crate::output::{self, Output, Table, fields};
use crate::output::{out, outln};
use crate::resolve;

/// `culvert pipeline ...`.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline (a draft until deployed).
    Create {
        /// Name: lowercase letters, digits and `_`, starting with a letter.
        name: String,
        /// Source connector (name or id).
        #[arg(long)]
        source: String,
        /// Target connector (name or id).
        #[arg(long)]
        target: String,
        /// Tables to replicate as schema-qualified globs, for example public.* ; repeat for several.
        #[arg(long = "tables", required = true, value_name = "GLOB")]
        tables: Vec<String>,
        /// Rows per change batch (default 5000).
        #[arg(long)]
        batch_rows: Option<u32>,
    },
    /// List pipelines.
    List,
    /// Show one pipeline's definition.
    Get {
        /// Name or id.
        name: String,
    },
    /// Start running the pipeline on an agent of its environment.
    Deploy {
        /// Name or id.
        name: String,
    },
    /// Stop the pipeline; its replication slot keeps its place.
    Pause {
        /// Name or id.
        name: String,
    },
    /// Run a paused pipeline again.
    Resume {
        /// Name or id.
        name: String,
    },
    /// Copy tables again while changes keep streaming.
    Resync {
        /// Name or id.
        name: String,
        /// Only this table (schema.name); repeat for several. Default: every selected table.
        #[arg(long = "table", value_name = "SCHEMA.NAME")]
        tables: Vec<String>,
    },
    /// Change the table selection or batch size.
    Update {
        /// Name or id.
        name: String,
        /// The new table selection (replaces the old one); repeat for several.
        #[arg(long = "tables", value_name = "GLOB")]
        tables: Vec<String>,
        /// Rows per change batch.
        #[arg(long)]
        batch_rows: Option<u32>,
    },
    /// Delete a pipeline (pause it first).
    Delete {
        /// Name or id.
        name: String,
    },
    /// Show what the agent running the pipeline last reported.
    Status {
        /// Name or id.
        name: String,
        /// Refresh every 2 seconds until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Follow the initial snapshot until the pipeline streams changes (or fails).
    Progress {
        /// Name or id.
        name: String,
    },
}

async fn connector_name(api: &Api, id: Uuid) -> String {
    match api.get::<Connector>(&format!("/v1/connectors/{id}")).await {
        Ok(a) => a.value.name,
        Err(_) => id.to_string(),
    }
}

fn detail(p: &Pipeline, env: &str, source: &str, target: &str) -> String {
    fields(&[
        ("name", p.name.clone()),
        ("id", p.id.to_string()),
        ("environment", env.to_string()),
        ("source", source.to_string()),
        ("target", target.to_string()),
        ("tables", p.tables.join(", ")),
        ("batch rows", output::count(p.batch_rows as u64)),
        ("state", p.state.as_str().to_string()),
        ("created", output::time(p.created_at)),
        ("updated", output::time(p.updated_at)),
        ("version", p.version.to_string()),
    ])
}

async fn show_pipeline(api: &Api, a: &crate::api::Answer<Pipeline>) {
    if api.output == Output::Json {
        api.show(a, |_| String::new());
        return;
    }
    let envs = environment_names(api).await;
    let source = connector_name(api, a.value.source_id).await;
    let target = connector_name(api, a.value.target_id).await;
    api.show(a, |p| {
        detail(p, &name_or_id(&envs, p.environment_id), &source, &target)
    });
}

fn list_table(items: &[Pipeline], envs: &std::collections::HashMap<Uuid, String>) -> String {
    if items.is_empty() {
        return "no pipelines; create one with `culvert pipeline create`\n".into();
    }
    let mut t = Table::new(&["NAME", "ID", "ENVIRONMENT", "STATE", "TABLES", "BATCH ROWS"]);
    for p in items {
        t.row(vec![
            p.name.clone(),
            p.id.to_string(),
            name_or_id(envs, p.environment_id),
            p.state.as_str().into(),
            p.tables.join(","),
            p.batch_rows.to_string(),
        ]);
    }
    t.render()
}

/// The status as a field list followed by the per-table rows.
pub fn status_text(s: &PipelineStatus, now: chrono::DateTime<chrono::Utc>) -> String {
    let p = &s.progress;
    let mut pairs = vec![
        ("state", s.state.as_str().to_string()),
        ("phase", s.phase.clone()),
        ("agent", output::or_dash(s.agent_id.map(|a| a.to_string()))),
        ("epoch", s.epoch.to_string()),
        ("rows read", output::count(p.rows_read)),
        ("rows applied", output::count(p.rows_applied)),
        ("bytes applied", output::bytes(p.bytes_applied)),
        (
            "lag",
            format!("{} / {:.1}s", output::bytes(p.lag_bytes), p.lag_seconds),
        ),
        ("buffer", output::bytes(p.buffer_bytes)),
        (
            "tables",
            format!("{}/{} started", p.tables_started, p.tables_total),
        ),
        (
            "reported",
            output::or_dash(
                s.reported_at
                    .map(|t| format!("{} ({})", output::time(t), output::ago(t, now))),
            ),
        ),
        ("last error", output::or_dash(p.last_error.clone())),
    ];
    if let Some(c) = &s.connectors {
        // Which connector versions run: a registered type shows its pinned version and digest.
        let runs =
            |r: &culvert_control_api::pipelines::ConnectorRun| match (&r.type_version, &r.digest) {
                (Some(v), Some(d)) => format!(
                    "{}@{v} (sha256:{})",
                    r.connector_type,
                    &d[..d.len().min(12)]
                ),
                _ => r.connector_type.clone(),
            };
        pairs.push(("source", runs(&c.source)));
        pairs.push(("target", runs(&c.target)));
    }
    let mut out = fields(&pairs);
    if !p.tables.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["TABLE", "STATE", "ROWS"]);
        for tp in &p.tables {
            t.row(vec![
                tp.table.clone(),
                tp.state.clone(),
                output::count(tp.rows),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// Rows per second over the last few samples.
#[derive(Debug, Default)]
pub struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Record `rows` at `at` and return the rate over the window.
    pub fn push(&mut self, at: Instant, rows: u64) -> f64 {
        self.samples.push_back((at, rows));
        while self.samples.len() > 6 {
            self.samples.pop_front();
        }
        let (t0, r0) = self.samples[0];
        let dt = at.duration_since(t0).as_secs_f64();
        if dt <= 0.0 || rows < r0 {
            return 0.0;
        }
        (rows - r0) as f64 / dt
    }
}

/// How long the row count of a table the agent still marks `snapshot` must stay the same before
/// its copy counts as finished.
const SETTLE: Duration = Duration::from_secs(5);

/// Whether the snapshot is over once the phase is `streaming`.
///
/// The agent reports `streaming` as soon as it commits a change batch, which can happen while a
/// large table is still being copied; and a table keeps its `snapshot` mark after its copy ends
/// until a change touches it. So the snapshot counts as over when every table has started and the
/// tables still marked `snapshot` have stopped growing for [`SETTLE`].
#[derive(Debug, Default)]
pub struct Settled {
    /// Per table marked `snapshot`: its rows and since when they have not changed.
    tables: std::collections::HashMap<String, (u64, Instant)>,
}

impl Settled {
    /// Record a `streaming` status seen at `at`; true when the snapshot is over.
    pub fn observe(&mut self, at: Instant, s: &PipelineStatus) -> bool {
        let p = &s.progress;
        let mut done = p.tables_started >= p.tables_total;
        let mut seen = std::collections::HashMap::new();
        for t in p.tables.iter().filter(|t| t.state == "snapshot") {
            let since = match self.tables.get(&t.table) {
                Some((rows, since)) if *rows == t.rows => *since,
                _ => at,
            };
            done &= at.duration_since(since) >= SETTLE;
            seen.insert(t.table.clone(), (t.rows, since));
        }
        self.tables = seen;
        done
    }
}

/// Most per-table lines the live view draws, so one redraw fits a terminal.
const MAX_TABLE_LINES: usize = 20;

/// The totals line of the progress view.
pub fn totals_line(s: &PipelineStatus, rate: f64) -> String {
    let p = &s.progress;
    format!(
        "{:<10} {} rows applied  {} rows/s  tables {}/{} started  lag {} / {:.1}s",
        s.phase,
        output::count(p.rows_applied),
        output::count(rate.round() as u64),
        p.tables_started,
        p.tables_total,
        output::bytes(p.lag_bytes),
        p.lag_seconds
    )
}

/// The lines of the live view: one per table (busiest first, capped) and the totals line.
pub fn progress_lines(s: &PipelineStatus, rate: f64) -> Vec<String> {
    let mut tables: Vec<_> = s.progress.tables.iter().collect();
    // Tables still copying first: they are what the user is waiting for.
    tables.sort_by_key(|t| (t.state != "snapshot", t.table.clone()));
    let width = tables
        .iter()
        .map(|t| t.table.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines: Vec<String> = tables
        .iter()
        .take(MAX_TABLE_LINES)
        .map(|t| {
            format!(
                "  {:<width$}  {:<9}  {:>13} rows",
                t.table,
                t.state,
                output::count(t.rows)
            )
        })
        .collect();
    if tables.len() > MAX_TABLE_LINES {
        lines.push(format!(
            "  ... and {} more tables",
            tables.len() - MAX_TABLE_LINES
        ));
    }
    lines.push(totals_line(s, rate));
    lines
}

/// Run a `pipeline` command.
pub async fn run(api: &Api, cmd: PipelineCommand) -> Result<()> {
    match cmd {
        PipelineCommand::Create {
            name,
            source,
            target,
            tables,
            batch_rows,
        } => {
            let source_id = resolve::connector(api, &source, None).await?;
            let target_id = resolve::connector(api, &target, None).await?;
            let body = PipelineCreate {
                name,
                source_id,
                target_id,
                tables,
                batch_rows,
            };
            let a = api.create::<_, Pipeline>("/v1/pipelines", &body).await?;
            show_pipeline(api, &a).await;
            if api.output == Output::Table {
                eprintln!("start it with: culvert pipeline deploy {}", a.value.name);
            }
        }
        PipelineCommand::List => {
            let list = api.list_all::<Pipeline>("/v1/pipelines", &[]).await?;
            let envs = if api.output == Output::Table {
                environment_names(api).await
            } else {
                Default::default()
            };
            api.show_list(&list, |items| list_table(items, &envs));
        }
        PipelineCommand::Get { name } => {
            let id = resolve::pipeline(api, &name).await?;
            let a = api.get::<Pipeline>(&format!("/v1/pipelines/{id}")).await?;
            show_pipeline(api, &a).await;
        }
        PipelineCommand::Deploy { name } => action(api, &name, "deploy").await?,
        PipelineCommand::Pause { name } => action(api, &name, "pause").await?,
        PipelineCommand::Resume { name } => action(api, &name, "resume").await?,
        PipelineCommand::Resync { name, tables } => {
            let id = resolve::pipeline(api, &name).await?;
            let body = ResyncRequest { tables };
            let a = api
                .post::<_, ApiCommand>(&format!("/v1/pipelines/{id}/resync"), &body)
                .await?;
            api.show(&a, |c| {
                let what = if c.tables.is_empty() { "every selected table".to_string() } else { c.tables.join(", ") };
                format!("resync of {what} requested (command {}); follow it with `culvert pipeline status {name}`\n", c.id)
            });
        }
        PipelineCommand::Update {
            name,
            tables,
            batch_rows,
        } => {
            if tables.is_empty() && batch_rows.is_none() {
                return Err(Failure::new(
                    Kind::Invalid,
                    "nothing to change: give --tables or --batch-rows",
                )
                .into());
            }
            let id = resolve::pipeline(api, &name).await?;
            let path = format!("/v1/pipelines/{id}");
            let current = api.get::<Pipeline>(&path).await?;
            let body = PipelineUpdate {
                tables: (!tables.is_empty()).then_some(tables),
                batch_rows,
            };
            let a = api
                .patch::<_, Pipeline>(&path, &body, current.etag.as_deref())
                .await?;
            show_pipeline(api, &a).await;
        }
        PipelineCommand::Delete { name } => {
            let id = resolve::pipeline(api, &name).await?;
            api.delete(&format!("/v1/pipelines/{id}")).await?;
            if api.output == Output::Table {
                outln!("deleted pipeline {name}");
            }
        }
        PipelineCommand::Status { name, watch } => status(api, &name, watch).await?,
        PipelineCommand::Progress { name } => progress(api, &name).await?,
    }
    Ok(())
}

async fn action(api: &Api, name: &str, action: &str) -> Result<()> {
    let id = resolve::pipeline(api, name).await?;
    let a = api
        .post::<_, Pipeline>(
            &format!("/v1/pipelines/{id}/{action}"),
            &serde_json::json!({}),
        )
        .await?;
    api.show(&a, |p| {
        format!("pipeline {} is {}\n", p.name, p.state.as_str())
    });
    if api.output == Output::Table && matches!(action, "deploy" | "resume") {
        eprintln!("follow it with: culvert pipeline progress {}", a.value.name);
    }
    Ok(())
}

async fn status(api: &Api, name: &str, watch: bool) -> Result<()> {
    let id = resolve::pipeline(api, name).await?;
    let path = format!("/v1/pipelines/{id}/status");
    let tty = std::io::stdout().is_terminal();
    loop {
        let a = api.get::<PipelineStatus>(&path).await?;
        if watch && tty && api.output == Output::Table {
            // Home and clear: a full-screen refresh like `watch`.
            out!("\x1b[H\x1b[2J");
        }
        api.show(&a, |s| status_text(s, chrono::Utc::now()));
        if !watch {
            return Ok(());
        }
        if !tty && api.output == Output::Table {
            outln!();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn progress(api: &Api, name: &str) -> Result<()> {
    let id = resolve::pipeline(api, name).await?;
    let path = format!("/v1/pipelines/{id}/status");
    let tty = std::io::stdout().is_terminal() && api.output == Output::Table;
    let started = Instant::now();
    let mut rate = Rate::default();
    let mut settled = Settled::default();
    let mut drawn = 0usize;
    loop {
        let a = api.get::<PipelineStatus>(&path).await?;
        let s = &a.value;
        let r = rate.push(Instant::now(), s.progress.rows_applied);
        match api.output {
            Output::Json => outln!("{}", a.raw.get()),
            Output::Table if tty => {
                let lines = progress_lines(s, r);
                let mut frame = String::new();
                if drawn > 0 {
                    frame.push_str(&format!("\x1b[{drawn}A"));
                }
                for l in &lines {
                    frame.push_str(&format!("\r\x1b[2K{l}\n"));
                }
                // Clear what a longer previous frame left below.
                frame.push_str("\x1b[J");
                out!("{frame}");
                drawn = lines.len();
            }
            Output::Table => outln!(
                "{} {}",
                chrono::Utc::now().format("%H:%M:%S"),
                totals_line(s, r)
            ),
        }
        match s.phase.as_str() {
            "streaming" if settled.observe(Instant::now(), s) => {
                if api.output == Output::Table {
                    outln!(
                        "snapshot done: {} rows applied; {name} streams changes ({} watched)",
                        output::count(s.progress.rows_applied),
                        output::duration(started.elapsed().as_secs())
                    );
                }
                return Ok(());
            }
            "failed" => {
                return Err(Failure::new(
                    Kind::Other,
                    format!(
                        "pipeline {name} failed: {}",
                        s.progress
                            .last_error
                            .as_deref()
                            .unwrap_or("no error reported")
                    ),
                )
                .into());
            }
            "draft" => {
                return Err(Failure::new(
                    Kind::Conflict,
                    format!(
                        "pipeline {name} is not deployed; run `culvert pipeline deploy {name}`"
                    ),
                )
                .into());
            }
            "paused" => {
                return Err(Failure::new(
                    Kind::Conflict,
                    format!("pipeline {name} is paused; run `culvert pipeline resume {name}`"),
                )
                .into());
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culvert_control_api::pipelines::{DesiredState, PipelineProgress, TableProgress};

    fn status(tables: usize) -> PipelineStatus {
        PipelineStatus {
            pipeline_id: Uuid::nil(),
            state: DesiredState::Running,
            phase: "snapshot".into(),
            agent_id: None,
            epoch: 2,
            progress: PipelineProgress {
                phase: "snapshot".into(),
                rows_applied: 1_500_000,
                lag_bytes: 2048,
                lag_seconds: 0.25,
                tables_total: tables as u64,
                tables_started: 1,
                tables: (0..tables)
                    .map(|i| TableProgress {
                        table: format!("public.t{i:02}"),
                        state: if i == 1 {
                            "snapshot".into()
                        } else {
                            "streaming".into()
                        },
                        rows: 1000 * i as u64,
                    })
                    .collect(),
                ..Default::default()
            },
            reported_at: None,
            connectors: None,
        }
    }

    #[test]
    fn live_view_puts_copying_tables_first_and_totals_last() {
        let lines = progress_lines(&status(3), 12_345.4);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "  public.t01  snapshot           1,000 rows");
        assert_eq!(lines[1], "  public.t00  streaming              0 rows");
        assert_eq!(
            lines[3],
            "snapshot   1,500,000 rows applied  12,345 rows/s  tables 1/3 started  lag 2.0 KiB / 0.2s"
        );
    }

    #[test]
    fn live_view_caps_the_table_lines() {
        let lines = progress_lines(&status(25), 0.0);
        assert_eq!(lines.len(), MAX_TABLE_LINES + 2);
        assert_eq!(lines[MAX_TABLE_LINES], "  ... and 5 more tables");
    }

    #[test]
    fn the_snapshot_is_over_when_copying_tables_stop_growing() {
        let t0 = Instant::now();
        let mut st = status(2);
        st.phase = "streaming".into();
        st.progress.tables_started = 2;
        let mut s = Settled::default();
        // public.t01 is still marked `snapshot`: wait until its rows stay put for SETTLE.
        assert!(!s.observe(t0, &st));
        st.progress.tables[1].rows += 5000;
        assert!(!s.observe(t0 + Duration::from_secs(3), &st));
        assert!(!s.observe(t0 + Duration::from_secs(7), &st));
        assert!(s.observe(t0 + Duration::from_secs(8), &st));
        // A table not started yet keeps it going.
        st.progress.tables_total = 3;
        assert!(!s.observe(t0 + Duration::from_secs(20), &st));
        // With no table marked `snapshot`, streaming means done.
        let mut st = status(2);
        st.progress.tables_started = 2;
        st.progress.tables[1].state = "streaming".into();
        assert!(Settled::default().observe(t0, &st));
    }

    #[test]
    fn rate_is_rows_over_the_window() {
        let mut r = Rate::default();
        let t = Instant::now();
        assert_eq!(r.push(t, 100), 0.0);
        assert_eq!(r.push(t + Duration::from_secs(2), 300), 100.0);
        assert_eq!(r.push(t + Duration::from_secs(4), 700), 150.0);
    }

    #[test]
    fn status_text_lists_tables() {
        let text = status_text(&status(2), chrono::Utc::now());
        assert!(text.contains("phase          snapshot\n"), "{text}");
        assert!(text.contains("lag            2.0 KiB / 0.2s\n"), "{text}");
        assert!(text.contains("TABLE       STATE      ROWS\n"), "{text}");
        assert!(text.contains("public.t01  snapshot   1,000\n"), "{text}");
    }
}

//! The kit's report: one line per check, readable in a terminal and as JSON.

use serde::Serialize;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The contract holds.
    Pass,
    /// The contract is broken; `detail` says how.
    Fail,
    /// Not applicable, or not reached because an earlier check failed.
    Skip,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Short name, for example `spec` or `resume`.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// What was seen, and on failure what to fix.
    pub detail: String,
}

/// Everything the kit found about one component.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The component file.
    pub component: String,
    /// `source` or `destination`, once known.
    pub kind: Option<String>,
    /// SHA-256 of the component bytes.
    pub digest: String,
    /// Component size in bytes.
    pub size: usize,
    /// The checks, in the order they ran.
    pub lines: Vec<Line>,
}

impl Report {
    pub(crate) fn push(&mut self, name: &str, outcome: Outcome, detail: impl Into<String>) {
        self.lines.push(Line {
            name: name.to_string(),
            outcome,
            detail: detail.into(),
        });
    }

    pub(crate) fn pass(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Outcome::Pass, detail);
    }

    pub(crate) fn fail(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Outcome::Fail, detail);
    }

    pub(crate) fn skip(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Outcome::Skip, detail);
    }

    /// Whether every check passed or was skipped.
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.outcome != Outcome::Fail)
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.lines.iter().filter(|l| l.outcome == outcome).count()
    }

    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "conformance of {} ({}, {:.1} MiB, sha256 {})\n",
            self.component,
            self.kind.as_deref().unwrap_or("unknown kind"),
            self.size as f64 / (1 << 20) as f64,
            self.digest
        );
        let width = self.lines.iter().map(|l| l.name.len()).max().unwrap_or(0);
        for l in &self.lines {
            let tag = match l.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            let mut detail = l.detail.lines();
            out.push_str(&format!(
                "  {tag}  {:width$}  {}\n",
                l.name,
                detail.next().unwrap_or_default()
            ));
            for more in detail {
                out.push_str(&format!("        {:width$}  {more}\n", ""));
            }
        }
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped: {}\n",
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip),
            if self.passed() {
                "the component meets the connector contract"
            } else {
                "the component does NOT meet the connector contract"
            }
        ));
        out
    }
}

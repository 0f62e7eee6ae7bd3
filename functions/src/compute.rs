//! Compute for agents: where an environment's agents run.
//!
//! `local` environments ask the local compute provider (started by `culvert local up`) to
//! keep N `culvert-agent` processes running, the way VM Scale Sets keep N instances for
//! `azure` environments.

use serde::Serialize;
use uuid::Uuid;

/// Why compute could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// No provider is configured for this environment's kind.
    #[error("{0}")]
    NotConfigured(String),
    /// The provider refused or failed.
    #[error("the compute provider at {url} failed: {detail}")]
    Provider {
        /// Provider URL.
        url: String,
        /// What it said.
        detail: String,
    },
}

/// What agents of an environment need to start.
#[derive(Debug, Serialize)]
pub struct AgentPool<'a> {
    /// Agents to keep running.
    pub agents: u32,
    /// API base URL the agents call.
    pub control_plane_url: &'a str,
    /// Registration token for new agents.
    pub registration_token: &'a str,
}

/// The local compute provider's client.
#[derive(Clone)]
pub struct LocalCompute {
    url: String,
    http: reqwest::Client,
}

impl LocalCompute {
    /// A client for the provider at `url`.
    pub fn new(url: String) -> LocalCompute {
        LocalCompute {
            url,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(20))
                .build()
                .expect("HTTP client"),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(), ComputeError> {
        let fail = |detail: String| ComputeError::Provider {
            url: self.url.clone(),
            detail,
        };
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        Err(fail(format!(
            "HTTP {status}: {}",
            resp.text().await.unwrap_or_default()
        )))
    }

    /// Keep `pool.agents` agents of `environment` running (idempotent).
    pub async fn ensure(
        &self,
        environment: Uuid,
        pool: &AgentPool<'_>,
    ) -> Result<(), ComputeError> {
        let req = self
            .http
            .put(format!("{}/environments/{environment}", self.url))
            .json(pool);
        self.send(req).await
    }

    /// Stop every agent of `environment` (idempotent).
    pub async fn remove(&self, environment: Uuid) -> Result<(), ComputeError> {
        let req = self
            .http
            .delete(format!("{}/environments/{environment}", self.url));
        self.send(req).await
    }
}

//! The agent's own credential: obtained once with the environment's registration token,
//! kept in the state directory, replaced when the control plane forgets the agent.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use culvert_control_api::agents::{AgentRegister, AgentRegistered};
use culvert_control_api::client::Client;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Options;

/// What the agent keeps between restarts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Credentials {
    /// The agent's id.
    pub agent_id: Uuid,
    /// Its bearer key.
    pub agent_key: String,
    /// The environment it registered in.
    pub environment_id: Uuid,
}

fn path(opts: &Options) -> PathBuf {
    opts.state_dir.join("agent.json")
}

/// The stored credential if it is for this environment, else a new registration.
pub async fn obtain(opts: &Options, client: &mut Client) -> Result<Credentials> {
    if let Ok(text) = std::fs::read_to_string(path(opts))
        && let Ok(c) = serde_json::from_str::<Credentials>(&text)
        && c.environment_id == opts.environment
    {
        client.set_key(c.agent_key.clone());
        return Ok(c);
    }
    register_again(opts, client).await
}

/// Register with the registration token and store the new credential.
pub async fn register_again(opts: &Options, client: &mut Client) -> Result<Credentials> {
    let token = match &opts.token {
        super::RegistrationToken::Text(t) => t.trim().to_string(),
        super::RegistrationToken::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the registration token {}", path.display()))?
            .trim()
            .to_string(),
    };
    let mut attempt = 0u32;
    let reply: AgentRegistered = loop {
        client.set_key(token.clone());
        let body = AgentRegister {
            environment_id: opts.environment,
            name: opts.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        match client.post("/v1/agent/register", &body).await {
            Ok(r) => break r,
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                return Err(anyhow::anyhow!("registration refused: {e}"));
            }
            Err(e) => {
                attempt += 1;
                let wait = std::time::Duration::from_secs(u64::from(attempt.min(5)) * 2);
                tracing::warn!(error = %e, retry_in = ?wait, "cannot register yet");
                tokio::time::sleep(wait).await;
            }
        }
    };
    let creds = Credentials {
        agent_id: reply.agent_id,
        agent_key: reply.agent_key,
        environment_id: opts.environment,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path(opts))
        .with_context(|| format!("cannot write {}", path(opts).display()))?;
    f.write_all(serde_json::to_string(&creds)?.as_bytes())?;
    client.set_key(creds.agent_key.clone());
    Ok(creds)
}

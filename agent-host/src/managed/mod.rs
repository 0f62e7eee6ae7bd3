//! Managed mode (`culvert-agent agent`): register with the control plane, heartbeat, run
//! the pipelines leased to this agent, run validations, report progress.
//!
//! The agent only calls out. Each heartbeat renews the leases of the pipelines it runs and
//! returns the full set it should run; anything else is stopped. If heartbeats fail for
//! longer than a lease lasts, the agent stops every pipeline itself, before the control
//! plane can give them to another agent; the target's epoch fence covers the rest.

mod assignment;
pub mod components;
mod credentials;
mod runner;
pub mod validation;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use culvert_azure::keyvault::{BUFFER_KEY, CREDENTIALS_KEY, key_url};
use culvert_control_api::agents::{Heartbeat, HeartbeatReply};
use culvert_control_api::client::{Client, ClientError};
use culvert_sealing::{KeyEncryptionKey, OpeningKey};
use tokio::sync::watch;
use uuid::Uuid;

use crate::engine::ConnectorEngine;
use crate::metrics::Metrics;

/// Where the registration token comes from.
#[derive(Debug, Clone)]
pub enum RegistrationToken {
    /// A file holding it (written by the local compute provider).
    File(PathBuf),
    /// The token itself (from the instance's environment on a scale set).
    Text(String),
}

/// How the agent reaches its control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// API base URL, for example `https://culvert.example/api`.
    pub control_plane: String,
    /// The environment this agent belongs to.
    pub environment: Uuid,
    /// The environment's registration token, or the file holding it.
    pub token: RegistrationToken,
    /// Where the agent keeps its credential and its pipelines' buffers.
    pub state_dir: PathBuf,
    /// Private key that opens connector secrets sealed for this environment (local environments).
    pub sealing_key: Option<PathBuf>,
    /// The environment's Key Vault: opens connector secrets with `culvert-credentials` and
    /// wraps buffer data keys with `culvert-buffer`, using this agent's identity.
    pub key_vault: Option<String>,
    /// Base URL of the pipelines' buffers (a Blob container URL, or `file://`); the state directory by default.
    pub buffer_url: Option<String>,
    /// Name reported to the control plane (the host name by default).
    pub name: String,
}

/// The key that opens connector secrets: the environment's Key Vault, else a local private key.
fn secrets_key(opts: &Options) -> Result<Option<Arc<dyn KeyEncryptionKey>>> {
    open_secrets_key(opts.key_vault.as_deref(), opts.sealing_key.as_deref())
}

/// The key that opens connector secrets: the Key Vault `key_vault` with this process's
/// identity, else the private key file `sealing_key`.
pub fn open_secrets_key(
    key_vault: Option<&str>,
    sealing_key: Option<&std::path::Path>,
) -> Result<Option<Arc<dyn KeyEncryptionKey>>> {
    if let Some(vault) = key_vault {
        let identity = culvert_azure::identity::CredentialSource::from_env()?;
        let credential = identity
            .credential()
            .with_context(|| format!("the agent's identity ({identity})"))?;
        let key = culvert_azure::keyvault::KeyVaultKey::new(
            &key_url(vault, CREDENTIALS_KEY),
            credential,
            culvert_azure::keyvault::KeyUse::Secrets,
        )?;
        tracing::info!(key = %key.describe(), %identity, "connector secrets open with Key Vault");
        return Ok(Some(Arc::new(key)));
    }
    let Some(path) = sealing_key else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the sealing key {}", path.display()))?;
    let key =
        OpeningKey::from_pem(&pem).with_context(|| format!("sealing key {}", path.display()))?;
    Ok(Some(Arc::new(key)))
}

/// Where buffers go and which key wraps their data keys.
fn buffer_place(opts: &Options) -> assignment::BufferPlace {
    let local = assignment::BufferPlace::local(&opts.state_dir);
    assignment::BufferPlace {
        base: opts.buffer_url.clone().unwrap_or(local.base),
        key: match &opts.key_vault {
            Some(vault) => key_url(vault, BUFFER_KEY),
            None => local.key,
        },
    }
}

/// Run until `shutdown` turns true.
pub async fn run(
    opts: Options,
    engine: ConnectorEngine,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            opts.state_dir.display()
        )
    })?;
    let key = secrets_key(&opts)?;
    let buffers = buffer_place(&opts);
    tracing::info!(buffers = %buffers.base, key = %buffers.key, "buffers");
    let mut client = Client::new(&opts.control_plane, None);
    let mut creds = credentials::obtain(&opts, &mut client).await?;
    tracing::info!(agent = %creds.agent_id, environment = %opts.environment, "registered with the control plane");
    let components = components::Components::new(&opts.state_dir, client.clone());
    let mut runner = runner::Runner::new(engine.clone(), metrics, buffers, key, components.clone());
    let mut heartbeat_every = Duration::from_secs(5);
    let mut lease = Duration::from_secs(20);
    let mut last_renewal: Option<Instant> = None;
    let mut validations = validation::Validations::new(opts.state_dir.clone());
    loop {
        let sent = Instant::now();
        let beat = Heartbeat {
            running: runner.report(),
            draining: false,
        };
        match client
            .post::<_, HeartbeatReply>("/v1/agent/heartbeat", &beat)
            .await
        {
            Ok(reply) => {
                last_renewal = Some(sent);
                heartbeat_every = Duration::from_secs(u64::from(reply.heartbeat_seconds.max(1)));
                lease = Duration::from_secs(u64::from(reply.lease_seconds.max(2)));
                runner.reconcile(reply.assignments).await;
                for task in reply.validations {
                    validations.start(task, &engine, runner.key(), &components);
                }
            }
            Err(ClientError::Api(p)) if p.status == 401 => {
                tracing::warn!("the control plane no longer knows this agent; registering again");
                runner.stop_all().await;
                creds = credentials::register_again(&opts, &mut client).await?;
                components.set_client(client.clone());
                tracing::info!(agent = %creds.agent_id, "registered again");
                continue;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        // Self-fencing: stop before the control plane may hand the leases to another agent.
        if last_renewal.is_some_and(|t| t.elapsed() + heartbeat_every >= lease)
            && runner.running() > 0
        {
            tracing::error!(lease = ?lease, "no lease renewal for too long; stopping every pipeline");
            runner.stop_all().await;
        }
        validations.report(&client).await;
        tokio::select! {
            _ = tokio::time::sleep(heartbeat_every) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    tracing::info!("stopping pipelines and releasing leases");
    runner.stop_all().await;
    let beat = Heartbeat {
        running: Vec::new(),
        draining: true,
    };
    if let Err(e) = client
        .post::<_, HeartbeatReply>("/v1/agent/heartbeat", &beat)
        .await
    {
        tracing::warn!(error = %e, "could not release the leases; they expire on their own");
    }
    Ok(())
}

//! Binds every listener (token endpoint, one per vault, and the Resource Manager stand-in when
//! configured), serves them, and reports the actual addresses for the ready file.

use crate::arm::{ArmService, ProcessEnv, Settings};
use crate::config::Config;
use crate::fsutil;
use crate::identity::{IdentityService, TOKEN_PATH};
use crate::state::{StateError, Store};
use crate::token::TokenIssuer;
use crate::vault::VaultService;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

// Long enough for an in-flight RSA operation, short enough that a stuck client cannot hold
// the process past its supervisor's patience.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The actual addresses, as written to the ready file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// The value for clients' `IDENTITY_ENDPOINT`.
    pub identity_endpoint: String,
    /// Vault name → plain-HTTP vault URL (for raw HTTP clients; the SDK refuses to send tokens over it).
    pub vaults: BTreeMap<String, String>,
    /// Vault name → HTTPS vault URL on the same port (for SDK clients).
    pub vaults_https: BTreeMap<String, String>,
    /// Path of the CA certificate (PEM) that HTTPS clients must trust.
    pub ca_certificate: String,
    /// The Resource Manager base URL (HTTPS; the same port also answers plain HTTP), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_endpoint: Option<String>,
}

/// Why the services could not start or stopped unexpectedly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The state could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listener stopped serving.
    #[error("{what} stopped: {message}")]
    Serve {
        /// Which listener.
        what: String,
        /// Why.
        message: String,
    },
    /// The ready file could not be written.
    #[error("cannot write ready file {path}: {source}")]
    ReadyFile {
        /// The ready file path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The running services.
pub struct Server {
    endpoints: Endpoints,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<(String, std::io::Result<()>)>,
    arm: Option<Arc<ArmService>>,
}

/// Opens the state under `state_dir`, binds every listener and starts serving.
pub async fn start(config: &Config, state_dir: &Path) -> Result<Server, ServerError> {
    let store = Arc::new(Store::open(state_dir)?);
    let tls = crate::tls::load_or_create(&store, state_dir)?;
    let issuer = Arc::new(TokenIssuer::new(&config.tenant_id, &store.signing_key()));
    let (shutdown, _) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let (listener, addr) = bind("token endpoint", config.token_endpoint.listen).await?;
    let identity_endpoint = format!("http://{addr}{TOKEN_PATH}");
    let identity = Arc::new(IdentityService::new(
        config.token_endpoint.header.clone(),
        config.identities.clone(),
        issuer.clone(),
    ));
    tracing::info!(url = %identity_endpoint, "token endpoint listening");
    // App Service's identity endpoint is plain HTTP on loopback, and the SDK expects that.
    spawn_serve(
        &mut tasks,
        &shutdown,
        "token endpoint".into(),
        listener,
        identity.router(),
        None,
    );

    let mut vaults = BTreeMap::new();
    let mut vaults_https = BTreeMap::new();
    for vc in &config.vaults {
        let what = format!("vault '{}'", vc.name);
        let (listener, addr) = bind(&what, vc.listen).await?;
        let url = format!("http://{addr}");
        let https_url = format!("https://{addr}");
        let policies = vc
            .policies()
            .expect("policies validated when the config was loaded");
        let svc = Arc::new(VaultService::new(
            vc.name.clone(),
            url.clone(),
            https_url.clone(),
            policies,
            store.clone(),
            issuer.clone(),
        ));
        tracing::info!(vault = %vc.name, url = %url, https_url = %https_url, "vault listening");
        spawn_serve(
            &mut tasks,
            &shutdown,
            what,
            listener,
            svc.router(),
            Some(tls.acceptor.clone()),
        );
        vaults.insert(vc.name.clone(), url);
        vaults_https.insert(vc.name.clone(), https_url);
    }

    // Absolute, so clients started from another working directory can open it.
    let ca_certificate =
        std::path::absolute(&tls.ca_cert_path).unwrap_or_else(|_| tls.ca_cert_path.clone());

    let mut arm = None;
    let mut arm_endpoint = None;
    if let Some(ac) = &config.arm {
        let (listener, addr) = bind("resource manager", ac.listen).await?;
        let https_url = format!("https://{addr}");
        let svc = ArmService::start(
            Settings {
                tenant_id: config.tenant_id.clone(),
                identities: config.identities.clone(),
                arm: ac.clone(),
            },
            state_dir,
            issuer.clone(),
            ProcessEnv {
                identity_endpoint: identity_endpoint.clone(),
                identity_header: config.token_endpoint.header.clone(),
                ca_file: ca_certificate.clone(),
            },
            format!("http://{addr}"),
            https_url.clone(),
        )?;
        tracing::info!(url = %https_url, "resource manager listening");
        spawn_serve(
            &mut tasks,
            &shutdown,
            "resource manager".into(),
            listener,
            svc.clone().router(),
            Some(tls.acceptor.clone()),
        );
        arm = Some(svc);
        arm_endpoint = Some(https_url);
    }

    Ok(Server {
        endpoints: Endpoints {
            identity_endpoint,
            vaults,
            vaults_https,
            ca_certificate: ca_certificate.display().to_string(),
            arm_endpoint,
        },
        shutdown,
        tasks,
        arm,
    })
}

impl Server {
    /// The actual addresses.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Writes the endpoints as JSON to `path`, atomically.
    pub fn write_ready_file(&self, path: &Path) -> Result<(), ServerError> {
        let mut json = serde_json::to_vec_pretty(&self.endpoints).expect("endpoints serialize");
        json.push(b'\n');
        fsutil::write_atomic(path, &json).map_err(|source| ServerError::ReadyFile {
            path: path.display().to_string(),
            source,
        })
    }

    /// Serves until `stop` completes (then shuts down gracefully) or a listener fails.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
        tokio::select! {
            () = stop => {}
            Some(joined) = self.tasks.join_next() => {
                let (what, message) = match joined {
                    Ok((what, Ok(()))) => (what, "listener closed".to_owned()),
                    Ok((what, Err(e))) => (what, e.to_string()),
                    Err(e) => ("a listener".to_owned(), e.to_string()),
                };
                self.shutdown().await;
                return Err(ServerError::Serve { what, message });
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish (bounded), waits for the listeners, and
    /// stops the Resource Manager stand-in's child processes.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(arm) = &self.arm {
            arm.shutdown().await;
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections still open after the grace period; closing them");
            self.tasks.abort_all();
        }
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let err = |source| ServerError::Bind {
        what: what.to_owned(),
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

fn spawn_serve(
    tasks: &mut JoinSet<(String, std::io::Result<()>)>,
    shutdown: &watch::Sender<bool>,
    what: String,
    listener: TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let rx = shutdown.subscribe();
    tasks.spawn(async move {
        let result = crate::listener::serve(listener, router, tls, rx).await;
        (what, result)
    });
}

//! `culvert-functions-host`: a local stand-in for the Azure Functions host that runs a custom-handler app.
//!
//! It reads `host.json` and `*/function.json`, starts the handler with `FUNCTIONS_CUSTOMHANDLER_PORT`, serves HTTP
//! triggers (forwarded or as invocation payloads), polls Azure Storage queues and fires timers, speaking the
//! documented custom-handler protocol.

pub mod app;
pub mod connection;
pub mod dispatch;
pub mod handler_client;
pub mod handler_process;
pub mod http_front;
pub mod invocation;
pub mod ncrontab;
pub mod queue_trigger;
pub mod queues;
pub mod routes;
pub mod settings;
pub mod timer;

pub use app::{App, AppError};
pub use settings::AppSettings;

use crate::app::{OutputBinding, Trigger};
use crate::dispatch::{Dispatcher, Storage, StorageConfigError};
use crate::handler_client::HandlerClient;
use crate::handler_process::{HandlerError, HandlerProcess};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How to run an app.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory holding `host.json` and the function folders.
    pub app_root: PathBuf,
    /// Address of the public HTTP endpoint (port 0 picks a free one).
    pub listen: SocketAddr,
    /// App settings, passed to the handler as its environment.
    pub settings: AppSettings,
    /// How long the handler may take to answer its first `GET /`.
    pub startup_timeout: Duration,
    /// How long in-flight invocations may run on after a shutdown request.
    pub drain_timeout: Duration,
}

impl RuntimeConfig {
    /// Defaults: settings from the process environment, 60 s startup, 10 s drain.
    pub fn new(app_root: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            app_root: app_root.into(),
            listen,
            settings: AppSettings::from_env(),
            startup_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the runtime could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `host.json` or a `function.json` is invalid.
    #[error(transparent)]
    App(#[from] AppError),
    /// A storage connection setting is missing or invalid.
    #[error(transparent)]
    Storage(#[from] StorageConfigError),
    /// The HTTP endpoint could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Requested address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The handler failed to start or exited.
    #[error(transparent)]
    Handler(#[from] HandlerError),
    /// The HTTP server stopped with an error.
    #[error("HTTP server failed: {0}")]
    Server(String),
}

/// A running app: HTTP endpoint, queue listeners, timers and the handler process.
pub struct Runtime {
    local_addr: SocketAddr,
    route_prefix: String,
    handler: HandlerProcess,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    server: Option<JoinHandle<std::io::Result<()>>>,
    drain_timeout: Duration,
}

impl Runtime {
    /// Loads the app, starts the handler, waits for it to answer, then starts serving; returns once ready.
    pub async fn start(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let app = App::load(&config.app_root, &config.settings)?;
        warn_unsupported(&app);
        let storage = Storage::from_app(&app, &config.settings)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| RuntimeError::Listen {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| RuntimeError::Listen {
                addr: config.listen,
                source,
            })?;

        let handler = HandlerProcess::spawn(&app.root, &app.host.handler, &config.settings)?;
        let client = HandlerClient::new(handler.port(), app.host.function_timeout);
        if let Err(e) = handler.wait_ready(&client, config.startup_timeout).await {
            handler.stop(Duration::from_secs(5)).await;
            return Err(e.into());
        }
        tracing::info!(port = handler.port(), "handler is ready");

        let route_prefix = app.host.route_prefix.clone();
        let dispatcher = Arc::new(Dispatcher {
            app: Arc::new(app),
            handler: client,
            storage,
        });
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        for (index, f) in dispatcher.app.functions.iter().enumerate() {
            match &f.trigger {
                Trigger::Queue(_) => {
                    tracker.spawn(queue_trigger::listen(
                        dispatcher.clone(),
                        index,
                        shutdown.clone(),
                        tracker.clone(),
                    ));
                }
                Trigger::Timer(_) => {
                    tracker.spawn(timer::run(dispatcher.clone(), index, shutdown.clone()));
                }
                Trigger::Http(h) => {
                    let prefix = if route_prefix.is_empty() {
                        String::new()
                    } else {
                        format!("/{route_prefix}")
                    };
                    let methods = h
                        .methods
                        .as_ref()
                        .map_or_else(|| "all methods".to_owned(), |m| m.join(","));
                    tracing::info!(function = %f.name, "http route {prefix}/{} ({methods})", h.route);
                }
            }
        }
        let front = Arc::new(http_front::Front::new(dispatcher));
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, http_front::router(front))
                .with_graceful_shutdown(token.cancelled_owned())
                .await
        });
        Ok(Self {
            local_addr,
            route_prefix,
            handler,
            shutdown,
            tracker,
            server: Some(server),
            drain_timeout: config.drain_timeout,
        })
    }

    /// The bound address of the HTTP endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR/{routePrefix}`, the base of every HTTP function.
    pub fn api_base_url(&self) -> String {
        if self.route_prefix.is_empty() {
            format!("http://{}", self.local_addr)
        } else {
            format!("http://{}/{}", self.local_addr, self.route_prefix)
        }
    }

    /// Serves until `shutdown` resolves (Ok) or the handler exits (Err), then drains and stops the handler.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        let exited = self.handler.exited();
        let mut server = self
            .server
            .take()
            .expect("server handle is present until run_until");
        let outcome = tokio::select! {
            _ = shutdown => {
                tracing::info!("shutting down");
                self.server = Some(server);
                Ok(())
            }
            status = exited => {
                tracing::error!("handler exited ({status}); stopping (Azure would recycle the host)");
                self.server = Some(server);
                Err(RuntimeError::Handler(HandlerError::Exited { status }))
            }
            joined = &mut server => Err(RuntimeError::Server(match joined {
                Ok(Ok(())) => "stopped unexpectedly".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            })),
        };
        self.stop().await;
        outcome
    }

    /// Stops polling and accepting, waits (bounded) for in-flight invocations, then stops the handler.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.tracker.close();
        let server = self.server.take();
        let tracker = self.tracker.clone();
        let drain = async move {
            tracker.wait().await;
            if let Some(s) = server {
                let _ = s.await;
            }
        };
        if tokio::time::timeout(self.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight invocations did not finish within {:?}; stopping anyway",
                self.drain_timeout
            );
        }
        self.handler.stop(Duration::from_secs(5)).await;
        tracing::info!("stopped");
    }
}

fn warn_unsupported(app: &App) {
    for f in &app.functions {
        for (name, kind) in &f.other_inputs {
            tracing::warn!(function = %f.name, "input binding `{name}` of type `{kind}` is not supported locally; the handler will not receive it");
        }
        for o in &f.outputs {
            if let OutputBinding::Unsupported { name, binding_type } = o {
                tracing::warn!(function = %f.name, "output binding `{name}` of type `{binding_type}` is not supported locally; its values are dropped");
            }
        }
    }
}

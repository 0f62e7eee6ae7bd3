//! The handler's shared state and the per-request context.

use std::sync::Arc;

use axum::http::HeaderMap;
use culvert_sealing::SealingKey;

use crate::env_keys::EnvironmentKeys;
use tokio::sync::OnceCell;

use crate::auth::{self, Action, Principal};
use crate::compute::LocalCompute;
use crate::error::{ApiError, ApiResult};
use crate::master_keys::MasterKeys;
use crate::settings::{ComputeSetting, Settings};
use crate::store::{Store, at_rest};

/// State shared by every request.
pub struct App {
    /// The control store.
    pub store: Store,
    /// App settings.
    pub settings: Settings,
    /// The keys connector secrets are sealed with, per environment.
    pub env_keys: EnvironmentKeys,
    /// Starts agents of `local` environments.
    pub local_compute: Option<LocalCompute>,
    /// The master keys configuration is sealed with at rest.
    pub master_keys: MasterKeys,
    /// Culvert's side of Azure environments, when this control plane is set up for them.
    pub byoc: Option<crate::byoc::Byoc>,
    migrated: OnceCell<()>,
}

impl App {
    /// State from settings; nothing is connected yet (cold starts stay fast).
    pub fn new(settings: Settings) -> anyhow::Result<Arc<App>> {
        let store = Store::new(&settings.control_store)?;
        let local_sealing = settings
            .local_sealing_key
            .as_deref()
            .map(SealingKey::from_pem)
            .transpose()
            .map_err(|e| anyhow::anyhow!("CULVERT_SEALING_PUBLIC_KEY: {e}"))?;
        let identity = culvert_azure::identity::CredentialSource::from_env()?;
        let master_keys = MasterKeys::new(settings.master_key()?, identity.clone())?;
        let env_keys =
            EnvironmentKeys::new(settings.local_key_vault.clone(), local_sealing, identity);
        let local_compute = match &settings.compute {
            ComputeSetting::Local(url) => Some(LocalCompute::new(url.clone())),
            ComputeSetting::None => None,
        };
        let byoc = settings
            .byoc
            .clone()
            .map(|b| crate::byoc::Byoc::new(b, settings.public_url.clone()));
        Ok(Arc::new(App {
            byoc,
            store,
            settings,
            env_keys,
            local_compute,
            master_keys,
            migrated: OnceCell::new(),
        }))
    }

    /// The store, once migrations have been applied and no configuration is left in plaintext
    /// (the first caller does both; a failure is a 503 and the next request tries again).
    pub async fn store(&self) -> ApiResult<&Store> {
        self.migrated
            .get_or_try_init(|| async {
                match self.store.migrate().await {
                    Ok(applied) => {
                        if !applied.is_empty() {
                            tracing::info!(?applied, "control store migrated");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "control store migration");
                        return Err(ApiError::Unavailable(
                            "the control store is not reachable or not migrated yet; retry in a moment".into(),
                        ));
                    }
                }
                let keys = self.master_keys.current().await.map_err(|e| {
                    tracing::error!(source = %self.master_keys.describe(), error = %e, "master keys");
                    ApiError::from(e)
                })?;
                match at_rest::seal_plaintext(&self.store, &keys).await {
                    Ok(0) => Ok(()),
                    Ok(n) => {
                        tracing::info!(rows = n, version = keys.current(), "plaintext configuration sealed; plaintext columns dropped");
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "sealing plaintext configuration");
                        Err(ApiError::Unavailable(
                            "the control store's configuration is being sealed; retry in a moment".into(),
                        ))
                    }
                }
            })
            .await?;
        Ok(&self.store)
    }
}

/// An authenticated request.
pub struct Ctx {
    /// Shared state.
    pub app: Arc<App>,
    /// Caller.
    pub principal: Principal,
}

impl Ctx {
    /// Authenticate and authorize a request for `action`.
    pub async fn new(app: &Arc<App>, headers: &HeaderMap, action: Action) -> ApiResult<Ctx> {
        let store = app.store().await?;
        let principal = auth::authenticate(store, headers).await?;
        auth::authorize(&principal, action)?;
        Ok(Ctx {
            app: app.clone(),
            principal,
        })
    }

    /// A pooled store connection.
    pub async fn conn(&self) -> ApiResult<deadpool_postgres::Object> {
        self.app.store.conn().await
    }
}

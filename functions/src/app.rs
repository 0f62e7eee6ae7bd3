//! The handler's shared state and the per-request context.

use std::sync::Arc;

use axum::http::HeaderMap;
use culvert_sealing::SealingKey;
use tokio::sync::OnceCell;

use crate::auth::{self, Action, Principal};
use crate::compute::LocalCompute;
use crate::error::{ApiError, ApiResult};
use crate::settings::{ComputeSetting, Settings};
use crate::store::Store;

/// State shared by every request.
pub struct App {
    /// The control store.
    pub store: Store,
    /// App settings.
    pub settings: Settings,
    /// Seals connector secrets of `local` environments.
    pub local_sealing: Option<SealingKey>,
    /// Starts agents of `local` environments.
    pub local_compute: Option<LocalCompute>,
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
        let local_compute = match &settings.compute {
            ComputeSetting::Local(url) => Some(LocalCompute::new(url.clone())),
            ComputeSetting::None => None,
        };
        Ok(Arc::new(App {
            store,
            settings,
            local_sealing,
            local_compute,
            migrated: OnceCell::new(),
        }))
    }

    /// The store, once migrations have been applied (the first caller applies them).
    pub async fn store(&self) -> ApiResult<&Store> {
        self.migrated
            .get_or_try_init(|| async {
                match self.store.migrate().await {
                    Ok(applied) => {
                        if !applied.is_empty() {
                            tracing::info!(?applied, "control store migrated");
                        }
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "control store migration");
                        Err(ApiError::Unavailable(
                            "the control store is not reachable or not migrated yet; retry in a moment".into(),
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

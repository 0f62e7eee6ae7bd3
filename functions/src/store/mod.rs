//! The control store: a PostgreSQL database reached through a connection pool.

pub mod at_rest;
pub mod migrations;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::{ApiError, ApiResult};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection string does not parse.
    #[error("CULVERT_CONTROL_STORE is not a valid PostgreSQL connection string: {0}")]
    BadUrl(tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot build the control store pool: {0}")]
    Pool(String),
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Version.
        version: i32,
        /// File name.
        name: &'static str,
        /// Cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The store could not be reached.
    #[error("cannot reach the control store: {0}")]
    Connect(String),
}

/// A pool of control store connections.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// A pool for `url` (`postgres://...` or key=value); connects lazily.
    pub fn new(url: &str) -> Result<Store, StoreError> {
        let cfg: tokio_postgres::Config = url.parse().map_err(StoreError::BadUrl)?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(16)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Store { pool })
    }

    /// A connection from the pool.
    pub async fn conn(&self) -> ApiResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Apply the migrations this binary knows and the store lacks.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        migrations::apply(&mut conn).await
    }
}

/// Map a unique violation to a 409 with `message`, anything else through the usual mapping.
pub fn conflict_on_unique(e: tokio_postgres::Error, message: impl FnOnce() -> String) -> ApiError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return ApiError::Conflict(message());
    }
    ApiError::from(e)
}

/// Queries through the connection's statement cache: each distinct SQL text is parsed and
/// planned once per connection, so a request costs one round trip per query.
#[allow(async_fn_in_trait)]
pub trait Sql: deadpool_postgres::GenericClient {
    /// Rows of `sql`.
    async fn q(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query(&st, params).await
    }

    /// Exactly one row of `sql`.
    async fn q_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_one(&st, params).await
    }

    /// At most one row of `sql`.
    async fn q_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_opt(&st, params).await
    }

    /// Rows changed by `sql`.
    async fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.execute(&st, params).await
    }
}

impl<T: deadpool_postgres::GenericClient> Sql for T {}

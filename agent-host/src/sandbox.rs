//! One connector instance in its sandbox: WASI without filesystem or environment,
//! sockets only to allowed endpoints, capped memory, metered CPU, host imports.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{destination, source};
use crate::egress::Egress;
use crate::engine::ConnectorEngine;
use crate::http_egress;
use crate::limits::Limits;
use crate::metrics::ConnectorMetrics;

/// Why a connector call was stopped by the host.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The guest ran longer than its CPU budget.
    #[error(
        "connector `{connector}` exceeded its CPU limit of {seconds} s in one call (limits.cpu_seconds_per_call)"
    )]
    CpuLimit {
        /// Connector label.
        connector: String,
        /// The limit.
        seconds: f64,
    },
    /// The guest tried to grow memory past its cap.
    #[error("connector `{connector}` exceeded its memory limit of {mib} MiB (limits.memory_mib)")]
    MemoryLimit {
        /// Connector label.
        connector: String,
        /// The limit.
        mib: u64,
    },
    /// The call took longer than its wall-clock limit.
    #[error(
        "connector `{connector}` did not return from `{call}` within {seconds} s (limits.call_timeout_seconds)"
    )]
    Timeout {
        /// Connector label.
        connector: String,
        /// Export called.
        call: String,
        /// The limit.
        seconds: f64,
    },
    /// The guest trapped.
    #[error("connector `{connector}` crashed in `{call}`: {detail}")]
    Trap {
        /// Connector label.
        connector: String,
        /// Export called.
        call: String,
        /// Trap description.
        detail: String,
    },
}

/// The store's caps, remembering the largest linear memory the guest asked for.
struct TrackedLimits {
    inner: StoreLimits,
    peak_memory: usize,
}

impl ResourceLimiter for TrackedLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Per-instance host state.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: TrackedLimits,
    egress: Arc<Egress>,
    label: String,
    cpu_ticks_used: u64,
    cpu_ticks_budget: u64,
    metrics: ConnectorMetrics,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

macro_rules! host_impl {
    ($world:ident) => {
        impl $world::culvert::connector::host::Host for StoreData {
            async fn log(&mut self, level: $world::culvert::connector::host::Level, message: String) -> wasmtime::Result<()> {
                use $world::culvert::connector::host::Level;
                let message: String = message.chars().take(4096).collect();
                match level {
                    Level::Trace => tracing::trace!(connector = %self.label, "{message}"),
                    Level::Debug => tracing::debug!(connector = %self.label, "{message}"),
                    Level::Info => tracing::info!(connector = %self.label, "{message}"),
                    Level::Warn => tracing::warn!(connector = %self.label, "{message}"),
                    Level::Error => tracing::error!(connector = %self.label, "{message}"),
                }
                Ok(())
            }

            async fn counter_add(&mut self, name: String, value: u64) -> wasmtime::Result<()> {
                self.metrics.counter_add(&name, value);
                Ok(())
            }

            async fn gauge_set(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
                self.metrics.gauge_set(&name, value);
                Ok(())
            }

            async fn resolve(&mut self, name: String) -> wasmtime::Result<Result<Vec<String>, String>> {
                Ok(self.egress.resolve(&name).await.map(|ips| ips.iter().map(IpAddr::to_string).collect()))
            }

            async fn http_send(
                &mut self,
                request: $world::culvert::connector::host::HttpRequest,
            ) -> wasmtime::Result<Result<$world::culvert::connector::host::HttpResponse, String>> {
                let request = http_egress::Request {
                    method: request.method,
                    url: request.url,
                    headers: request.headers,
                    body: request.body,
                };
                let sent = http_egress::send(&self.egress, request).await;
                if let Err(e) = &sent {
                    tracing::debug!(connector = %self.label, error = %e, "http-send failed");
                }
                Ok(sent.map(|r| $world::culvert::connector::host::HttpResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                }))
            }
        }

        impl $world::culvert::connector::types::Host for StoreData {}
    };
}

host_impl!(source);
host_impl!(destination);

/// A connector instance: its store and its instantiated world.
pub struct Instance<W> {
    /// The store owning the instance.
    pub store: Store<StoreData>,
    /// The instantiated world.
    pub world: W,
    label: String,
    limits: Limits,
}

fn new_store(
    engine: &ConnectorEngine,
    label: &str,
    limits: Limits,
    egress: Arc<Egress>,
    metrics: ConnectorMetrics,
) -> Store<StoreData> {
    let check = egress.clone();
    let mut wasi = WasiCtxBuilder::new();
    wasi.allow_tcp(true)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(move |addr: SocketAddr, use_: SocketAddrUse| {
            let check = check.clone();
            Box::pin(async move {
                match use_ {
                    SocketAddrUse::TcpConnect => check.allows(addr),
                    // Connecting binds implicitly to an ephemeral port first.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    _ => false,
                }
            })
        });
    let data = StoreData {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limits: TrackedLimits {
            inner: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes())
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            peak_memory: 0,
        },
        egress,
        label: label.to_string(),
        cpu_ticks_used: 0,
        cpu_ticks_budget: limits.cpu_ticks(),
        metrics,
    };
    let mut store = Store::new(engine.engine(), data);
    store.limiter(|d| &mut d.limits);
    store.epoch_deadline_callback(|mut ctx| {
        let d = ctx.data_mut();
        d.cpu_ticks_used += 1;
        if d.cpu_ticks_used > d.cpu_ticks_budget {
            return Err(wasmtime::Error::msg(CPU_LIMIT_MARKER));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    store
}

const CPU_LIMIT_MARKER: &str = "culvert: cpu budget exhausted";

/// Where an instance runs and what it may use.
pub struct Placement<'a> {
    /// The engine that compiled the component.
    pub engine: &'a ConnectorEngine,
    /// The compiled component.
    pub component: &'a Component,
    /// Connector label used in messages and metrics.
    pub label: &'a str,
    /// Resource caps.
    pub limits: Limits,
    /// Network allow-list.
    pub egress: Arc<Egress>,
    /// Metrics the connector may write.
    pub metrics: ConnectorMetrics,
}

macro_rules! instantiate_world {
    ($name:ident, $world:ty, $role:literal) => {
        #[doc = concat!("Instantiate a ", $role, " connector.")]
        pub async fn $name(p: Placement<'_>) -> Result<Instance<$world>> {
            let mut linker: Linker<StoreData> = Linker::new(p.engine.engine());
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow!("{e}"))?;
            <$world>::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(|e| anyhow!("{e}"))?;
            let mut store = new_store(p.engine, p.label, p.limits, p.egress, p.metrics);
            let world = <$world>::instantiate_async(&mut store, p.component, &linker)
                .await
                .map_err(|e| {
                    anyhow!(
                        "connector `{}` cannot be instantiated as a {}: {e}",
                        p.label,
                        $role
                    )
                })?;
            Ok(Instance {
                store,
                world,
                label: p.label.to_string(),
                limits: p.limits,
            })
        }
    };
}

instantiate_world!(instantiate_source, source::Source, "source");
instantiate_world!(
    instantiate_destination,
    destination::Destination,
    "destination"
);

impl<W> Instance<W> {
    /// The largest linear memory this instance has grown to, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.store.data().limits.peak_memory
    }

    /// Run one export call under the CPU budget and the wall-clock limit, turning traps
    /// and limit hits into errors that name the connector and the limit.
    pub async fn call<'a, T, F, Fut>(&'a mut self, call: &str, f: F) -> Result<T, SandboxError>
    where
        F: FnOnce(&'a mut Store<StoreData>, &'a W) -> Fut,
        Fut: Future<Output = wasmtime::Result<T>> + 'a,
    {
        self.store.data_mut().cpu_ticks_used = 0;
        self.store.set_epoch_deadline(1);
        let label = self.label.clone();
        let limits = self.limits;
        let timeout = Duration::from_secs_f64(limits.call_timeout_seconds);
        let result = tokio::time::timeout(timeout, f(&mut self.store, &self.world)).await;
        match result {
            Err(_) => Err(SandboxError::Timeout {
                connector: label,
                call: call.to_string(),
                seconds: limits.call_timeout_seconds,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e, &label, call, &limits)),
        }
    }
}

fn classify(e: wasmtime::Error, label: &str, call: &str, limits: &Limits) -> SandboxError {
    let text = format!("{e:?}");
    if text.contains(CPU_LIMIT_MARKER) {
        return SandboxError::CpuLimit {
            connector: label.to_string(),
            seconds: limits.cpu_seconds_per_call,
        };
    }
    if text.contains("forcing trap when growing memory") || text.contains("memory minimum size") {
        return SandboxError::MemoryLimit {
            connector: label.to_string(),
            mib: limits.memory_mib,
        };
    }
    let detail = e
        .downcast_ref::<wasmtime::Trap>()
        .map(|t| t.to_string())
        .unwrap_or_else(|| text.lines().next().unwrap_or_default().to_string());
    SandboxError::Trap {
        connector: label.to_string(),
        call: call.to_string(),
        detail,
    }
}

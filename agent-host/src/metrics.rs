//! Prometheus metrics of the agent and its connectors.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of pipeline-level series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// `source` or `target`.
    pub stage: String,
}

/// Labels of pipeline-level gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// Pipeline name.
    pub pipeline: String,
}

/// Labels of metrics a connector reports itself.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    /// Pipeline name.
    pub pipeline: String,
    /// Connector label.
    pub connector: String,
    /// Metric name chosen by the connector.
    pub name: String,
}

/// Every series the agent exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Rows read by sources or applied by targets.
    pub rows: Family<StageLabels, Counter>,
    /// Arrow IPC bytes read or applied.
    pub bytes: Family<StageLabels, Counter>,
    /// Batches read or applied.
    pub batches: Family<StageLabels, Counter>,
    /// Bytes held in the buffer between source and target.
    pub buffer_bytes: Family<PipelineLabels, Gauge>,
    /// Source WAL not yet read, in bytes.
    pub lag_bytes: Family<PipelineLabels, Gauge>,
    /// Seconds from the source reading the last committed batch to its commit at the target.
    pub lag_seconds: Family<PipelineLabels, Gauge<f64, AtomicU64>>,
    /// Seconds the last source outage took, from the failure to the first batch after it.
    pub resume_seconds: Family<PipelineLabels, Gauge<f64, AtomicU64>>,
    /// Source reconnects after a failure.
    pub source_reconnects: Family<PipelineLabels, Counter>,
    /// Errors that failed or retried a stage.
    pub errors: Family<StageLabels, Counter>,
    /// Counters reported by connectors.
    pub connector_counters: Family<ConnectorLabels, Counter>,
    /// Gauges reported by connectors.
    pub connector_gauges: Family<ConnectorLabels, Gauge<f64, AtomicU64>>,
    /// 1 while the buffer's storage or key service is unreachable and calls are being retried.
    pub buffer_unavailable: Family<PipelineLabels, Gauge>,
    /// Buffer storage or key calls retried after a transient fault.
    pub buffer_retries: Family<PipelineLabels, Counter>,
}

impl Metrics {
    /// A fresh registry with every series registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("culvert");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            rows: Family::default(),
            bytes: Family::default(),
            batches: Family::default(),
            buffer_bytes: Family::default(),
            lag_bytes: Family::default(),
            lag_seconds: Family::default(),
            resume_seconds: Family::default(),
            source_reconnects: Family::default(),
            errors: Family::default(),
            connector_counters: Family::default(),
            connector_gauges: Family::default(),
            buffer_unavailable: Family::default(),
            buffer_retries: Family::default(),
        };
        registry.register(
            "rows",
            "Rows read by sources or applied by targets",
            m.rows.clone(),
        );
        registry.register("bytes", "Arrow IPC bytes read or applied", m.bytes.clone());
        registry.register("batches", "Batches read or applied", m.batches.clone());
        registry.register(
            "buffer_bytes",
            "Bytes buffered between source and target",
            m.buffer_bytes.clone(),
        );
        registry.register(
            "replication_lag_bytes",
            "Source log not yet read, in bytes",
            m.lag_bytes.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Seconds from the source reading the newest committed batch to the target committing it",
            m.lag_seconds.clone(),
        );
        registry.register(
            "source_resume_seconds",
            "Seconds from the last source failure until batches flowed again",
            m.resume_seconds.clone(),
        );
        registry.register(
            "source_reconnects",
            "Times the source was reopened after a failure",
            m.source_reconnects.clone(),
        );
        registry.register(
            "errors",
            "Errors that failed or retried a stage",
            m.errors.clone(),
        );
        registry.register(
            "connector",
            "Counters reported by connectors",
            m.connector_counters.clone(),
        );
        registry.register(
            "connector_gauge",
            "Gauges reported by connectors",
            m.connector_gauges.clone(),
        );
        registry.register(
            "buffer_unavailable",
            "1 while the buffer's storage or key service fails transiently and calls are retried",
            m.buffer_unavailable.clone(),
        );
        registry.register(
            "buffer_retries",
            "Buffer storage or key calls retried after a transient fault",
            m.buffer_retries.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The buffer series of one pipeline, for the buffer to update as faults come and go
    /// (an append stuck in retries has nobody else to report it).
    pub fn buffer(&self, pipeline: &str) -> BufferMetrics {
        let labels = PipelineLabels {
            pipeline: pipeline.to_string(),
        };
        BufferMetrics {
            unavailable: self.buffer_unavailable.get_or_create(&labels).clone(),
            retries: self.buffer_retries.get_or_create(&labels).clone(),
        }
    }

    /// A handle for one connector instance.
    pub fn connector(&self, pipeline: &str, connector: &str) -> ConnectorMetrics {
        ConnectorMetrics {
            metrics: self.clone(),
            pipeline: pipeline.to_string(),
            connector: connector.to_string(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The buffer series of one pipeline; the default is detached from any registry.
#[derive(Clone, Debug, Default)]
pub struct BufferMetrics {
    /// `culvert_buffer_unavailable`: 1 while retrying, else 0.
    pub unavailable: Gauge,
    /// `culvert_buffer_retries_total`.
    pub retries: Counter,
}

/// Metrics a connector instance may write through its host imports.
#[derive(Clone)]
pub struct ConnectorMetrics {
    metrics: Metrics,
    pipeline: String,
    connector: String,
}

const MAX_NAME: usize = 64;

fn clean(name: &str) -> String {
    name.chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl ConnectorMetrics {
    fn labels(&self, name: &str) -> ConnectorLabels {
        ConnectorLabels {
            pipeline: self.pipeline.clone(),
            connector: self.connector.clone(),
            name: clean(name),
        }
    }

    /// Add to a connector counter.
    pub fn counter_add(&self, name: &str, value: u64) {
        self.metrics
            .connector_counters
            .get_or_create(&self.labels(name))
            .inc_by(value);
    }

    /// Set a connector gauge.
    pub fn gauge_set(&self, name: &str, value: f64) {
        self.metrics
            .connector_gauges
            .get_or_create(&self.labels(name))
            .set(value);
    }

    /// Read a connector gauge (0 when never set).
    pub fn gauge(&self, name: &str) -> f64 {
        self.metrics
            .connector_gauges
            .get_or_create(&self.labels(name))
            .get()
    }
}

/// Serve `/metrics` on `addr` until the process ends.
pub async fn serve(metrics: Metrics, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_series_are_exported() {
        let m = Metrics::new();
        let b = m.buffer("orders");
        b.unavailable.set(1);
        b.retries.inc_by(3);
        let text = m.render();
        assert!(
            text.contains("culvert_buffer_unavailable{pipeline=\"orders\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("culvert_buffer_retries_total{pipeline=\"orders\"} 3"),
            "{text}"
        );
    }
}

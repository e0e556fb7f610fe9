//! Prometheus metrics of one gateway: runs, streams, events and requests. Each gateway owns
//! its registry (tests run several in one process).

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Finished runs by kind and outcome.
    pub runs: IntCounterVec,
    pub runs_active: IntGauge,
    pub runs_pending: IntGauge,
    pub sse_clients: IntGauge,
    pub events_stored: IntCounter,
    pub events_sent: IntCounter,
    /// From terraform's line being read to the event being stored and fanned out.
    pub event_lag: Histogram,
    pub requests: HistogramVec,
    /// 1 for the isolation runs have (`mode` = `bubblewrap` or `none`).
    pub run_isolation: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Arc<Self>, prometheus::Error> {
        let registry = Registry::new_custom(Some("terrastream".into()), None)?;
        let runs = IntCounterVec::new(
            Opts::new("runs_total", "Finished runs by kind and outcome"),
            &["kind", "outcome"],
        )?;
        let runs_active = IntGauge::new("runs_active", "Runs working or waiting for a slot")?;
        let runs_pending = IntGauge::new("runs_pending", "Runs waiting for a free slot")?;
        let sse_clients = IntGauge::new("sse_clients", "Open event streams")?;
        let events_stored =
            IntCounter::new("events_stored_total", "Run events written to the store")?;
        let events_sent =
            IntCounter::new("events_sent_total", "Run events written to stream clients")?;
        let event_lag = Histogram::with_opts(
            HistogramOpts::new(
                "event_lag_seconds",
                "From a line read to its event stored and fanned out",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let requests = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency (streams: until headers)",
            ),
            &["method", "route", "status"],
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(runs_active.clone()))?;
        registry.register(Box::new(runs_pending.clone()))?;
        registry.register(Box::new(sse_clients.clone()))?;
        registry.register(Box::new(events_stored.clone()))?;
        registry.register(Box::new(events_sent.clone()))?;
        registry.register(Box::new(event_lag.clone()))?;
        let run_isolation = IntGaugeVec::new(
            Opts::new(
                "run_isolation",
                "How terraform runs are isolated (1 for the mode in force)",
            ),
            &["mode"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(run_isolation.clone()))?;
        Ok(Arc::new(Self {
            registry,
            runs,
            runs_active,
            runs_pending,
            sse_clients,
            events_stored,
            events_sent,
            event_lag,
            requests,
            run_isolation,
        }))
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%err, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Counts an open stream while it lives.
pub struct StreamGuard(Arc<Metrics>);

impl StreamGuard {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.sse_clients.inc();
        Self(metrics)
    }

    pub fn sent(&self) {
        self.0.events_sent.inc();
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.sse_clients.dec();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_render_with_the_namespace() {
        let metrics = super::Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        metrics
            .runs
            .with_label_values(&["deploy", "succeeded"])
            .inc();
        {
            let _stream = super::StreamGuard::new(std::sync::Arc::clone(&metrics));
            assert_eq!(metrics.sse_clients.get(), 1);
        }
        assert_eq!(metrics.sse_clients.get(), 0);
        let text = metrics.render();
        assert!(
            text.contains("terrastream_runs_total{kind=\"deploy\",outcome=\"succeeded\"} 1"),
            "{text}"
        );
    }
}

//! Per-model figures beyond TorchServe's, served on `/metrics` in every mode: latency histograms
//! (`_seconds`) for queue wait, pre-processing, inference and post-processing, a batch-size
//! histogram, batch counters, and queue-depth / live-worker gauges. [`ModelStats`] is owned by a
//! model version and shared with its workers (atomics only); it also forwards the per-batch
//! TorchServe figures (`HandlerTime`, `PredictionTime`, `WorkerThreadTime`, `WorkerLoadTime`) to
//! the server's [`Metrics`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::format::{write_header, write_histogram, write_sample, NameFilter};
use super::registry::{Histogram, BATCH_SIZE_BUCKETS, SECONDS_BUCKETS};
use super::Metrics;

/// Counters and histograms a model's workers update.
pub struct ModelStats {
    /// ONNX Runtime runs that succeeded.
    pub batches: AtomicU64,
    /// Rows (request items) in those runs.
    pub rows: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Per request: enqueued until a worker took it.
    pub queue: Histogram,
    /// Per request item.
    pub preprocess: Histogram,
    /// Per ONNX Runtime run.
    pub inference: Histogram,
    /// Per request item.
    pub postprocess: Histogram,
    /// Rows per ONNX Runtime run.
    pub batch_size: Histogram,
    /// The model's name, TorchServe's `ModelName` label.
    name: String,
    metrics: Arc<Metrics>,
}

/// Where one batch's time went, for TorchServe's per-batch metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchTimes {
    /// Pre-processing + inference + post-processing (`HandlerTime`).
    pub handler: Duration,
    /// The whole batch on the worker, from taking it to answering it (`PredictionTime`, and
    /// `WorkerThreadTime` for what the handler did not use).
    pub total: Duration,
}

impl ModelStats {
    pub fn new(name: &str, metrics: Arc<Metrics>) -> Self {
        ModelStats {
            batches: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            queue: Histogram::new(SECONDS_BUCKETS),
            preprocess: Histogram::new(SECONDS_BUCKETS),
            inference: Histogram::new(SECONDS_BUCKETS),
            postprocess: Histogram::new(SECONDS_BUCKETS),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            name: name.to_string(),
            metrics,
        }
    }

    /// One ONNX Runtime run of `rows` rows that succeeded.
    pub fn record_run(&self, rows: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(rows as u64, Ordering::Relaxed);
        self.batch_size.observe(rows as f64);
        self.inference.observe(took.as_secs_f64());
    }

    /// Whether [`Self::record_batch`] wants the batch's request ids (they go into log lines).
    pub fn wants_request_ids(&self) -> bool {
        self.metrics.logs_backend()
    }

    /// TorchServe's per-batch metrics. `request_ids` are comma-separated, for `log` mode lines.
    pub fn record_batch(&self, times: BatchTimes, request_ids: Option<&str>) {
        self.metrics
            .record_handler(&self.name, times.handler, times.total, request_ids);
        self.metrics
            .record_worker_thread_time(times.total.saturating_sub(times.handler));
    }

    /// `WorkerLoadTime` for a worker of this model that became ready.
    pub fn record_worker_load(&self, worker: &str, took: Duration) {
        self.metrics.record_worker_load(worker, took);
    }
}

/// What `/metrics` shows of one loaded model version.
pub struct ModelView<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub stats: &'a ModelStats,
    pub queue_depth: usize,
    pub live_workers: usize,
}

type Read = fn(&ModelView<'_>) -> f64;
type ReadHistogram = for<'a> fn(&'a ModelStats) -> &'a Histogram;

/// oxserve's histogram families: name, help, which histogram.
const HISTOGRAMS: &[(&str, &str, ReadHistogram)] = &[
    (
        "oxserve_queue_seconds",
        "Time a request waited in the model's queue for a worker, in seconds",
        |stats| &stats.queue,
    ),
    (
        "oxserve_preprocess_seconds",
        "Pre-processing time per request item, in seconds",
        |stats| &stats.preprocess,
    ),
    (
        "oxserve_inference_seconds",
        "ONNX Runtime time per batch run, in seconds",
        |stats| &stats.inference,
    ),
    (
        "oxserve_postprocess_seconds",
        "Post-processing time per request item, in seconds",
        |stats| &stats.postprocess,
    ),
    ("oxserve_batch_size", "Rows per ONNX Runtime run", |stats| {
        &stats.batch_size
    }),
];

/// oxserve's counter and gauge families: name, help, type, value.
const SCALARS: &[(&str, &str, &str, Read)] = &[
    (
        "oxserve_batches_total",
        "ONNX Runtime runs (batches) completed",
        "counter",
        |view| view.stats.batches.load(Ordering::Relaxed) as f64,
    ),
    (
        "oxserve_batch_rows_total",
        "Rows (request items) run",
        "counter",
        |view| view.stats.rows.load(Ordering::Relaxed) as f64,
    ),
    (
        "oxserve_largest_batch_rows",
        "Largest batch run so far, in rows",
        "gauge",
        |view| view.stats.largest_batch.load(Ordering::Relaxed) as f64,
    ),
    (
        "oxserve_queue_depth",
        "Requests waiting in the model's queue",
        "gauge",
        |view| view.queue_depth as f64,
    ),
    (
        "oxserve_live_workers",
        "Workers ready to serve the model",
        "gauge",
        |view| view.live_workers as f64,
    ),
];

/// Writes oxserve's per-model families (labels `model_name`, `model_version`).
pub fn write_model_families(out: &mut String, models: &[ModelView<'_>], filter: &NameFilter) {
    for (name, help, read) in HISTOGRAMS {
        if !filter.includes_histogram(name) {
            continue;
        }
        write_header(out, name, help, "histogram");
        for view in models {
            let labels = [("model_name", view.name), ("model_version", view.version)];
            write_histogram(out, name, &labels, &read(view.stats).snapshot());
        }
    }
    for (name, help, kind, read) in SCALARS {
        if !filter.includes(name) {
            continue;
        }
        write_header(out, name, help, kind);
        for view in models {
            let labels = [("model_name", view.name), ("model_version", view.version)];
            write_sample(out, name, labels, read(view));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MetricsMode;
    use super::*;

    #[test]
    fn model_families_carry_name_and_version() {
        let metrics = Arc::new(Metrics::new(MetricsMode::Prometheus, "h".into()));
        let stats = ModelStats::new("m", Arc::clone(&metrics));
        stats.record_run(3, Duration::from_millis(2));
        stats.queue.observe(0.0002);
        let view = ModelView {
            name: "m",
            version: "1.0",
            stats: &stats,
            queue_depth: 2,
            live_workers: 1,
        };
        let mut out = String::new();
        write_model_families(&mut out, &[view], &NameFilter::default());
        for line in [
            "# TYPE oxserve_queue_seconds histogram",
            "oxserve_queue_seconds_bucket{model_name=\"m\",model_version=\"1.0\",le=\"1.0E-4\",} 0.0",
            "oxserve_queue_seconds_bucket{model_name=\"m\",model_version=\"1.0\",le=\"2.5E-4\",} 1.0",
            "oxserve_queue_seconds_count{model_name=\"m\",model_version=\"1.0\",} 1.0",
            "oxserve_batch_size_bucket{model_name=\"m\",model_version=\"1.0\",le=\"4.0\",} 1.0",
            "oxserve_batches_total{model_name=\"m\",model_version=\"1.0\",} 1.0",
            "oxserve_batch_rows_total{model_name=\"m\",model_version=\"1.0\",} 3.0",
            "oxserve_largest_batch_rows{model_name=\"m\",model_version=\"1.0\",} 3.0",
            "oxserve_queue_depth{model_name=\"m\",model_version=\"1.0\",} 2.0",
            "oxserve_live_workers{model_name=\"m\",model_version=\"1.0\",} 1.0",
        ] {
            assert!(out.lines().any(|candidate| candidate == line), "{line} in\n{out}");
        }
        stats.record_batch(
            BatchTimes {
                handler: Duration::from_millis(5),
                total: Duration::from_millis(7),
            },
            None,
        );
        let text = metrics.render(&[], &NameFilter::new(vec!["WorkerThreadTime".into()]));
        assert!(
            text.contains("WorkerThreadTime{Level=\"Host\",Hostname=\"h\",} 2.0"),
            "{text}"
        );
    }
}

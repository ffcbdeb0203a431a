//! Per-model figures beyond TorchServe's, served on `/metrics` in every mode: latency histograms
//! (`_seconds`) for queue wait, pre-processing, inference and post-processing, a batch-size
//! histogram, batch counters, and queue-depth / live-worker gauges, all labelled `model_name`,
//! `model_version`. [`ModelStats`] (one per model version, shared with its workers) holds their
//! handles in the server's recorder; it also forwards the per-batch TorchServe figures
//! (`HandlerTime`, `PredictionTime`, `WorkerThreadTime`, `WorkerLoadTime`) to [`Metrics`].
//!
//! Lifetime: the recorder keeps a series once created, so `/metrics` lists these families only
//! for the model versions it is given ([`ModelView`]s of the loaded ones, see [`is_live`]); a
//! version registered again under the same name carries on from its earlier counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram};

use super::Metrics;

/// One of oxserve's histogram families.
#[derive(Debug)]
pub struct HistogramFamily {
    pub name: &'static str,
    pub help: &'static str,
    /// Upper bounds, ascending (`+Inf` is implicit).
    pub buckets: &'static [f64],
}

/// 50 µs to 10 s: small graphs and pre-processing run in microseconds, large images and
/// batches on a CPU in up to seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// 50 µs to a minute: queue waits under load reach seconds (`response_timeout` bounds them).
const QUEUE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// 5 µs to 1 s: post-processing reads a few outputs (a top-k, a JSON list).
const POSTPROCESS_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Rows per ONNX Runtime run.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

const QUEUE: HistogramFamily = HistogramFamily {
    name: "oxserve_queue_seconds",
    help: "Time a request waited in the model's queue for a worker, in seconds",
    buckets: QUEUE_BUCKETS,
};
const PREPROCESS: HistogramFamily = HistogramFamily {
    name: "oxserve_preprocess_seconds",
    help: "Pre-processing time per request item, in seconds",
    buckets: LATENCY_BUCKETS,
};
const INFERENCE: HistogramFamily = HistogramFamily {
    name: "oxserve_inference_seconds",
    help: "ONNX Runtime time per batch run, in seconds",
    buckets: LATENCY_BUCKETS,
};
const POSTPROCESS: HistogramFamily = HistogramFamily {
    name: "oxserve_postprocess_seconds",
    help: "Post-processing time per request item, in seconds",
    buckets: POSTPROCESS_BUCKETS,
};
const BATCH_SIZE: HistogramFamily = HistogramFamily {
    name: "oxserve_batch_size",
    help: "Rows per ONNX Runtime run",
    buckets: BATCH_SIZE_BUCKETS,
};

/// oxserve's histogram families.
pub const HISTOGRAMS: &[HistogramFamily] = &[QUEUE, PREPROCESS, INFERENCE, POSTPROCESS, BATCH_SIZE];

const BATCHES: &str = "oxserve_batches_total";
const ROWS: &str = "oxserve_batch_rows_total";
const LARGEST_BATCH: &str = "oxserve_largest_batch_rows";
const QUEUE_DEPTH: &str = "oxserve_queue_depth";
const LIVE_WORKERS: &str = "oxserve_live_workers";

/// oxserve's counter families: name, HELP text.
pub const COUNTERS: &[(&str, &str)] = &[
    (BATCHES, "ONNX Runtime runs (batches) completed"),
    (ROWS, "Rows (request items) run"),
];

/// oxserve's gauge families: name, HELP text.
pub const GAUGES: &[(&str, &str)] = &[
    (LARGEST_BATCH, "Largest batch run so far, in rows"),
    (QUEUE_DEPTH, "Requests waiting in the model's queue"),
    (LIVE_WORKERS, "Workers ready to serve the model"),
];

/// A model version's series, and the link to the server's TorchServe metrics.
pub struct ModelStats {
    /// Per request: enqueued until a worker took it.
    pub queue: Histogram,
    /// Per request item.
    pub preprocess: Histogram,
    /// Per ONNX Runtime run.
    pub inference: Histogram,
    /// Per request item.
    pub postprocess: Histogram,
    /// Rows per ONNX Runtime run.
    batch_size: Histogram,
    /// ONNX Runtime runs that succeeded, and their rows.
    batches: Counter,
    rows: Counter,
    /// The largest run's rows: kept here, copied to its gauge when `/metrics` is read (as the
    /// queue depth and live workers), so that racing runs cannot leave a smaller value.
    largest_batch: AtomicU64,
    largest_batch_gauge: Gauge,
    queue_depth: Gauge,
    live_workers: Gauge,
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
    pub fn new(name: &str, version: &str, metrics: Arc<Metrics>) -> Self {
        let exporter = &metrics.exporter;
        let labels = [("model_name", name), ("model_version", version)];
        ModelStats {
            queue: exporter.histogram(QUEUE.name, labels),
            preprocess: exporter.histogram(PREPROCESS.name, labels),
            inference: exporter.histogram(INFERENCE.name, labels),
            postprocess: exporter.histogram(POSTPROCESS.name, labels),
            batch_size: exporter.histogram(BATCH_SIZE.name, labels),
            batches: exporter.counter(BATCHES, labels),
            rows: exporter.counter(ROWS, labels),
            largest_batch: AtomicU64::new(0),
            largest_batch_gauge: exporter.gauge(LARGEST_BATCH, labels),
            queue_depth: exporter.gauge(QUEUE_DEPTH, labels),
            live_workers: exporter.gauge(LIVE_WORKERS, labels),
            name: name.to_string(),
            metrics,
        }
    }

    /// One ONNX Runtime run of `rows` rows that succeeded.
    pub fn record_run(&self, rows: usize, took: Duration) {
        self.batches.increment(1);
        self.rows.increment(rows as u64);
        self.largest_batch.fetch_max(rows as u64, Ordering::Relaxed);
        self.batch_size.record(rows as f64);
        self.inference.record(took.as_secs_f64());
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

    /// Sets the gauges read at scrape time.
    fn publish(&self, queue_depth: usize, live_workers: usize) {
        self.largest_batch_gauge
            .set(self.largest_batch.load(Ordering::Relaxed) as f64);
        self.queue_depth.set(queue_depth as f64);
        self.live_workers.set(live_workers as f64);
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

/// Sets every model's scrape-time gauges, and returns the label text that starts each one's
/// samples, for [`is_live`]. Names and versions are `[A-Za-z0-9_.-]` (the archive checks them),
/// so they need no escaping.
pub fn publish(models: &[ModelView<'_>]) -> Vec<String> {
    models
        .iter()
        .map(|view| {
            view.stats.publish(view.queue_depth, view.live_workers);
            format!(
                "model_name=\"{}\",model_version=\"{}\"",
                view.name, view.version
            )
        })
        .collect()
}

/// Whether the sample `line` of an oxserve family belongs to one of the models `live` (from
/// [`publish`]) describes: its labels start with that model's name and version.
pub fn is_live(line: &str, live: &[String]) -> bool {
    let Some((_, labels)) = line.split_once('{') else {
        return false;
    };
    live.iter().any(|prefix| {
        labels
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.starts_with([',', '}']))
    })
}

#[cfg(test)]
mod tests {
    use super::super::{check, MetricsMode, NameFilter};
    use super::*;

    fn view<'a>(name: &'a str, stats: &'a ModelStats) -> ModelView<'a> {
        ModelView {
            name,
            version: "1.0",
            stats,
            queue_depth: 2,
            live_workers: 1,
        }
    }

    #[test]
    fn model_families_carry_name_and_version() {
        let metrics = Arc::new(Metrics::new(MetricsMode::Prometheus, "h".into()));
        let stats = ModelStats::new("m", "1.0", Arc::clone(&metrics));
        stats.record_run(3, Duration::from_millis(2));
        stats.record_run(2, Duration::from_millis(1));
        stats.queue.record(0.0002);
        let text = metrics.render(&[view("m", &stats)], &NameFilter::default());
        check::exposition(&text);
        let model = "model_name=\"m\",model_version=\"1.0\"";
        for line in [
            "# HELP oxserve_queue_seconds Time a request waited in the model's queue for a worker, in seconds".to_string(),
            "# TYPE oxserve_queue_seconds histogram".into(),
            format!("oxserve_queue_seconds_bucket{{{model},le=\"0.00005\"}} 0"),
            format!("oxserve_queue_seconds_bucket{{{model},le=\"0.0001\"}} 0"),
            format!("oxserve_queue_seconds_bucket{{{model},le=\"0.00025\"}} 1"),
            format!("oxserve_queue_seconds_bucket{{{model},le=\"60\"}} 1"),
            format!("oxserve_queue_seconds_bucket{{{model},le=\"+Inf\"}} 1"),
            format!("oxserve_queue_seconds_count{{{model}}} 1"),
            format!("oxserve_queue_seconds_sum{{{model}}} 0.0002"),
            format!("oxserve_postprocess_seconds_bucket{{{model},le=\"0.000005\"}} 0"),
            format!("oxserve_inference_seconds_bucket{{{model},le=\"0.001\"}} 1"),
            format!("oxserve_inference_seconds_bucket{{{model},le=\"0.0025\"}} 2"),
            format!("oxserve_inference_seconds_count{{{model}}} 2"),
            format!("oxserve_batch_size_bucket{{{model},le=\"2\"}} 1"),
            format!("oxserve_batch_size_bucket{{{model},le=\"4\"}} 2"),
            format!("oxserve_batch_size_sum{{{model}}} 5"),
            format!("oxserve_batches_total{{{model}}} 2"),
            format!("oxserve_batch_rows_total{{{model}}} 5"),
            format!("oxserve_largest_batch_rows{{{model}}} 3"),
            format!("oxserve_queue_depth{{{model}}} 2"),
            format!("oxserve_live_workers{{{model}}} 1"),
        ] {
            assert!(text.lines().any(|candidate| candidate == line), "{line} in\n{text}");
        }
        stats.record_batch(
            BatchTimes {
                handler: Duration::from_millis(5),
                total: Duration::from_millis(7),
            },
            None,
        );
        let text = metrics.render(&[], &NameFilter::new(vec!["WorkerThreadTime".into()]));
        assert_eq!(
            text.lines().last(),
            Some("WorkerThreadTime{Level=\"Host\",Hostname=\"h\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn only_the_models_given_are_listed() {
        let metrics = Arc::new(Metrics::new(MetricsMode::Log, "h".into()));
        let kept = ModelStats::new("m", "1.0", Arc::clone(&metrics));
        let gone = ModelStats::new("m2", "1.0", Arc::clone(&metrics));
        kept.record_run(1, Duration::from_millis(1));
        gone.record_run(1, Duration::from_millis(1));
        let both = metrics.render(
            &[view("m", &kept), view("m2", &gone)],
            &NameFilter::default(),
        );
        assert!(both.contains("oxserve_batches_total{model_name=\"m2\","));
        let one = metrics.render(&[view("m", &kept)], &NameFilter::default());
        check::exposition(&one);
        assert!(!one.contains("\"m2\""), "{one}");
        assert!(one.contains("oxserve_batches_total{model_name=\"m\",model_version=\"1.0\"} 1"));
        // Every histogram sample of `m`: its buckets, sum and count, in each family.
        let buckets: usize = HISTOGRAMS
            .iter()
            .map(|family| family.buckets.len() + 3)
            .sum();
        let histogram_lines = one
            .lines()
            .filter(|line| {
                HISTOGRAMS
                    .iter()
                    .any(|family| line.starts_with(&format!("{}_", family.name)))
            })
            .count();
        assert_eq!(histogram_lines, buckets, "{one}");
        assert_eq!(metrics.render(&[], &NameFilter::default()), "");
    }

    #[test]
    fn liveness_needs_the_whole_name_and_version() {
        let live = vec!["model_name=\"m\",model_version=\"1\"".to_string()];
        assert!(is_live("a{model_name=\"m\",model_version=\"1\"} 1", &live));
        assert!(is_live(
            "a_bucket{model_name=\"m\",model_version=\"1\",le=\"1\"} 1",
            &live
        ));
        assert!(!is_live(
            "a{model_name=\"m\",model_version=\"1.0\"} 1",
            &live
        ));
        assert!(!is_live(
            "a{model_name=\"m2\",model_version=\"1\"} 1",
            &live
        ));
        assert!(!is_live("a 1", &live));
    }

    #[test]
    fn buckets_are_ascending_and_fit_their_unit() {
        for family in HISTOGRAMS {
            assert!(!family.buckets.is_empty(), "{}", family.name);
            assert!(family.buckets.windows(2).all(|pair| pair[0] < pair[1]));
            if family.name.ends_with("_seconds") {
                assert!(
                    family.buckets[0] <= 0.00005 && *family.buckets.last().unwrap_or(&0.0) >= 1.0
                );
            }
        }
        assert_eq!(BATCH_SIZE.buckets[0], 1.0);
    }
}

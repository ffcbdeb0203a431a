//! Metrics: TorchServe's (its names, labels and types) and oxserve's own.
//!
//! - [`Metrics`] (one per server, in [`crate::state::AppState`]) records TorchServe's default metrics
//!   ([`catalog`]) and, by `metrics_mode`, keeps them for `GET /metrics` (`prometheus`; in
//!   `legacy` only the three `ts_*` counters) or writes each update as a line to the
//!   `TS_METRICS` / `MODEL_METRICS` logs (`log`, TorchServe's default; see [`crate::logging`]).
//! - [`ModelStats`] (one per model version, shared with its workers) holds oxserve's per-model
//!   histograms and counters, served in every mode, and forwards TorchServe's per-batch figures.
//! - [`system`] samples the host; [`format`] writes `log` mode lines.
//! - `/metrics` is rendered by `metrics-exporter-prometheus` from a recorder each [`Metrics`]
//!   owns (`exporter`; never the global one: servers sharing a process count apart), then
//!   [`filter`]ed by family and put in a fixed order.
//!
//! Who records what: the HTTP middleware counts `Requests2XX/4XX/5XX`; the inference handler
//! counts `ts_inference_*` per model and requested version (`default` when none was named); the
//! workers time queue wait, pre-processing, inference and post-processing; worker starts record
//! `WorkerLoadTime`. Recording goes through `metrics` handles: the hot host-level ones are kept,
//! the others looked up in the recorder's sharded map.

pub mod catalog;
mod exporter;
pub mod filter;
pub mod format;
pub mod model;
pub mod system;

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{Counter, Gauge};

use catalog::Spec;
pub use filter::NameFilter;
pub use model::{BatchTimes, ModelStats, ModelView};
pub use system::SystemSample;

/// TorchServe's `metrics_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsMode {
    /// Every update is a line in `ts_metrics.log` / `model_metrics.log`; `/metrics` lists none
    /// of TorchServe's metrics (TorchServe's default).
    #[default]
    Log,
    /// Everything on `/metrics`, nothing logged.
    Prometheus,
    /// The three `ts_*` counters on `/metrics`, the rest logged (TorchServe ≤ 0.7.1).
    Legacy,
}

impl std::str::FromStr for MetricsMode {
    type Err = String;

    /// As TorchServe: case and white space do not matter.
    fn from_str(text: &str) -> Result<Self, String> {
        let cleaned: String = text
            .chars()
            .filter(|character| !character.is_whitespace())
            .collect();
        match cleaned.to_ascii_lowercase().as_str() {
            "log" => Ok(MetricsMode::Log),
            "prometheus" => Ok(MetricsMode::Prometheus),
            "legacy" => Ok(MetricsMode::Legacy),
            _ => Err(format!(
                "{text:?} is not a metrics mode: use log, prometheus or legacy"
            )),
        }
    }
}

/// The server's metrics: TorchServe's and, through [`ModelStats`], oxserve's.
#[derive(Debug)]
pub struct Metrics {
    mode: MetricsMode,
    hostname: String,
    /// This server's recorder; [`ModelStats`] registers its series here too.
    exporter: exporter::Exporter,
    /// Host-level series updated on every request or batch, resolved on first use (a series
    /// only appears once it has a value, as with TorchServe).
    requests_2xx: OnceLock<Series>,
    requests_4xx: OnceLock<Series>,
    requests_5xx: OnceLock<Series>,
    queue_time: OnceLock<Series>,
    worker_thread_time: OnceLock<Series>,
}

/// One series of a TorchServe metric.
#[derive(Debug)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
}

impl Series {
    /// A counter adds `value`, rounded (the exporter's counters count whole units: for the
    /// microsecond counters that is at most half a microsecond per update); a gauge takes it.
    fn apply(&self, value: f64) {
        match self {
            Series::Counter(counter) => counter.increment(value.round() as u64),
            Series::Gauge(gauge) => gauge.set(value),
        }
    }
}

impl Metrics {
    pub fn new(mode: MetricsMode, hostname: String) -> Self {
        Metrics {
            exporter: exporter::Exporter::new(),
            requests_2xx: OnceLock::new(),
            requests_4xx: OnceLock::new(),
            requests_5xx: OnceLock::new(),
            queue_time: OnceLock::new(),
            worker_thread_time: OnceLock::new(),
            mode,
            hostname,
        }
    }

    /// The series of `spec` for the dimension `values` (without the host name, appended last).
    fn series(&self, spec: &Spec, values: &[&str]) -> Series {
        let values = values.iter().copied().chain([self.hostname.as_str()]);
        let labels = spec.labels.iter().copied().zip(values);
        match spec.kind {
            catalog::Kind::Counter => Series::Counter(self.exporter.counter(spec.name, labels)),
            catalog::Kind::Gauge => Series::Gauge(self.exporter.gauge(spec.name, labels)),
        }
    }

    /// This machine's name, the `Hostname` label (`localhost` if it has none).
    pub fn local_hostname() -> String {
        let name = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        if name.is_empty() {
            "localhost".into()
        } else {
            name
        }
    }

    pub fn mode(&self) -> MetricsMode {
        self.mode
    }

    /// Whether `spec` is kept for `/metrics` (otherwise each update is logged).
    fn exposed(&self, spec: &Spec) -> bool {
        match self.mode {
            MetricsMode::Prometheus => true,
            MetricsMode::Log => false,
            MetricsMode::Legacy => catalog::LEGACY_PROMETHEUS
                .iter()
                .any(|legacy| legacy.name == spec.name),
        }
    }

    /// Whether backend metrics are logged (their lines then carry the batch's request ids).
    pub fn logs_backend(&self) -> bool {
        !self.exposed(&catalog::HANDLER_TIME)
    }

    /// Records one update of `spec`. `values` are the dimension values without the host name;
    /// `slot`, when given, caches their series (host-level metrics).
    fn update(
        &self,
        spec: &Spec,
        slot: Option<&OnceLock<Series>>,
        values: &[&str],
        value: f64,
        request_ids: Option<&str>,
    ) {
        if self.exposed(spec) {
            match slot {
                Some(slot) => slot.get_or_init(|| self.series(spec, values)).apply(value),
                None => self.series(spec, values).apply(value),
            }
            return;
        }
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        let line = format::log_line(spec, values, &self.hostname, value, request_ids, timestamp);
        // The file, then the console and ts_log.log if the log filter lets the target through.
        if spec.backend {
            crate::logging::write_line(crate::logging::LineLog::ModelMetrics, &line);
            tracing::info!(target: "MODEL_METRICS", "{line}");
        } else {
            crate::logging::write_line(crate::logging::LineLog::TsMetrics, &line);
            tracing::info!(target: "TS_METRICS", "{line}");
        }
    }

    /// `Requests2XX` / `Requests4XX` / `Requests5XX` for one answered request, on any API. As
    /// TorchServe, anything outside 2xx and 4xx counts as 5XX.
    pub fn record_status(&self, status: u16) {
        let (spec, series) = match status {
            200..=299 => (&catalog::REQUESTS_2XX, &self.requests_2xx),
            400..=499 => (&catalog::REQUESTS_4XX, &self.requests_4xx),
            _ => (&catalog::REQUESTS_5XX, &self.requests_5xx),
        };
        self.update(spec, Some(series), &["Host"], 1.0, None);
    }

    /// `ts_inference_requests_total`: a request for a model that exists. `version` is the one
    /// named in the request, `default` when none was.
    pub fn record_inference_request(&self, model: &str, version: &str) {
        self.update(
            &catalog::INFERENCE_REQUESTS_TOTAL,
            None,
            &[model, version],
            1.0,
            None,
        );
    }

    /// A successful inference: `ts_inference_latency_microseconds` (queued to answered),
    /// `ts_queue_latency_microseconds` and `QueueTime` (whole milliseconds, as TorchServe).
    pub fn record_inference_latency(
        &self,
        model: &str,
        version: &str,
        total: Duration,
        queue: Duration,
    ) {
        let labels = [model, version];
        let micros = |duration: Duration| duration.as_nanos() as f64 / 1000.0;
        self.update(
            &catalog::INFERENCE_LATENCY,
            None,
            &labels,
            micros(total),
            None,
        );
        self.update(&catalog::QUEUE_LATENCY, None, &labels, micros(queue), None);
        self.update(
            &catalog::QUEUE_TIME,
            Some(&self.queue_time),
            &["Host"],
            queue.as_millis() as f64,
            None,
        );
    }

    /// `WorkerLoadTime` of a worker (`W-<id>-<model>_<version>`) that became ready.
    pub fn record_worker_load(&self, worker: &str, took: Duration) {
        self.update(
            &catalog::WORKER_LOAD_TIME,
            None,
            &[worker, "Host"],
            took.as_millis() as f64,
            None,
        );
    }

    /// `WorkerThreadTime`: a batch's time on its worker outside the handler, whole milliseconds.
    pub fn record_worker_thread_time(&self, took: Duration) {
        self.update(
            &catalog::WORKER_THREAD_TIME,
            Some(&self.worker_thread_time),
            &["Host"],
            took.as_millis() as f64,
            None,
        );
    }

    /// `HandlerTime` (pre-processing + inference + post-processing) and `PredictionTime` (the
    /// whole batch) of one batch, in milliseconds rounded to two decimals as TorchServe's backend.
    pub fn record_handler(
        &self,
        model: &str,
        handler: Duration,
        prediction: Duration,
        request_ids: Option<&str>,
    ) {
        let millis = |duration: Duration| (duration.as_secs_f64() * 100_000.0).round() / 100.0;
        let labels = [model, "Model"];
        let handler_ms = millis(handler);
        let prediction_ms = millis(prediction);
        self.update(
            &catalog::HANDLER_TIME,
            None,
            &labels,
            handler_ms,
            request_ids,
        );
        self.update(
            &catalog::PREDICTION_TIME,
            None,
            &labels,
            prediction_ms,
            request_ids,
        );
    }

    /// The host metrics of one sample.
    pub fn record_system(&self, sample: &SystemSample) {
        for (spec, value) in [
            (&catalog::CPU_UTILIZATION, sample.cpu_utilization),
            (&catalog::MEMORY_USED, sample.memory_used),
            (&catalog::MEMORY_AVAILABLE, sample.memory_available),
            (&catalog::MEMORY_UTILIZATION, sample.memory_utilization),
            (&catalog::DISK_USAGE, sample.disk_usage),
            (&catalog::DISK_UTILIZATION, sample.disk_utilization),
            (&catalog::DISK_AVAILABLE, sample.disk_available),
        ] {
            self.update(spec, None, &["Host"], value, None);
        }
        for (device, reading) in &sample.gpus {
            let labels = ["Host", &device.to_string()];
            for (spec, value) in [
                (&catalog::GPU_MEMORY_UTILIZATION, reading.memory_utilization),
                (&catalog::GPU_MEMORY_USED, reading.memory_used_mib),
                (&catalog::GPU_UTILIZATION, reading.utilization),
            ] {
                self.update(spec, None, &labels, value, None);
            }
        }
    }

    /// The `/metrics` text: the families this server has series of, TorchServe's first (those
    /// its mode exposes, in metrics.yaml order), then oxserve's by name, each only if `filter`
    /// names it. oxserve's per-model families list only the model versions in `models` (the
    /// loaded ones), whose gauges are set from them first: the recorder keeps an unloaded
    /// version's series, but they are not shown. TorchServe's own per-model series stay, as in
    /// TorchServe. Counter and gauge samples are sorted; a histogram's stay grouped.
    pub fn render(&self, models: &[ModelView<'_>], filter: &NameFilter) -> String {
        let live = model::publish(models);
        let text = self.exporter.render();
        let mut families = filter::families(&text);
        families.retain_mut(|family| {
            if !filter.includes_family(family) {
                return false;
            }
            if family.name.starts_with("oxserve_") {
                family.samples.retain(|line| model::is_live(line, &live));
            }
            if family.kind != "histogram" {
                family.samples.sort_unstable();
            }
            !family.samples.is_empty()
        });
        families.sort_by_key(|family| {
            (
                catalog::position(family.name).unwrap_or(catalog::ALL.len()),
                family.name,
            )
        });
        let mut out = String::with_capacity(text.len());
        for family in &families {
            family.write_to(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod check;

#[cfg(test)]
mod tests {
    use super::*;

    /// The TorchServe families listed in `text`, in order.
    fn torchserve_families(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .filter(|name| !name.starts_with("oxserve_"))
            .collect()
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|candidate| candidate == line)
    }

    fn system_sample(gpus: Vec<(u32, crate::gpu::GpuReading)>) -> SystemSample {
        SystemSample {
            cpu_utilization: 1.5,
            memory_used: 2.0,
            memory_available: 3.0,
            memory_utilization: 4.0,
            disk_usage: 5.0,
            disk_utilization: 6.0,
            disk_available: 7.25,
            gpus,
        }
    }

    fn gpu(used: f64) -> crate::gpu::GpuReading {
        crate::gpu::GpuReading {
            utilization: 37.0,
            memory_utilization: 12.0,
            memory_used_mib: used,
        }
    }

    #[test]
    fn modes_parse_as_torchserve_reads_them() {
        assert_eq!(" Prometheus ".parse(), Ok(MetricsMode::Prometheus));
        assert_eq!("LOG".parse(), Ok(MetricsMode::Log));
        assert_eq!("legacy".parse(), Ok(MetricsMode::Legacy));
        assert!("statsd".parse::<MetricsMode>().is_err());
    }

    #[test]
    fn prometheus_mode_lists_every_family_in_metrics_yaml_order() {
        let metrics = Metrics::new(MetricsMode::Prometheus, "h".into());
        metrics.record_status(200);
        metrics.record_status(200);
        metrics.record_status(404);
        metrics.record_status(302);
        metrics.record_inference_request("m", "default");
        metrics.record_inference_latency(
            "m",
            "default",
            Duration::from_micros(1500),
            Duration::from_micros(250),
        );
        metrics.record_worker_thread_time(Duration::from_millis(3));
        metrics.record_worker_load("W-9000-m_1.0", Duration::from_millis(42));
        metrics.record_system(&system_sample(vec![(0, gpu(80.0))]));
        metrics.record_handler(
            "m",
            Duration::from_micros(12_346),
            Duration::from_micros(12_500),
            None,
        );
        let text = metrics.render(&[], &NameFilter::default());
        check::exposition(&text);
        let names: Vec<&str> = catalog::ALL.iter().map(|spec| spec.name).collect();
        assert_eq!(torchserve_families(&text), names);
        for line in [
            "# HELP Requests2XX Torchserve prometheus counter metric with unit: Count",
            "# TYPE Requests2XX counter",
            "Requests2XX{Level=\"Host\",Hostname=\"h\"} 2",
            "Requests4XX{Level=\"Host\",Hostname=\"h\"} 1",
            "Requests5XX{Level=\"Host\",Hostname=\"h\"} 1",
            "ts_inference_requests_total{model_name=\"m\",model_version=\"default\",hostname=\"h\"} 1",
            "ts_inference_latency_microseconds{model_name=\"m\",model_version=\"default\",hostname=\"h\"} 1500",
            "ts_queue_latency_microseconds{model_name=\"m\",model_version=\"default\",hostname=\"h\"} 250",
            "# TYPE QueueTime gauge",
            "QueueTime{Level=\"Host\",Hostname=\"h\"} 0",
            "WorkerThreadTime{Level=\"Host\",Hostname=\"h\"} 3",
            "WorkerLoadTime{WorkerName=\"W-9000-m_1.0\",Level=\"Host\",Hostname=\"h\"} 42",
            "CPUUtilization{Level=\"Host\",Hostname=\"h\"} 1.5",
            "DiskAvailable{Level=\"Host\",Hostname=\"h\"} 7.25",
            "# HELP HandlerTime Torchserve prometheus gauge metric with unit: ms",
            "HandlerTime{ModelName=\"m\",Level=\"Model\",Hostname=\"h\"} 12.35",
            "PredictionTime{ModelName=\"m\",Level=\"Model\",Hostname=\"h\"} 12.5",
        ] {
            assert!(has_line(&text, line), "{line} in\n{text}");
        }
    }

    #[test]
    fn counters_add_up_and_each_server_counts_apart() {
        let first = Metrics::new(MetricsMode::Prometheus, "h".into());
        let second = Metrics::new(MetricsMode::Prometheus, "h".into());
        for _ in 0..5 {
            first.record_inference_request("m", "default");
            // 1.6 µs each, rounded to 2.
            first.record_inference_latency(
                "m",
                "default",
                Duration::from_nanos(1600),
                Duration::ZERO,
            );
        }
        first.record_inference_request("m", "1.0");
        second.record_status(500);
        let text = first.render(&[], &NameFilter::default());
        for line in [
            "ts_inference_requests_total{model_name=\"m\",model_version=\"1.0\",hostname=\"h\"} 1",
            "ts_inference_requests_total{model_name=\"m\",model_version=\"default\",hostname=\"h\"} 5",
            "ts_inference_latency_microseconds{model_name=\"m\",model_version=\"default\",hostname=\"h\"} 10",
        ] {
            assert!(has_line(&text, line), "{line} in\n{text}");
        }
        assert!(!text.contains("Requests5XX"), "{text}");
        let text = second.render(&[], &NameFilter::default());
        assert_eq!(torchserve_families(&text), ["Requests5XX"]);
    }

    #[test]
    fn gpu_figures_are_one_series_per_device() {
        let metrics = Metrics::new(MetricsMode::Prometheus, "h".into());
        metrics.record_system(&system_sample(vec![(0, gpu(1534.0)), (1, gpu(80.5))]));
        let text = metrics.render(&[], &NameFilter::default());
        check::exposition(&text);
        for line in [
            "GPUUtilization{Level=\"Host\",DeviceId=\"0\",Hostname=\"h\"} 37",
            "GPUMemoryUtilization{Level=\"Host\",DeviceId=\"1\",Hostname=\"h\"} 12",
            "GPUMemoryUsed{Level=\"Host\",DeviceId=\"0\",Hostname=\"h\"} 1534",
            "GPUMemoryUsed{Level=\"Host\",DeviceId=\"1\",Hostname=\"h\"} 80.5",
        ] {
            assert!(has_line(&text, line), "{line} in\n{text}");
        }
        // Without GPUs, no GPU family.
        let metrics = Metrics::new(MetricsMode::Prometheus, "h".into());
        metrics.record_system(&system_sample(Vec::new()));
        let text = metrics.render(&[], &NameFilter::default());
        assert!(!text.contains("GPU"), "{text}");
        assert!(text.contains("# TYPE MemoryUsed gauge\n"), "{text}");
    }

    #[test]
    fn log_mode_lists_none_and_legacy_only_the_ts_counters() {
        let log = std::sync::Arc::new(Metrics::new(MetricsMode::Log, "h".into()));
        log.record_status(200);
        log.record_inference_request("m", "default");
        log.record_worker_thread_time(Duration::from_millis(1));
        let stats = ModelStats::new("m", "1.0", std::sync::Arc::clone(&log));
        stats.queue.record(0.001);
        let view = ModelView {
            name: "m",
            version: "1.0",
            stats: &stats,
            queue_depth: 0,
            live_workers: 1,
        };
        let text = log.render(&[view], &NameFilter::default());
        check::exposition(&text);
        assert!(torchserve_families(&text).is_empty(), "{text}");
        assert!(text.contains("# TYPE oxserve_queue_seconds histogram\n"));
        assert!(log.logs_backend());

        let legacy = Metrics::new(MetricsMode::Legacy, "h".into());
        legacy.record_status(200);
        legacy.record_inference_request("m", "default");
        legacy.record_inference_latency("m", "default", Duration::from_millis(2), Duration::ZERO);
        legacy.record_worker_thread_time(Duration::from_millis(1));
        let text = legacy.render(&[], &NameFilter::default());
        check::exposition(&text);
        assert_eq!(
            torchserve_families(&text),
            [
                "ts_inference_requests_total",
                "ts_inference_latency_microseconds",
                "ts_queue_latency_microseconds"
            ]
        );
        assert!(legacy.logs_backend());
        assert!(!Metrics::new(MetricsMode::Prometheus, "h".into()).logs_backend());
    }

    #[test]
    fn the_name_filter_keeps_the_named_families() {
        let metrics = Metrics::new(MetricsMode::Prometheus, "h".into());
        metrics.record_status(200);
        metrics.record_status(404);
        metrics.record_inference_latency("m", "default", Duration::from_micros(7), Duration::ZERO);
        let filter = NameFilter::new(vec![
            "Requests2XX".into(),
            "ts_queue_latency_microseconds".into(),
        ]);
        let text = metrics.render(&[], &filter);
        assert_eq!(
            text,
            "# HELP Requests2XX Torchserve prometheus counter metric with unit: Count\n\
             # TYPE Requests2XX counter\n\
             Requests2XX{Level=\"Host\",Hostname=\"h\"} 1\n\
             # HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds\n\
             # TYPE ts_queue_latency_microseconds counter\n\
             ts_queue_latency_microseconds{model_name=\"m\",model_version=\"default\",hostname=\"h\"} 0\n"
        );
        let none = metrics.render(&[], &NameFilter::new(vec!["nothing".into()]));
        assert_eq!(none, "");
    }
}

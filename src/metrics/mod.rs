//! Metrics: TorchServe's, exactly, and oxserve's own.
//!
//! - [`Metrics`] (one per server, in [`crate::AppState`]) records TorchServe's default metrics
//!   ([`catalog`]) and, by `metrics_mode`, keeps them for `GET /metrics` (`prometheus`; in
//!   `legacy` only the three `ts_*` counters) or writes each update as a line to the
//!   `TS_METRICS` / `MODEL_METRICS` logs (`log`, TorchServe's default; see [`crate::logging`]).
//! - [`ModelStats`] (one per model version, shared with its workers) holds oxserve's per-model
//!   histograms and counters, served in every mode, and forwards TorchServe's per-batch figures.
//! - [`system`] samples the host; [`format`] holds the exact text shapes; [`registry`] the
//!   lock-free primitives.
//!
//! Who records what: the HTTP middleware counts `Requests2XX/4XX/5XX`; the inference handler
//! counts `ts_inference_*` per model and requested version (`default` when none was named); the
//! workers time queue wait, pre-processing, inference and post-processing; worker starts record
//! `WorkerLoadTime`. Recording is atomics plus, for a new label set, one short std-Mutex scan.

pub mod catalog;
pub mod format;
pub mod model;
pub mod registry;
pub mod system;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use catalog::Spec;
pub use format::NameFilter;
pub use model::{ModelStats, ModelView};
use registry::{Family, Value};
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

/// The server's TorchServe metrics.
#[derive(Debug)]
pub struct Metrics {
    mode: MetricsMode,
    hostname: String,
    /// One per [`catalog::ALL`] entry, same order; label values include the host name, last.
    families: Vec<Family>,
    /// Host-level series updated on every request or batch, resolved on first use (a series
    /// only appears once it has a value, as with the Java client).
    requests_2xx: OnceLock<Arc<Value>>,
    requests_4xx: OnceLock<Arc<Value>>,
    requests_5xx: OnceLock<Arc<Value>>,
    queue_time: OnceLock<Arc<Value>>,
    worker_thread_time: OnceLock<Arc<Value>>,
}

impl Metrics {
    pub fn new(mode: MetricsMode, hostname: String) -> Self {
        Metrics {
            families: catalog::ALL.iter().map(|_| Family::default()).collect(),
            requests_2xx: OnceLock::new(),
            requests_4xx: OnceLock::new(),
            requests_5xx: OnceLock::new(),
            queue_time: OnceLock::new(),
            worker_thread_time: OnceLock::new(),
            mode,
            hostname,
        }
    }

    /// The `Level="Host"` series of `spec`, resolved once into `slot`.
    fn host_series<'a>(&self, spec: &Spec, slot: &'a OnceLock<Arc<Value>>) -> &'a Value {
        slot.get_or_init(|| {
            self.families[catalog::index_of(spec)].series(&["Host", &self.hostname])
        })
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
        slot: Option<&OnceLock<Arc<Value>>>,
        values: &[&str],
        value: f64,
        request_ids: Option<&str>,
    ) {
        if self.exposed(spec) {
            let apply = |target: &Value| match spec.kind {
                catalog::Kind::Counter => target.add(value),
                catalog::Kind::Gauge => target.set(value),
            };
            match slot {
                Some(slot) => apply(self.host_series(spec, slot)),
                None => {
                    let mut labels = [""; 4];
                    let count = values.len().min(3);
                    labels[..count].copy_from_slice(&values[..count]);
                    labels[count] = &self.hostname;
                    apply(&self.families[catalog::index_of(spec)].series(&labels[..=count]));
                }
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

    /// The `/metrics` text: TorchServe's families this mode exposes (metrics.yaml order; a
    /// family without samples still gets its HELP and TYPE, as the Java client prints it), then
    /// oxserve's per-model families.
    pub fn render(&self, models: &[ModelView<'_>], filter: &NameFilter) -> String {
        let mut out = String::with_capacity(8192);
        for (spec, family) in catalog::ALL.iter().zip(&self.families) {
            if !self.exposed(spec) || !filter.includes(spec.name) {
                continue;
            }
            format::write_header(
                &mut out,
                spec.name,
                &format::torchserve_help(spec),
                spec.kind.as_str(),
            );
            for (values, value) in family.snapshot() {
                let labels = spec
                    .labels
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str));
                format::write_sample(&mut out, spec.name, labels, value);
            }
        }
        model::write_model_families(&mut out, models, filter);
        out
    }
}

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
        metrics.record_worker_load("W-9000-m_1.0", Duration::from_millis(42));
        metrics.record_handler(
            "m",
            Duration::from_micros(12_346),
            Duration::from_micros(12_500),
            None,
        );
        let text = metrics.render(&[], &NameFilter::default());
        let headers: Vec<&str> = torchserve_families(&text);
        let names: Vec<&str> = catalog::ALL.iter().map(|spec| spec.name).collect();
        assert_eq!(headers, names);
        for line in [
            "Requests2XX{Level=\"Host\",Hostname=\"h\",} 2.0",
            "Requests4XX{Level=\"Host\",Hostname=\"h\",} 1.0",
            "Requests5XX{Level=\"Host\",Hostname=\"h\",} 1.0",
            "ts_inference_requests_total{model_name=\"m\",model_version=\"default\",hostname=\"h\",} 1.0",
            "ts_inference_latency_microseconds{model_name=\"m\",model_version=\"default\",hostname=\"h\",} 1500.0",
            "ts_queue_latency_microseconds{model_name=\"m\",model_version=\"default\",hostname=\"h\",} 250.0",
            "QueueTime{Level=\"Host\",Hostname=\"h\",} 0.0",
            "WorkerLoadTime{WorkerName=\"W-9000-m_1.0\",Level=\"Host\",Hostname=\"h\",} 42.0",
            "HandlerTime{ModelName=\"m\",Level=\"Model\",Hostname=\"h\",} 12.35",
            "PredictionTime{ModelName=\"m\",Level=\"Model\",Hostname=\"h\",} 12.5",
        ] {
            assert!(text.lines().any(|candidate| candidate == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn gpu_figures_are_one_series_per_device() {
        let metrics = Metrics::new(MetricsMode::Prometheus, "h".into());
        let reading = |used| crate::gpu::GpuReading {
            utilization: 37.0,
            memory_utilization: 12.0,
            memory_used_mib: used,
        };
        metrics.record_system(&SystemSample {
            cpu_utilization: 1.0,
            memory_used: 2.0,
            memory_available: 3.0,
            memory_utilization: 4.0,
            disk_usage: 5.0,
            disk_utilization: 6.0,
            disk_available: 7.0,
            gpus: vec![(0, reading(1534.0)), (1, reading(80.0))],
        });
        let text = metrics.render(&[], &NameFilter::default());
        for line in [
            "GPUUtilization{Level=\"Host\",DeviceId=\"0\",Hostname=\"h\",} 37.0",
            "GPUMemoryUtilization{Level=\"Host\",DeviceId=\"1\",Hostname=\"h\",} 12.0",
            "GPUMemoryUsed{Level=\"Host\",DeviceId=\"0\",Hostname=\"h\",} 1534.0",
            "GPUMemoryUsed{Level=\"Host\",DeviceId=\"1\",Hostname=\"h\",} 80.0",
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "{line} in\n{text}"
            );
        }
    }

    #[test]
    fn log_mode_lists_none_and_legacy_only_the_ts_counters() {
        let log = Metrics::new(MetricsMode::Log, "h".into());
        log.record_status(200);
        log.record_inference_request("m", "default");
        let text = log.render(&[], &NameFilter::default());
        assert!(torchserve_families(&text).is_empty(), "{text}");
        assert!(text.contains("# TYPE oxserve_queue_seconds histogram"));
        assert!(log.logs_backend());

        let legacy = Metrics::new(MetricsMode::Legacy, "h".into());
        legacy.record_status(200);
        legacy.record_inference_request("m", "default");
        let text = legacy.render(&[], &NameFilter::default());
        assert_eq!(
            torchserve_families(&text),
            [
                "ts_inference_requests_total",
                "ts_inference_latency_microseconds",
                "ts_queue_latency_microseconds"
            ]
        );
        assert!(legacy.logs_backend());
    }

    #[test]
    fn the_name_filter_keeps_the_named_families() {
        let metrics = Metrics::new(MetricsMode::Prometheus, "h".into());
        metrics.record_status(200);
        let filter = NameFilter::new(vec![
            "Requests2XX".into(),
            "ts_queue_latency_microseconds".into(),
        ]);
        let text = metrics.render(&[], &filter);
        assert_eq!(
            text,
            "# HELP Requests2XX Torchserve prometheus counter metric with unit: Count\n\
             # TYPE Requests2XX counter\n\
             Requests2XX{Level=\"Host\",Hostname=\"h\",} 1.0\n\
             # HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds\n\
             # TYPE ts_queue_latency_microseconds counter\n"
        );
    }
}

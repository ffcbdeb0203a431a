//! TorchServe's default metrics (its `ts/configs/metrics.yaml`): name, type, unit and dimension
//! names, in that file's order, plus which log each goes to in `log` mode. `Hostname` is always
//! the last dimension, as the Java frontend appends it. Only data here: recording is in
//! [`super::Metrics`], log lines in [`super::format`].

/// A TorchServe metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One TorchServe metric.
#[derive(Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    /// The unit as metrics.yaml spells it (in HELP texts and log lines).
    pub unit: &'static str,
    /// Dimension names, `Hostname` (or `hostname`) last.
    pub labels: &'static [&'static str],
    /// A backend (model) metric: logged to `model_metrics.log` with request ids, not
    /// `ts_metrics.log`.
    pub backend: bool,
}

impl Spec {
    /// TorchServe's HELP text for the metric.
    pub fn help(&self) -> String {
        format!(
            "Torchserve prometheus {} metric with unit: {}",
            self.kind.as_str(),
            self.unit
        )
    }
}

const HOST: &[&str] = &["Level", "Hostname"];
const REQUEST: &[&str] = &["model_name", "model_version", "hostname"];
const GPU: &[&str] = &["Level", "DeviceId", "Hostname"];
const MODEL: &[&str] = &["ModelName", "Level", "Hostname"];

const fn frontend(
    name: &'static str,
    kind: Kind,
    unit: &'static str,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        kind,
        unit,
        labels,
        backend: false,
    }
}

pub const REQUESTS_2XX: Spec = frontend("Requests2XX", Kind::Counter, "Count", HOST);
pub const REQUESTS_4XX: Spec = frontend("Requests4XX", Kind::Counter, "Count", HOST);
pub const REQUESTS_5XX: Spec = frontend("Requests5XX", Kind::Counter, "Count", HOST);
pub const INFERENCE_REQUESTS_TOTAL: Spec = frontend(
    "ts_inference_requests_total",
    Kind::Counter,
    "Count",
    REQUEST,
);
pub const INFERENCE_LATENCY: Spec = frontend(
    "ts_inference_latency_microseconds",
    Kind::Counter,
    "Microseconds",
    REQUEST,
);
pub const QUEUE_LATENCY: Spec = frontend(
    "ts_queue_latency_microseconds",
    Kind::Counter,
    "Microseconds",
    REQUEST,
);
pub const QUEUE_TIME: Spec = frontend("QueueTime", Kind::Gauge, "Milliseconds", HOST);
pub const WORKER_THREAD_TIME: Spec =
    frontend("WorkerThreadTime", Kind::Gauge, "Milliseconds", HOST);
pub const WORKER_LOAD_TIME: Spec = frontend(
    "WorkerLoadTime",
    Kind::Gauge,
    "Milliseconds",
    &["WorkerName", "Level", "Hostname"],
);
pub const CPU_UTILIZATION: Spec = frontend("CPUUtilization", Kind::Gauge, "Percent", HOST);
pub const MEMORY_USED: Spec = frontend("MemoryUsed", Kind::Gauge, "Megabytes", HOST);
pub const MEMORY_AVAILABLE: Spec = frontend("MemoryAvailable", Kind::Gauge, "Megabytes", HOST);
pub const MEMORY_UTILIZATION: Spec = frontend("MemoryUtilization", Kind::Gauge, "Percent", HOST);
pub const DISK_USAGE: Spec = frontend("DiskUsage", Kind::Gauge, "Gigabytes", HOST);
pub const DISK_UTILIZATION: Spec = frontend("DiskUtilization", Kind::Gauge, "Percent", HOST);
pub const DISK_AVAILABLE: Spec = frontend("DiskAvailable", Kind::Gauge, "Gigabytes", HOST);
pub const GPU_MEMORY_UTILIZATION: Spec =
    frontend("GPUMemoryUtilization", Kind::Gauge, "Percent", GPU);
pub const GPU_MEMORY_USED: Spec = frontend("GPUMemoryUsed", Kind::Gauge, "Megabytes", GPU);
pub const GPU_UTILIZATION: Spec = frontend("GPUUtilization", Kind::Gauge, "Percent", GPU);
pub const HANDLER_TIME: Spec = Spec {
    name: "HandlerTime",
    kind: Kind::Gauge,
    unit: "ms",
    labels: MODEL,
    backend: true,
};
pub const PREDICTION_TIME: Spec = Spec {
    name: "PredictionTime",
    kind: Kind::Gauge,
    unit: "ms",
    labels: MODEL,
    backend: true,
};

/// Every default metric, in metrics.yaml's order (the order `/metrics` lists them in).
pub const ALL: &[&Spec] = &[
    &REQUESTS_2XX,
    &REQUESTS_4XX,
    &REQUESTS_5XX,
    &INFERENCE_REQUESTS_TOTAL,
    &INFERENCE_LATENCY,
    &QUEUE_LATENCY,
    &QUEUE_TIME,
    &WORKER_THREAD_TIME,
    &WORKER_LOAD_TIME,
    &CPU_UTILIZATION,
    &MEMORY_USED,
    &MEMORY_AVAILABLE,
    &MEMORY_UTILIZATION,
    &DISK_USAGE,
    &DISK_UTILIZATION,
    &DISK_AVAILABLE,
    &GPU_MEMORY_UTILIZATION,
    &GPU_MEMORY_USED,
    &GPU_UTILIZATION,
    &HANDLER_TIME,
    &PREDICTION_TIME,
];

/// The three counters `legacy` mode still serves in Prometheus format (TorchServe ≤ 0.7.1).
pub const LEGACY_PROMETHEUS: &[&Spec] = &[
    &INFERENCE_REQUESTS_TOTAL,
    &INFERENCE_LATENCY,
    &QUEUE_LATENCY,
];

/// The position in [`ALL`] of the metric called `name`.
pub fn position(name: &str) -> Option<usize> {
    ALL.iter().position(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_hostname_is_last() {
        for (index, spec) in ALL.iter().enumerate() {
            assert_eq!(position(spec.name), Some(index), "{}", spec.name);
            assert!(spec
                .labels
                .last()
                .is_some_and(|label| label.eq_ignore_ascii_case("hostname")));
        }
        assert_eq!(
            REQUESTS_2XX.help(),
            "Torchserve prometheus counter metric with unit: Count"
        );
    }
}

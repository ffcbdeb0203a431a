//! A model version's settings and how they are merged: server defaults (config.properties),
//! then its `models` entry, then the archive's model-config.yaml, then the registration's API
//! parameters, as TorchServe orders them.

use std::time::Duration;

use crate::batching::BatchWait;

/// Settings of one model version, after config.properties, model-config.yaml and API parameters
/// have been merged (in that order of precedence).
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// Initial worker range; later changed by the scale API (see [`super::ModelVersion::worker_range`]).
    pub min_workers: usize,
    pub max_workers: usize,
    pub batch_size: usize,
    pub max_batch_delay: Duration,
    pub batch_wait: BatchWait,
    pub response_timeout: Duration,
    /// How long starting one worker may take (TorchServe's `startup_timeout`).
    pub startup_timeout: Duration,
    pub job_queue_size: usize,
    /// ONNX Runtime intra-op threads per worker session.
    pub intra_op_threads: usize,
    pub limit_max_image_pixels: bool,
}

/// Settings given with a registration request (TorchServe: config.properties < yaml < API).
#[derive(Debug, Clone, Default)]
pub struct SettingsOverride {
    pub batch_size: Option<usize>,
    pub max_batch_delay: Option<Duration>,
    pub response_timeout: Option<Duration>,
    pub startup_timeout: Option<Duration>,
    /// A handler name given at registration, replacing the archive's.
    pub handler: Option<String>,
    /// `initial_workers`: used when model-config.yaml sets no valid worker range.
    pub initial_workers: Option<usize>,
    /// An exact worker range that wins over everything (a restored snapshot's).
    pub workers: Option<(usize, usize)>,
}

/// API parameters over everything; `initial_workers` only when the archive sets no worker range
/// (TorchServe's `handleRegister`).
pub(super) fn apply_overrides(
    settings: &mut ModelSettings,
    overrides: &SettingsOverride,
    yaml_sets_workers: bool,
) {
    if let Some(size) = overrides.batch_size {
        settings.batch_size = size.max(1);
    }
    if let Some(delay) = overrides.max_batch_delay {
        settings.max_batch_delay = delay;
    }
    if let Some(timeout) = overrides.response_timeout {
        settings.response_timeout = timeout;
    }
    if let Some(timeout) = overrides.startup_timeout {
        settings.startup_timeout = timeout;
    }
    if let (Some(workers), false) = (overrides.initial_workers, yaml_sets_workers) {
        settings.min_workers = workers;
        settings.max_workers = workers;
    }
    if let Some((min, max)) = overrides.workers {
        settings.min_workers = min;
        settings.max_workers = max.max(min);
    }
}

/// A config.properties `models` entry over the server defaults.
pub(super) fn apply_models_entry(settings: &mut ModelSettings, entry: &crate::config::ModelEntry) {
    if let Some(min) = entry.min_workers {
        settings.min_workers = min;
        settings.max_workers = settings.max_workers.max(min);
    }
    if let Some(max) = entry.max_workers {
        settings.max_workers = max.max(settings.min_workers);
    }
    apply_batching_and_timeouts(
        settings,
        entry.batch_size,
        entry.max_batch_delay,
        entry.response_timeout,
        entry.startup_timeout,
    );
}

/// The batching and timeout keys that config.properties `models` entries and model-config.yaml
/// share, in the units TorchServe writes them (milliseconds for the delay, seconds for timeouts).
fn apply_batching_and_timeouts(
    settings: &mut ModelSettings,
    batch_size: Option<usize>,
    max_batch_delay_ms: Option<u64>,
    response_timeout_s: Option<u64>,
    startup_timeout_s: Option<u64>,
) {
    if let Some(size) = batch_size {
        settings.batch_size = size.max(1);
    }
    if let Some(delay) = max_batch_delay_ms {
        settings.max_batch_delay = Duration::from_millis(delay);
    }
    if let Some(timeout) = response_timeout_s {
        settings.response_timeout = Duration::from_secs(timeout);
    }
    if let Some(timeout) = startup_timeout_s {
        settings.startup_timeout = Duration::from_secs(timeout);
    }
}

/// model-config.yaml's frontend keys over config.properties defaults.
pub(super) fn apply_model_config(
    settings: &mut ModelSettings,
    config: &oxserve_archiver::ModelConfig,
) {
    if let Some(min) = config.min_workers {
        settings.min_workers = min as usize;
    }
    if let Some(max) = config.max_workers {
        settings.max_workers = max as usize;
    }
    apply_batching_and_timeouts(
        settings,
        config.batch_size.map(|size| size as usize),
        config.max_batch_delay,
        config.response_timeout,
        config.startup_timeout,
    );
    if let Some(size) = config.job_queue_size {
        settings.job_queue_size = size.max(1) as usize;
    }
    if let Some(wait) = config
        .backend
        .get("batchWait")
        .and_then(|value| value.as_str())
    {
        settings.batch_wait = if wait == "fill" {
            BatchWait::Fill
        } else {
            BatchWait::Eager
        };
    }
    if let Some(threads) = config
        .backend
        .get("intraOpThreads")
        .and_then(|value| value.as_u64())
    {
        settings.intra_op_threads = threads.max(1) as usize;
    }
    settings.max_workers = settings.max_workers.max(settings.min_workers);
}

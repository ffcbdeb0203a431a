//! A model version's settings and how they are merged: server defaults (config.properties),
//! then its `models` entry, then the archive's model-config.yaml, then the registration's API
//! parameters, as TorchServe orders them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::batching::BatchWait;
use crate::config::Config;

/// Where a model version's workers run (TorchServe's `deviceType` and `deviceIds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// CUDA devices the workers are spread over, round robin. `chosen`: model-config.yaml's
    /// `deviceIds` named them, and the model keeps its own rotation; otherwise they are all the
    /// server's GPUs and one rotation is shared by every model (TorchServe's two counters).
    Gpu {
        ids: Vec<u32>,
        chosen: bool,
    },
}

impl Device {
    /// All `gpus` GPUs when there are any (TorchServe's default whenever `number_of_gpu` > 0).
    pub fn default_for(gpus: usize) -> Device {
        match gpus {
            0 => Device::Cpu,
            count => Device::Gpu {
                ids: (0..count as u32).collect(),
                chosen: false,
            },
        }
    }

    /// The GPU the next worker of this model runs on; `None` on the CPU.
    pub fn next_worker_gpu(&self, model_rotation: &AtomicUsize) -> Option<u32> {
        static SHARED_ROTATION: AtomicUsize = AtomicUsize::new(0);
        let Device::Gpu { ids, chosen } = self else {
            return None;
        };
        let rotation = if *chosen {
            model_rotation
        } else {
            &SHARED_ROTATION
        };
        let turn = rotation.fetch_add(1, Ordering::Relaxed);
        ids.get(turn % ids.len().max(1)).copied()
    }

    /// TorchServe's `deviceType` for the describe API.
    pub fn kind(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu { .. } => "gpu",
        }
    }

    /// The `deviceIds` model-config.yaml chose (TorchServe describes only those).
    pub fn chosen_ids(&self) -> &[u32] {
        match self {
            Device::Gpu { ids, chosen: true } => ids,
            _ => &[],
        }
    }

    /// model-config.yaml's `deviceType` and `deviceIds` over the server's default. As in
    /// TorchServe, `gpu` cannot conjure GPUs the server does not have, any other type is the
    /// CPU, and a list naming a GPU that does not exist is ignored whole.
    fn configure(&mut self, device_type: Option<&str>, device_ids: Option<&[u32]>) {
        if device_type.is_some_and(|kind| kind != "gpu") {
            *self = Device::Cpu;
        }
        let (Device::Gpu { ids, chosen }, Some(wanted)) = (&mut *self, device_ids) else {
            return;
        };
        if wanted.is_empty() {
            return;
        }
        match wanted.iter().find(|id| **id as usize >= ids.len()) {
            Some(invalid) => tracing::warn!("Invalid deviceId:{invalid}, ignore deviceIds list"),
            None => {
                *ids = wanted.to_vec();
                *chosen = true;
            }
        }
    }
}

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
    /// ONNX Runtime intra-op threads per worker session when set explicitly; `None`: planned
    /// from the model's worker count ([`super::plan_threads`]).
    pub intra_op_threads: Option<usize>,
    pub limit_max_image_pixels: bool,
    pub device: Device,
}

/// Default workers per model when `default_workers_per_model` is unset: one per core (as
/// TorchServe), at most this many.
const MAX_DEFAULT_WORKERS: usize = 4;

impl ModelSettings {
    /// Per-model defaults from the server config (TorchServe's: batch 1, 100 ms). Intra-op
    /// threads are left to the plan ([`super::plan_threads`]) unless `intra_op_threads` is set.
    pub fn defaults(config: &Config) -> ModelSettings {
        let workers = if config.default_workers_per_model == 0 {
            Config::cores().clamp(1, MAX_DEFAULT_WORKERS)
        } else {
            config.default_workers_per_model
        };
        let threads = (config.intra_op_threads > 0).then_some(config.intra_op_threads);
        ModelSettings {
            min_workers: workers,
            max_workers: workers,
            batch_size: 1,
            max_batch_delay: Duration::from_millis(100),
            batch_wait: BatchWait::Eager,
            response_timeout: config.default_response_timeout,
            startup_timeout: config.default_startup_timeout,
            job_queue_size: config.job_queue_size,
            intra_op_threads: threads,
            limit_max_image_pixels: config.limit_max_image_pixels,
            device: Device::default_for(config.gpus),
        }
    }
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
    settings
        .device
        .configure(config.device_type.as_deref(), config.device_ids.as_deref());
    if let Some(threads) = config
        .backend
        .get("intraOpThreads")
        .and_then(|value| value.as_u64())
    {
        settings.intra_op_threads = Some(threads.max(1) as usize);
    }
    settings.max_workers = settings.max_workers.max(settings.min_workers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_workers_and_threads_fill_the_cores_without_oversubscribing() {
        let config = Config::from_properties(Default::default(), &crate::config::Cli::default())
            .expect("defaults");
        let settings = ModelSettings::defaults(&config);
        let cores = Config::cores();
        assert_eq!(settings.min_workers, cores.clamp(1, MAX_DEFAULT_WORKERS));
        assert_eq!(settings.max_workers, settings.min_workers);
        assert_eq!(settings.intra_op_threads, None, "planned from the workers");
        let threads = super::super::plan_threads(None, settings.min_workers, cores);
        assert!(settings.min_workers * threads <= cores.max(1));

        let mut properties = std::collections::BTreeMap::new();
        properties.insert("default_workers_per_model".to_string(), "3".to_string());
        properties.insert("intra_op_threads".to_string(), "5".to_string());
        let config =
            Config::from_properties(properties, &crate::config::Cli::default()).expect("config");
        let settings = ModelSettings::defaults(&config);
        assert_eq!(
            (settings.min_workers, settings.intra_op_threads),
            (3, Some(5))
        );
    }

    fn two_gpus() -> Device {
        Device::default_for(2)
    }

    #[test]
    fn no_gpu_means_cpu_whatever_the_archive_asks() {
        let mut device = Device::default_for(0);
        device.configure(Some("gpu"), Some(&[0]));
        assert_eq!(device, Device::Cpu);
        assert_eq!(device.next_worker_gpu(&AtomicUsize::new(0)), None);
    }

    #[test]
    fn cpu_and_neuron_types_run_on_the_cpu() {
        for kind in ["cpu", "neuron"] {
            let mut device = two_gpus();
            device.configure(Some(kind), None);
            assert_eq!(device, Device::Cpu, "{kind}");
        }
    }

    #[test]
    fn chosen_ids_rotate_per_model() {
        let mut device = two_gpus();
        device.configure(Some("gpu"), Some(&[1]));
        assert_eq!(device.chosen_ids(), &[1]);
        let rotation = AtomicUsize::new(0);
        let gpus: Vec<_> = (0..3).map(|_| device.next_worker_gpu(&rotation)).collect();
        assert_eq!(gpus, vec![Some(1); 3]);
    }

    #[test]
    fn an_id_out_of_range_drops_the_whole_list() {
        let mut device = two_gpus();
        device.configure(None, Some(&[0, 2]));
        assert_eq!(device, two_gpus());
        assert!(device.chosen_ids().is_empty());
    }

    #[test]
    fn all_gpus_are_shared_round_robin() {
        let device = two_gpus();
        let rotation = AtomicUsize::new(0);
        let gpus: Vec<u32> = (0..4)
            .filter_map(|_| device.next_worker_gpu(&rotation))
            .collect();
        assert_eq!(gpus.len(), 4);
        assert!(gpus.iter().all(|gpu| *gpu < 2));
        assert!(gpus.windows(2).all(|pair| pair[0] != pair[1]), "{gpus:?}");
        assert_eq!(
            rotation.load(Ordering::Relaxed),
            0,
            "the shared rotation is not the model's"
        );
    }
}

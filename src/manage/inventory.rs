//! The read-only management calls, as TorchServe's `ApiUtils.getModelList` and
//! `getModelDescription`: the model list and model descriptions as JSON values, which the REST
//! API sends as its body and the gRPC API as `ManagementResponse.msg`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::ServeError;
use crate::model::{Device, ModelVersion};
use crate::state::AppState;
use crate::worker::WorkerStatus;

/// The default versions sorted by name, one page: `limit` (absent: 100; outside 0..=100: 100)
/// models from `token` on (absent or negative: 0), with `nextPageToken` only when more remain.
pub fn list(state: &AppState, limit: Option<i64>, token: Option<i64>) -> serde_json::Value {
    let limit = match limit.unwrap_or(100) {
        limit @ 0..=100 => limit as usize,
        _ => 100,
    };
    let token = token.unwrap_or(0).max(0) as usize;
    let models = state.registry.defaults();
    let page: Vec<serde_json::Value> = models
        .iter()
        .skip(token)
        .take(limit)
        .map(|model| serde_json::json!({ "modelName": model.name, "modelUrl": model.url }))
        .collect();
    let mut body = serde_json::Map::new();
    if token.saturating_add(limit) < models.len() {
        body.insert("nextPageToken".into(), (token + limit).to_string().into());
    }
    body.insert("models".into(), serde_json::Value::Array(page));
    serde_json::Value::Object(body)
}

/// Describes `name`'s default version, the given one, or every one for `all`.
pub async fn describe(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<serde_json::Value, ServeError> {
    let models = match version {
        Some("all") => state
            .registry
            .versions(name)?
            .into_iter()
            .map(|(model, _)| model)
            .collect(),
        version => vec![state.registry.get(name, version)?],
    };
    described(models).await
}

/// Describes off the reactor: a GPU worker's `gpuUsage` comes from `nvidia-smi`.
async fn described(models: Vec<Arc<ModelVersion>>) -> Result<serde_json::Value, ServeError> {
    let described = tokio::task::spawn_blocking(move || {
        let gpu_usage = match models
            .iter()
            .any(|model| model.settings.device != Device::Cpu)
        {
            true => crate::gpu::readings(),
            false => BTreeMap::new(),
        };
        models
            .iter()
            .map(|model| describe_one(model, &gpu_usage))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|error| ServeError::Internal(format!("describing failed: {error}")))?;
    Ok(serde_json::Value::Array(described))
}

/// Resident memory of this process in bytes (`VmRSS`). Workers are threads of one process, so this
/// is what each worker's `memoryUsage` reports: TorchServe's per-worker processes have no
/// counterpart to split it by.
fn process_memory() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}

/// TorchServe's `DescribeModelResponse`, field for field and in its order.
fn describe_one(
    model: &ModelVersion,
    gpu_usage: &BTreeMap<u32, crate::gpu::GpuReading>,
) -> serde_json::Value {
    let memory = process_memory();
    let settings = &model.settings;
    let (min_workers, max_workers) = model.worker_range();
    let (pending, remaining) = model.queue_status();
    let workers: Vec<serde_json::Value> = model
        .worker_snapshot()
        .into_iter()
        .map(|worker| {
            let gpu_usage = match worker.gpu {
                Some(gpu) => gpu_usage.get(&gpu).map_or_else(
                    // TorchServe's words when its query fails.
                    || "failed to obtained gpu usage".to_string(),
                    |reading| reading.describe(gpu),
                ),
                None => "N/A".to_string(),
            };
            serde_json::json!({
                "id": worker.id.to_string(),
                "startTime": iso_time(worker.started),
                "status": match worker.status {
                    WorkerStatus::Ready => "READY",
                    WorkerStatus::Starting => "STARTING",
                    WorkerStatus::Stopping => "UNLOADING",
                    WorkerStatus::Stopped => "STOPPED",
                },
                "memoryUsage": memory,
                "pid": std::process::id(),
                "gpu": worker.gpu.is_some(),
                "gpuUsage": gpu_usage
            })
        })
        .collect();
    serde_json::json!({
        "modelName": model.name,
        "modelVersion": model.version,
        "modelUrl": model.url,
        "engine": "ONNXRuntime",
        "runtime": model.archive.manifest.runtime,
        "minWorkers": min_workers,
        "maxWorkers": max_workers,
        "batchSize": settings.batch_size,
        "maxBatchDelay": settings.max_batch_delay.as_millis() as u64,
        "responseTimeout": settings.response_timeout.as_secs(),
        "startupTimeout": 120,
        "maxRetryTimeoutInSec": 300,
        "clientTimeoutInMills": 0,
        "parallelType": "",
        "parallelLevel": 0,
        "deviceType": settings.device.kind(),
        "deviceIds": settings.device.chosen_ids(),
        "continuousBatching": false,
        "useJobTicket": false,
        "useVenv": false,
        "stateful": false,
        "sequenceMaxIdleMSec": 0,
        "sequenceTimeoutMSec": 0,
        "maxNumSequence": 0,
        "maxSequenceJobQueueSize": 0,
        "status": if model.live_workers() >= min_workers { "Healthy" } else { "Unhealthy" },
        "loadedAtStartup": model.loaded_at_startup,
        "workers": workers,
        "jobQueueStatus": { "remainingCapacity": remaining, "pendingRequests": pending }
    })
}

/// `2025-03-17T11:20:57.123Z`, TorchServe's (Gson's) date format.
fn iso_time(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

//! The management API (8081). This version answers the read-only calls with TorchServe's shapes:
//! `GET /models` (sorted, paginated) and `GET /models/{name}[/{version}|/all]` (describe, a JSON
//! array). Everything else answers TorchServe's 404/405.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::{json_response, method_not_allowed, not_found, State};
use crate::error::ServeError;
use crate::model::ModelVersion;
use crate::worker::WorkerStatus;

/// The management listener's routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/models", get(list).fallback(method_not_allowed))
        .route(
            "/models/{model}",
            get(describe_default).fallback(method_not_allowed),
        )
        .route(
            "/models/{model}/{version}",
            get(describe_version).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
}

/// `GET /models?limit=&next_page_token=` as `ApiUtils.getModelList`: default versions only,
/// sorted by name, limit clamped to 100, `nextPageToken` only when more remain.
async fn list(
    AxumState(state): AxumState<State>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ServeError> {
    let number = |key: &str, default: i64| -> Result<i64, ServeError> {
        match query.get(key) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| {
                ServeError::BadRequest(format!("Parameter {key} must be an integer, got {value:?}"))
            }),
        }
    };
    let mut limit = number("limit", 100)?;
    if !(0..=100).contains(&limit) {
        limit = 100;
    }
    let token = number("next_page_token", 0)?.max(0) as usize;
    let models = state.registry.defaults();
    let page: Vec<serde_json::Value> = models
        .iter()
        .skip(token)
        .take(limit as usize)
        .map(|model| serde_json::json!({ "modelName": model.name, "modelUrl": model.url }))
        .collect();
    let mut body = serde_json::Map::new();
    if token + (limit as usize) < models.len() {
        body.insert(
            "nextPageToken".into(),
            (token + limit as usize).to_string().into(),
        );
    }
    body.insert("models".into(), serde_json::Value::Array(page));
    Ok(json_response(StatusCode::OK, &body))
}

async fn describe_default(
    AxumState(state): AxumState<State>,
    Path(model): Path<String>,
) -> Result<Response, ServeError> {
    let model = state.registry.get(&model, None)?;
    Ok(json_response(StatusCode::OK, &vec![describe(&model)]))
}

async fn describe_version(
    AxumState(state): AxumState<State>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ServeError> {
    let described: Vec<serde_json::Value> = if version == "all" {
        state
            .registry
            .versions(&model)?
            .iter()
            .map(|(model, _)| describe(model))
            .collect()
    } else {
        vec![describe(
            state.registry.get(&model, Some(&version))?.as_ref(),
        )]
    };
    Ok(json_response(StatusCode::OK, &described))
}

/// TorchServe's `DescribeModelResponse`, field for field and in its order.
fn describe(model: &ModelVersion) -> serde_json::Value {
    let settings = &model.settings;
    let (min_workers, max_workers) = model.worker_range();
    let (pending, remaining) = model.queue_status();
    let workers: Vec<serde_json::Value> = model
        .worker_snapshot()
        .into_iter()
        .map(|(id, started, status)| {
            serde_json::json!({
                "id": id.to_string(),
                "startTime": iso_time(started),
                "status": match status {
                    WorkerStatus::Ready => "READY",
                    WorkerStatus::Starting => "STARTING",
                    WorkerStatus::Stopping => "UNLOADING",
                    WorkerStatus::Stopped => "STOPPED",
                },
                "memoryUsage": 0,
                "pid": std::process::id(),
                "gpu": false,
                "gpuUsage": "N/A"
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
        "deviceType": "cpu",
        "deviceIds": [],
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

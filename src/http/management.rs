//! The management API (8081), as TorchServe's `ManagementRequestHandler`: list, describe,
//! register, scale, unregister, set-default, and the OpenAPI description on `OPTIONS /`.
//! Parameters come from the query string or, with `Content-Type: application/json`, a JSON body
//! (TorchServe's two parsers, with their different `synchronous` defaults). Register and
//! unregister answer 405 unless the model API is enabled. The operations themselves live in
//! [`crate::manage`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::{json_response, method_not_allowed, not_found, openapi, read_body, BodyLimits, State};
use crate::error::ServeError;
use crate::manage::{self, RegisterParams, ScaleParams, Status};
use crate::model::{Device, ModelVersion};
use crate::worker::WorkerStatus;

/// The management listener's routes (more specific paths first: actix matches in order).
pub fn routes(config: &mut web::ServiceConfig) {
    let model = |path: &str| {
        web::resource(path.to_string())
            .get(describe_default)
            .put(scale_default)
            .delete(unregister_default)
            .default_service(web::to(method_not_allowed))
    };
    config
        .service(
            web::resource("/")
                .route(
                    web::method(Method::OPTIONS)
                        .to(|| async { json_response(StatusCode::OK, &openapi::management()) }),
                )
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/models")
                .get(list)
                .post(register)
                .default_service(web::to(method_not_allowed)),
        )
        .service(model("/models/{model}"))
        // TorchServe's clients also send `models/{name}/` with a trailing slash.
        .service(model("/models/{model}/"))
        .service(
            web::resource("/models/{model}/{version}")
                .get(describe_version)
                .put(scale_version)
                .delete(unregister_version)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/models/{model}/{version}/set-default")
                .put(set_default)
                .default_service(web::to(method_not_allowed)),
        )
        .route("/models/{model}/{version}/{rest:.*}", web::to(not_found));
}

/// The query string as a map (the last of repeated names wins).
fn query_map(request: &HttpRequest) -> BTreeMap<String, String> {
    super::query_pairs(request).into_iter().collect()
}

/// Request parameters by name, from the query string or a JSON body. Malformed values fall back
/// to the default as TorchServe's `NettyUtils.getIntParameter` and Java's `parseBoolean` do (its
/// clients rely on that); each fallback is reported in an `x-oxserve-warning` header and the log.
struct Params {
    values: BTreeMap<String, String>,
    /// Whether they came from a JSON body (TorchServe's Gson path: `synchronous` defaults false).
    json: bool,
    warnings: Vec<String>,
}

impl Params {
    async fn read(
        request: &HttpRequest,
        payload: web::Payload,
        limits: BodyLimits,
    ) -> Result<Params, ServeError> {
        let query = query_map(request);
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.to_ascii_lowercase().starts_with("application/json"));
        if !is_json {
            return Ok(Params {
                values: query,
                json: false,
                warnings: Vec::new(),
            });
        }
        let body = read_body(payload, super::declared_length(request), limits).await?;
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|error| {
                ServeError::BadRequest(format!("the request body is not a JSON object: {error}"))
            })?;
        let mut values = query;
        for (key, value) in object {
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::String(text) => {
                    values.insert(key, text);
                }
                other => {
                    values.insert(key, other.to_string());
                }
            }
        }
        Ok(Params {
            values,
            json: true,
            warnings: Vec::new(),
        })
    }

    fn text(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    /// An integer; a malformed one counts as absent.
    fn integer(&mut self, key: &str) -> Option<i64> {
        let value = self.values.get(key)?;
        match value.trim().parse() {
            Ok(number) => Some(number),
            Err(_) => {
                self.warnings.push(format!(
                    "parameter {key}={value:?} is not an integer; the default is used"
                ));
                None
            }
        }
    }

    /// A count; negative values mean "the default", as in TorchServe.
    fn count(&mut self, key: &str) -> Option<usize> {
        self.integer(key)
            .and_then(|value| usize::try_from(value).ok())
    }

    /// Java's `Boolean.parseBoolean`: "true" in any case is true, anything else false.
    fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.values.get(key) {
            None => default,
            Some(value) if value.eq_ignore_ascii_case("true") => true,
            Some(value) => {
                if !value.eq_ignore_ascii_case("false") {
                    self.warnings.push(format!(
                        "parameter {key}={value:?} is not true or false; false is used"
                    ));
                }
                false
            }
        }
    }
}

fn status_response(status: Status, warnings: &[String]) -> HttpResponse {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::OK);
    let mut response = json_response(code, &serde_json::json!({ "status": status.message }));
    for warning in warnings {
        tracing::warn!("{warning}");
        if let Ok(value) = header::HeaderValue::from_str(warning) {
            response
                .headers_mut()
                .append(header::HeaderName::from_static("x-oxserve-warning"), value);
        }
    }
    response
}

async fn register(
    state: State,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    if !state.config.enable_model_api {
        return Err(ServeError::ModelApiDisabled);
    }
    let mut params = Params::read(&request, payload, BodyLimits::of(&state.config)).await?;
    let json = params.json;
    let register = RegisterParams {
        url: params.text("url"),
        model_name: params.text("model_name"),
        handler: params.text("handler"),
        runtime: params.text("runtime"),
        batch_size: params.count("batch_size").filter(|&size| size > 0),
        max_batch_delay: params.count("max_batch_delay").map(|delay| delay as u64),
        initial_workers: params.count("initial_workers"),
        // TorchServe: the query-string parser defaults to true, the JSON parser to false.
        synchronous: params.boolean("synchronous", !json),
        response_timeout: params
            .count("response_timeout")
            .map(|timeout| timeout as u64),
        startup_timeout: params
            .count("startup_timeout")
            .map(|timeout| timeout as u64),
    };
    let status = manage::register(&state.into_inner(), register).await?;
    Ok(status_response(status, &params.warnings))
}

async fn scale(
    state: State,
    model: String,
    version: Option<String>,
    mut params: Params,
) -> Result<HttpResponse, ServeError> {
    let min_worker = params.integer("min_worker").unwrap_or(1);
    let scale = ScaleParams {
        min_worker,
        max_worker: params.integer("max_worker").unwrap_or(min_worker),
        synchronous: params.boolean("synchronous", false),
    };
    // Accepted for compatibility: sessions are placed by the model's device settings.
    params.integer("number_gpu");
    params.integer("timeout");
    let version = version.or_else(|| params.text("model_version"));
    let status = manage::scale(&state.into_inner(), &model, version.as_deref(), scale).await?;
    Ok(status_response(status, &params.warnings))
}

async fn scale_default(
    state: State,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    let params = Params::read(&request, payload, BodyLimits::of(&state.config)).await?;
    scale(state, path.into_inner(), None, params).await
}

async fn scale_version(
    state: State,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    let params = Params::read(&request, payload, BodyLimits::of(&state.config)).await?;
    let (model, version) = path.into_inner();
    scale(state, model, Some(version), params).await
}

async fn unregister(
    state: State,
    model: &str,
    version: Option<&str>,
) -> Result<HttpResponse, ServeError> {
    if !state.config.enable_model_api {
        return Err(ServeError::ModelApiDisabled);
    }
    let status = manage::unregister(&state.into_inner(), model, version).await?;
    Ok(status_response(status, &[]))
}

async fn unregister_default(
    state: State,
    path: web::Path<String>,
) -> Result<HttpResponse, ServeError> {
    unregister(state, &path, None).await
}

async fn unregister_version(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServeError> {
    let (model, version) = path.into_inner();
    unregister(state, &model, Some(&version)).await
}

async fn set_default(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServeError> {
    let (model, version) = path.into_inner();
    let status = manage::set_default(&state.into_inner(), &model, &version).await?;
    Ok(status_response(status, &[]))
}

/// `GET /models?limit=&next_page_token=` as `ApiUtils.getModelList`: default versions only,
/// sorted by name, limit clamped to 100, `nextPageToken` only when more remain.
async fn list(state: State, request: HttpRequest) -> Result<HttpResponse, ServeError> {
    let query = query_map(&request);
    // An empty value counts as absent, as TorchServe's `NettyUtils.getIntParameter`.
    let number = |key: &str, default: i64| -> Result<i64, ServeError> {
        match query.get(key).filter(|value| !value.is_empty()) {
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
    state: State,
    path: web::Path<String>,
) -> Result<HttpResponse, ServeError> {
    let model = state.registry.get(&path, None)?;
    described(vec![model]).await
}

async fn describe_version(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServeError> {
    let (model, version) = path.into_inner();
    let models = if version == "all" {
        state
            .registry
            .versions(&model)?
            .into_iter()
            .map(|(model, _)| model)
            .collect()
    } else {
        vec![state.registry.get(&model, Some(&version))?]
    };
    described(models).await
}

/// Describes off the reactor: a GPU worker's `gpuUsage` comes from `nvidia-smi`.
async fn described(models: Vec<Arc<ModelVersion>>) -> Result<HttpResponse, ServeError> {
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
            .map(|model| describe(model, &gpu_usage))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|error| ServeError::Internal(format!("describing failed: {error}")))?;
    Ok(json_response(StatusCode::OK, &described))
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
fn describe(
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

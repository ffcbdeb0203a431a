//! Model management operations, as TorchServe's `ApiUtils`: register, scale, unregister,
//! set-default, and ([`inventory`]) list and describe. Transport-neutral: the REST and gRPC
//! handlers parse parameters, call these, and encode the [`Status`] or [`ServeError`]. Loading
//! and worker starts run off the async runtime; the registry is only touched for quick lookups
//! and updates.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ServeError;
use crate::model::{LoadRequest, ModelVersion, SettingsOverride};
use crate::registry::AddError;
use crate::state::AppState;

mod inventory;
pub use inventory::{describe, list};

/// A successful management answer: HTTP status and the `status` text TorchServe sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

impl Status {
    fn ok(message: String) -> Self {
        Status { code: 200, message }
    }

    fn accepted() -> Self {
        Status {
            code: 202,
            message: "Processing worker updates...".into(),
        }
    }
}

/// `POST /models` parameters (TorchServe's `RegisterModelRequest`).
#[derive(Debug, Clone, Default)]
pub struct RegisterParams {
    pub url: Option<String>,
    pub model_name: Option<String>,
    /// Overrides the archive's handler; anything but a built-in name makes worker starts fail,
    /// as an unknown Python handler does in TorchServe.
    pub handler: Option<String>,
    pub runtime: Option<String>,
    pub batch_size: Option<usize>,
    pub max_batch_delay: Option<u64>,
    pub initial_workers: Option<usize>,
    pub synchronous: bool,
    pub response_timeout: Option<u64>,
    /// Seconds workers may take to start; 0 means they cannot.
    pub startup_timeout: Option<u64>,
}

/// `PUT /models/{name}[/{version}]` parameters.
#[derive(Debug, Clone)]
pub struct ScaleParams {
    pub min_worker: i64,
    pub max_worker: i64,
    pub synchronous: bool,
}

/// Runs blocking work off the async runtime, turning a panic into an internal error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServeError> + Send + 'static,
) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(ServeError::Internal("a management task panicked".into())))
}

/// Registers a model from the store (TorchServe's `registerModel` + `handleRegister`).
pub async fn register(state: &Arc<AppState>, params: RegisterParams) -> Result<Status, ServeError> {
    let url = params
        .url
        .clone()
        .ok_or_else(|| ServeError::BadRequest("Parameter url is required.".into()))?;
    if let Some(runtime) = &params.runtime {
        if !oxserve_archiver::manifest::RUNTIMES.contains(&runtime.as_str()) {
            return Err(ServeError::BadRequest(format!(
                "Invalid RuntimeType value: {runtime}"
            )));
        }
    }
    let located = crate::download::locate(
        &url,
        &state.config.url_policy,
        state.config.model_store.as_deref(),
    )
    .await?;
    let downloaded = located.downloaded.then(|| located.path.clone());
    let request = LoadRequest {
        archive: located.path,
        downloaded: downloaded.clone(),
        name: params.model_name.clone(),
        url: url.clone(),
        settings: crate::model::ModelSettings::defaults(&state.config),
        apply_model_config: true,
        models_config: Some(Arc::new(state.config.models.clone())),
        overrides: SettingsOverride {
            batch_size: params.batch_size,
            max_batch_delay: params.max_batch_delay.map(Duration::from_millis),
            response_timeout: params.response_timeout.map(Duration::from_secs),
            startup_timeout: params.startup_timeout.map(Duration::from_secs),
            handler: params.handler.clone(),
            workers: None,
            initial_workers: Some(
                params
                    .initial_workers
                    .unwrap_or(state.config.default_workers_per_model),
            ),
        },
        loaded_at_startup: false,
        metrics: Arc::clone(&state.metrics),
    };
    // A downloaded archive that does not become a model is removed again, so a retry can fetch it.
    let forget_download = || {
        if let Some(path) = &downloaded {
            let _ = std::fs::remove_file(path);
        }
    };
    let model = match blocking(move || ModelVersion::load(request)).await {
        Ok(model) => model,
        Err(error) => {
            forget_download();
            return Err(error);
        }
    };
    let (name, version) = (model.name.clone(), model.version.clone());
    if let Err(AddError::VersionExists { name, version }) = state.registry.add(Arc::clone(&model)) {
        forget_download();
        return Err(ServeError::VersionConflict {
            model: name,
            version,
        });
    }
    let (workers, _) = model.worker_range();
    if workers == 0 {
        crate::snapshotter::changed(state).await;
        return Ok(Status::ok(format!(
            "Model \"{name}\" Version: {version} registered with 0 initial workers. Use scale workers API to add workers for the model."
        )));
    }
    match change_workers(
        state,
        &model,
        params.synchronous,
        true,
        ModelVersion::start_workers,
    )
    .await
    {
        None => Ok(Status::accepted()),
        Some(true) => Ok(Status::ok(format!(
            "Model \"{name}\" Version: {version} registered with {workers} initial workers"
        ))),
        Some(false) => Err(ServeError::WorkersFailed {
            model: name,
            version,
        }),
    }
}

/// Sets a model version's worker range (TorchServe's `updateModelWorkers`).
pub async fn scale(
    state: &Arc<AppState>,
    name: &str,
    version: Option<&str>,
    params: ScaleParams,
) -> Result<Status, ServeError> {
    if params.max_worker < params.min_worker {
        return Err(ServeError::BadRequest(
            "max_worker cannot be less than min_worker.".into(),
        ));
    }
    let model = state.registry.get(name, version)?;
    if params.min_worker < 0 {
        return Err(ServeError::ScaleFailed(format!(
            "Parameter min_worker must not be negative, got {}",
            params.min_worker
        )));
    }
    let (min, max) = (params.min_worker as usize, params.max_worker as usize);
    let scaled = change_workers(state, &model, params.synchronous, false, move |model| {
        model.scale(min, max)
    })
    .await;
    match scaled {
        None => Ok(Status::accepted()),
        Some(false) => Err(ServeError::WorkersFailed {
            model: name.to_string(),
            version: model.version.clone(),
        }),
        Some(true) => {
            let mut message = format!("Workers scaled to {min} for model: {name}");
            if let Some(version) = version {
                message.push_str(&format!(", version: {version}"));
            }
            Ok(Status::ok(message))
        }
    }
}

/// A change to a model's workers, run as TorchServe's `updateModelWorkers` does: now when
/// `synchronous` (`Some(started)`), else in the background (`None`: the caller answers 202). A
/// snapshot follows either way. With `unregister_on_failure` (registration), a model whose
/// workers cannot start is unregistered again, as TorchServe does.
async fn change_workers(
    state: &Arc<AppState>,
    model: &Arc<ModelVersion>,
    synchronous: bool,
    unregister_on_failure: bool,
    change: impl FnOnce(&ModelVersion) -> Result<(), ServeError> + Send + 'static,
) -> Option<bool> {
    let work = {
        let (state, model) = (Arc::clone(state), Arc::clone(model));
        async move {
            let result = blocking({
                let model = Arc::clone(&model);
                move || change(&model)
            })
            .await;
            if let (Err(error), true) = (&result, unregister_on_failure) {
                tracing::error!(model = %model.name, version = %model.version, "workers failed to start: {error}");
                let _ = state.registry.remove(&model.name, Some(&model.version));
                let _ = blocking(move || {
                    model.shutdown();
                    Ok(())
                })
                .await;
            }
            crate::snapshotter::changed(&state).await;
            result.is_ok()
        }
    };
    if synchronous {
        Some(work.await)
    } else {
        tokio::spawn(work);
        None
    }
}

/// Unregisters a version; requests already accepted are answered first.
pub async fn unregister(
    state: &Arc<AppState>,
    name: &str,
    version: Option<&str>,
) -> Result<Status, ServeError> {
    let model = state.registry.remove(name, version)?;
    blocking(move || {
        model.shutdown();
        // As TorchServe: an archive that was downloaded for this model leaves the store with it.
        if let Some(path) = &model.downloaded {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    })
    .await?;
    crate::snapshotter::changed(state).await;
    Ok(Status::ok(format!("Model \"{name}\" unregistered")))
}

/// Makes `version` the default version of `name`.
pub async fn set_default(
    state: &Arc<AppState>,
    name: &str,
    version: &str,
) -> Result<Status, ServeError> {
    state.registry.set_default(name, version)?;
    crate::snapshotter::changed(state).await;
    Ok(Status::ok(format!(
        "Default version successfully updated for model \"{name}\" to \"{version}\""
    )))
}

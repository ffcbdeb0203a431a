//! One prediction request, the same for every transport: record TorchServe's inference metrics,
//! queue the inputs on the model, and encode its answers as the body TorchServe's workers send
//! (one answer as itself, several as a JSON list, pretty-printed as Python's `json.dumps(...,
//! indent=2)`), capped by `max_response_size`. The REST inference API and the gRPC
//! `Predictions` calls decode their requests into a [`Prediction`] and send back these bytes.
//! [`health`] is the `/ping` and gRPC `Ping` answer.

use std::sync::Arc;
use std::time::Instant;

use crate::error::ServeError;
use crate::handler::RequestItem;
use crate::model::ModelVersion;
use crate::state::AppState;

/// A decoded prediction request.
pub struct Prediction {
    /// The model version the request names (looked up by the caller).
    pub model: Arc<ModelVersion>,
    /// The version as the request named it; `None` for the default (metrics label `default`).
    pub version: Option<String>,
    /// The inputs, in order; more than one is answered as a JSON list.
    pub items: Vec<RequestItem>,
    /// The request id, carried into the model's logs.
    pub request_id: Option<String>,
}

/// Runs `prediction` and returns the answer's body bytes.
pub async fn run(state: &AppState, prediction: Prediction) -> Result<Vec<u8>, ServeError> {
    let Prediction {
        model,
        version,
        items,
        request_id,
    } = prediction;
    let several = items.len() > 1;
    // TorchServe's labels: the model as named, the version as requested ("default" if none).
    let version_label = version.as_deref().unwrap_or("default");
    state
        .metrics
        .record_inference_request(&model.name, version_label);
    let started = Instant::now();
    let inferred = model.infer_request(items, request_id).await?;
    state.metrics.record_inference_latency(
        &model.name,
        version_label,
        started.elapsed(),
        inferred.queue_wait,
    );
    let mut answers = inferred.answers;
    let answer = if several {
        serde_json::Value::Array(answers)
    } else {
        answers.pop().ok_or(ServeError::InvalidResponse)?
    };
    let body = serde_json::to_vec_pretty(&answer).map_err(|_| ServeError::InvalidResponse)?;
    if body.len() > state.config.max_response_size {
        return Err(ServeError::InvalidResponse);
    }
    Ok(body)
}

/// TorchServe's health answer: whether every model has at least its minimum of live workers, and
/// `{"status": "Healthy"}` or `{"status": "Unhealthy"}`.
pub fn health(state: &AppState) -> (bool, serde_json::Value) {
    let healthy = crate::openinference::server_ready(&state.registry);
    let word = if healthy { "Healthy" } else { "Unhealthy" };
    (healthy, serde_json::json!({ "status": word }))
}

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
    let inferred = measured(state, &model.name, version.as_deref(), async {
        let inferred = model.infer_request(items, request_id).await?;
        let queue_wait = inferred.queue_wait;
        Ok((inferred, queue_wait))
    })
    .await?;
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

/// Runs a KServe v2 request (any transport) on `model`, with the same metrics as [`run`].
pub async fn run_v2(
    state: &AppState,
    model: &ModelVersion,
    version: Option<&str>,
    request: crate::openinference::InferRequest,
    request_id: String,
) -> Result<crate::openinference::InferResponse, ServeError> {
    measured(state, &model.name, version, async {
        let response = crate::openinference::infer(model, request, request_id).await?;
        let queue_wait = response.queue_wait;
        Ok((response, queue_wait))
    })
    .await
}

/// Records TorchServe's inference metrics around `work`, which answers with its queue wait. The
/// labels are the model as named and the version as requested ("default" if none).
async fn measured<T>(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    work: impl std::future::Future<Output = Result<(T, std::time::Duration), ServeError>>,
) -> Result<T, ServeError> {
    let version_label = version.unwrap_or("default");
    state.metrics.record_inference_request(name, version_label);
    let started = Instant::now();
    let (answer, queue_wait) = work.await?;
    state
        .metrics
        .record_inference_latency(name, version_label, started.elapsed(), queue_wait);
    Ok(answer)
}

/// TorchServe's health answer: whether every model has at least its minimum of live workers, and
/// `{"status": "Healthy"}` or `{"status": "Unhealthy"}`.
pub fn health(state: &AppState) -> (bool, serde_json::Value) {
    let healthy = crate::openinference::server_ready(&state.registry);
    let word = if healthy { "Healthy" } else { "Unhealthy" };
    (healthy, serde_json::json!({ "status": word }))
}

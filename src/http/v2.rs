//! The KServe v2 / Open Inference Protocol's REST API on the inference listener: health, server
//! and model metadata, model readiness and infer, each model also under `/versions/{v}`. Bodies
//! are decoded and encoded by [`codec`]; the calls are [`crate::openinference`]'s, the same a
//! gRPC frontend makes. Errors carry the protocol's `{"error": ...}` beside TorchServe's fields,
//! with TorchServe's status codes ([`ServeError::v2_body`]).

pub mod codec;

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use super::{declared_length, read_body, BodyLimits, RequestId, State};
use crate::error::ServeError;
use crate::openinference;

/// A [`ServeError`] answered in the v2 error form.
#[derive(Debug)]
pub struct V2Error(pub ServeError);

impl fmt::Display for V2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<ServeError> for V2Error {
    fn from(error: ServeError) -> Self {
        V2Error(error)
    }
}

impl ResponseError for V2Error {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.0.v2_body())
    }
}

type V2Result = Result<HttpResponse, V2Error>;

/// The v2 routes (registered on the inference listener).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(get_only("/v2", server_metadata))
        .service(get_only("/v2/health/live", live))
        .service(get_only("/v2/health/ready", ready))
        .service(get_only("/v2/models/{model}", metadata))
        .service(get_only("/v2/models/{model}/versions/{version}", metadata))
        .service(get_only("/v2/models/{model}/ready", model_ready))
        .service(get_only(
            "/v2/models/{model}/versions/{version}/ready",
            model_ready,
        ))
        .service(post_only("/v2/models/{model}/infer", infer))
        .service(post_only(
            "/v2/models/{model}/versions/{version}/infer",
            infer,
        ));
}

fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .get(handler)
        .default_service(web::to(method_not_allowed))
}

fn post_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .post(handler)
        .default_service(web::to(method_not_allowed))
}

/// TorchServe's 405, in the v2 error form.
async fn method_not_allowed() -> V2Result {
    Err(ServeError::MethodNotAllowed.into())
}

/// The model and optional version named by the path.
fn model_path(request: &HttpRequest) -> (String, Option<String>) {
    let info = request.match_info();
    (
        info.get("model").unwrap_or_default().to_string(),
        info.get("version").map(str::to_string),
    )
}

async fn server_metadata() -> HttpResponse {
    let metadata = openinference::server_metadata();
    // `extenstion` is TorchServe's spelling of the protocol's `extensions`.
    HttpResponse::Ok().json(serde_json::json!({
        "name": metadata.name,
        "version": metadata.version,
        "extensions": metadata.extensions,
        "extenstion": metadata.extensions,
    }))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "live": true }))
}

/// 200 when every model has its minimum of live workers; the protocol's 4xx otherwise.
async fn ready(state: State) -> HttpResponse {
    let ready = openinference::server_ready(&state.registry);
    readiness(ready).json(serde_json::json!({ "ready": ready }))
}

fn readiness(ready: bool) -> actix_web::HttpResponseBuilder {
    match ready {
        true => HttpResponse::Ok(),
        false => HttpResponse::BadRequest(),
    }
}

async fn metadata(state: State, request: HttpRequest) -> V2Result {
    let (name, version) = model_path(&request);
    let metadata = openinference::model_metadata(&state.registry, &name, version.as_deref())?;
    Ok(HttpResponse::Ok().json(metadata))
}

async fn model_ready(state: State, request: HttpRequest) -> V2Result {
    let (name, version) = model_path(&request);
    let model = state.registry.get(&name, version.as_deref())?;
    let ready = openinference::model_ready(&model);
    Ok(readiness(ready).json(serde_json::json!({ "name": model.name, "ready": ready })))
}

async fn infer(state: State, request: HttpRequest, payload: web::Payload) -> V2Result {
    let (name, version) = model_path(&request);
    let model = state.registry.get(&name, version.as_deref())?;
    let request_id = request
        .extensions_mut()
        .remove::<RequestId>()
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), |RequestId(id)| id);
    let header_length = request
        .headers()
        .get(codec::HEADER_LENGTH)
        .map(|value| value.to_str().unwrap_or("?").to_string());
    let limits = BodyLimits::of(&state.config);
    let body = read_body(payload, declared_length(&request), limits).await?;
    let decoded = codec::decode(body, header_length.as_deref())?;
    let requested = decoded.request.outputs.clone();
    let response = crate::predict::run_v2(
        &state,
        &model,
        version.as_deref(),
        decoded.request,
        request_id,
    )
    .await?;
    let encoded = codec::encode(&response, &requested, decoded.binary_output)?;
    if encoded.body.len() > state.config.max_response_size {
        return Err(ServeError::InvalidResponse.into());
    }
    let mut answer = HttpResponse::Ok();
    match encoded.header_length {
        Some(length) => answer
            .content_type("application/octet-stream")
            .insert_header((codec::HEADER_LENGTH, length.to_string())),
        None => answer.content_type("application/json"),
    };
    Ok(answer.body(encoded.body))
}

//! HTTP frontends on actix-web: decode a request, call the model, encode the answer. No tensors,
//! sessions or batching here. Each API has its own listener (TorchServe's three ports):
//! [`inference`] (8080, with the KServe v2 API of [`v2`]), [`management`] (8081), [`metrics`] (8082); [`listener`] starts them with
//! their connection limits and [`middleware`] wraps them (request id, access log). This module
//! holds what they share: TorchServe's JSON and error bodies, and reading a body within limits.

pub mod inference;
pub mod listener;
pub mod management;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod tls;
pub mod v2;

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use bytes::Bytes;

use crate::error::ServeError;
use crate::state::AppState;

/// Shared state of the HTTP handlers.
pub type State = web::Data<AppState>;

/// A JSON body pretty-printed as TorchServe's frontend does (Gson: two-space indent, then `\n`).
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> HttpResponse {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// The one mapping of [`ServeError`] to an HTTP answer: its TorchServe status and error body.
/// 5xx errors are logged once, by [`middleware::access_log`].
impl ResponseError for ServeError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        json_response(self.status_code(), &self.body())
    }
}

/// The request id (sent back as `x-request-id`), set by [`middleware::request_id`].
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// TorchServe's answer for unknown paths.
pub async fn not_found() -> Result<HttpResponse, ServeError> {
    Err(ServeError::ResourceNotFound)
}

/// TorchServe's answer for known paths with the wrong method.
pub async fn method_not_allowed() -> Result<HttpResponse, ServeError> {
    Err(ServeError::MethodNotAllowed)
}

/// How much of a body a request may send, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BodyLimits {
    pub fn of(config: &crate::config::Config) -> Self {
        BodyLimits {
            max_bytes: config.max_request_size,
            timeout: config.request_body_timeout,
        }
    }
}

/// Reads a whole body, refusing it with 413 as soon as it passes the byte limit (checked against
/// Content-Length first, then counted while it streams, so a lying or chunked client cannot make
/// the server buffer more) and with 408 when it trickles in past the timeout.
pub async fn read_body(
    payload: web::Payload,
    declared: Option<u64>,
    limits: BodyLimits,
) -> Result<Bytes, ServeError> {
    let limit = limits.max_bytes;
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ServeError::PayloadTooLarge { limit });
    }
    let seconds = limits.timeout.as_secs();
    match tokio::time::timeout(limits.timeout, payload.to_bytes_limited(limit)).await {
        Err(_) => Err(ServeError::RequestTimeout { seconds }),
        Ok(Err(_)) => Err(ServeError::PayloadTooLarge { limit }),
        Ok(Ok(Err(error))) => Err(ServeError::BadRequest(format!(
            "cannot read the request body: {error}"
        ))),
        Ok(Ok(Ok(bytes))) => Ok(bytes),
    }
}

/// The request's declared `Content-Length`, if any.
pub fn declared_length(request: &actix_web::HttpRequest) -> Option<u64> {
    request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// A query string's `name=value` pairs in order (serde_urlencoded: `+` is a space, bad escapes
/// are kept as written).
pub fn query_pairs(request: &actix_web::HttpRequest) -> Vec<(String, String)> {
    serde_urlencoded::from_str(request.query_string()).unwrap_or_default()
}

//! HTTP frontends: decode a request, call the model, encode the answer, map errors. No tensors,
//! sessions or batching here. Each API has its own listener (TorchServe's three ports):
//! [`inference`] (8080), [`management`] (8081), [`metrics`] (8082). This module holds what they
//! share: TorchServe's JSON and error bodies, the `x-request-id` header, the access log and the
//! `Requests2XX/4XX/5XX` counters.

pub mod inference;
pub mod listener;
pub mod management;
pub mod metrics;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ServeError;
use crate::AppState;

/// Shared state of the HTTP handlers.
pub type State = Arc<AppState>;

/// A JSON body pretty-printed as TorchServe's frontend does (Gson: two-space indent, then `\n`).
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), "{self}");
        }
        json_response(status, &self.body())
    }
}

/// The request id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives every request an id (sent back as `x-request-id`, as TorchServe does), a tracing span,
/// one access-log line (TorchServe's `ACCESS_LOG` shape: `/ip:port "GET /uri HTTP/1.1" 200 ms`,
/// with the request id and the duration in microseconds as fields), and counts its status in
/// `Requests2XX/4XX/5XX`.
pub async fn request_context(
    AxumState(state): AxumState<State>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = uuid::Uuid::new_v4().to_string();
    // Cheap copies (no allocation); the line is only formatted when the access log is on.
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address);
    let (method, uri, version) = (
        request.method().clone(),
        request.uri().clone(),
        request.version(),
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id);
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    state.metrics.record_status(status);
    let elapsed = started.elapsed();
    let remote = remote
        .map(|address| address.to_string())
        .unwrap_or_default();
    let line = format_args!(
        "/{remote} \"{method} {uri} {version:?}\" {status} {}",
        elapsed.as_millis()
    );
    crate::logging::write_line(crate::logging::LineLog::Access, line);
    // For the console and ts_log.log, when the log filter lets ACCESS_LOG through.
    tracing::info!(
        target: "ACCESS_LOG",
        request_id = %id,
        duration_us = elapsed.as_micros() as u64,
        "{line}"
    );
    response
}

/// TorchServe's answer for unknown paths.
pub async fn not_found() -> ServeError {
    ServeError::ResourceNotFound
}

/// TorchServe's answer for known paths with the wrong method.
pub async fn method_not_allowed() -> ServeError {
    ServeError::MethodNotAllowed
}

/// How much of a body a request may send, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: std::time::Duration,
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
/// Content-Length first, then counted while streaming, so a lying or chunked client cannot make
/// the server buffer more than that) and with 408 when it trickles in past the timeout.
pub async fn read_body(
    body: Body,
    declared: Option<u64>,
    limits: BodyLimits,
) -> Result<bytes::Bytes, ServeError> {
    let seconds = limits.timeout.as_secs();
    tokio::time::timeout(
        limits.timeout,
        read_limited(body, declared, limits.max_bytes),
    )
    .await
    .unwrap_or(Err(ServeError::RequestTimeout { seconds }))
}

async fn read_limited(
    body: Body,
    declared: Option<u64>,
    limit: usize,
) -> Result<bytes::Bytes, ServeError> {
    use http_body_util::BodyExt;
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ServeError::PayloadTooLarge { limit });
    }
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ServeError::PayloadTooLarge { limit })
        }
        Err(error) => Err(ServeError::BadRequest(format!(
            "cannot read the request body: {error}"
        ))),
    }
}

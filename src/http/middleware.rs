//! The middleware every listener wears, outermost first: [`request_id`] then [`access_log`]
//! (token authorization, inside them, is [`crate::auth::authorize`]). So refused and unknown
//! requests get an id, a log line and a status count too.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use super::{RequestId, State};

/// Gives every request an id, available to handlers as a [`RequestId`] extension and sent back
/// as `x-request-id` (as TorchServe does), and a tracing span carrying it.
pub async fn request_id(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id);
    let mut response = next.call(request).instrument(span).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(response)
}

/// One access-log line per request (TorchServe's `ACCESS_LOG` shape: `/ip:port "GET /uri
/// HTTP/1.1" 200 ms`, with the request id and the duration in microseconds as fields), its
/// status counted in `Requests2XX/4XX/5XX`, and a server error's cause logged once.
pub async fn access_log(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let state = request.app_data::<State>().cloned();
    let remote = request.peer_addr();
    let (method, uri, version) = (
        request.method().clone(),
        request.uri().clone(),
        request.version(),
    );
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|RequestId(id)| id.clone())
        .unwrap_or_default();
    let response = next.call(request).await?;
    let status = response.status();
    if status.is_server_error() {
        if let Some(error) = response.response().error() {
            tracing::error!(status = status.as_u16(), "{error}");
        }
    }
    if let Some(state) = state {
        state.metrics.record_status(status.as_u16());
    }
    let elapsed = started.elapsed();
    let remote = remote
        .map(|address| address.to_string())
        .unwrap_or_default();
    let line = format_args!(
        "/{remote} \"{method} {uri} {version:?}\" {} {}",
        status.as_u16(),
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
    Ok(response)
}

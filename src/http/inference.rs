//! The inference API (8080), as TorchServe's `InferenceRequestHandler`: `GET /ping` and
//! `/predictions/{model}[/{version}]` (any method). Bodies are raw bytes (`curl -T`,
//! `--data-binary`) or `multipart/form-data` / url-encoded forms, where every `data`/`body` part is
//! one input; several inputs in one request are answered as a JSON list, in order.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};

use super::{
    declared_length, json_response, method_not_allowed, read_body, BodyLimits, RequestId, State,
};
use crate::error::ServeError;
use crate::handler::RequestItem;

/// The inference listener's routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/ping")
                .get(ping)
                .default_service(web::to(method_not_allowed)),
        )
        .configure(super::v2::routes)
        .route("/predictions/{model}", web::to(predict_default))
        .route("/predictions/{model}/{version}", web::to(predict_version))
        .service(
            web::resource("/")
                .route(
                    web::method(actix_web::http::Method::OPTIONS).to(|| async {
                        json_response(StatusCode::OK, &super::openapi::inference())
                    }),
                )
                .default_service(web::to(method_not_allowed)),
        );
}

/// 200 `Healthy` when every model has at least its minimum of live workers, else 500.
async fn ping(state: State) -> HttpResponse {
    let (healthy, answer) = crate::predict::health(&state);
    let status = match healthy {
        true => StatusCode::OK,
        false => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(status, &answer)
}

async fn predict_default(
    state: State,
    path: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    predict(state, path.into_inner(), None, request, payload).await
}

async fn predict_version(
    state: State,
    path: web::Path<(String, String)>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    let (model, version) = path.into_inner();
    predict(state, model, Some(version), request, payload).await
}

async fn predict(
    state: State,
    name: String,
    version: Option<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    let model = state.registry.get(&name, version.as_deref())?;
    let request_id = request
        .extensions_mut()
        .remove::<RequestId>()
        .map(|RequestId(id)| id);
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let limits = BodyLimits::of(&state.config);
    let body = read_body(payload, declared_length(&request), limits).await?;
    let items = request_items(body, content_type, state.config.max_request_parts)?;
    let prediction = crate::predict::Prediction {
        model,
        version,
        items,
        request_id,
    };
    let body = crate::predict::run(&state, prediction).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// Splits a body into handler inputs, as TorchServe's `parseRequest` does. Needs only the body's
/// `Content-Type`, so the fuzz targets (`crate::fuzzing`) call it without a request.
pub(crate) fn request_items(
    body: Bytes,
    content_type: Option<String>,
    max_parts: usize,
) -> Result<Vec<RequestItem>, ServeError> {
    let mime = content_type.as_deref().unwrap_or("").to_ascii_lowercase();
    if mime.starts_with("multipart/form-data") {
        return multipart_items(body, content_type.as_deref().unwrap_or(""), max_parts);
    }
    if mime.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let items: Vec<RequestItem> = pairs
            .into_iter()
            .filter(|(name, _)| name == "data" || name == "body")
            .map(|(_, value)| RequestItem {
                bytes: Bytes::from(value),
                content_type: None,
            })
            .collect();
        if items.len() > max_parts {
            return Err(too_many_parts(max_parts));
        }
        // `curl --data-binary @file` labels raw bytes as a form; without data/body fields the
        // whole body is the input.
        if !items.is_empty() {
            return Ok(items);
        }
    }
    if body.is_empty() {
        return Err(ServeError::BadRequest(
            "the request body is empty: send the input as the body or as a \"data\" form part"
                .into(),
        ));
    }
    Ok(vec![RequestItem {
        bytes: body,
        content_type,
    }])
}

fn too_many_parts(max_parts: usize) -> ServeError {
    ServeError::BadRequest(format!(
        "the request has more than {max_parts} parts (max_request_parts)"
    ))
}

/// The parts of a multipart body (actix-multipart): the `data`/`body` parts, or every part when
/// none has those names. The body is whole in memory, so the parser never has to wait: where it
/// would, it is waiting for bytes that will not come (actix-multipart 0.7.2 waited forever on some
/// malformed bodies, fuzz/regressions/multipart), and the body is refused.
fn multipart_items(
    body: Bytes,
    content_type: &str,
    max_parts: usize,
) -> Result<Vec<RequestItem>, ServeError> {
    let malformed = |error: actix_multipart::MultipartError| {
        ServeError::BadRequest(format!("malformed multipart body: {error}"))
    };
    // The boundary is read from the Content-Type header alone.
    let mut headers = header::HeaderMap::new();
    let value = header::HeaderValue::from_str(content_type)
        .map_err(|_| ServeError::BadRequest("the Content-Type header is not valid".into()))?;
    headers.insert(header::CONTENT_TYPE, value);
    let stream = futures_util::stream::once(async move { Ok(body) });
    let mut multipart = actix_multipart::Multipart::new(&headers, stream);
    let mut named = Vec::new();
    let mut others = Vec::new();
    let truncated =
        || ServeError::BadRequest("malformed multipart body: it ends inside a part".into());
    while let Some(field) = multipart.next().now_or_never().ok_or_else(truncated)? {
        if named.len() + others.len() == max_parts {
            return Err(too_many_parts(max_parts));
        }
        let mut field = field.map_err(malformed)?;
        let name = field.name().unwrap_or("").to_string();
        let content_type = field.content_type().map(ToString::to_string);
        let mut bytes = bytes::BytesMut::new();
        while let Some(chunk) = field.next().now_or_never().ok_or_else(truncated)? {
            bytes.extend_from_slice(&chunk.map_err(malformed)?);
        }
        let item = RequestItem {
            bytes: bytes.freeze(),
            content_type,
        };
        if name == "data" || name == "body" {
            named.push(item);
        } else {
            others.push(item);
        }
    }
    let items = if named.is_empty() { others } else { named };
    if items.is_empty() {
        return Err(ServeError::BadRequest(
            "the multipart body has no parts: send the input as a \"data\" part".into(),
        ));
    }
    Ok(items)
}

//! The inference API (8080), as TorchServe's `InferenceRequestHandler`: `GET /ping` and
//! `/predictions/{model}[/{version}]` (any method). Bodies are raw bytes (`curl -T`,
//! `--data-binary`) or `multipart/form-data` / url-encoded forms, where every `data`/`body` part is
//! one input; several inputs in one request are answered as a JSON list, in order.

use std::time::Instant;

use axum::extract::{Path, Request, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;

use super::{json_response, method_not_allowed, not_found, read_body, BodyLimits, State};
use crate::error::ServeError;
use crate::handler::RequestItem;

/// The inference listener's routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/predictions/{model}", any(predict_default))
        .route("/predictions/{model}/{version}", any(predict_version))
        .route(
            "/",
            axum::routing::options(|| async {
                json_response(StatusCode::OK, &super::openapi::inference())
            })
            .fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
}

/// 200 `Healthy` when every model has at least its minimum of live workers, else 500.
async fn ping(AxumState(state): AxumState<State>) -> Response {
    let healthy = state
        .registry
        .all()
        .iter()
        .all(|model| model.live_workers() >= model.worker_range().0);
    let (status, word) = if healthy {
        (StatusCode::OK, "Healthy")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "Unhealthy")
    };
    json_response(status, &serde_json::json!({ "status": word }))
}

async fn predict_default(
    AxumState(state): AxumState<State>,
    Path(model): Path<String>,
    request: Request,
) -> Result<Response, ServeError> {
    predict(state, model, None, request).await
}

async fn predict_version(
    AxumState(state): AxumState<State>,
    Path((model, version)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ServeError> {
    predict(state, model, Some(version), request).await
}

async fn predict(
    state: State,
    name: String,
    version: Option<String>,
    mut request: Request,
) -> Result<Response, ServeError> {
    let model = state.registry.get(&name, version.as_deref())?;
    let request_id = request
        .extensions_mut()
        .remove::<super::RequestId>()
        .map(|super::RequestId(id)| id);
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let body = read_body(request.into_body(), declared, BodyLimits::of(&state.config)).await?;
    let items = request_items(body, content_type).await?;
    let several = items.len() > 1;
    // TorchServe's labels: the model as named, the version as requested ("default" if none).
    let version_label = version.as_deref().unwrap_or("default");
    state.metrics.record_inference_request(&name, version_label);
    let started = Instant::now();
    let inferred = model.infer_request(items, request_id).await?;
    state.metrics.record_inference_latency(
        &name,
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
    // Python's json.dumps(answer, indent=2), which is what TorchServe's workers send.
    let body = serde_json::to_vec_pretty(&answer).map_err(|_| ServeError::InvalidResponse)?;
    if body.len() > state.config.max_response_size {
        return Err(ServeError::InvalidResponse);
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Splits a body into handler inputs, as TorchServe's `parseRequest` does.
async fn request_items(
    body: Bytes,
    content_type: Option<String>,
) -> Result<Vec<RequestItem>, ServeError> {
    let mime = content_type.as_deref().unwrap_or("").to_ascii_lowercase();
    if mime.starts_with("multipart/form-data") {
        return multipart_items(body, content_type.as_deref().unwrap_or("")).await;
    }
    if mime.starts_with("application/x-www-form-urlencoded") {
        let items: Vec<RequestItem> = url_decode_form(&body)
            .into_iter()
            .filter(|(name, _)| name == "data" || name == "body")
            .map(|(_, value)| RequestItem {
                bytes: Bytes::from(value),
                content_type: None,
            })
            .collect();
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

async fn multipart_items(body: Bytes, content_type: &str) -> Result<Vec<RequestItem>, ServeError> {
    let boundary = multer::parse_boundary(content_type).map_err(|error| {
        ServeError::BadRequest(format!("malformed multipart content type: {error}"))
    })?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut named = Vec::new();
    let mut others = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| ServeError::BadRequest(format!("malformed multipart body: {error}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        let content_type = field.content_type().map(ToString::to_string);
        let bytes = field.bytes().await.map_err(|error| {
            ServeError::BadRequest(format!("malformed multipart body: {error}"))
        })?;
        let item = RequestItem {
            bytes,
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

/// `a=1&b=x%20y` → pairs, with `+` as space (also used for query strings).
pub(crate) fn url_decode_form(body: &[u8]) -> Vec<(String, String)> {
    fn hex(byte: u8) -> Option<u8> {
        (byte as char).to_digit(16).map(|digit| digit as u8)
    }
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            let escaped = (bytes[index] == b'%' && index + 2 < bytes.len())
                .then(|| Some(hex(bytes[index + 1])? * 16 + hex(bytes[index + 2])?))
                .flatten();
            match (bytes[index], escaped) {
                (_, Some(value)) => {
                    out.push(value);
                    index += 2;
                }
                (b'+', None) => out.push(b' '),
                (other, None) => out.push(other),
            }
            index += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        assert_eq!(
            url_decode_form(b"data=a%2Bb+c&x=1&data=%zz"),
            vec![
                ("data".into(), "a+b c".into()),
                ("x".into(), "1".into()),
                ("data".into(), "%zz".into())
            ]
        );
    }
}

//! The management API (8081), as TorchServe's `ManagementRequestHandler`: list, describe,
//! register, scale, unregister, set-default, and the OpenAPI description on `OPTIONS /`.
//! Parameters come from the query string or, with `Content-Type: application/json`, a JSON body
//! (TorchServe's two parsers, with their different `synchronous` defaults). Register and
//! unregister answer 405 unless the model API is enabled. The operations themselves live in
//! [`crate::manage`].

use std::collections::BTreeMap;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::{json_response, method_not_allowed, not_found, openapi, read_body, BodyLimits, State};
use crate::error::ServeError;
use crate::manage::{self, RegisterParams, ScaleParams, Status};

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

/// `GET /models?limit=&next_page_token=`: [`manage::list`]; a value that is not an integer is
/// 400, an empty one counts as absent (TorchServe's `NettyUtils.getIntParameter`).
async fn list(state: State, request: HttpRequest) -> Result<HttpResponse, ServeError> {
    let query = query_map(&request);
    let number = |key: &str| -> Result<Option<i64>, ServeError> {
        match query.get(key).filter(|value| !value.is_empty()) {
            None => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|_| {
                ServeError::BadRequest(format!("Parameter {key} must be an integer, got {value:?}"))
            }),
        }
    };
    let listed = manage::list(&state, number("limit")?, number("next_page_token")?);
    Ok(json_response(StatusCode::OK, &listed))
}

async fn describe_default(
    state: State,
    path: web::Path<String>,
) -> Result<HttpResponse, ServeError> {
    let described = manage::describe(&state, &path, None).await?;
    Ok(json_response(StatusCode::OK, &described))
}

async fn describe_version(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServeError> {
    let (model, version) = path.into_inner();
    let described = manage::describe(&state, &model, Some(&version)).await?;
    Ok(json_response(StatusCode::OK, &described))
}

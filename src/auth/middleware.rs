//! The token check as actix middleware, worn by every listener (TorchServe's
//! `TokenAuthorizationHandler` sits in the same place in its handler chain): after the API
//! description and the keyless health probes, before the routes. Each listener puts the server's [`TokenAuth`] and a [`Guard`]
//! saying which key it needs in its app data; the management listener also answers `/token` here.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse, ResponseError};

use super::{is_keyless_health_probe, Api, TokenAuth};

/// The key a listener's requests need; `Guard(None)` (metrics) needs none.
#[derive(Debug, Clone, Copy)]
pub struct Guard(pub Option<Api>);

/// TorchServe serves the API description (`/` and `/api-description`) before the token check.
fn is_api_description(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    let kept = segments
        .iter()
        .rposition(|segment| !segment.is_empty())
        .map_or(0, |last| last + 1);
    kept == 0 || (kept == 2 && segments[1] == "api-description")
}

fn authorization(request: &ServiceRequest) -> Option<&str> {
    request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
}

/// The listener's key check; on the management listener also `/token` (any method, as
/// TorchServe), answered before routing.
pub async fn authorize(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let auth = request.app_data::<web::Data<TokenAuth>>().cloned();
    let api = request.app_data::<Guard>().and_then(|Guard(api)| *api);
    let (Some(auth), Some(api)) = (auth, api) else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let path = request.path();
    if api == Api::Management && auth.is_enabled() && path.trim_end_matches('/') == "/token" {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(request.query_string()).unwrap_or_default();
        let kind = pairs
            .into_iter()
            .find(|(name, _)| name == "type")
            .map(|(_, value)| value)
            .unwrap_or_default();
        let response = match auth.rotate(&kind, authorization(&request)) {
            Ok(()) => HttpResponse::build(StatusCode::OK)
                .content_type("application/json")
                .body("\n"),
            Err(error) => error.error_response(),
        };
        return Ok(request.into_response(response));
    }
    if is_api_description(path) || is_keyless_health_probe(api, request.method().as_str(), path) {
        return Ok(next.call(request).await?.map_into_boxed_body());
    }
    let peer = request.peer_addr().map(|address| address.ip());
    match auth.check(api, authorization(&request)) {
        Ok(()) => {
            auth.accepted(peer);
            Ok(next.call(request).await?.map_into_boxed_body())
        }
        Err(error) => {
            let delay = auth.refused(peer);
            if !delay.is_zero() {
                actix_rt::time::sleep(delay).await;
            }
            Ok(request.error_response(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use actix_web::middleware::from_fn;
    use actix_web::{test as actix_test, App};

    use super::*;
    use crate::auth::KEY_FILE_NAME;

    fn key(dir: &Path, section: &str) -> String {
        let text = std::fs::read_to_string(dir.join(KEY_FILE_NAME)).expect("key file");
        let file: serde_json::Value = serde_json::from_str(&text).expect("json");
        file[section]["key"].as_str().expect("key").to_string()
    }

    fn bearer(key: &str) -> String {
        format!("Bearer {key}")
    }

    /// An app with `/models`, `/ping` and `/` behind [`authorize`] for `api`.
    fn app(
        auth: Arc<TokenAuth>,
        api: Option<Api>,
    ) -> App<
        impl actix_web::dev::ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<BoxBody>,
            Error = Error,
            InitError = (),
        >,
    > {
        App::new()
            .app_data(web::Data::from(auth))
            .app_data(Guard(api))
            .route("/models", web::get().to(|| async { "models" }))
            .route("/ping", web::get().to(|| async { "pong" }))
            .route("/v2/health/live", web::get().to(|| async { "live" }))
            .route("/v2/health/ready", web::get().to(|| async { "ready" }))
            .route(
                "/v2/models/{model}/ready",
                web::get().to(|| async { "ready" }),
            )
            .route("/predictions/{model}", web::to(|| async { "answer" }))
            .route("/", web::route().to(|| async { "description" }))
            .wrap(from_fn(authorize))
    }

    #[test]
    fn api_description_paths_are_java_segments() {
        for path in ["/", "", "//", "/api-description", "/api-description/"] {
            assert!(is_api_description(path), "{path}");
        }
        for path in ["/models", "/x/api-description", "/ping"] {
            assert!(!is_api_description(path), "{path}");
        }
    }

    /// The management guard: `/token` is answered before routing, protected routes need the
    /// right key, the API description needs none.
    #[actix_web::test]
    async fn the_management_guard_protects_routes_and_rotates_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth =
            Arc::new(TokenAuth::create(dir.path(), Duration::from_secs(3600)).expect("create"));
        let service = actix_test::init_service(app(auth, Some(Api::Management))).await;

        let denied = actix_test::call_service(
            &service,
            actix_test::TestRequest::get().uri("/models").to_request(),
        )
        .await;
        assert_eq!(denied.status(), 400);
        let body: serde_json::Value = actix_test::read_body_json(denied).await;
        assert_eq!(body["type"], "InvalidKeyException");

        let allowed = actix_test::TestRequest::get()
            .uri("/models")
            .insert_header(("Authorization", bearer(&key(dir.path(), "management"))))
            .to_request();
        assert_eq!(
            actix_test::call_service(&service, allowed).await.status(),
            200
        );

        let description = actix_test::TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/")
            .to_request();
        let description = actix_test::call_and_read_body(&service, description).await;
        assert_eq!(description, "description");

        let management = key(dir.path(), "management");
        let rotate = actix_test::TestRequest::get()
            .uri("/token?type=management")
            .insert_header(("Authorization", bearer(&key(dir.path(), "API"))))
            .to_request();
        let rotated = actix_test::call_service(&service, rotate).await;
        assert_eq!(rotated.status(), 200);
        assert_eq!(
            rotated.headers().get("content-type").expect("content type"),
            "application/json"
        );
        assert_eq!(actix_test::read_body(rotated).await, "\n");
        assert_ne!(key(dir.path(), "management"), management);

        let bad_type = actix_test::TestRequest::get()
            .uri("/token?type=everything")
            .insert_header(("Authorization", bearer(&key(dir.path(), "API"))))
            .to_request();
        let bad_type = actix_test::call_service(&service, bad_type).await;
        assert_eq!(bad_type.status(), 400);
        let body: serde_json::Value = actix_test::read_body_json(bad_type).await;
        assert_eq!(
            body["message"],
            "Token Authentication failed. Token either incorrect, expired, or not provided correctly"
        );
    }

    /// A GET of `path` with an Authorization header.
    fn get(path: &str, authorization: &str) -> actix_test::TestRequest {
        actix_test::TestRequest::get()
            .uri(path)
            .insert_header(("Authorization", authorization))
    }

    /// Only a `GET` of an exact health path on the inference listener passes without a key (and
    /// whatever key it carries); every other path, method or listener still needs its own key.
    #[actix_web::test]
    async fn only_health_probes_pass_without_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth =
            Arc::new(TokenAuth::create(dir.path(), Duration::from_secs(3600)).expect("create"));
        let inference = bearer(&key(dir.path(), "inference"));
        let guarded = actix_test::init_service(app(Arc::clone(&auth), Some(Api::Inference))).await;
        let status = |response: ServiceResponse<BoxBody>| response.status().as_u16();

        for path in crate::auth::KEYLESS_HEALTH_PATHS {
            let bare = actix_test::TestRequest::get().uri(path).to_request();
            assert_eq!(status(actix_test::call_service(&guarded, bare).await), 200);
            let wrong = get(path, "Bearer wrong").to_request();
            assert_eq!(status(actix_test::call_service(&guarded, wrong).await), 200);
        }
        let keyed = [
            ("GET", "/predictions/mnist"),
            ("POST", "/predictions/mnist"),
            ("GET", "/v2/models/mnist/ready"),
            ("POST", "/ping"),
            ("HEAD", "/ping"),
            ("POST", "/v2/health/ready"),
            ("GET", "/ping/"),
            ("GET", "/pin%67"),
            ("GET", "/v2/health/ready/"),
            ("GET", "/v2/health"),
            ("GET", "/models"),
        ];
        for (method, path) in keyed {
            let method = actix_web::http::Method::from_bytes(method.as_bytes()).expect("method");
            let bare = actix_test::TestRequest::default()
                .method(method.clone())
                .uri(path)
                .to_request();
            assert_eq!(
                status(actix_test::call_service(&guarded, bare).await),
                400,
                "{method} {path}"
            );
        }
        let predicted = get("/predictions/mnist", &inference).to_request();
        assert_eq!(
            status(actix_test::call_service(&guarded, predicted).await),
            200
        );

        // The management listener exempts nothing.
        let management = actix_test::init_service(app(auth, Some(Api::Management))).await;
        for path in crate::auth::KEYLESS_HEALTH_PATHS {
            let bare = actix_test::TestRequest::get().uri(path).to_request();
            assert_eq!(
                status(actix_test::call_service(&management, bare).await),
                400,
                "{path}"
            );
        }
    }

    /// The inference key on the inference guard; disabled auth or no guard lets all through.
    #[actix_web::test]
    async fn the_inference_guard_and_disabled_auth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth =
            Arc::new(TokenAuth::create(dir.path(), Duration::from_secs(3600)).expect("create"));
        let inference = bearer(&key(dir.path(), "inference"));
        let management = bearer(&key(dir.path(), "management"));

        let guarded = actix_test::init_service(app(Arc::clone(&auth), Some(Api::Inference))).await;
        let status = |response: ServiceResponse<BoxBody>| response.status().as_u16();
        assert_eq!(
            status(
                actix_test::call_service(
                    &guarded,
                    get("/predictions/mnist", &inference).to_request()
                )
                .await
            ),
            200
        );
        assert_eq!(
            status(
                actix_test::call_service(
                    &guarded,
                    get("/predictions/mnist", &management).to_request()
                )
                .await
            ),
            400
        );

        // A peer that keeps sending wrong keys is answered more and more slowly.
        let wrong = || {
            get("/predictions/mnist", &management)
                .peer_addr("10.0.0.9:4000".parse().expect("address"))
                .to_request()
        };
        for _ in 0..super::super::throttle::FREE_FAILURES {
            let started = std::time::Instant::now();
            assert_eq!(
                status(actix_test::call_service(&guarded, wrong()).await),
                400
            );
            assert!(started.elapsed() < Duration::from_millis(100));
        }
        let started = std::time::Instant::now();
        assert_eq!(
            status(actix_test::call_service(&guarded, wrong()).await),
            400
        );
        assert!(started.elapsed() >= Duration::from_millis(100));

        let open = actix_test::init_service(app(auth, None)).await;
        assert_eq!(
            status(actix_test::call_service(&open, get("/ping", "nothing").to_request()).await),
            200
        );

        let disabled = Arc::new(TokenAuth::disabled());
        let disabled = actix_test::init_service(app(disabled, Some(Api::Management))).await;
        assert_eq!(
            status(actix_test::call_service(&disabled, get("/ping", "nothing").to_request()).await),
            200
        );
        let token = get("/token?type=inference", "nothing");
        assert_eq!(
            status(actix_test::call_service(&disabled, token.to_request()).await),
            404
        );
    }
}

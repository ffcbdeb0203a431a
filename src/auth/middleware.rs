//! The token check as axum middleware, one per listener (TorchServe's `TokenAuthorizationHandler`
//! sits in the same place in its handler chain): after the API description, before the routes.
//! The server wraps its routers with `from_fn_with_state(auth, require_…)`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Api, TokenAuth};

/// TorchServe serves the API description (`/` and `/api-description`) before the token check.
fn is_api_description(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    let kept = segments
        .iter()
        .rposition(|segment| !segment.is_empty())
        .map_or(0, |last| last + 1);
    kept == 0 || (kept == 2 && segments[1] == "api-description")
}

fn authorization(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
}

/// Middleware for the inference listener: the inference key, except for the API description.
pub async fn require_inference(
    State(auth): State<Arc<TokenAuth>>,
    request: Request,
    next: Next,
) -> Response {
    if is_api_description(request.uri().path()) {
        return next.run(request).await;
    }
    match auth.check(Api::Inference, authorization(&request)) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Middleware for the management listener: answers `/token` itself (any method, as TorchServe),
/// and requires the management key for everything else but the API description.
pub async fn require_management(
    State(auth): State<Arc<TokenAuth>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if auth.is_enabled() && path.trim_end_matches('/') == "/token" {
        let kind = request
            .uri()
            .query()
            .and_then(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "type")
                    .map(|(_, value)| value.into_owned())
            })
            .unwrap_or_default();
        return match auth.rotate(&kind, authorization(&request)) {
            Ok(()) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "\n",
            )
                .into_response(),
            Err(error) => error.into_response(),
        };
    }
    if is_api_description(path) {
        return next.run(request).await;
    }
    match auth.check(Api::Management, authorization(&request)) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

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

    #[test]
    fn api_description_paths_are_java_segments() {
        for path in ["/", "", "//", "/api-description", "/api-description/"] {
            assert!(is_api_description(path), "{path}");
        }
        for path in ["/models", "/x/api-description", "/ping"] {
            assert!(!is_api_description(path), "{path}");
        }
    }

    /// The middlewares on a real listener: `/token` is answered before routing, protected routes
    /// need the right key, the API description needs none.
    #[tokio::test]
    async fn middlewares_guard_routers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth =
            Arc::new(TokenAuth::create(dir.path(), Duration::from_secs(3600)).expect("create"));
        let router = axum::Router::new()
            .route("/models", axum::routing::get(|| async { "models" }))
            .route("/", axum::routing::any(|| async { "description" }))
            .layer(axum::middleware::from_fn_with_state(
                auth.clone(),
                require_management,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();

        let denied = client
            .get(format!("{base}/models"))
            .send()
            .await
            .expect("send");
        assert_eq!(denied.status(), 400);
        let body: serde_json::Value = denied.json().await.expect("json");
        assert_eq!(body["type"], "InvalidKeyException");

        let allowed = client
            .get(format!("{base}/models"))
            .header("Authorization", bearer(&key(dir.path(), "management")))
            .send()
            .await
            .expect("send");
        assert_eq!(allowed.status(), 200);

        let description = client
            .request(reqwest::Method::OPTIONS, format!("{base}/"))
            .send()
            .await
            .expect("send");
        assert_eq!(description.text().await.expect("text"), "description");

        let management = key(dir.path(), "management");
        let rotated = client
            .get(format!("{base}/token?type=management"))
            .header("Authorization", bearer(&key(dir.path(), "API")))
            .send()
            .await
            .expect("send");
        assert_eq!(rotated.status(), 200);
        assert_eq!(rotated.headers()["content-type"], "application/json");
        assert_eq!(rotated.text().await.expect("text"), "\n");
        assert_ne!(key(dir.path(), "management"), management);

        let bad_type = client
            .get(format!("{base}/token?type=everything"))
            .header("Authorization", bearer(&key(dir.path(), "API")))
            .send()
            .await
            .expect("send");
        assert_eq!(bad_type.status(), 400);
        let body: serde_json::Value = bad_type.json().await.expect("json");
        assert_eq!(
            body["message"],
            "Token Authentication failed. Token either incorrect, expired, or not provided correctly"
        );
    }

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        base
    }

    async fn status(base: &str, path: &str, authorization: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("Authorization", authorization)
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    }

    /// The inference key on the inference listener; disabled auth passes `/token` to the router.
    #[tokio::test]
    async fn inference_middleware_and_disabled_auth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth =
            Arc::new(TokenAuth::create(dir.path(), Duration::from_secs(3600)).expect("create"));
        let inference = bearer(&key(dir.path(), "inference"));
        let management = bearer(&key(dir.path(), "management"));
        let ping = || axum::Router::new().route("/ping", axum::routing::get(|| async { "pong" }));

        let guarded = ping().layer(axum::middleware::from_fn_with_state(
            auth,
            require_inference,
        ));
        let base = serve(guarded).await;
        assert_eq!(status(&base, "/ping", &inference).await, 200);
        assert_eq!(status(&base, "/ping", &management).await, 400);

        let open = ping().layer(axum::middleware::from_fn_with_state(
            Arc::new(TokenAuth::disabled()),
            require_management,
        ));
        let base = serve(open).await;
        assert_eq!(status(&base, "/ping", "nothing").await, 200);
        assert_eq!(status(&base, "/token?type=inference", "nothing").await, 404);
    }
}

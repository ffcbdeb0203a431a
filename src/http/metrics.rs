//! The metrics listener (8082), as TorchServe's `PrometheusMetricsRequestHandler`: `/metrics`
//! (any method) answers Prometheus text 0.0.4, optionally only the families named by
//! `?name[]=a&name[]=b`. Which TorchServe families appear depends on `metrics_mode` (see
//! [`crate::metrics`]); oxserve's per-model families always do. With `enable_metrics_api=false`
//! this listener is not started at all (see [`crate::server`]).

use axum::extract::{RawQuery, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::inference::url_decode_form;
use super::{not_found, State};
use crate::metrics::{ModelView, NameFilter};

/// The metrics listener's routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", any(metrics))
        .route("/metrics/{*rest}", any(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// The `name[]` values of a query string (`name%5B%5D` too).
fn requested_names(query: Option<&str>) -> NameFilter {
    let names = query
        .map(|query| url_decode_form(query.as_bytes()))
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key == "name[]")
        .map(|(_, value)| value)
        .collect();
    NameFilter::new(names)
}

async fn metrics(AxumState(state): AxumState<State>, RawQuery(query): RawQuery) -> Response {
    let models = state.registry.all();
    let views: Vec<ModelView<'_>> = models
        .iter()
        .map(|model| ModelView {
            name: &model.name,
            version: &model.version,
            stats: &model.stats,
            queue_depth: model.queue_status().0,
            live_workers: model.live_workers(),
        })
        .collect();
    let text = state
        .metrics
        .render(&views, &requested_names(query.as_deref()));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_name_brackets_encoded_or_not() {
        let filter = requested_names(Some("name[]=a&name%5B%5D=b&other=c"));
        assert!(filter.includes("a") && filter.includes("b"));
        assert!(!filter.includes("c"));
        assert!(requested_names(None).includes("anything"));
    }
}

//! The metrics listener (8082), as TorchServe's `PrometheusMetricsRequestHandler`: `/metrics`
//! (any method) answers Prometheus text 0.0.4, optionally only the families named by
//! `?name[]=a&name[]=b`. Which TorchServe families appear depends on `metrics_mode` (see
//! [`crate::metrics`]); oxserve's per-model families always do. With `enable_metrics_api=false`
//! this listener is not started at all (see [`crate::server`]).

use actix_web::{web, HttpRequest, HttpResponse};

use super::{query_pairs, State};
use crate::metrics::{ModelView, NameFilter};

/// The metrics listener's routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/metrics", web::to(metrics))
        .route("/metrics/{rest:.*}", web::to(metrics));
}

/// The `name[]` values of a query string (`name%5B%5D` too).
fn requested_names(pairs: Vec<(String, String)>) -> NameFilter {
    let names = pairs
        .into_iter()
        .filter(|(key, _)| key == "name[]")
        .map(|(_, value)| value)
        .collect();
    NameFilter::new(names)
}

async fn metrics(state: State, request: HttpRequest) -> HttpResponse {
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
        .render(&views, &requested_names(query_pairs(&request)));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_name_brackets_encoded_or_not() {
        let pairs = serde_urlencoded::from_str("name[]=a&name%5B%5D=b&other=c").expect("query");
        let filter = requested_names(pairs);
        assert!(filter.includes("a") && filter.includes("b"));
        assert!(!filter.includes("c"));
        assert!(requested_names(Vec::new()).includes("anything"));
    }
}

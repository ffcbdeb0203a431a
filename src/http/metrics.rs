//! The metrics listener (8082). This version serves per-model request and batch counters in
//! Prometheus text; TorchServe's full metric set is its own issue.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{not_found, State};

/// The metrics listener's routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn metrics(AxumState(state): AxumState<State>) -> Response {
    let mut text = String::new();
    let _ = writeln!(text, "# HELP oxserve_batches_total Batches run by a model's workers\n# TYPE oxserve_batches_total counter");
    let models = state.registry.all();
    for model in &models {
        let _ = writeln!(
            text,
            "oxserve_batches_total{{model_name=\"{}\",model_version=\"{}\",}} {}.0",
            model.name,
            model.version,
            model.stats.batches.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(text, "# HELP oxserve_batch_rows_total Rows (request items) run\n# TYPE oxserve_batch_rows_total counter");
    for model in &models {
        let _ = writeln!(
            text,
            "oxserve_batch_rows_total{{model_name=\"{}\",model_version=\"{}\",}} {}.0",
            model.name,
            model.version,
            model.stats.rows.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(text, "# HELP oxserve_largest_batch_rows Largest batch run so far\n# TYPE oxserve_largest_batch_rows gauge");
    for model in &models {
        let _ = writeln!(
            text,
            "oxserve_largest_batch_rows{{model_name=\"{}\",model_version=\"{}\",}} {}.0",
            model.name,
            model.version,
            model.stats.largest_batch.load(Ordering::Relaxed)
        );
    }
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

//! oxserve: a TorchServe-compatible model server on ONNX Runtime.
//!
//! # Layout
//! The request path, in order:
//! - [`http`]: the three listeners (inference 8080, management 8081, metrics 8082): decode,
//!   call the model, encode, map errors.
//! - [`registry`]: models by name → versions → default; lookups only.
//! - [`model`]: a loaded model version: unpacked archive, handler, queue, workers; `infer()`.
//! - [`prepare`]: large items (photos) pre-processed on the blocking pool before queueing.
//! - [`batching`]: the bounded per-model queue and the batch policy.
//! - [`worker`]: one thread per ONNX Runtime session: batches → handler → session → answers.
//! - [`handler`]: TorchServe's default handlers in Rust (pure functions of bytes and tensors).
//! - [`tensor`]: host tensors stacked and split along the batch axis.
//!
//! Around it:
//! - [`manage`]: register, scale, unregister, set-default (shared by the transports).
//! - [`metrics`]: TorchServe's metrics (kept for `/metrics` or logged, by `metrics_mode`),
//!   oxserve's per-model histograms, and the host sampler.
//! - [`logging`]: the tracing subscriber: console plus TorchServe's `logs/` files.
//! - [`config`]: CLI + config.properties + env, merged once into [`config::Config`].
//! - [`gpu`]: which NVIDIA GPUs models may use, and the CUDA libraries ONNX Runtime needs.
//! - [`runtime`]: loading ONNX Runtime; a model's graph optimised once, weights shared by its
//!   workers' sessions.
//! - [`memory`]: freed pages back to the OS after model loads.
//! - [`store`]: the model store and which archives a `url` may name.
//! - [`error`]: the error type and its TorchServe status codes.
//! - [`auth`]: token authorization (`key_file.json`, `Authorization: Bearer`, `GET /token`).
//! - [`download`]: which model `url`s are allowed, and fetching http(s) archives into the store.
//! - [`snapshot`]: TorchServe's config snapshots, written atomically and restored.
//! - [`properties`]: Java `.properties` text, read and written as `java.util.Properties` does.
//! - [`server`]: binding listeners, loading startup models, running until shutdown.
//! - [`snapshotter`]: snapshots of the registry after every change, and restoring them.
//! - [`fuzzing`]: one entry point per parser of untrusted input, for `fuzz/` and its replay test.

pub mod auth;
pub mod batching;
pub mod config;
pub mod cores;
pub mod download;
pub mod error;
pub mod fuzzing;
pub mod gpu;
pub mod handler;
pub mod http;
pub mod logging;
pub mod manage;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod prepare;
pub mod properties;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod snapshotter;
pub mod store;
pub mod tensor;
pub mod worker;

/// What every request handler can reach.
pub struct AppState {
    pub config: config::Config,
    pub registry: registry::Registry,
    /// Token authorization (TorchServe's key_file.json), or disabled.
    pub auth: std::sync::Arc<auth::TokenAuth>,
    pub snapshots: snapshotter::SnapshotWriter,
    /// TorchServe's metrics, shared with every model's workers.
    pub metrics: std::sync::Arc<metrics::Metrics>,
}

impl AppState {
    /// Called after every state-changing management call, before it is acknowledged: writes a
    /// snapshot so the change survives a restart.
    pub async fn changed(self: &std::sync::Arc<Self>) {
        snapshotter::save(self, snapshot::SnapshotKind::Snapshot).await;
    }
}

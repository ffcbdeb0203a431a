//! oxserve: a TorchServe-compatible model server on ONNX Runtime.
//!
//! # Layout
//! The request path, in order:
//! - [`http`]: the three listeners (inference 8080, management 8081, metrics 8082): decode,
//!   call the model, encode, map errors; `http::v2` is the KServe v2 REST API (JSON and the
//!   binary-data extension).
//! - [`openinference`]: the KServe v2 / Open Inference Protocol without its transports: request
//!   and response types, checks against the graph signature, infer, metadata, readiness.
//!   call the model, encode, map errors.
//! - [`grpc`]: TorchServe's gRPC services (inference 7070, management 7071) and KServe v2's
//!   `GRPCInferenceService` (on 7070) on tonic, over the same calls as [`http`]; `build.rs`
//!   compiles `proto/`.
//! - [`predict`]: one prediction for any transport: metrics, queueing, the answer's body bytes
//!   (and the same metrics around a v2 request).
//! - [`registry`]: models by name → versions → default; lookups only.
//! - [`model`]: a loaded model version and `call()`, the one entry every transport ends in; [`model`]'s `load` unpacks an archive,
//!   merges its settings and builds its handler, its `pool` starts, scales and stops workers.
//! - [`prepare`]: large items (photos) pre-processed on the blocking pool before queueing.
//! - [`batching`]: the bounded per-model queue and the batch policy.
//! - [`worker`]: one thread per backend session: batches → handler → session → answers.
//! - [`handler`]: TorchServe's default handlers in Rust (pure functions of bytes and tensors).
//! - [`tensor`]: host tensors stacked and split along the batch axis.
//! - [`backend`]: the only module that knows ONNX Runtime: loading it, prepared graphs and
//!   sessions, execution providers, tensor conversion, run cancellation, typed errors.
//!
//! Around it:
//! - [`spin`]: polling briefly instead of sleeping at once, while a core is free.
//! - [`state`]: what every request handler can reach ([`state::AppState`]).
//! - [`manage`]: register, scale, unregister, set-default, list, describe (shared by the
//!   transports).
//! - [`metrics`]: TorchServe's metrics (kept for `/metrics` or logged, by `metrics_mode`),
//!   oxserve's per-model histograms, and the host sampler.
//! - [`logging`]: the tracing subscriber: console plus TorchServe's `logs/` files.
//! - [`config`]: CLI + config.properties + env, merged once into [`config::Config`].
//! - [`gpu`]: which NVIDIA GPUs models may use, and where the CUDA libraries are.
//! - `oxserve_sys` (the `sys/` crate): the FFI calls (freed memory back to the OS, the HTTP
//!   threads' scheduling policy), the only crate of the workspace allowed FFI code.
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
pub mod backend;
pub mod batching;
pub mod config;
pub mod download;
pub mod error;
pub mod fuzzing;
pub mod gpu;
pub mod grpc;
pub mod handler;
pub mod http;
pub mod logging;
pub mod manage;
pub mod metrics;
pub mod model;
pub mod openinference;
pub mod predict;
pub mod prepare;
pub mod properties;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod snapshotter;
pub mod spin;
pub mod state;
pub mod store;
pub mod tensor;
pub mod worker;

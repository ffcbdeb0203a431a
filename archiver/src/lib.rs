//! The `.mar` model archive format, as TorchServe lays it out, with oxserve's declarative
//! handler configs. This crate is the single definition of `MANIFEST.json` and the handler config:
//! the `oxserve-archiver` binary writes archives with it and the server reads them with it.
//!
//! # Layout
//! - [`manifest`]: `MAR-INF/MANIFEST.json` (TorchServe's fields plus an `oxserve` section), name rules.
//! - [`signature`]: a graph's inputs and outputs (types, shapes, symbolic batch axes).
//! - [`handler_config`]: built-in handler names and the declarative config they resolve to.
//! - [`model_config`]: TorchServe's `model-config.yaml`, typed and validated.
//! - [`runtime`]: finding and loading `libonnxruntime.so` (flag, env, project folder, exe, Python).
//! - [`graph`]: opening an ONNX graph with ONNX Runtime to validate it and read its signature.
//! - [`convert`]: PyTorch models (eager or TorchScript) to checked ONNX graphs, in the user's Python.
//! - [`torchserve`]: reading an archive made by torch-model-archiver for `oxserve-archiver convert`.
//! - [`pack`]: writing an archive (default zip, zip-store, tgz, no-archive) atomically.
//! - [`unpack`]: reading an untrusted archive safely (no path escapes, zip-bomb caps).
//! - [`error`]: the crate's error type.

pub mod convert;
pub mod error;
pub mod graph;
pub mod handler_config;
pub mod manifest;
pub mod model_config;
pub mod pack;
pub mod runtime;
pub mod signature;
pub mod torchserve;
pub mod unpack;

pub use error::{ArchiveError, Result};
pub use handler_config::{HandlerConfig, HandlerKind};
pub use manifest::Manifest;
pub use model_config::ModelConfig;
pub use signature::{Dim, Signature, TensorSpec};

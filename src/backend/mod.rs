//! The inference backend: the only module that imports `ort`. It owns finding and initialising
//! ONNX Runtime, a model's prepared graph and its workers' sessions, the execution provider (the
//! CPU, or CUDA on one device), tensor conversion to and from ONNX Runtime's values, run
//! cancellation and the classification of ONNX Runtime's errors into [`BackendError`].
//!
//! Workers call it on their own threads ([`Session::run`] blocks); batching holds a
//! [`CancelToken`] per job without knowing what runs behind it. Another engine (TensorRT,
//! OpenVINO) would plug in here behind the same types.

mod cancel;
mod convert;
pub mod cuda;
mod error;
mod graph;
mod session;

use std::path::Path;

pub use cancel::CancelToken;
pub use error::BackendError;
pub use graph::{build_session, PreparedGraph, SessionSettings};
pub use oxserve_archiver::runtime::LoadedRuntime;
pub use session::Session;

/// Loads ONNX Runtime once; the error is a one-line instruction when the library is missing.
pub fn init(explicit: Option<&Path>) -> Result<LoadedRuntime, BackendError> {
    oxserve_archiver::runtime::init(explicit)
        .map_err(|error| BackendError::Setup(error.to_string()))
}

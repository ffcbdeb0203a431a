//! ONNX Runtime for the server: loading the library (through the archiver crate's locator, which
//! both binaries share) and building sessions with the thread, optimisation and execution-provider
//! settings a model asks for. Sessions are built on worker threads, never on the async runtime.

use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::error::ServeError;

pub use oxserve_archiver::runtime::LoadedRuntime;

/// Loads ONNX Runtime once; the error is a one-line instruction when the library is missing.
pub fn init(explicit: Option<&Path>) -> Result<LoadedRuntime, String> {
    oxserve_archiver::runtime::init(explicit).map_err(|error| error.to_string())
}

/// How to build one worker's session.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub intra_op_threads: usize,
    /// Spinning burns a core while idle; worth it only when sessions × threads ≤ cores.
    pub spinning: bool,
}

/// Builds a session from the graph bytes. Runs on the calling (worker) thread.
pub fn build_session(graph: &[u8], settings: &SessionSettings) -> Result<Session, ServeError> {
    let runtime = init(None).map_err(ServeError::Internal)?;
    let build = || -> ort::Result<Session> {
        let builder = Session::builder(runtime.environment)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(ort::Error::<()>::from)?
            .with_intra_threads(settings.intra_op_threads.max(1))
            .map_err(ort::Error::<()>::from)?
            .with_inter_threads(1)
            .map_err(ort::Error::<()>::from)?
            .with_intra_op_spinning(settings.spinning)
            .map_err(ort::Error::<()>::from)?;
        let mut builder = builder;
        builder.commit_from_memory(graph)
    };
    build().map_err(|error| {
        ServeError::Internal(format!("cannot create an ONNX Runtime session: {error}"))
    })
}

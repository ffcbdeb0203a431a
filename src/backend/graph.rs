//! A model's graph prepared once and the sessions built from it, with the thread, optimisation
//! and execution-provider settings a model asks for. Sessions are built on worker threads, never
//! on the async runtime.
//!
//! # One copy of the weights per model
//! `Session::run` takes `&mut self` (ort: concurrent runs on one session are not safe), so each
//! worker owns a session. Built from the ONNX graph, every session would optimise and copy all
//! weights again. Instead a model's graph is optimised once
//! into ONNX Runtime's own format ([`PreparedGraph::prepare`]) and every worker's session is
//! built straight from those bytes with `session.use_ort_model_bytes_for_initializers`: the
//! weights stay in the one shared buffer, and a session costs little more than its activations.
//! Pre-packed weights are shared through one container per model. The ONNX bytes are the fallback
//! when a graph cannot be saved in that format.
//!
//! # GPU sessions
//! A worker with a GPU gets ONNX Runtime's CUDA provider on that device, registered so that a
//! failure is an error (ort's default would fall back to the CPU in silence). Its graph is not
//! pre-optimised: the saved ORT format carries CPU-only layout rewrites the CUDA provider cannot
//! run, and its weights live in GPU memory anyway.

use std::sync::Arc;

use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};

use super::{init, BackendError, Session};

/// How to build one worker's session.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub intra_op_threads: usize,
    /// Spinning burns a core while idle; worth it only when sessions × threads ≤ cores.
    pub spinning: bool,
    /// The CUDA device to run on; `None` for the CPU.
    pub gpu: Option<u32>,
}

/// A model's graph, optimised once and shared by the sessions of all its workers.
pub struct PreparedGraph {
    bytes: Arc<[u8]>,
    /// `bytes` is an optimised ORT-format model whose initializers sessions use in place.
    in_place: bool,
    prepacked: PrepackedWeights,
}

impl PreparedGraph {
    /// Optimises the ONNX graph (level 3, as every session would) and saves it in ORT format.
    /// A graph that cannot be saved so is kept as ONNX (one weight copy per session, as before);
    /// a graph ONNX Runtime cannot load at all is an error. Blocking: hundreds of ms for
    /// ResNet-18. Its transient copies stay in the allocator until the caller returns them
    /// ([`oxserve_sys::return_free_memory`], which the model's worker pool calls once its
    /// workers are up). `for_gpu`: the sessions will run on CUDA, so the graph is kept as ONNX
    /// and only checked.
    pub fn prepare(onnx: Vec<u8>, for_gpu: bool) -> Result<PreparedGraph, BackendError> {
        let prepacked = PrepackedWeights::new();
        let optimised = match for_gpu {
            true => None,
            false => Some(optimise(&onnx)),
        };
        let graph = match optimised {
            Some(Ok(bytes)) => PreparedGraph {
                bytes: bytes.into(),
                in_place: true,
                prepacked,
            },
            unoptimised => {
                if let Some(Err(reason)) = unoptimised {
                    tracing::warn!(
                        "the graph stays in ONNX form, one weight copy per worker: {reason}"
                    );
                }
                PreparedGraph {
                    bytes: onnx.into(),
                    in_place: false,
                    prepacked,
                }
            }
        };
        // Prove the graph loads (and fail here, once, with ONNX Runtime's reason when not).
        graph.session(&single_thread())?;
        Ok(graph)
    }

    /// Whether sessions share the weights in place.
    pub fn shares_weights(&self) -> bool {
        self.in_place
    }

    /// Builds one worker's session. Runs on the calling (worker) thread.
    pub fn session(&self, settings: &SessionSettings) -> Result<Session, BackendError> {
        let runtime = init(None)?;
        let build = || -> ort::Result<ort::session::Session> {
            let mut builder = configure(
                ort::session::Session::builder(runtime.environment),
                settings,
            )?
            .with_prepacked_weights(&self.prepacked)
            .map_err(into_error)?;
            if self.in_place {
                builder = builder
                    .with_config_entry("session.use_ort_model_bytes_directly", "1")
                    .map_err(into_error)?
                    .with_config_entry("session.use_ort_model_bytes_for_initializers", "1")
                    .map_err(into_error)?;
            }
            builder.commit_from_memory(&self.bytes)
        };
        let session = build()
            .map_err(|error| BackendError::setup("cannot create an ONNX Runtime session", error))?;
        Ok(Session::new(
            session,
            Some((Arc::clone(&self.bytes), self.prepacked.clone())),
        ))
    }
}

/// The ONNX graph optimised at level 3 for the CPU, as every CPU session would, in ORT format.
fn optimise(onnx: &[u8]) -> Result<Vec<u8>, String> {
    let file = tempfile::Builder::new()
        .prefix("oxserve-graph-")
        .suffix(".ort")
        .tempfile()
        .map_err(|error| format!("cannot create a temporary file: {error}"))?;
    let runtime = init(None).map_err(|error| error.to_string())?;
    let session = configure(
        ort::session::Session::builder(runtime.environment),
        &single_thread(),
    )
    .and_then(|builder| {
        builder
            .with_optimized_model_path(file.path())
            .map_err(into_error)
    })
    .and_then(|builder| {
        builder
            .with_config_entry("session.save_model_format", "ORT")
            .map_err(into_error)
    })
    // ORT warns that layout-optimised graphs are specific to this CPU: they are, and they
    // never leave this process.
    .and_then(|builder| builder.with_log_level(LogLevel::Error).map_err(into_error))
    .and_then(|mut builder| builder.commit_from_memory(onnx))
    .map_err(|error| format!("cannot create an ONNX Runtime session: {error}"))?;
    drop(session);
    std::fs::read(file.path())
        .map_err(|error| format!("cannot read the optimised graph back: {error}"))
}

/// Builds a session straight from ONNX bytes, with its own weights (the archiver's checks and
/// one-off uses; workers go through [`PreparedGraph`]).
pub fn build_session(graph: &[u8], settings: &SessionSettings) -> Result<Session, BackendError> {
    let runtime = init(None)?;
    configure(
        ort::session::Session::builder(runtime.environment),
        settings,
    )
    .and_then(|mut builder| builder.commit_from_memory(graph))
    .map(|session| Session::new(session, None))
    .map_err(|error| BackendError::setup("cannot create an ONNX Runtime session", error))
}

fn single_thread() -> SessionSettings {
    SessionSettings {
        intra_op_threads: 1,
        spinning: false,
        gpu: None,
    }
}

fn configure(
    builder: ort::Result<SessionBuilder>,
    settings: &SessionSettings,
) -> ort::Result<SessionBuilder> {
    builder?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(into_error)?
        .with_intra_threads(settings.intra_op_threads.max(1))
        .map_err(into_error)?
        .with_inter_threads(1)
        .map_err(into_error)?
        .with_intra_op_spinning(settings.spinning)
        .map_err(into_error)?
        .with_execution_providers(settings.gpu.map(cuda).as_slice())
        .map_err(into_error)
}

/// The CUDA provider on one device; registering it fails loudly rather than falling back.
///
/// cuDNN picks convolution algorithms by heuristics, as PyTorch does by default
/// (`cudnn.benchmark = False`). ONNX Runtime's default, an exhaustive search, times every
/// algorithm the first time a session sees an input shape: with batches of 1 to `batch_size`
/// rows that is a stall per new shape and worker.
fn cuda(device: u32) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CUDA::default()
        .with_device_id(device as i32)
        .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
        .build()
        .error_on_failure()
}

fn into_error(error: ort::Error<SessionBuilder>) -> ort::Error {
    ort::Error::<()>::from(error)
}

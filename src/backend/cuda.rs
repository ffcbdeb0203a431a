//! What ONNX Runtime's CUDA provider needs from the process: the provider in the loaded build, and
//! CUDA's and cuDNN's libraries loaded. [`crate::gpu`] decides where to look for them.

use std::path::Path;

use super::BackendError;

/// Whether the loaded ONNX Runtime build lists the CUDA provider.
pub fn provider_listed() -> Result<bool, BackendError> {
    use ort::ep::ExecutionProvider;
    <ort::ep::CUDA as ExecutionProvider>::is_available()
        .map_err(|error| BackendError::setup("cannot ask ONNX Runtime for its providers", error))
}

/// Loads one library by name or path, so that the provider's own lookups by name find it.
pub fn preload(library: &Path) -> Result<(), String> {
    ort::util::preload_dylib(library).map_err(|error| error.to_string())
}

/// The file names of the CUDA and cuDNN libraries the provider loads, in dependency order.
pub fn library_names() -> impl Iterator<Item = &'static str> {
    ort::ep::cuda::CUDA_DYLIBS
        .iter()
        .chain(ort::ep::cuda::CUDNN_DYLIBS)
        .copied()
}

//! The archiver's one error type. Every message is a complete sentence a user can act on: the
//! CLI prints it as a single line, and the server wraps it into its own 400/500 answers.

use std::path::PathBuf;

/// Everything that can go wrong while packing, reading or inspecting a model archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A command-line value or manifest field is not acceptable (bad name, version, flag combination).
    #[error("{0}")]
    InvalidArgument(String),

    /// An input file named on the command line does not exist or cannot be read.
    #[error("cannot read {path}: {reason}")]
    MissingInput { path: PathBuf, reason: String },

    /// The output exists and `-f/--force` was not given (torch-model-archiver's wording).
    #[error("{0} already exists. Please specify --force/-f option to overwrite the model archive output file.")]
    OutputExists(PathBuf),

    /// The serialized file is not an ONNX graph, or ONNX Runtime refuses it.
    #[error("{0}")]
    InvalidModel(String),

    /// The handler name or handler config cannot be used.
    #[error("{0}")]
    InvalidHandler(String),

    /// model-config.yaml is malformed or has values TorchServe would reject.
    #[error("invalid model config {path}: {reason}")]
    InvalidModelConfig { path: String, reason: String },

    /// An archive being read breaks a safety rule (path escape, symlink, zip bomb, too many entries).
    #[error("unsafe archive: {0}")]
    UnsafeArchive(String),

    /// An archive being read is not a readable .mar/zip/tar.gz or lacks MAR-INF/MANIFEST.json.
    #[error("malformed archive: {0}")]
    MalformedArchive(String),

    /// ONNX Runtime could not be found or loaded; the message says how to install it.
    #[error("{0}")]
    Runtime(String),

    /// Converting a PyTorch model to ONNX failed, or no Python with torch could be found.
    #[error("{0}")]
    Conversion(String),

    /// Any other I/O failure, with the path it concerned.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ArchiveError {
    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ArchiveError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

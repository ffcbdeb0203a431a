//! The backend's typed errors and the one place ONNX Runtime's errors are classified. The rest of
//! the server sees [`BackendError`] (or the [`ServeError`] it maps to), never ORT's text.

use crate::error::ServeError;

/// What went wrong in the backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The run was stopped through its [`super::CancelToken`] (response timeout, client gone).
    #[error("the run was cancelled")]
    Cancelled,
    /// The graph refused its inputs (wrong shape, type or name).
    #[error("the graph refused its inputs: {0}")]
    InvalidInput(String),
    /// The run could not allocate its memory.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The run failed for another reason.
    #[error("the run failed: {0}")]
    Failed(String),
    /// The library, a session or a tensor could not be set up (not the request's fault).
    #[error("{0}")]
    Setup(String),
}

impl BackendError {
    /// Classifies a failed run. `cancelled`: its token was cancelled, whatever ORT then said.
    pub(super) fn from_run(error: &ort::Error, cancelled: bool) -> BackendError {
        let message = error.message().to_string();
        if cancelled {
            return BackendError::Cancelled;
        }
        if message.contains("bad_alloc") || message.contains("allocat") {
            return BackendError::OutOfMemory(message);
        }
        match error.code() {
            ort::error::ErrorCode::InvalidArgument => BackendError::InvalidInput(message),
            _ => BackendError::Failed(message),
        }
    }

    /// A setup failure with what was being done.
    pub(super) fn setup(doing: &str, error: impl std::fmt::Display) -> BackendError {
        BackendError::Setup(format!("{doing}: {error}"))
    }
}

impl From<BackendError> for ServeError {
    fn from(error: BackendError) -> ServeError {
        match error {
            BackendError::Cancelled => ServeError::WorkerDied,
            BackendError::OutOfMemory(_) => ServeError::OutOfResources,
            BackendError::InvalidInput(_) | BackendError::Failed(_) => ServeError::PredictionFailed,
            BackendError::Setup(message) => ServeError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_the_status_it_had() {
        let cases = [
            (BackendError::Cancelled, 500),
            (BackendError::OutOfMemory(String::new()), 507),
            (BackendError::InvalidInput(String::new()), 503),
            (BackendError::Failed(String::new()), 503),
            (BackendError::Setup(String::new()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(
                ServeError::from(error.clone()).status(),
                status,
                "{error:?}"
            );
        }
    }
}

//! The one error type that crosses module boundaries in the server, and its mapping to
//! TorchServe's wire forms: an HTTP status plus `{"code", "type", "message"}` where `type` is the
//! Java exception TorchServe would have thrown, and a gRPC status code plus the same message.
//! The mapping lives here and nowhere else; the transports call [`ServeError::status`],
//! [`ServeError::body`] and [`ServeError::grpc`].
//!
//! `Clone`, so one failed batch can answer every request in it.

use serde::Serialize;

/// Everything a request or management call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    /// No route matches (TorchServe's ResourceNotFoundException).
    #[error("Requested resource is not found, please refer to API document.")]
    ResourceNotFound,
    /// The route exists but not for this method.
    #[error("Requested method is not allowed, please refer to API document.")]
    MethodNotAllowed,
    /// Unknown model name.
    #[error("Model not found: {0}")]
    ModelNotFound(String),
    /// A registration URL that names no usable archive (TorchServe's `ModelArchive.downloadModel`).
    #[error("{0}")]
    ArchiveNotFound(String),
    /// Known model, unknown version.
    #[error("Model version: {version} does not exist for model: {model}")]
    ModelVersionNotFound { model: String, version: String },
    /// set-default names a version the model does not have (TorchServe's wording differs here).
    #[error("Model version {version} does not exist for model {model}")]
    DefaultVersionNotFound { model: String, version: String },
    /// Unregistering the default version while others remain.
    #[error("Cannot remove default version for model {0}")]
    DefaultVersionInUse(String),
    /// Registering a name and version that are already registered.
    #[error("Model version {version} is already registered for model {model}")]
    VersionConflict { model: String, version: String },
    /// Register/unregister while the model API is off.
    #[error("Requested method is not allowed, please refer to API document.")]
    ModelApiDisabled,
    /// A model's workers could not start (the model is left unregistered).
    #[error("Failed to start workers for model {model} version: {version}")]
    WorkersFailed { model: String, version: String },
    /// A scale request that cannot be carried out (TorchServe answers 500 here).
    #[error("{0}")]
    ScaleFailed(String),
    /// The archive file a download would create is already in the model store.
    #[error("Model file already exists {0}")]
    ModelFileExists(String),
    /// The request itself is wrong (bad image, wrong tensor shape, empty body, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// The client did not send its body in time.
    #[error("The request body did not arrive within {seconds} s")]
    RequestTimeout { seconds: u64 },
    /// The body is larger than `max_request_size`.
    #[error("Request body exceeds the limit of {limit} bytes (max_request_size)")]
    PayloadTooLarge { limit: usize },
    /// The model's queue is full or it has no workers (TorchServe's 503 wording).
    #[error("Model \"{0}\" has no worker to serve inference request. Please use scale workers API to add workers. If this is a sequence inference, please check if it is closed, or expired; or exceeds maxSequenceJobQueueSize")]
    NoWorker(String),
    /// The graph or handler failed on valid input (TorchServe's "Prediction failed").
    #[error("Prediction failed")]
    PredictionFailed,
    /// ONNX Runtime ran out of memory.
    #[error("Out of resources")]
    OutOfResources,
    /// A worker panicked or was stopped while holding the request.
    #[error("Worker died.")]
    WorkerDied,
    /// The model did not answer within its response timeout.
    #[error("Worker died. The model did not answer within its response timeout of {seconds} s")]
    ResponseTimeout { seconds: u64 },
    /// A model answer larger than `max_response_size`.
    #[error("Invalid response")]
    InvalidResponse,
    /// Anything else; the message is logged, not sent.
    #[error("{0}")]
    Internal(String),
    /// A missing, wrong or expired token (`TokenAuthorizationHandler`).
    #[error(
        "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
    )]
    InvalidToken,
    /// Any failure of `GET /token` (wrong API key, bad `type`): TorchServe says "Authentication".
    #[error(
        "Token Authentication failed. Token either incorrect, expired, or not provided correctly"
    )]
    TokenApiFailed,
    /// Downloading a model archive failed (network, HTTP status, size cap, timeout, bad name).
    #[error("Failed to download archive from: {0}")]
    DownloadFailed(String),
}

/// TorchServe's error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: u16,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
}

/// The KServe v2 error body: the protocol's `{"error": message}`, which KServe and Triton
/// clients read, beside TorchServe's fields, which its own v2 endpoint sends.
#[derive(Debug, Serialize)]
pub struct V2ErrorBody {
    pub error: String,
    #[serde(flatten)]
    pub torchserve: ErrorBody,
}

impl ServeError {
    /// The HTTP status TorchServe answers with (`HttpRequestHandler`, `RestJob`, `service.py`).
    pub fn status(&self) -> u16 {
        match self {
            ServeError::ResourceNotFound
            | ServeError::ModelNotFound(_)
            | ServeError::ModelVersionNotFound { .. }
            | ServeError::DefaultVersionNotFound { .. }
            | ServeError::ArchiveNotFound(_) => 404,
            ServeError::MethodNotAllowed | ServeError::ModelApiDisabled => 405,
            ServeError::DefaultVersionInUse(_) => 403,
            ServeError::VersionConflict { .. } => 409,
            ServeError::WorkersFailed { .. }
            | ServeError::ModelFileExists(_)
            | ServeError::ScaleFailed(_) => 500,
            ServeError::BadRequest(_)
            | ServeError::InvalidToken
            | ServeError::TokenApiFailed
            | ServeError::DownloadFailed(_) => 400,
            ServeError::PayloadTooLarge { .. } => 413,
            ServeError::RequestTimeout { .. } => 408,
            ServeError::NoWorker(_) | ServeError::PredictionFailed => 503,
            ServeError::OutOfResources | ServeError::InvalidResponse => 507,
            ServeError::WorkerDied
            | ServeError::ResponseTimeout { .. }
            | ServeError::Internal(_) => 500,
        }
    }

    /// The Java exception name TorchServe puts in `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServeError::ResourceNotFound => "ResourceNotFoundException",
            ServeError::MethodNotAllowed | ServeError::ModelApiDisabled => {
                "MethodNotAllowedException"
            }
            ServeError::ModelNotFound(_) | ServeError::ArchiveNotFound(_) => {
                "ModelNotFoundException"
            }
            ServeError::ModelVersionNotFound { .. } | ServeError::DefaultVersionNotFound { .. } => {
                "ModelVersionNotFoundException"
            }
            ServeError::DefaultVersionInUse(_) => "InvalidModelVersionException",
            ServeError::VersionConflict { .. } => "ConflictStatusException",
            ServeError::WorkersFailed { .. }
            | ServeError::ModelFileExists(_)
            | ServeError::ScaleFailed(_) => "InternalServerException",
            ServeError::BadRequest(_) => "BadRequestException",
            ServeError::PayloadTooLarge { .. } => "RequestTooLargeException",
            ServeError::RequestTimeout { .. } => "RequestTimeoutException",
            ServeError::NoWorker(_) => "ServiceUnavailableException",
            ServeError::InvalidToken | ServeError::TokenApiFailed => "InvalidKeyException",
            ServeError::DownloadFailed(_) => "DownloadArchiveException",
            ServeError::PredictionFailed
            | ServeError::OutOfResources
            | ServeError::WorkerDied
            | ServeError::ResponseTimeout { .. }
            | ServeError::InvalidResponse
            | ServeError::Internal(_) => "InternalServerException",
        }
    }

    /// The body to send. Internal details never leave the process.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            ServeError::Internal(_) => "Internal server error".to_string(),
            other => other.to_string(),
        };
        ErrorBody {
            code: self.status(),
            kind: self.kind(),
            message,
        }
    }
}

impl ServeError {
    /// The body of a KServe v2 error answer (same status as [`Self::status`]).
    pub fn v2_body(&self) -> V2ErrorBody {
        let torchserve = self.body();
        V2ErrorBody {
            error: torchserve.message.clone(),
            torchserve,
        }
    }

    /// The gRPC status code and message: the REST message, under the code TorchServe's
    /// `GRPCUtils.getGRPCStatusCode` gives the HTTP status. Two answers come from elsewhere in
    /// TorchServe: a refused token is `GRPCInterceptor`'s PERMISSION_DENIED, and register or
    /// unregister with the model API off is `ManagementImpl`'s PERMISSION_DENIED "Model API
    /// disabled".
    pub fn grpc(&self) -> (tonic::Code, String) {
        use tonic::Code;
        let code = match self {
            ServeError::InvalidToken => Code::PermissionDenied,
            ServeError::ModelApiDisabled => {
                return (Code::PermissionDenied, "Model API disabled".into())
            }
            other => grpc_code(other.status()),
        };
        (code, self.body().message)
    }
}

/// TorchServe's `GRPCUtils.getGRPCStatusCode`: the named statuses, then 2xx OK, other 4xx
/// FAILED_PRECONDITION, other 5xx INTERNAL, anything else UNKNOWN.
fn grpc_code(status: u16) -> tonic::Code {
    use tonic::Code;
    match status {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        413 | 429 => Code::ResourceExhausted,
        416 => Code::OutOfRange,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        200..=299 => Code::Ok,
        402 | 405..=408 | 410..=412 | 414 | 415 | 417..=428 | 430..=498 => Code::FailedPrecondition,
        500 | 502 | 505..=599 => Code::Internal,
        _ => Code::Unknown,
    }
}

impl From<oxserve_archiver::ArchiveError> for ServeError {
    fn from(error: oxserve_archiver::ArchiveError) -> Self {
        use oxserve_archiver::ArchiveError as A;
        match error {
            A::InvalidArgument(_)
            | A::InvalidModel(_)
            | A::InvalidHandler(_)
            | A::InvalidModelConfig { .. }
            | A::UnsafeArchive(_)
            | A::MalformedArchive(_)
            | A::OutputExists(_)
            | A::MissingInput { .. }
            | A::Conversion(_) => ServeError::BadRequest(error.to_string()),
            A::Runtime(_) | A::Io { .. } => ServeError::Internal(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per variant: the status and type TorchServe answers with.
    #[test]
    fn every_error_maps_to_torchserve_status_and_type() {
        let table = [
            (
                ServeError::ResourceNotFound,
                404,
                "ResourceNotFoundException",
            ),
            (
                ServeError::MethodNotAllowed,
                405,
                "MethodNotAllowedException",
            ),
            (
                ServeError::ModelNotFound("m".into()),
                404,
                "ModelNotFoundException",
            ),
            (
                ServeError::ModelVersionNotFound {
                    model: "m".into(),
                    version: "2".into(),
                },
                404,
                "ModelVersionNotFoundException",
            ),
            (
                ServeError::BadRequest("x".into()),
                400,
                "BadRequestException",
            ),
            (
                ServeError::PayloadTooLarge { limit: 1 },
                413,
                "RequestTooLargeException",
            ),
            (
                ServeError::NoWorker("m".into()),
                503,
                "ServiceUnavailableException",
            ),
            (ServeError::PredictionFailed, 503, "InternalServerException"),
            (ServeError::OutOfResources, 507, "InternalServerException"),
            (ServeError::WorkerDied, 500, "InternalServerException"),
            (
                ServeError::ResponseTimeout { seconds: 1 },
                500,
                "InternalServerException",
            ),
            (ServeError::InvalidResponse, 507, "InternalServerException"),
            (
                ServeError::Internal("secret".into()),
                500,
                "InternalServerException",
            ),
            (ServeError::InvalidToken, 400, "InvalidKeyException"),
            (ServeError::TokenApiFailed, 400, "InvalidKeyException"),
            (
                ServeError::ArchiveNotFound("empty url".into()),
                404,
                "ModelNotFoundException",
            ),
            (
                ServeError::DownloadFailed("http://x/a.mar".into()),
                400,
                "DownloadArchiveException",
            ),
            (
                ServeError::ModelFileExists("a.mar".into()),
                500,
                "InternalServerException",
            ),
        ];
        let table = table.into_iter().chain([
            (
                ServeError::DefaultVersionNotFound {
                    model: "m".into(),
                    version: "3".into(),
                },
                404,
                "ModelVersionNotFoundException",
            ),
            (
                ServeError::DefaultVersionInUse("m".into()),
                403,
                "InvalidModelVersionException",
            ),
            (
                ServeError::VersionConflict {
                    model: "m".into(),
                    version: "1".into(),
                },
                409,
                "ConflictStatusException",
            ),
            (
                ServeError::ModelApiDisabled,
                405,
                "MethodNotAllowedException",
            ),
            (
                ServeError::WorkersFailed {
                    model: "m".into(),
                    version: "1".into(),
                },
                500,
                "InternalServerException",
            ),
            (
                ServeError::ModelFileExists("m.mar".into()),
                500,
                "InternalServerException",
            ),
            (
                ServeError::ScaleFailed("x".into()),
                500,
                "InternalServerException",
            ),
            (
                ServeError::ArchiveNotFound("empty url".into()),
                404,
                "ModelNotFoundException",
            ),
            (
                ServeError::RequestTimeout { seconds: 1 },
                408,
                "RequestTimeoutException",
            ),
        ]);
        for (error, status, kind) in table {
            let body = error.body();
            assert_eq!((body.code, body.kind), (status, kind), "{error:?}");
            // gRPC: TorchServe's GRPCUtils table over the same status, and the same message.
            use tonic::Code;
            let code = match status {
                400 if !matches!(error, ServeError::InvalidToken) => Code::InvalidArgument,
                400 => Code::PermissionDenied,
                403 => Code::PermissionDenied,
                404 => Code::NotFound,
                405 if matches!(error, ServeError::ModelApiDisabled) => Code::PermissionDenied,
                405 => Code::FailedPrecondition,
                408 => Code::FailedPrecondition,
                409 => Code::Aborted,
                413 => Code::ResourceExhausted,
                503 => Code::Unavailable,
                500 | 507 => Code::Internal,
                other => panic!("no gRPC row for HTTP {other}"),
            };
            let (grpc_code, message) = error.grpc();
            assert_eq!(grpc_code, code, "{error:?}");
            if !matches!(error, ServeError::ModelApiDisabled) {
                assert_eq!(message, body.message, "{error:?}");
            }
        }
        assert_eq!(ServeError::ModelApiDisabled.grpc().1, "Model API disabled");
        assert_eq!(
            ServeError::Internal("secret".into()).body().message,
            "Internal server error"
        );
        assert_eq!(
            ServeError::ModelNotFound("noop".into()).body().message,
            "Model not found: noop"
        );
        assert_eq!(
            ServeError::InvalidToken.body().message,
            "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
        );
        assert_eq!(
            ServeError::TokenApiFailed.body().message,
            "Token Authentication failed. Token either incorrect, expired, or not provided correctly"
        );
        assert_eq!(
            ServeError::DownloadFailed("http://h/a.mar".into())
                .body()
                .message,
            "Failed to download archive from: http://h/a.mar"
        );
        assert_eq!(
            ServeError::ModelFileExists("a.mar".into()).body().message,
            "Model file already exists a.mar"
        );
        assert_eq!(
            ServeError::ArchiveNotFound("empty url".into())
                .body()
                .message,
            "empty url"
        );
    }
}

//! gRPC frontends on tonic, behind TorchServe's protos (`proto/`, compiled by `build.rs`):
//! decode a request, call the same transport-neutral functions as REST ([`crate::predict`],
//! [`crate::manage`]), encode, map errors. No tensors, sessions or batching here.
//!
//! One file per service: [`inference`] (`InferenceAPIsService`, on `grpc_inference_port`),
//! [`open_inference`] (KServe v2's `GRPCInferenceService`, under KServe's package and TorchServe's,
//! on the same port) and [`management`] (`ManagementAPIsService`, on `grpc_management_port`). [`listener`] serves a
//! set of services on one bound socket with the message limits, TLS and token check they share,
//! so another service can join the inference port by being added to its routes.

pub mod inference;
pub mod listener;
pub mod management;
pub mod open_inference;

use crate::error::ServeError;

/// The code generated from `proto/`, in modules named after the proto packages (so that the
/// generated cross-package paths resolve).
pub mod proto {
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    pub mod org {
        pub mod pytorch {
            pub mod serve {
                pub mod grpc {
                    pub mod inference {
                        tonic::include_proto!("org.pytorch.serve.grpc.inference");
                    }
                    pub mod management {
                        tonic::include_proto!("org.pytorch.serve.grpc.management");
                    }
                    pub mod openinference {
                        tonic::include_proto!("org.pytorch.serve.grpc.openinference");
                    }
                }
            }
        }
    }
    /// TorchServe's own inference service (`org.pytorch.serve.grpc.inference`).
    pub use org::pytorch::serve::grpc::inference as torchserve;
    pub use org::pytorch::serve::grpc::{management, openinference};
    /// KServe's `inference` package: the Open Inference Protocol's messages and service (at the
    /// root, where the code generated for TorchServe's `openinference` package looks for them).
    pub mod inference {
        tonic::include_proto!("inference");
    }
}

/// The one mapping of [`ServeError`] to a gRPC status: [`ServeError::grpc`]'s code and message.
/// 5xx errors are logged here, once, as the HTTP access log does for REST.
impl From<ServeError> for tonic::Status {
    fn from(error: ServeError) -> Self {
        if error.status() >= 500 {
            tracing::error!("gRPC request failed: {error}");
        }
        let (code, message) = error.grpc();
        tonic::Status::new(code, message)
    }
}

//! The KServe v2 / Open Inference Protocol, independent of its transports: the request and
//! response types (tensors with a datatype, shape and data; requested outputs; parameters; the
//! id), their checks against a model's graph signature, the infer call into the model's one
//! entry ([`crate::model::ModelVersion::call`]), and model/server metadata and readiness.
//!
//! The REST frontend (`http/v2`) maps JSON and the binary-data extension to these types; a gRPC
//! frontend maps protobuf messages to them the same way, and both use [`raw`] for tensors sent as
//! raw little-endian bytes (`raw_input_contents`, binary data).
//!
//! - [`validate`]: a request's inputs checked against the signature (names, datatypes, fixed
//!   dimensions, element counts within caps) into the model's request items.
//! - [`call`]: the infer call, the envelope around handler answers, metadata, readiness.
//! - [`raw`]: tensors to and from raw little-endian bytes.

pub mod call;
pub mod raw;
pub mod validate;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::tensor::TensorValues;

pub use call::{infer, model_metadata, model_ready, server_metadata, server_ready};

/// The protocol's tensor datatypes that oxserve serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Bool,
    Uint8,
    Int8,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl Datatype {
    const ALL: [(Datatype, &'static str, &'static str); 9] = [
        (Datatype::Bool, "BOOL", "bool"),
        (Datatype::Uint8, "UINT8", "uint8"),
        (Datatype::Int8, "INT8", "int8"),
        (Datatype::Int32, "INT32", "int32"),
        (Datatype::Int64, "INT64", "int64"),
        (Datatype::Fp16, "FP16", "float16"),
        (Datatype::Fp32, "FP32", "float32"),
        (Datatype::Fp64, "FP64", "float64"),
        (Datatype::Bytes, "BYTES", "string"),
    ];

    /// The protocol's name (`FP32`).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(datatype, _, _)| *datatype == self)
            .map_or("BYTES", |(_, name, _)| name)
    }

    /// Parses the protocol's name; `None` for a datatype oxserve does not serve.
    pub fn parse(name: &str) -> Option<Datatype> {
        Self::ALL
            .iter()
            .find(|(_, known, _)| *known == name)
            .map(|(datatype, _, _)| *datatype)
    }

    /// The datatype of an ONNX element type as signatures spell it (`float32`).
    pub fn of_onnx(dtype: &str) -> Option<Datatype> {
        Self::ALL
            .iter()
            .find(|(_, _, onnx)| *onnx == dtype)
            .map(|(datatype, _, _)| *datatype)
    }

    /// The ONNX element type name of this datatype.
    pub fn onnx(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(datatype, _, _)| *datatype == self)
            .map_or("string", |(_, _, onnx)| onnx)
    }
}

/// A tensor's elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Numbers and booleans, typed as the datatype says.
    Values(TensorValues),
    /// BYTES elements.
    Bytes(Vec<Bytes>),
    /// BYTES elements that are a handler's JSON answers (what TorchServe's kservev2 envelope puts
    /// in `data`): JSON puts them in `data` as they are; raw bytes carry a string's UTF-8 and any
    /// other value's JSON text.
    Answers(Vec<serde_json::Value>),
}

impl TensorData {
    /// Element count.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Values(values) => values.len(),
            TensorData::Bytes(items) => items.len(),
            TensorData::Answers(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parameter value (the protocol's `InferParameter`).
#[derive(Debug, Clone, PartialEq)]
pub enum Parameter {
    Bool(bool),
    Int(i64),
    Double(f64),
    Text(String),
}

/// Named parameters of a request, a tensor or a requested output.
pub type Parameters = BTreeMap<String, Parameter>;

/// One input tensor of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub datatype: Datatype,
    /// As sent; -1 is allowed only where the protocol's clients send it (a BYTES input bound for
    /// the handler).
    pub shape: Vec<i64>,
    pub data: TensorData,
    pub parameters: Parameters,
}

/// An output the client asks for (all of the graph's when none are named).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    pub parameters: Parameters,
}

/// An inference request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    pub outputs: Vec<RequestedOutput>,
    pub parameters: Parameters,
}

/// One output tensor of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// An inference answer.
#[derive(Debug, Clone, PartialEq)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: String,
    pub outputs: Vec<OutputTensor>,
    /// How long the request waited for a worker (for the latency metrics).
    pub queue_wait: std::time::Duration,
}

/// Name, datatype and shape (-1 for a dynamic axis) of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// A model's metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// The server's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

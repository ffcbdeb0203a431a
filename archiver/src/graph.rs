//! Opening an ONNX graph with ONNX Runtime to validate it and read its [`Signature`]. Used by the
//! archiver at packing time and by `inspect`; the server builds its own sessions.

use ort::session::Session;
use ort::value::ValueType;

use crate::error::{ArchiveError, Result};
use crate::signature::{Dim, Signature, TensorSpec};

/// Reads the signature of a serialized graph. Fails with a user-facing message when the bytes are
/// not ONNX (recognising TorchScript and pickled eager models) or ONNX Runtime rejects the graph.
pub fn read_signature(
    environment: &ort::environment::Environment,
    file_name: &str,
    bytes: &[u8],
) -> Result<Signature> {
    if let Some(hint) = not_onnx_hint(bytes) {
        return Err(ArchiveError::InvalidModel(format!(
            "{file_name} is not an ONNX graph ({hint}): export it with torch.onnx.export(model, example_input, \"model.onnx\")"
        )));
    }
    let session = Session::builder(environment)
        .and_then(|builder| {
            let mut builder = builder
                .with_intra_threads(1)
                .map_err(ort::Error::<()>::from)?;
            builder.commit_from_memory(bytes)
        })
        .map_err(|error| {
            ArchiveError::InvalidModel(format!(
                "ONNX Runtime cannot load {file_name}: {}",
                one_line(&error.to_string())
            ))
        })?;
    let inputs = session
        .inputs()
        .iter()
        .map(|outlet| tensor_spec(outlet.name(), outlet.dtype()))
        .collect::<Result<Vec<_>>>()?;
    let outputs = session
        .outputs()
        .iter()
        .map(|outlet| tensor_spec(outlet.name(), outlet.dtype()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Signature { inputs, outputs })
}

fn tensor_spec(name: &str, value_type: &ValueType) -> Result<TensorSpec> {
    match value_type {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => {
            let dims = shape
                .iter()
                .enumerate()
                .map(|(index, &size)| match u64::try_from(size) {
                    Ok(size) => Dim::Fixed(size),
                    Err(_) => match dimension_symbols.get(index) {
                        Some(symbol) if !symbol.is_empty() => Dim::Symbolic(symbol.clone()),
                        _ => Dim::Unknown,
                    },
                })
                .collect();
            Ok(TensorSpec {
                name: name.to_string(),
                dtype: dtype_name(*ty).to_string(),
                shape: dims,
            })
        }
        other => Err(ArchiveError::InvalidModel(format!(
            "graph value {name:?} is a {other}, but oxserve serves only tensor inputs and outputs"
        ))),
    }
}

/// The lower-case ONNX element type name used in signatures and the tensor handler's JSON.
pub fn dtype_name(ty: ort::value::TensorElementType) -> &'static str {
    use ort::value::TensorElementType as T;
    match ty {
        T::Float32 => "float32",
        T::Float64 => "float64",
        T::Float16 => "float16",
        T::Bfloat16 => "bfloat16",
        T::Int8 => "int8",
        T::Int16 => "int16",
        T::Int32 => "int32",
        T::Int64 => "int64",
        T::Uint8 => "uint8",
        T::Uint16 => "uint16",
        T::Uint32 => "uint32",
        T::Uint64 => "uint64",
        T::Bool => "bool",
        T::String => "string",
        _ => "unsupported",
    }
}

/// Recognises the files people most often pass instead of ONNX.
fn not_onnx_hint(bytes: &[u8]) -> Option<&'static str> {
    if bytes.is_empty() {
        Some("the file is empty")
    } else {
        pytorch_file_kind(bytes)
    }
}

/// Says which PyTorch file this is, when it is one: a zip (TorchScript `.pt`, or `torch.save`'s
/// format since PyTorch 1.6) or a legacy pickle. `None` for anything else, ONNX included.
pub fn pytorch_file_kind(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"PK\x03\x04") {
        Some("it is a zip archive, as TorchScript `.pt` files and torch.save's state_dicts are")
    } else if bytes.first() == Some(&0x80) {
        Some("it looks like a pickled PyTorch model")
    } else {
        None
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

//! Host tensors to ONNX Runtime values and back.

use ort::value::{DynTensor, DynValue, Tensor, TensorElementType, ValueType};

use super::BackendError;
use crate::tensor::{HostTensor, TensorValues};

/// Moves a host tensor into an ONNX Runtime value (the data is not copied).
pub(super) fn into_ort(tensor: HostTensor) -> Result<DynTensor, BackendError> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&dim| dim as i64).collect();
    let built = match tensor.values {
        TensorValues::F32(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
        TensorValues::F16(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
        TensorValues::F64(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
        TensorValues::I64(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
        TensorValues::I32(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
        TensorValues::U8(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
        TensorValues::I8(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
        TensorValues::Bool(data) => Tensor::from_array((shape, data)).map(Tensor::upcast),
    };
    built.map_err(|error| BackendError::setup("cannot build an input tensor", error))
}

/// Copies an ONNX Runtime output into a host tensor.
pub(super) fn from_ort(value: &DynValue) -> Result<HostTensor, BackendError> {
    let unreadable = |error: ort::Error| BackendError::setup("cannot read an output", error);
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(BackendError::Setup(
            "the graph returned a non-tensor output".into(),
        ));
    };
    macro_rules! extract {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(unreadable)?;
            (
                shape
                    .iter()
                    .map(|&dim| dim.max(0) as usize)
                    .collect::<Vec<_>>(),
                TensorValues::$variant(data.to_vec()),
            )
        }};
    }
    let (shape, values) = match ty {
        TensorElementType::Float32 => extract!(f32, F32),
        TensorElementType::Float16 => extract!(half::f16, F16),
        TensorElementType::Float64 => extract!(f64, F64),
        TensorElementType::Int64 => extract!(i64, I64),
        TensorElementType::Int32 => extract!(i32, I32),
        TensorElementType::Uint8 => extract!(u8, U8),
        TensorElementType::Int8 => extract!(i8, I8),
        TensorElementType::Bool => extract!(bool, Bool),
        other => {
            return Err(BackendError::Setup(format!(
                "output element type {other} is not supported"
            )));
        }
    };
    Ok(HostTensor { shape, values })
}

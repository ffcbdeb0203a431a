//! The conversion's check: the exported graph runs in ONNX Runtime (the runtime the server uses)
//! on the random input PyTorch ran on, and every output must match PyTorch's within a tolerance.
//! Tensors come from the export script as raw little-endian files described in its report.

use std::path::PathBuf;

use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use serde::Deserialize;

use crate::error::{ArchiveError, Result};

/// Relative part of the tolerance: `|ort - torch| <= atol + RTOL * |torch|`.
pub const RTOL: f64 = 1e-3;
/// Absolute part of the tolerance, scaled by the output's largest magnitude (at least 1).
pub const ATOL_SCALE: f64 = 1e-4;
/// Largest tensor file the check reads (the check input and outputs are small).
const MAX_TENSOR_BYTES: u64 = 2 << 30;

/// A tensor the script saved.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub file: PathBuf,
}

/// How far ONNX Runtime's outputs are from PyTorch's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    pub max_abs_diff: f64,
    pub max_rel_diff: f64,
    /// One line per output, for `--verbose`.
    pub details: Vec<String>,
}

/// Runs the graph on the saved inputs and compares with the saved outputs; an error says which
/// output differs and by how much.
pub fn compare(
    environment: &ort::environment::Environment,
    graph: &[u8],
    inputs: &[SavedTensor],
    expected: &[SavedTensor],
) -> Result<Agreement> {
    let fail = |message: String| ArchiveError::Conversion(message);
    let mut session = Session::builder(environment)
        .and_then(|mut builder| builder.commit_from_memory(graph))
        .map_err(|error| {
            fail(format!(
                "ONNX Runtime cannot load the exported graph: {error}"
            ))
        })?;
    let mut feeds: Vec<(String, DynValue)> = Vec::new();
    for input in inputs {
        feeds.push((input.name.clone(), to_value(input)?));
    }
    let outputs = session.run(feeds).map_err(|error| {
        fail(format!(
            "ONNX Runtime cannot run the exported graph: {error}"
        ))
    })?;
    if outputs.len() != expected.len() {
        return Err(fail(format!(
            "the exported graph has {} outputs, but the model returns {}",
            outputs.len(),
            expected.len()
        )));
    }
    let mut agreement = Agreement::default();
    for (index, want) in expected.iter().enumerate() {
        let (shape, got) = values(&outputs[index])?;
        if shape != want.shape {
            return Err(fail(format!(
                "output {} has shape {shape:?} in ONNX Runtime but {:?} in PyTorch: the exported graph is not the model",
                want.name, want.shape
            )));
        }
        let reference = read_as_f64(want)?;
        let scale = reference.iter().fold(1f64, |acc, v| acc.max(v.abs()));
        let atol = ATOL_SCALE * scale;
        let (mut max_abs, mut max_rel, mut worst) = (0f64, 0f64, 0f64);
        for (&a, &b) in got.iter().zip(&reference) {
            let diff = if a.is_nan() && b.is_nan() {
                0.0
            } else {
                (a - b).abs()
            };
            let diff = if diff.is_nan() { f64::INFINITY } else { diff };
            max_abs = max_abs.max(diff);
            if b != 0.0 {
                max_rel = max_rel.max(diff / b.abs());
            }
            worst = worst.max(diff / (atol + RTOL * b.abs()));
        }
        agreement.details.push(format!(
            "output {} {:?}: max abs diff {max_abs:.3e}, max rel diff {max_rel:.3e}",
            want.name, want.shape
        ));
        agreement.max_abs_diff = agreement.max_abs_diff.max(max_abs);
        agreement.max_rel_diff = agreement.max_rel_diff.max(max_rel);
        if worst > 1.0 {
            return Err(fail(format!(
                "ONNX Runtime and PyTorch disagree on output {}: max abs diff {max_abs:.3e}, max rel diff {max_rel:.3e}, beyond the tolerance |diff| <= {atol:.1e} + {RTOL:.0e}*|PyTorch's value|; the archive was not written",
                want.name
            )));
        }
    }
    Ok(agreement)
}

/// The tolerance as printed to the user.
pub fn tolerance_text() -> String {
    format!("|diff| <= {ATOL_SCALE:.0e}*max(1, max|value|) + {RTOL:.0e}*|value|")
}

fn read_bytes(tensor: &SavedTensor, element_size: u64) -> Result<Vec<u8>> {
    let count = tensor
        .shape
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .and_then(|count| count.checked_mul(element_size))
        .filter(|&bytes| bytes <= MAX_TENSOR_BYTES)
        .ok_or_else(|| {
            ArchiveError::Conversion(format!("check tensor {} is too large", tensor.name))
        })?;
    let bytes = std::fs::read(&tensor.file).map_err(|error| {
        ArchiveError::io(format!("cannot read {}", tensor.file.display()), error)
    })?;
    if bytes.len() as u64 != count {
        return Err(ArchiveError::Conversion(format!(
            "check tensor {} holds {} bytes, not the {count} its shape needs",
            tensor.name,
            bytes.len()
        )));
    }
    Ok(bytes)
}

macro_rules! decode {
    ($bytes:expr, $t:ty) => {
        $bytes
            .chunks_exact(std::mem::size_of::<$t>())
            .map(|chunk| <$t>::from_le_bytes(chunk.try_into().unwrap_or_default()))
            .collect::<Vec<$t>>()
    };
}

fn to_value(tensor: &SavedTensor) -> Result<DynValue> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&dim| dim as i64).collect();
    let built =
        match tensor.dtype.as_str() {
            "float32" => Tensor::from_array((shape, decode!(read_bytes(tensor, 4)?, f32)))
                .map(Tensor::into_dyn),
            "float64" => Tensor::from_array((shape, decode!(read_bytes(tensor, 8)?, f64)))
                .map(Tensor::into_dyn),
            "int64" => Tensor::from_array((shape, decode!(read_bytes(tensor, 8)?, i64)))
                .map(Tensor::into_dyn),
            "int32" => Tensor::from_array((shape, decode!(read_bytes(tensor, 4)?, i32)))
                .map(Tensor::into_dyn),
            "int8" => Tensor::from_array((shape, decode!(read_bytes(tensor, 1)?, i8)))
                .map(Tensor::into_dyn),
            "uint8" => Tensor::from_array((shape, read_bytes(tensor, 1)?)).map(Tensor::into_dyn),
            "bool" => Tensor::from_array((
                shape,
                read_bytes(tensor, 1)?
                    .iter()
                    .map(|&b| b != 0)
                    .collect::<Vec<bool>>(),
            ))
            .map(Tensor::into_dyn),
            other => {
                return Err(ArchiveError::Conversion(format!(
                "the check cannot feed a {other} input ({}); convert with a float32/int64 input",
                tensor.name
            )))
            }
        };
    built.map_err(|error| {
        ArchiveError::Conversion(format!("cannot build check input {}: {error}", tensor.name))
    })
}

/// Reads a saved tensor as f64 for the comparison.
fn read_as_f64(tensor: &SavedTensor) -> Result<Vec<f64>> {
    Ok(match tensor.dtype.as_str() {
        "float32" => decode!(read_bytes(tensor, 4)?, f32)
            .into_iter()
            .map(f64::from)
            .collect(),
        "float64" => decode!(read_bytes(tensor, 8)?, f64),
        "int64" => decode!(read_bytes(tensor, 8)?, i64)
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        "int32" => decode!(read_bytes(tensor, 4)?, i32)
            .into_iter()
            .map(f64::from)
            .collect(),
        "int8" => decode!(read_bytes(tensor, 1)?, i8)
            .into_iter()
            .map(f64::from)
            .collect(),
        "uint8" | "bool" => read_bytes(tensor, 1)?.into_iter().map(f64::from).collect(),
        other => {
            return Err(ArchiveError::Conversion(format!(
                "the check cannot compare a {other} output ({})",
                tensor.name
            )))
        }
    })
}

/// An ONNX Runtime output as (shape, values as f64).
fn values(value: &DynValue) -> Result<(Vec<u64>, Vec<f64>)> {
    let unreadable =
        |error: ort::Error| ArchiveError::Conversion(format!("cannot read an output: {error}"));
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(ArchiveError::Conversion(
            "the exported graph returned a non-tensor output".into(),
        ));
    };
    macro_rules! extract {
        ($t:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(unreadable)?;
            (
                shape
                    .iter()
                    .map(|&dim| dim.max(0) as u64)
                    .collect::<Vec<_>>(),
                data.iter().map(|&v| v as f64).collect::<Vec<f64>>(),
            )
        }};
    }
    Ok(match ty {
        TensorElementType::Float32 => extract!(f32),
        TensorElementType::Float64 => extract!(f64),
        TensorElementType::Int64 => extract!(i64),
        TensorElementType::Int32 => extract!(i32),
        TensorElementType::Int8 => extract!(i8),
        TensorElementType::Uint8 => extract!(u8),
        TensorElementType::Bool => {
            let (shape, data) = value.try_extract_tensor::<bool>().map_err(unreadable)?;
            (
                shape.iter().map(|&dim| dim.max(0) as u64).collect(),
                data.iter().map(|&v| f64::from(u8::from(v))).collect(),
            )
        }
        other => {
            return Err(ArchiveError::Conversion(format!(
                "the check cannot compare a {other} output"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &std::path::Path, name: &str, shape: Vec<u64>, values: &[f32]) -> SavedTensor {
        let file = dir.join(format!("{name}.bin"));
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&file, bytes).expect("write");
        SavedTensor {
            name: name.to_string(),
            dtype: "float32".to_string(),
            shape,
            file,
        }
    }

    /// tiny_mlp.onnx on zeros gives its second layer's bias run through the first: whatever it
    /// is, a reference far from it is refused, and one of another shape too.
    #[test]
    fn outputs_beyond_the_tolerance_or_of_another_shape_are_refused() {
        let loaded = crate::runtime::init(None).expect("ONNX Runtime");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let graph = std::fs::read(root.join("tests/fixtures/tiny_mlp.onnx")).expect("fixture");
        let dir = tempfile::tempdir().expect("tempdir");
        let input = saved(dir.path(), "input", vec![2, 4], &[0.0; 8]);
        let far = saved(dir.path(), "output", vec![2, 3], &[1000.0; 6]);
        let error = compare(
            loaded.environment,
            &graph,
            std::slice::from_ref(&input),
            &[far],
        )
        .expect_err("refused")
        .to_string();
        assert!(
            error.contains("disagree on output output") && error.contains("max abs diff"),
            "{error}"
        );
        let wrong_shape = saved(dir.path(), "output", vec![2, 2], &[0.0; 4]);
        let error = compare(loaded.environment, &graph, &[input], &[wrong_shape])
            .expect_err("refused")
            .to_string();
        assert!(error.contains("has shape [2, 3]"), "{error}");
    }
}

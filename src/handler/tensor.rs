//! The `tensor` handler: any ONNX graph, JSON in and out. A request names each graph input:
//!
//! ```json
//! {"inputs": {"a": [[1.0, 2.0, 3.0]], "b": {"shape": [1, 3], "data": [1, 2, 3]}}}
//! ```
//!
//! (the `inputs` wrapper is optional, and a single-input graph also takes a bare nested list).
//! Inputs include the batch axis when the graph has one, so a request may carry several rows.
//! The answer maps every graph output to a nested list of this request's rows.

use std::collections::BTreeMap;

use oxserve_archiver::{Signature, TensorSpec};

use super::{json_float, Prepared};
use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

/// Largest tensor one request may describe, in elements (keeps a hostile shape from allocating).
pub(crate) const MAX_ELEMENTS: usize = 64 << 20;

/// Parses a request body into graph inputs, checked against the signature.
pub fn parse_request(body: &[u8], signature: &Signature) -> Result<Prepared, ServeError> {
    let bad = |message: String| ServeError::BadRequest(message);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            "the request body is empty: send JSON tensors for the graph inputs".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| bad(format!("the request body is not valid JSON: {error}")))?;
    let named: BTreeMap<String, serde_json::Value> = match value {
        serde_json::Value::Object(mut map) => {
            if let Some(serde_json::Value::Object(inner)) = map.remove("inputs") {
                inner.into_iter().collect()
            } else {
                map.into_iter().collect()
            }
        }
        array @ serde_json::Value::Array(_) if signature.inputs.len() == 1 => {
            BTreeMap::from([(signature.inputs[0].name.clone(), array)])
        }
        _ => {
            return Err(bad(
                "send a JSON object mapping each graph input name to a tensor".into(),
            ))
        }
    };
    for name in named.keys() {
        if signature.input(name).is_none() {
            let known: Vec<&str> = signature
                .inputs
                .iter()
                .map(|spec| spec.name.as_str())
                .collect();
            return Err(bad(format!(
                "the graph has no input {name:?} (inputs: {})",
                known.join(", ")
            )));
        }
    }
    let mut inputs = Vec::with_capacity(signature.inputs.len());
    let mut rows: Option<usize> = None;
    for spec in &signature.inputs {
        let value = named
            .get(&spec.name)
            .ok_or_else(|| bad(format!("input {:?} is missing ({spec})", spec.name)))?;
        let tensor = parse_tensor(value, spec)?;
        if spec.has_dynamic_batch() {
            let count = tensor.rows();
            if rows.is_some_and(|rows| rows != count) {
                return Err(bad(
                    "all inputs must have the same number of rows on the batch axis".into(),
                ));
            }
            rows = Some(count);
        }
        inputs.push((spec.name.clone(), tensor));
    }
    Ok(Prepared {
        inputs,
        rows: rows.unwrap_or(1),
        text: None,
    })
}

fn parse_tensor(value: &serde_json::Value, spec: &TensorSpec) -> Result<HostTensor, ServeError> {
    let bad = |message: String| ServeError::BadRequest(format!("input {:?}: {message}", spec.name));
    let (shape, flat): (Vec<usize>, Vec<&serde_json::Value>) = match value {
        serde_json::Value::Object(map) if map.contains_key("shape") && map.contains_key("data") => {
            let shape: Vec<usize> = serde_json::from_value(map["shape"].clone())
                .map_err(|_| bad("shape must be a list of non-negative integers".into()))?;
            let mut flat = Vec::new();
            flatten(&map["data"], &mut flat);
            (shape, flat)
        }
        other => {
            let shape = nested_shape(other).map_err(bad)?;
            let mut flat = Vec::new();
            flatten(other, &mut flat);
            (shape, flat)
        }
    };
    let count = HostTensor::element_count(&shape)
        .filter(|&count| count <= MAX_ELEMENTS)
        .ok_or_else(|| {
            bad(format!(
                "shape {shape:?} is too large (at most {MAX_ELEMENTS} elements)"
            ))
        })?;
    if count != flat.len() {
        return Err(bad(format!(
            "shape {shape:?} needs {count} values, {} were given",
            flat.len()
        )));
    }
    if shape.len() != spec.shape.len() {
        return Err(bad(format!(
            "needs {} dimensions ({spec}), got shape {shape:?}",
            spec.shape.len()
        )));
    }
    for (axis, (dim, &size)) in spec.shape.iter().zip(&shape).enumerate() {
        if dim.fixed().is_some_and(|fixed| fixed as usize != size) {
            return Err(bad(format!(
                "axis {axis} must be {dim} ({spec}), got shape {shape:?}"
            )));
        }
    }
    let values = convert(&flat, &spec.dtype).map_err(bad)?;
    Ok(HostTensor { shape, values })
}

/// The shape of a nested list; every sibling must agree.
fn nested_shape(value: &serde_json::Value) -> Result<Vec<usize>, String> {
    match value {
        serde_json::Value::Array(items) => {
            let Some(first) = items.first() else {
                return Ok(vec![0]);
            };
            let inner = nested_shape(first)?;
            for item in &items[1..] {
                if nested_shape(item)? != inner {
                    return Err(
                        "nested lists are ragged: every row must have the same shape".into(),
                    );
                }
            }
            let mut shape = vec![items.len()];
            shape.extend(inner);
            Ok(shape)
        }
        _ => Ok(Vec::new()),
    }
}

pub(crate) fn flatten<'v>(value: &'v serde_json::Value, out: &mut Vec<&'v serde_json::Value>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// JSON scalars as elements of the ONNX element type `dtype`.
pub(crate) fn convert(flat: &[&serde_json::Value], dtype: &str) -> Result<TensorValues, String> {
    fn each<T>(
        flat: &[&serde_json::Value],
        read: impl Fn(&serde_json::Value) -> Option<T>,
        what: &str,
    ) -> Result<Vec<T>, String> {
        flat.iter()
            .map(|value| read(value).ok_or_else(|| format!("{value} is not a valid {what}")))
            .collect()
    }
    let int = |value: &serde_json::Value| value.as_i64();
    Ok(match dtype {
        "float32" => TensorValues::F32(each(flat, |v| v.as_f64().map(|f| f as f32), "float32")?),
        "float16" => TensorValues::F16(each(
            flat,
            |v| v.as_f64().map(half::f16::from_f64),
            "float16",
        )?),
        "float64" => TensorValues::F64(each(flat, serde_json::Value::as_f64, "float64")?),
        "int64" => TensorValues::I64(each(flat, int, "int64")?),
        "int32" => TensorValues::I32(each(
            flat,
            |v| int(v).and_then(|i| i32::try_from(i).ok()),
            "int32",
        )?),
        "uint8" => TensorValues::U8(each(
            flat,
            |v| int(v).and_then(|i| u8::try_from(i).ok()),
            "uint8",
        )?),
        "int8" => TensorValues::I8(each(
            flat,
            |v| int(v).and_then(|i| i8::try_from(i).ok()),
            "int8",
        )?),
        "bool" => TensorValues::Bool(each(
            flat,
            |v| v.as_bool().or_else(|| v.as_i64().map(|i| i != 0)),
            "bool",
        )?),
        other => {
            return Err(format!(
                "element type {other} is not supported by the tensor handler"
            ))
        }
    })
}

/// Maps each graph output to a nested list.
pub fn answer(outputs: &BTreeMap<String, HostTensor>, signature: &Signature) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for spec in &signature.outputs {
        if let Some(tensor) = outputs.get(&spec.name) {
            map.insert(spec.name.clone(), nest(tensor));
        }
    }
    serde_json::Value::Object(map)
}

fn nest(tensor: &HostTensor) -> serde_json::Value {
    build_nested(&tensor.shape, &json_values(&tensor.values))
}

/// A tensor's elements as JSON scalars, row-major.
pub(crate) fn json_values(values: &TensorValues) -> Vec<serde_json::Value> {
    match values {
        TensorValues::F32(data) => data.iter().map(|&v| json_float(v)).collect(),
        TensorValues::F16(data) => data.iter().map(|&v| json_float(v.to_f32())).collect(),
        TensorValues::F64(data) => data
            .iter()
            .map(|&v| {
                serde_json::Number::from_f64(v)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            })
            .collect(),
        TensorValues::I64(data) => data.iter().map(|&v| v.into()).collect(),
        TensorValues::I32(data) => data.iter().map(|&v| v.into()).collect(),
        TensorValues::U8(data) => data.iter().map(|&v| v.into()).collect(),
        TensorValues::I8(data) => data.iter().map(|&v| v.into()).collect(),
        TensorValues::Bool(data) => data.iter().map(|&v| v.into()).collect(),
    }
}

fn build_nested(shape: &[usize], flat: &[serde_json::Value]) -> serde_json::Value {
    match shape.split_first() {
        None => flat.first().cloned().unwrap_or(serde_json::Value::Null),
        Some((&count, rest)) => {
            let stride: usize = rest.iter().product();
            serde_json::Value::Array(
                (0..count)
                    .map(|index| build_nested(rest, &flat[index * stride..(index + 1) * stride]))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxserve_archiver::Dim;

    fn signature() -> Signature {
        let spec = |name: &str, dtype: &str| TensorSpec {
            name: name.into(),
            dtype: dtype.into(),
            shape: vec![Dim::Symbolic("batch".into()), Dim::Fixed(3)],
        };
        Signature {
            inputs: vec![spec("a", "float32"), spec("b", "int64")],
            outputs: vec![spec("sum", "float32")],
        }
    }

    #[test]
    fn nested_and_flat_forms_parse() {
        let body = br#"{"inputs": {"a": [[1, 2, 3], [4, 5, 6]], "b": {"shape": [2, 3], "data": [1, 1, 1, 2, 2, 2]}}}"#;
        let prepared = parse_request(body, &signature()).expect("parses");
        assert_eq!(prepared.rows, 2);
        assert_eq!(
            prepared.inputs[1].1.values,
            TensorValues::I64(vec![1, 1, 1, 2, 2, 2])
        );
    }

    #[test]
    fn wrong_shapes_and_types_are_bad_requests() {
        for body in [
            &br#"{"a": [[1, 2]], "b": [[1, 2, 3]]}"#[..],
            br#"{"a": [[1, 2, 3]], "b": [[1.5, 2, 3]]}"#,
            br#"{"a": [[1, 2, 3]]}"#,
            br#"{"a": [[1, 2, 3]], "b": [[1, 2, 3]], "c": 1}"#,
            br#"{"a": [[1, 2, 3], [1]], "b": [[1, 2, 3]]}"#,
            br#"{"a": {"shape": [4294967296, 4294967296], "data": []}, "b": [[1, 2, 3]]}"#,
            b"not json",
            b"",
        ] {
            let error = parse_request(body, &signature()).expect_err("refused");
            assert_eq!(error.status(), 400, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn answers_nest_by_shape() {
        let outputs = BTreeMap::from([(
            "sum".to_string(),
            HostTensor {
                shape: vec![1, 3],
                values: TensorValues::F32(vec![1.0, 2.5, 3.0]),
            },
        )]);
        assert_eq!(
            answer(&outputs, &signature()),
            serde_json::json!({"sum": [[1.0, 2.5, 3.0]]})
        );
    }
}

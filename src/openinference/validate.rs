//! A v2 request's inputs checked against the model's graph signature and turned into the
//! model's request items. Two kinds of request:
//!
//! - Raw tensors (every input a graph input of the graph's datatype): checked (names, datatype,
//!   rank, fixed dimensions, element count within [`MAX_ELEMENTS`] and equal to the shape's
//!   product) and sent as one item of typed graph inputs, which skips the handler.
//! - BYTES inputs (an image, or any bytes the handler takes, as TorchServe's kservev2 envelope
//!   hands `data` to the handler): every element is one item for the handler, as a REST body is.

use oxserve_archiver::{Signature, TensorSpec};

use super::{Datatype, InferRequest, InputTensor, TensorData};
use crate::error::ServeError;
use crate::handler::{ItemInput, Prepared, RequestItem};
use crate::tensor::HostTensor;

/// Most dimensions a request tensor may declare.
pub const MAX_RANK: usize = 16;

/// Most elements a request tensor may declare (checked before anything is sized by the shape):
/// the tensor handler's cap.
pub const MAX_ELEMENTS: usize = crate::handler::tensor::MAX_ELEMENTS;

/// What a request becomes: the model's items and, per item, the request input it came from.
#[derive(Debug)]
pub struct Items {
    pub items: Vec<ItemInput>,
    /// Sent through the handler: the name of the input each item came from, in item order.
    pub handler_inputs: Option<Vec<String>>,
}

/// Checks `request` against `signature` and builds the model's items.
pub fn items(request: InferRequest, signature: &Signature) -> Result<Items, ServeError> {
    if request.inputs.is_empty() {
        return Err(ServeError::BadRequest("the request has no inputs".into()));
    }
    if request
        .inputs
        .iter()
        .any(|input| input.datatype == Datatype::Bytes)
    {
        return handler_items(request.inputs);
    }
    let prepared = raw_tensors(request.inputs, signature)?;
    Ok(Items {
        items: vec![ItemInput::Tensors(prepared)],
        handler_inputs: None,
    })
}

/// Every BYTES element becomes one handler item.
fn handler_items(inputs: Vec<InputTensor>) -> Result<Items, ServeError> {
    let mut items = Vec::new();
    let mut names = Vec::new();
    for input in inputs {
        let elements = match input.data {
            TensorData::Bytes(elements) if input.datatype == Datatype::Bytes => elements,
            _ => {
                return Err(ServeError::BadRequest(format!(
                    "input {:?} is {}: a request with BYTES inputs for the handler may hold only BYTES inputs",
                    input.name,
                    input.datatype.name()
                )))
            }
        };
        check_shape(&input.shape, elements.len(), &input.name, true)?;
        for bytes in elements {
            items.push(ItemInput::Bytes(RequestItem {
                bytes,
                content_type: None,
            }));
            names.push(input.name.clone());
        }
    }
    if items.is_empty() {
        return Err(ServeError::BadRequest(
            "the BYTES inputs hold no elements".into(),
        ));
    }
    Ok(Items {
        items,
        handler_inputs: Some(names),
    })
}

/// Checks raw tensors against the graph's inputs and orders them as the graph does.
fn raw_tensors(inputs: Vec<InputTensor>, signature: &Signature) -> Result<Prepared, ServeError> {
    let known = || {
        let names: Vec<&str> = signature
            .inputs
            .iter()
            .map(|spec| spec.name.as_str())
            .collect();
        names.join(", ")
    };
    for (index, input) in inputs.iter().enumerate() {
        if signature.input(&input.name).is_none() {
            return Err(ServeError::BadRequest(format!(
                "the model has no input {:?} (inputs: {})",
                input.name,
                known()
            )));
        }
        if inputs[..index].iter().any(|other| other.name == input.name) {
            return Err(ServeError::BadRequest(format!(
                "input {:?} is given twice",
                input.name
            )));
        }
    }
    let mut inputs: Vec<Option<InputTensor>> = inputs.into_iter().map(Some).collect();
    let mut prepared = Vec::with_capacity(signature.inputs.len());
    let mut rows: Option<usize> = None;
    for spec in &signature.inputs {
        let input = inputs
            .iter_mut()
            .find(|input| input.as_ref().is_some_and(|input| input.name == spec.name))
            .and_then(Option::take)
            .ok_or_else(|| {
                ServeError::BadRequest(format!("input {:?} is missing ({spec})", spec.name))
            })?;
        let tensor = checked_tensor(input, spec)?;
        if spec.has_dynamic_batch() {
            let count = tensor.rows();
            if rows.is_some_and(|rows| rows != count) {
                return Err(ServeError::BadRequest(
                    "all inputs must have the same size on the batch axis".into(),
                ));
            }
            rows = Some(count);
        }
        prepared.push((spec.name.clone(), tensor));
    }
    Ok(Prepared {
        inputs: prepared,
        rows: rows.unwrap_or(1),
        text: None,
    })
}

/// One input checked against its graph input. A tensor without the graph's dynamic batch axis
/// (TorchServe's examples send `[1, 28, 28]` to a `[batch, 1, 28, 28]` graph) gets one.
fn checked_tensor(input: InputTensor, spec: &TensorSpec) -> Result<HostTensor, ServeError> {
    let bad = |message: String| ServeError::BadRequest(format!("input {:?}: {message}", spec.name));
    let expected = Datatype::of_onnx(&spec.dtype).ok_or_else(|| {
        bad(format!(
            "the graph's element type {} is not served",
            spec.dtype
        ))
    })?;
    if input.datatype != expected {
        return Err(bad(format!(
            "datatype {} given, the model takes {}",
            input.datatype.name(),
            expected.name()
        )));
    }
    let mut shape = check_shape(&input.shape, input.data.len(), &spec.name, false)?;
    if shape.len() + 1 == spec.shape.len() && spec.has_dynamic_batch() {
        shape.insert(0, 1);
    }
    if shape.len() != spec.shape.len() {
        return Err(bad(format!(
            "shape {:?} has {} dimensions, the model takes {} ({spec})",
            input.shape,
            input.shape.len(),
            spec.shape.len()
        )));
    }
    for (axis, (dim, &size)) in spec.shape.iter().zip(&shape).enumerate() {
        if dim.fixed().is_some_and(|fixed| fixed != size as u64) {
            return Err(bad(format!(
                "axis {axis} must be {dim} ({spec}), the shape is {:?}",
                input.shape
            )));
        }
    }
    let values = match input.data {
        TensorData::Values(values) if values.dtype() == spec.dtype => values,
        _ => {
            return Err(bad(format!(
                "the data are not {} elements",
                expected.name()
            )))
        }
    };
    Ok(HostTensor { shape, values })
}

/// A shape within the caps whose element count is `count`. BYTES inputs bound for the handler
/// may say -1 (TorchServe's kservev2 examples do) and are then not checked against `count`.
fn check_shape(
    shape: &[i64],
    count: usize,
    name: &str,
    for_handler: bool,
) -> Result<Vec<usize>, ServeError> {
    let bad = |message: String| ServeError::BadRequest(format!("input {name:?}: {message}"));
    if shape.len() > MAX_RANK {
        return Err(bad(format!(
            "shape has {} dimensions, at most {MAX_RANK} are allowed",
            shape.len()
        )));
    }
    if for_handler && shape.contains(&-1) {
        return Ok(Vec::new());
    }
    let dims: Vec<usize> = shape
        .iter()
        .map(|&dim| usize::try_from(dim))
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("shape {shape:?} has a negative dimension")))?;
    let declared = HostTensor::element_count(&dims)
        .filter(|&declared| declared <= MAX_ELEMENTS)
        .ok_or_else(|| {
            bad(format!(
                "shape {shape:?} is too large (at most {MAX_ELEMENTS} elements)"
            ))
        })?;
    if declared != count {
        return Err(bad(format!(
            "shape {shape:?} needs {declared} elements, {count} were given"
        )));
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorValues;
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

    fn input(name: &str, datatype: Datatype, shape: &[i64], data: TensorData) -> InputTensor {
        InputTensor {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
            data,
            parameters: Default::default(),
        }
    }

    fn floats(count: usize) -> TensorData {
        TensorData::Values(TensorValues::F32(vec![1.0; count]))
    }

    fn ints(count: usize) -> TensorData {
        TensorData::Values(TensorValues::I64(vec![1; count]))
    }

    fn request(inputs: Vec<InputTensor>) -> InferRequest {
        InferRequest {
            inputs,
            ..Default::default()
        }
    }

    #[test]
    fn raw_tensors_become_one_item_in_graph_order() {
        let items = items(
            request(vec![
                input("b", Datatype::Int64, &[2, 3], ints(6)),
                input("a", Datatype::Fp32, &[2, 3], floats(6)),
            ]),
            &signature(),
        )
        .expect("valid");
        let [ItemInput::Tensors(prepared)] = items.items.as_slice() else {
            panic!("one tensor item");
        };
        assert_eq!(prepared.rows, 2);
        assert_eq!(prepared.inputs[0].0, "a");
        assert!(items.handler_inputs.is_none());
    }

    #[test]
    fn wrong_names_datatypes_and_shapes_are_bad_requests() {
        let a = || input("a", Datatype::Fp32, &[1, 3], floats(3));
        let b = || input("b", Datatype::Int64, &[1, 3], ints(3));
        for inputs in [
            vec![a()],
            vec![a(), b(), input("c", Datatype::Fp32, &[1], floats(1))],
            vec![a(), a(), b()],
            vec![input("a", Datatype::Int64, &[1, 3], ints(3)), b()],
            vec![input("a", Datatype::Fp32, &[1, 4], floats(4)), b()],
            vec![input("a", Datatype::Fp32, &[1, 3], floats(2)), b()],
            vec![input("a", Datatype::Fp32, &[-1, 3], floats(3)), b()],
            vec![
                input("a", Datatype::Fp32, &[1 << 40, 1 << 40], floats(3)),
                b(),
            ],
            vec![input("a", Datatype::Fp32, &[1; 17], floats(1)), b()],
            vec![a(), input("b", Datatype::Int64, &[2, 3], ints(6))],
            vec![a(), input("b", Datatype::Int64, &[1, 3], floats(3))],
            vec![],
        ] {
            let error = items(request(inputs.clone()), &signature()).expect_err("refused");
            assert_eq!(error.status(), 400, "{inputs:?}");
        }
    }

    #[test]
    fn a_missing_batch_axis_is_added() {
        let items = items(
            request(vec![
                input("a", Datatype::Fp32, &[3], floats(3)),
                input("b", Datatype::Int64, &[3], ints(3)),
            ]),
            &signature(),
        )
        .expect("valid");
        let [ItemInput::Tensors(prepared)] = items.items.as_slice() else {
            panic!("one tensor item");
        };
        assert_eq!(prepared.inputs[0].1.shape, vec![1, 3]);
    }

    #[test]
    fn bytes_elements_go_to_the_handler_one_item_each() {
        let bytes = TensorData::Bytes(vec!["x".into(), "y".into()]);
        let items = items(
            request(vec![input("image", Datatype::Bytes, &[-1], bytes)]),
            &signature(),
        )
        .expect("valid");
        assert_eq!(items.items.len(), 2);
        assert_eq!(
            items.handler_inputs,
            Some(vec!["image".to_string(), "image".to_string()])
        );
        let mixed = vec![
            input(
                "image",
                Datatype::Bytes,
                &[1],
                TensorData::Bytes(vec!["x".into()]),
            ),
            input("a", Datatype::Fp32, &[1, 3], floats(3)),
        ];
        assert_eq!(
            super::items(request(mixed), &signature())
                .expect_err("refused")
                .status(),
            400
        );
    }
}

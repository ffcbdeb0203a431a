//! The protocol's calls on the core: infer (through the model's one entry, so v2 requests queue
//! and batch with every other transport's), model and server metadata, readiness.

use oxserve_archiver::{Dim, Signature, TensorSpec};

use super::validate::{self, Items};
use super::{
    Datatype, InferRequest, InferResponse, ModelMetadata, OutputTensor, RequestedOutput,
    ServerMetadata, TensorData, TensorMetadata,
};
use crate::batching::Answer;
use crate::error::ServeError;
use crate::model::ModelVersion;
use crate::registry::Registry;
use crate::tensor::{HostTensor, TensorValues};

/// Runs `request` on `model`. `request_id` is the transport's id for the request; the answer's
/// id is the request's own `id` when it has one, else this (TorchServe's envelope does the same).
pub async fn infer(
    model: &ModelVersion,
    request: InferRequest,
    request_id: String,
) -> Result<InferResponse, ServeError> {
    let id = request
        .id
        .clone()
        .filter(|id| !id.trim().is_empty())
        .unwrap_or_else(|| request_id.clone());
    let requested = request.outputs.clone();
    let signature = model.handler().signature();
    let Items {
        items,
        handler_inputs,
    } = validate::items(request, signature)?;
    let produced: Vec<String> = match &handler_inputs {
        Some(names) => names.clone(),
        None => signature
            .outputs
            .iter()
            .map(|spec| spec.name.clone())
            .collect(),
    };
    let wanted = wanted_outputs(&requested, &produced)?;
    let inferred = model.call(items, Some(request_id)).await?;
    let outputs = match handler_inputs {
        Some(names) => envelope(inferred.answers, &names)?
            .into_iter()
            .filter(|output| wanted.contains(&output.name))
            .collect(),
        None => {
            let Some(Answer::Tensors(mut tensors)) = inferred.answers.into_iter().next() else {
                return Err(ServeError::Internal(
                    "a tensor request was not answered with tensors".into(),
                ));
            };
            let mut outputs = Vec::with_capacity(wanted.len());
            for name in &wanted {
                let tensor = tensors.remove(name).ok_or_else(|| {
                    ServeError::Internal(format!("the graph did not return output {name:?}"))
                })?;
                outputs.push(output_tensor(name.clone(), tensor)?);
            }
            outputs
        }
    };
    Ok(InferResponse {
        model_name: model.name.clone(),
        model_version: model.version.clone(),
        id,
        outputs,
        queue_wait: inferred.queue_wait,
    })
}

/// The outputs to send, in the order asked for (every produced one when none is named).
fn wanted_outputs(
    requested: &[RequestedOutput],
    produced: &[String],
) -> Result<Vec<String>, ServeError> {
    if requested.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for name in produced {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        return Ok(names);
    }
    requested
        .iter()
        .map(|output| {
            if produced.contains(&output.name) {
                Ok(output.name.clone())
            } else {
                Err(ServeError::BadRequest(format!(
                    "the model has no output {:?} (outputs: {})",
                    output.name,
                    produced.join(", ")
                )))
            }
        })
        .collect()
}

fn output_tensor(name: String, tensor: HostTensor) -> Result<OutputTensor, ServeError> {
    let datatype = Datatype::of_onnx(tensor.values.dtype())
        .ok_or_else(|| ServeError::Internal(format!("output {name} has no protocol datatype")))?;
    Ok(OutputTensor {
        name,
        datatype,
        shape: tensor.shape.iter().map(|&dim| dim as i64).collect(),
        data: TensorData::Values(tensor.values),
    })
}

/// Handler answers as TorchServe's kservev2 envelope returns them: per input, one output named
/// after it holding its answers flattened (numpy's `flatten`), typed by what they hold (INT64,
/// FP64, BOOL, else BYTES), with shape `[count]`.
fn envelope(answers: Vec<Answer>, inputs: &[String]) -> Result<Vec<OutputTensor>, ServeError> {
    let mut grouped: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    for (answer, input) in answers.into_iter().zip(inputs) {
        let Answer::Json(value) = answer else {
            return Err(ServeError::Internal(
                "a handler item was answered with raw tensors".into(),
            ));
        };
        let position = match grouped.iter().position(|(name, _)| name == input) {
            Some(position) => position,
            None => {
                grouped.push((input.clone(), Vec::new()));
                grouped.len() - 1
            }
        };
        flatten(value, &mut grouped[position].1);
    }
    Ok(grouped
        .into_iter()
        .map(|(name, values)| {
            let shape = vec![values.len() as i64];
            let (datatype, data) = typed(values);
            OutputTensor {
                name,
                datatype,
                shape,
                data,
            }
        })
        .collect())
}

fn flatten(value: serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match value {
        serde_json::Value::Array(items) => items.into_iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// The datatype numpy would give the values, and the values in it.
fn typed(values: Vec<serde_json::Value>) -> (Datatype, TensorData) {
    if !values.is_empty() && values.iter().all(serde_json::Value::is_boolean) {
        let flags = values
            .iter()
            .filter_map(serde_json::Value::as_bool)
            .collect();
        return (
            Datatype::Bool,
            TensorData::Values(TensorValues::Bool(flags)),
        );
    }
    let ints: Option<Vec<i64>> = values.iter().map(serde_json::Value::as_i64).collect();
    if let Some(ints) = ints.filter(|ints| !ints.is_empty()) {
        return (Datatype::Int64, TensorData::Values(TensorValues::I64(ints)));
    }
    let floats: Option<Vec<f64>> = values.iter().map(serde_json::Value::as_f64).collect();
    if let Some(floats) = floats {
        return (
            Datatype::Fp64,
            TensorData::Values(TensorValues::F64(floats)),
        );
    }
    (Datatype::Bytes, TensorData::Answers(values))
}

/// A model version's metadata: its graph's inputs and outputs, and every version of the model.
pub fn model_metadata(
    registry: &Registry,
    name: &str,
    version: Option<&str>,
) -> Result<ModelMetadata, ServeError> {
    let model = registry.get(name, version)?;
    let versions = registry
        .versions(name)?
        .into_iter()
        .map(|(model, _)| model.version.clone())
        .collect();
    let signature: &Signature = model.handler().signature();
    let describe = |specs: &[TensorSpec]| -> Vec<TensorMetadata> {
        specs
            .iter()
            .map(|spec| TensorMetadata {
                name: spec.name.clone(),
                datatype: Datatype::of_onnx(&spec.dtype).map_or_else(
                    || spec.dtype.to_uppercase(),
                    |datatype| datatype.name().into(),
                ),
                shape: spec
                    .shape
                    .iter()
                    .map(|dim| match dim {
                        Dim::Fixed(size) => i64::try_from(*size).unwrap_or(-1),
                        Dim::Symbolic(_) | Dim::Unknown => -1,
                    })
                    .collect(),
            })
            .collect()
    };
    Ok(ModelMetadata {
        name: model.name.clone(),
        versions,
        platform: "onnxruntime_onnx".into(),
        inputs: describe(&signature.inputs),
        outputs: describe(&signature.outputs),
    })
}

/// Whether a model version has its minimum of live workers (TorchServe's `ModelReady`).
pub fn model_ready(model: &ModelVersion) -> bool {
    model.live_workers() >= model.worker_range().0
}

/// The server's name, version and protocol extensions.
pub fn server_metadata() -> ServerMetadata {
    ServerMetadata {
        name: "oxserve".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: ["kserve", "kubeflow", "binary_tensor_data"]
            .map(String::from)
            .to_vec(),
    }
}

/// Whether every model is ready (what `/ping` calls healthy).
pub fn server_ready(registry: &Registry) -> bool {
    registry.all().iter().all(|model| model_ready(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn handler_answers_are_typed_as_numpy_would() {
        let outputs = envelope(
            vec![Answer::Json(json!(7)), Answer::Json(json!({"cat": 0.5}))],
            &["a".into(), "b".into()],
        )
        .expect("wrapped");
        assert_eq!(outputs[0].datatype, Datatype::Int64);
        assert_eq!(outputs[0].shape, vec![1]);
        assert_eq!(outputs[1].datatype, Datatype::Bytes);
        assert_eq!(
            outputs[1].data,
            TensorData::Answers(vec![json!({"cat": 0.5})])
        );
        let (datatype, data) = typed(vec![json!(1), json!(2.5)]);
        assert_eq!(datatype, Datatype::Fp64);
        assert_eq!(data, TensorData::Values(TensorValues::F64(vec![1.0, 2.5])));
    }

    #[test]
    fn unknown_requested_outputs_are_bad_requests() {
        let produced = vec!["sum".to_string(), "argmax".to_string()];
        let ask = |name: &str| RequestedOutput {
            name: name.into(),
            parameters: BTreeMap::new(),
        };
        assert_eq!(
            wanted_outputs(&[ask("argmax")], &produced).expect("known"),
            vec!["argmax".to_string()]
        );
        assert_eq!(wanted_outputs(&[], &produced).expect("all"), produced);
        assert_eq!(
            wanted_outputs(&[ask("nope")], &produced)
                .expect_err("unknown")
                .status(),
            400
        );
    }
}

//! KServe v2 REST bodies to and from the protocol's types ([`crate::openinference`]): JSON
//! tensors (`data` flat or nested row-major), and the binary-data extension: with an
//! `Inference-Header-Content-Length: n` header, the first n bytes are the JSON and the rest holds
//! the inputs whose `parameters.binary_data_size` say how many bytes each takes, in order.
//! Outputs asked for with `parameters.binary_data` (or every output, with the request's
//! `binary_data_output`) are sent the same way after the JSON.

use bytes::Bytes;
use serde::Deserialize;

use crate::error::ServeError;
use crate::handler::tensor::{convert, flatten, json_values};
use crate::openinference::{
    raw, Datatype, InferRequest, InferResponse, InputTensor, Parameter, Parameters,
    RequestedOutput, TensorData,
};

/// The header of the binary-data extension.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct JsonRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    inputs: Vec<JsonInput>,
    #[serde(default)]
    outputs: Vec<JsonOutput>,
}

#[derive(Deserialize)]
struct JsonInput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A decoded request, and whether the answer's outputs go as binary data by default.
#[derive(Debug)]
pub struct Decoded {
    pub request: InferRequest,
    pub binary_output: bool,
}

/// Decodes a v2 infer body; `header_length` is the extension's header, when sent.
pub fn decode(body: Bytes, header_length: Option<&str>) -> Result<Decoded, ServeError> {
    let bad = |message: String| ServeError::BadRequest(message);
    let (json, mut binary) = match header_length {
        None => (body, Bytes::new()),
        Some(value) => {
            let length: usize = value.trim().parse().map_err(|_| {
                bad(format!(
                    "{HEADER_LENGTH} must be a byte count, not {value:?}"
                ))
            })?;
            if length > body.len() {
                return Err(bad(format!(
                    "{HEADER_LENGTH} says {length} bytes of JSON, the body has {}",
                    body.len()
                )));
            }
            let mut json = body;
            let binary = json.split_off(length);
            (json, binary)
        }
    };
    let parsed: JsonRequest = serde_json::from_slice(&json).map_err(|error| {
        bad(format!(
            "the request is not a valid v2 infer request: {error}"
        ))
    })?;
    let request_parameters = parameters(parsed.parameters)?;
    let binary_output = flag(&request_parameters, "binary_data_output");
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in parsed.inputs {
        let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
            bad(format!(
                "input {:?}: datatype {} is not supported",
                input.name, input.datatype
            ))
        })?;
        let input_parameters = parameters(input.parameters)?;
        let binary_size = match input_parameters.get("binary_data_size") {
            None => None,
            Some(Parameter::Int(size)) => Some(usize::try_from(*size).map_err(|_| {
                bad(format!(
                    "input {:?}: binary_data_size is negative",
                    input.name
                ))
            })?),
            Some(_) => {
                return Err(bad(format!(
                    "input {:?}: binary_data_size must be an integer",
                    input.name
                )))
            }
        };
        let data = match (input.data, binary_size) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input {:?} has both data and binary_data_size",
                    input.name
                )))
            }
            (None, None) => return Err(bad(format!("input {:?} has no data", input.name))),
            (Some(data), None) => json_data(&data, datatype, &input.name)?,
            (None, Some(size)) => {
                if size > binary.len() {
                    return Err(bad(format!(
                        "input {:?}: binary_data_size is {size}, {} bytes of binary data are left",
                        input.name,
                        binary.len()
                    )));
                }
                raw::decode(datatype, binary.split_to(size), &input.name)?
            }
        };
        inputs.push(InputTensor {
            name: input.name,
            datatype,
            shape: input.shape,
            data,
            parameters: input_parameters,
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data belong to no input",
            binary.len()
        )));
    }
    let outputs = parsed
        .outputs
        .into_iter()
        .map(|output| {
            Ok(RequestedOutput {
                name: output.name,
                parameters: parameters(output.parameters)?,
            })
        })
        .collect::<Result<_, ServeError>>()?;
    Ok(Decoded {
        request: InferRequest {
            id: parsed.id,
            inputs,
            outputs,
            parameters: request_parameters,
        },
        binary_output,
    })
}

/// JSON `data` (flat or nested) as elements of `datatype`. BYTES elements are strings, taken as
/// their UTF-8 bytes (an image handler takes base64 text as TorchServe's does).
fn json_data(
    data: &serde_json::Value,
    datatype: Datatype,
    name: &str,
) -> Result<TensorData, ServeError> {
    let bad = |message: String| ServeError::BadRequest(format!("input {name:?}: {message}"));
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    if datatype == Datatype::Bytes {
        return flat
            .into_iter()
            .map(|value| match value {
                serde_json::Value::String(text) => Ok(Bytes::from(text.clone().into_bytes())),
                other => Err(bad(format!("BYTES elements must be strings, not {other}"))),
            })
            .collect::<Result<_, _>>()
            .map(TensorData::Bytes);
    }
    let values = convert(&flat, datatype.onnx()).map_err(bad)?;
    Ok(TensorData::Values(values))
}

fn parameters(
    map: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<Parameters, ServeError> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            let parameter = match value {
                serde_json::Value::Bool(flag) => Parameter::Bool(flag),
                serde_json::Value::String(text) => Parameter::Text(text),
                serde_json::Value::Number(number) => match number.as_i64() {
                    Some(int) => Parameter::Int(int),
                    None => Parameter::Double(number.as_f64().unwrap_or_default()),
                },
                other => {
                    return Err(ServeError::BadRequest(format!(
                        "parameter {name:?} must be a boolean, number or string, not {other}"
                    )))
                }
            };
            Ok((name, parameter))
        })
        .collect()
}

fn flag(parameters: &Parameters, name: &str) -> bool {
    matches!(parameters.get(name), Some(Parameter::Bool(true)))
}

/// An encoded answer: the body, and the JSON's length when binary data follow it.
pub struct Encoded {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// Encodes an answer; outputs go as binary data when asked for (each output's
/// `binary_data`, else the request's `binary_data_output`).
pub fn encode(
    response: &InferResponse,
    requested: &[RequestedOutput],
    binary_output: bool,
) -> Result<Encoded, ServeError> {
    let mut binary = Vec::new();
    let mut sent_binary = false;
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for output in &response.outputs {
        let as_binary = requested
            .iter()
            .find(|wanted| wanted.name == output.name)
            .and_then(|wanted| match wanted.parameters.get("binary_data") {
                Some(Parameter::Bool(flag)) => Some(*flag),
                _ => None,
            })
            .unwrap_or(binary_output);
        let mut json = serde_json::Map::new();
        json.insert("name".into(), output.name.clone().into());
        json.insert("datatype".into(), output.datatype.name().into());
        json.insert("shape".into(), output.shape.clone().into());
        if as_binary {
            sent_binary = true;
            let bytes = raw::encode(&output.data);
            json.insert(
                "parameters".into(),
                serde_json::json!({ "binary_data_size": bytes.len() }),
            );
            binary.extend_from_slice(&bytes);
        } else {
            json.insert("data".into(), json_elements(&output.data).into());
        }
        outputs.push(serde_json::Value::Object(json));
    }
    let answer = serde_json::json!({
        "id": response.id,
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    });
    let mut body = serde_json::to_vec(&answer).map_err(|_| ServeError::InvalidResponse)?;
    if !sent_binary {
        return Ok(Encoded {
            body,
            header_length: None,
        });
    }
    let header_length = body.len();
    body.extend_from_slice(&binary);
    Ok(Encoded {
        body,
        header_length: Some(header_length),
    })
}

fn json_elements(data: &TensorData) -> Vec<serde_json::Value> {
    match data {
        TensorData::Values(values) => json_values(values),
        TensorData::Bytes(items) => items
            .iter()
            .map(|item| String::from_utf8_lossy(item).into_owned().into())
            .collect(),
        TensorData::Answers(items) => items.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorValues;

    #[test]
    fn json_and_binary_inputs_decode_alike() {
        let json = br#"{"id": "7", "inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [[1.5, 2]]}]}"#;
        let from_json = decode(Bytes::from_static(json), None).expect("decodes");
        let header = br#"{"id": "7", "inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]}"#;
        let mut body = header.to_vec();
        body.extend(1.5f32.to_le_bytes());
        body.extend(2f32.to_le_bytes());
        let length = header.len().to_string();
        let from_binary = decode(Bytes::from(body), Some(&length)).expect("decodes");
        assert_eq!(
            from_json.request.inputs[0].data,
            from_binary.request.inputs[0].data
        );
        assert_eq!(
            from_json.request.inputs[0].data,
            TensorData::Values(TensorValues::F32(vec![1.5, 2.0]))
        );
        assert_eq!(from_json.request.id.as_deref(), Some("7"));
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let cases: [(&[u8], Option<&str>); 8] = [
            (b"{", None),
            (br#"{"inputs": [{"name": "a", "datatype": "FP8", "shape": [1], "data": [1]}]}"#, None),
            (br#"{"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [300]}]}"#, None),
            (br#"{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}"#, None),
            (br#"{"inputs": [{"name": "a", "datatype": "BYTES", "shape": [1], "data": [1]}]}"#, None),
            (br#"{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}"#, Some("99")),
            (br#"{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}"#, Some("x")),
            (br#"{"inputs": []}xx"#, Some("14")),
        ];
        for (body, header) in cases {
            let error = decode(Bytes::copy_from_slice(body), header).expect_err("refused");
            assert_eq!(error.status(), 400, "{}", String::from_utf8_lossy(body));
        }
    }
}

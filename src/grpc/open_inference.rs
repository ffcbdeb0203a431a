//! KServe v2's `GRPCInferenceService` (the Open Inference Protocol over gRPC) on the inference
//! port, under KServe's package `inference` (what KServe and Triton clients call) and TorchServe's
//! `org.pytorch.serve.grpc.openinference`: TorchServe's proto takes its messages from KServe's
//! (proto/open_inference_grpc.proto), so one service answers both. Messages are mapped to
//! [`crate::openinference`]'s types and back; the calls are the ones the v2 REST API makes.
//! Tensors sent as `raw_input_contents` are answered as `raw_output_contents` (as Triton does),
//! typed `contents` with typed `contents`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::listener::Limits;
use super::proto::inference as pb;
use super::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::proto::openinference::grpc_inference_service_server::GrpcInferenceServiceServer as TorchServeServer;
use crate::error::ServeError;
use crate::openinference::{
    self, raw, Datatype, InferRequest, InferResponse, InputTensor, Parameter, Parameters,
    RequestedOutput, TensorData,
};
use crate::state::AppState;
use crate::tensor::TensorValues;

/// The service, over the server's shared state.
#[derive(Clone)]
pub struct OpenInferenceService {
    state: Arc<AppState>,
}

/// The service under KServe's package, with its message limits.
pub fn kserve(state: Arc<AppState>) -> GrpcInferenceServiceServer<OpenInferenceService> {
    let limits = Limits::of(&state.config);
    GrpcInferenceServiceServer::new(OpenInferenceService { state })
        .max_decoding_message_size(limits.decoding)
        .max_encoding_message_size(limits.encoding)
}

/// The same service under TorchServe's package.
pub fn torchserve(state: Arc<AppState>) -> TorchServeServer<OpenInferenceService> {
    let limits = Limits::of(&state.config);
    TorchServeServer::new(OpenInferenceService { state })
        .max_decoding_message_size(limits.decoding)
        .max_encoding_message_size(limits.encoding)
}

impl OpenInferenceService {
    fn model_ready(
        &self,
        request: pb::ModelReadyRequest,
    ) -> Result<pb::ModelReadyResponse, ServeError> {
        let version = Some(request.version).filter(|version| !version.is_empty());
        let model = self.state.registry.get(&request.name, version.as_deref())?;
        Ok(pb::ModelReadyResponse {
            ready: openinference::model_ready(&model),
        })
    }

    fn model_metadata(
        &self,
        request: pb::ModelMetadataRequest,
    ) -> Result<pb::ModelMetadataResponse, ServeError> {
        let version = Some(request.version).filter(|version| !version.is_empty());
        let metadata =
            openinference::model_metadata(&self.state.registry, &request.name, version.as_deref())?;
        let tensors = |tensors: Vec<openinference::TensorMetadata>| {
            tensors
                .into_iter()
                .map(|tensor| pb::model_metadata_response::TensorMetadata {
                    name: tensor.name,
                    datatype: tensor.datatype,
                    shape: tensor.shape,
                })
                .collect()
        };
        Ok(pb::ModelMetadataResponse {
            name: metadata.name,
            versions: metadata.versions,
            platform: metadata.platform,
            inputs: tensors(metadata.inputs),
            outputs: tensors(metadata.outputs),
        })
    }

    async fn model_infer(
        &self,
        request: pb::ModelInferRequest,
    ) -> Result<pb::ModelInferResponse, ServeError> {
        if request.model_name.is_empty() {
            return Err(ServeError::BadRequest(
                "Parameter model_name is required.".into(),
            ));
        }
        let version = Some(request.model_version.clone()).filter(|version| !version.is_empty());
        let model = self
            .state
            .registry
            .get(&request.model_name, version.as_deref())?;
        let (infer, raw) = infer_request(request)?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let response =
            crate::predict::run_v2(&self.state, &model, version.as_deref(), infer, request_id)
                .await?;
        Ok(infer_response(response, raw))
    }
}

/// A `ModelInferRequest` as the protocol's request, and whether its tensors came as raw bytes.
/// Called by the fuzz target too.
pub fn infer_request(request: pb::ModelInferRequest) -> Result<(InferRequest, bool), ServeError> {
    let bad = ServeError::BadRequest;
    let raw = !request.raw_input_contents.is_empty();
    if raw && request.raw_input_contents.len() != request.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs: send one per input, in order",
            request.raw_input_contents.len(),
            request.inputs.len()
        )));
    }
    let mut contents = request.raw_input_contents.into_iter();
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
            bad(format!(
                "input {:?}: datatype {:?} is not served",
                input.name, input.datatype
            ))
        })?;
        let data = match contents.next() {
            Some(bytes) => {
                if input.contents.is_some() {
                    return Err(bad(format!(
                        "input {:?} has contents and raw_input_contents: send one of them",
                        input.name
                    )));
                }
                raw::decode(datatype, Bytes::from(bytes), &input.name)?
            }
            None => typed_contents(datatype, input.contents.unwrap_or_default(), &input.name)?,
        };
        inputs.push(InputTensor {
            name: input.name,
            datatype,
            shape: input.shape,
            data,
            parameters: parameters(input.parameters),
        });
    }
    let outputs = request
        .outputs
        .into_iter()
        .map(|output| RequestedOutput {
            name: output.name,
            parameters: parameters(output.parameters),
        })
        .collect();
    let infer = InferRequest {
        id: Some(request.id).filter(|id| !id.is_empty()),
        inputs,
        outputs,
        parameters: parameters(request.parameters),
    };
    Ok((infer, raw))
}

/// The elements of typed `contents`, read from the field the datatype uses.
fn typed_contents(
    datatype: Datatype,
    contents: pb::InferTensorContents,
    input: &str,
) -> Result<TensorData, ServeError> {
    let out_of_range = || {
        ServeError::BadRequest(format!(
            "input {input:?}: a value is out of range for {}",
            datatype.name()
        ))
    };
    let values = match datatype {
        Datatype::Bool => TensorValues::Bool(contents.bool_contents),
        Datatype::Uint8 => TensorValues::U8(
            contents
                .uint_contents
                .into_iter()
                .map(|value| u8::try_from(value).map_err(|_| out_of_range()))
                .collect::<Result<_, _>>()?,
        ),
        Datatype::Int8 => TensorValues::I8(
            contents
                .int_contents
                .into_iter()
                .map(|value| i8::try_from(value).map_err(|_| out_of_range()))
                .collect::<Result<_, _>>()?,
        ),
        Datatype::Int32 => TensorValues::I32(contents.int_contents),
        Datatype::Int64 => TensorValues::I64(contents.int64_contents),
        Datatype::Fp32 => TensorValues::F32(contents.fp32_contents),
        Datatype::Fp64 => TensorValues::F64(contents.fp64_contents),
        Datatype::Fp16 => {
            return Err(ServeError::BadRequest(format!(
                "input {input:?}: FP16 tensors travel as raw_input_contents (the protocol has no \
                 FP16 contents field)"
            )))
        }
        Datatype::Bytes => {
            return Ok(TensorData::Bytes(
                contents
                    .bytes_contents
                    .into_iter()
                    .map(Bytes::from)
                    .collect(),
            ))
        }
    };
    Ok(TensorData::Values(values))
}

fn parameters(parameters: HashMap<String, pb::InferParameter>) -> Parameters {
    use pb::infer_parameter::ParameterChoice as Choice;
    parameters
        .into_iter()
        .filter_map(|(name, parameter)| {
            let value = match parameter.parameter_choice? {
                Choice::BoolParam(value) => Parameter::Bool(value),
                Choice::Int64Param(value) => Parameter::Int(value),
                Choice::StringParam(value) => Parameter::Text(value),
                Choice::DoubleParam(value) => Parameter::Double(value),
                Choice::Uint64Param(value) => {
                    i64::try_from(value).map_or(Parameter::Double(value as f64), Parameter::Int)
                }
            };
            Some((name, value))
        })
        .collect()
}

/// The protocol's answer as a `ModelInferResponse`: raw output contents when `raw`, else typed.
fn infer_response(response: InferResponse, raw: bool) -> pb::ModelInferResponse {
    let mut raw_output_contents = Vec::new();
    let outputs = response
        .outputs
        .into_iter()
        .map(|output| {
            let contents = if raw || output.datatype == Datatype::Fp16 {
                raw_output_contents.push(raw::encode(&output.data));
                None
            } else {
                Some(typed(output.data))
            };
            pb::model_infer_response::InferOutputTensor {
                name: output.name,
                datatype: output.datatype.name().into(),
                shape: output.shape,
                parameters: HashMap::new(),
                contents,
            }
        })
        .collect();
    pb::ModelInferResponse {
        model_name: response.model_name,
        model_version: response.model_version,
        id: response.id,
        parameters: HashMap::new(),
        outputs,
        raw_output_contents,
    }
}

/// Elements in the typed `contents` field their datatype uses (never called for FP16).
fn typed(data: TensorData) -> pb::InferTensorContents {
    let mut contents = pb::InferTensorContents::default();
    match data {
        TensorData::Values(values) => match values {
            TensorValues::Bool(values) => contents.bool_contents = values,
            TensorValues::U8(values) => {
                contents.uint_contents = values.into_iter().map(u32::from).collect();
            }
            TensorValues::I8(values) => {
                contents.int_contents = values.into_iter().map(i32::from).collect();
            }
            TensorValues::I32(values) => contents.int_contents = values,
            TensorValues::I64(values) => contents.int64_contents = values,
            TensorValues::F16(values) => {
                contents.fp32_contents = values.into_iter().map(f32::from).collect();
            }
            TensorValues::F32(values) => contents.fp32_contents = values,
            TensorValues::F64(values) => contents.fp64_contents = values,
        },
        TensorData::Bytes(items) => {
            contents.bytes_contents = items.into_iter().map(|item| item.to_vec()).collect();
        }
        TensorData::Answers(items) => {
            contents.bytes_contents = items
                .iter()
                .map(|item| raw::answer_bytes(item).into_owned())
                .collect();
        }
    }
    contents
}

/// The trait of one package's generated service, answered by the shared methods above.
macro_rules! serve_package {
    ($package:path) => {
        #[tonic::async_trait]
        impl $package for OpenInferenceService {
            async fn server_live(
                &self,
                _: Request<pb::ServerLiveRequest>,
            ) -> Result<Response<pb::ServerLiveResponse>, Status> {
                Ok(Response::new(pb::ServerLiveResponse { live: true }))
            }

            async fn server_ready(
                &self,
                _: Request<pb::ServerReadyRequest>,
            ) -> Result<Response<pb::ServerReadyResponse>, Status> {
                let ready = openinference::server_ready(&self.state.registry);
                Ok(Response::new(pb::ServerReadyResponse { ready }))
            }

            async fn model_ready(
                &self,
                request: Request<pb::ModelReadyRequest>,
            ) -> Result<Response<pb::ModelReadyResponse>, Status> {
                Ok(Response::new(OpenInferenceService::model_ready(
                    self,
                    request.into_inner(),
                )?))
            }

            async fn server_metadata(
                &self,
                _: Request<pb::ServerMetadataRequest>,
            ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
                let metadata = openinference::server_metadata();
                Ok(Response::new(pb::ServerMetadataResponse {
                    name: metadata.name,
                    version: metadata.version,
                    extensions: metadata.extensions,
                }))
            }

            async fn model_metadata(
                &self,
                request: Request<pb::ModelMetadataRequest>,
            ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
                Ok(Response::new(OpenInferenceService::model_metadata(
                    self,
                    request.into_inner(),
                )?))
            }

            async fn model_infer(
                &self,
                request: Request<pb::ModelInferRequest>,
            ) -> Result<Response<pb::ModelInferResponse>, Status> {
                Ok(Response::new(
                    OpenInferenceService::model_infer(self, request.into_inner()).await?,
                ))
            }
        }
    };
}

serve_package!(super::proto::inference::grpc_inference_service_server::GrpcInferenceService);
serve_package!(super::proto::openinference::grpc_inference_service_server::GrpcInferenceService);

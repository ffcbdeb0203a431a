//! TorchServe's `InferenceAPIsService` (`InferenceImpl.java`): `Ping` answers REST's `/ping`
//! JSON; `Predictions` runs one request whose `data` (else `body`) input is the model input, as
//! a REST body is, and answers the REST body's bytes. Models here answer once, so
//! `StreamPredictions` sends that one answer and ends, and `StreamPredictions2` answers each
//! request of its stream in order, reporting a failed one in the stream (`status`) as
//! TorchServe's `GRPCJob` does, and ends when the client's stream ends.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::listener::Limits;
use super::proto::google::rpc;
use super::proto::torchserve::inference_ap_is_service_server::{
    InferenceApIsService, InferenceApIsServiceServer,
};
use super::proto::torchserve::{PredictionResponse, PredictionsRequest, TorchServeHealthResponse};
use crate::error::ServeError;
use crate::handler::RequestItem;
use crate::state::AppState;

/// The service, over the server's shared state.
pub struct InferenceService {
    state: Arc<AppState>,
}

/// The service with its message limits, ready for a listener's routes.
pub fn service(state: Arc<AppState>) -> InferenceApIsServiceServer<InferenceService> {
    let limits = Limits::of(&state.config);
    InferenceApIsServiceServer::new(InferenceService { state })
        .max_decoding_message_size(limits.decoding)
        .max_encoding_message_size(limits.encoding)
}

/// The handler input of a request: its `data` entry, else its `body` entry, as TorchServe's
/// handlers read a request's parameters. Called by the fuzz target too.
pub fn request_items(request: &mut PredictionsRequest) -> Result<Vec<RequestItem>, ServeError> {
    let bytes = request
        .input
        .remove("data")
        .or_else(|| request.input.remove("body"))
        .ok_or_else(|| {
            ServeError::BadRequest(
                "the request has no \"data\" or \"body\" input: put the model input there".into(),
            )
        })?;
    if bytes.is_empty() {
        return Err(ServeError::BadRequest(
            "the request's \"data\" input is empty".into(),
        ));
    }
    Ok(vec![RequestItem {
        bytes: Bytes::from(bytes),
        content_type: None,
    }])
}

impl InferenceService {
    /// One prediction: the REST body's bytes.
    async fn predict(&self, mut request: PredictionsRequest) -> Result<Vec<u8>, ServeError> {
        if request.model_name.is_empty() {
            return Err(ServeError::BadRequest(
                "Parameter model_name is required.".into(),
            ));
        }
        let version = Some(std::mem::take(&mut request.model_version)).filter(|v| !v.is_empty());
        let model = self
            .state
            .registry
            .get(&request.model_name, version.as_deref())?;
        let items = request_items(&mut request)?;
        let prediction = crate::predict::Prediction {
            model,
            version,
            items,
            request_id: None,
        };
        crate::predict::run(&self.state, prediction).await
    }
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<PredictionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl InferenceApIsService for InferenceService {
    async fn ping(&self, _: Request<()>) -> Result<Response<TorchServeHealthResponse>, Status> {
        let (_, health) = crate::predict::health(&self.state);
        // Gson's pretty printing, as TorchServe's InferenceImpl.
        let health = serde_json::to_string_pretty(&health).unwrap_or_default();
        Ok(Response::new(TorchServeHealthResponse { health }))
    }

    async fn predictions(
        &self,
        request: Request<PredictionsRequest>,
    ) -> Result<Response<PredictionResponse>, Status> {
        let prediction = self.predict(request.into_inner()).await?;
        Ok(Response::new(PredictionResponse {
            prediction,
            sequence_id: None,
            status: None,
        }))
    }

    type StreamPredictionsStream = AnswerStream;

    async fn stream_predictions(
        &self,
        request: Request<PredictionsRequest>,
    ) -> Result<Response<Self::StreamPredictionsStream>, Status> {
        let prediction = self.predict(request.into_inner()).await?;
        let answer = PredictionResponse {
            prediction,
            sequence_id: None,
            status: None,
        };
        let stream = futures_util::stream::once(async move { Ok(answer) });
        Ok(Response::new(Box::pin(stream)))
    }

    type StreamPredictions2Stream = AnswerStream;

    async fn stream_predictions2(
        &self,
        request: Request<Streaming<PredictionsRequest>>,
    ) -> Result<Response<Self::StreamPredictions2Stream>, Status> {
        let service = InferenceService {
            state: Arc::clone(&self.state),
        };
        let service = Arc::new(service);
        let limit = self.state.config.max_request_size;
        let answers = request.into_inner().then(move |request| {
            let service = Arc::clone(&service);
            async move {
                // A broken stream (bad frame, oversized message) ends it with its status.
                let request =
                    request.map_err(|status| super::listener::oversized(status, limit))?;
                let sequence_id = request.sequence_id.clone();
                Ok(match service.predict(request).await {
                    Ok(prediction) => PredictionResponse {
                        prediction,
                        sequence_id,
                        status: None,
                    },
                    Err(error) => PredictionResponse {
                        prediction: Vec::new(),
                        sequence_id,
                        status: Some(in_stream_status(&error)),
                    },
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// A failed request inside `StreamPredictions2`: its code and message, and an `ErrorInfo`
/// naming the Java exception TorchServe would have thrown.
fn in_stream_status(error: &ServeError) -> rpc::Status {
    let (code, message) = error.grpc();
    let info = rpc::ErrorInfo {
        reason: error.kind().to_string(),
        domain: String::new(),
        metadata: Default::default(),
    };
    rpc::Status {
        code: code as i32,
        message,
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: prost::Message::encode_to_vec(&info),
        }],
    }
}

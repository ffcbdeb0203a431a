//! The gRPC load generator: the same closed loop as [`crate::load`], over TorchServe's
//! `InferenceAPIsService/Predictions` with tonic's client (the stubs oxserve compiles from
//! `proto/`). Each client has its own channel (one HTTP/2 connection), as each HTTP client has
//! its own keep-alive connection, and sends the model's request body as the `data` input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use oxserve::grpc::proto::torchserve::inference_ap_is_service_client::InferenceApIsServiceClient;
use oxserve::grpc::proto::torchserve::PredictionsRequest;

use crate::load::{LoadOutcome, Window};

/// One gRPC case's load.
#[derive(Debug, Clone)]
pub struct GrpcSpec {
    pub address: SocketAddr,
    pub model: String,
    pub body: Bytes,
    pub concurrency: usize,
}

/// Drives the load until the window closes; see [`crate::load::drive`].
pub async fn drive(spec: GrpcSpec, window: Window) -> LoadOutcome {
    let request = Arc::new(PredictionsRequest {
        model_name: spec.model.clone(),
        model_version: String::new(),
        input: [("data".to_string(), spec.body.to_vec())]
            .into_iter()
            .collect(),
        sequence_id: None,
    });
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..spec.concurrency {
        clients.spawn(client_loop(spec.address, Arc::clone(&request), window));
    }
    let mut outcome = LoadOutcome::default();
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok(client) => outcome.merge(client),
            Err(error) => outcome.error(format!("a client task failed: {error}")),
        }
    }
    outcome
}

async fn client_loop(
    address: SocketAddr,
    request: Arc<PredictionsRequest>,
    window: Window,
) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    let mut client = match InferenceApIsServiceClient::connect(format!("http://{address}")).await {
        Ok(client) => client,
        Err(error) => {
            outcome.error(format!("cannot connect: {error}"));
            return outcome;
        }
    };
    loop {
        let started = Instant::now();
        if started >= window.to {
            return outcome;
        }
        let result = client.predictions((*request).clone()).await;
        let finished = Instant::now();
        if !window.contains(finished) {
            continue;
        }
        match result {
            Ok(_) => outcome.latencies.push(finished - started),
            Err(status) => outcome.error(format!("gRPC {:?}: {}", status.code(), status.message())),
        }
    }
}

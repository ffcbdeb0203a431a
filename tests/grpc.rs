//! TorchServe's gRPC API over real gRPC (tonic clients generated from the same protos): the
//! digits example's answers equal the REST bodies byte for byte, errors carry TorchServe's status
//! codes and REST's messages, the management calls answer as REST does, tokens are checked per
//! port, and the server keeps serving after every error.
#![allow(clippy::unwrap_used)]

mod common;

use common::{example, ArchiveSpec, TestServer};
use futures_util::StreamExt as _;
use oxserve::grpc::proto::management::management_ap_is_service_client::ManagementApIsServiceClient;
use oxserve::grpc::proto::management::{
    DescribeModelRequest, ListModelsRequest, RegisterModelRequest, ScaleWorkerRequest,
    SetDefaultRequest, UnregisterModelRequest,
};
use oxserve::grpc::proto::torchserve::inference_ap_is_service_client::InferenceApIsServiceClient;
use oxserve::grpc::proto::torchserve::PredictionsRequest;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

fn mnist(version: &'static str, file: &'static str) -> ArchiveSpec<'static> {
    ArchiveSpec::new(
        "mnist",
        example("mnist.onnx"),
        &example("mnist_handler.json").display().to_string(),
    )
    .versioned(version, file)
}

async fn inference(server: &TestServer) -> InferenceApIsServiceClient<Channel> {
    let url = format!("http://{}", server.addresses.grpc_inference);
    InferenceApIsServiceClient::connect(url).await.unwrap()
}

async fn management(server: &TestServer) -> ManagementApIsServiceClient<Channel> {
    let url = format!("http://{}", server.addresses.grpc_management);
    ManagementApIsServiceClient::connect(url).await.unwrap()
}

fn request(model: &str, input: &str, bytes: Vec<u8>) -> PredictionsRequest {
    PredictionsRequest {
        model_name: model.into(),
        model_version: String::new(),
        input: [(input.to_string(), bytes)].into_iter().collect(),
        sequence_id: None,
    }
}

fn digit(digit: u32) -> Vec<u8> {
    std::fs::read(example(&format!("digit_{digit}.png"))).unwrap()
}

/// The REST answer to `bytes` on `/predictions/mnist`: status and body.
async fn rest(server: &TestServer, bytes: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(server.url("/predictions/mnist"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Asserts a gRPC error's code and that its message is REST's for the same request.
fn assert_error(status: tonic::Status, code: Code, rest_body: Option<&str>) {
    assert_eq!(status.code(), code, "{status:?}");
    if let Some(body) = rest_body {
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(status.message(), body["message"], "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_equal_rest_and_errors_keep_serving() {
    let server = TestServer::start(
        &[mnist("1.0", "mnist.mar")],
        &[("max_request_size", "200000")],
    )
    .await;
    let mut client = inference(&server).await;

    let health = client.ping(()).await.unwrap().into_inner().health;
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health, serde_json::json!({ "status": "Healthy" }));

    // Byte for byte the REST body, through `data` and through `body`.
    for (number, input) in [(0, "data"), (3, "body"), (7, "data")] {
        let (status, body) = rest(&server, digit(number)).await;
        assert_eq!(status, 200, "{body}");
        let answer = client
            .predictions(request("mnist", input, digit(number)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(String::from_utf8(answer.prediction).unwrap(), body);
    }

    // Several requests at once (batched together by the model's queue), each its own answer.
    let calls = (0..8u32).map(|number| {
        let mut client = client.clone();
        async move {
            let answer = client
                .predictions(request("mnist", "data", digit(number)))
                .await
                .unwrap()
                .into_inner();
            (number, answer.prediction)
        }
    });
    for (number, prediction) in futures_util::future::join_all(calls).await {
        let (_, body) = rest(&server, digit(number)).await;
        assert_eq!(
            String::from_utf8(prediction).unwrap(),
            body,
            "digit {number}"
        );
    }

    // StreamPredictions: the one answer, then the end of the stream.
    let answers: Vec<_> = client
        .stream_predictions(request("mnist", "data", digit(5)))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(answers.len(), 1);
    let (_, body) = rest(&server, digit(5)).await;
    let first = answers.into_iter().next().unwrap().unwrap();
    assert_eq!(String::from_utf8(first.prediction).unwrap(), body);

    // StreamPredictions2: each request answered in order; a bad one answered in the stream.
    let mut bad = request("mnist", "data", b"hello, world".to_vec());
    bad.sequence_id = Some("seq-1".into());
    let requests = vec![
        request("mnist", "data", digit(1)),
        bad,
        request("mnist", "data", digit(2)),
    ];
    let answers: Vec<_> = client
        .stream_predictions2(futures_util::stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(answers.len(), 3);
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    let (_, bad_body) = rest(&server, b"hello, world".to_vec()).await;
    let in_stream = answers[1].status.clone().unwrap();
    assert_eq!(in_stream.code, Code::InvalidArgument as i32);
    assert_eq!(
        in_stream.message,
        serde_json::from_str::<Value>(&bad_body).unwrap()["message"]
    );
    assert_eq!(answers[1].sequence_id.as_deref(), Some("seq-1"));
    for (answer, number) in [(&answers[0], 1), (&answers[2], 2)] {
        let (_, body) = rest(&server, digit(number)).await;
        assert!(answer.status.is_none());
        assert_eq!(String::from_utf8(answer.prediction.clone()).unwrap(), body);
    }

    // Errors: TorchServe's codes, REST's messages; the server answers the next request.
    let error = client
        .predictions(request("nope", "data", digit(1)))
        .await
        .unwrap_err();
    assert_error(error, Code::NotFound, None);
    let mut versioned = request("mnist", "data", digit(1));
    versioned.model_version = "9.9".into();
    let error = client.predictions(versioned).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(
        error.message(),
        "Model version: 9.9 does not exist for model: mnist"
    );
    let (status, body) = rest(&server, b"hello, world".to_vec()).await;
    assert_eq!(status, 400);
    let error = client
        .predictions(request("mnist", "data", b"hello, world".to_vec()))
        .await
        .unwrap_err();
    assert_error(error, Code::InvalidArgument, Some(&body));
    let error = client
        .predictions(request("mnist", "other", digit(1)))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = client
        .predictions(request("", "data", digit(1)))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.message(), "Parameter model_name is required.");
    let (status, body) = rest(&server, vec![0; 300_000]).await;
    assert_eq!(status, 413);
    let error = client
        .predictions(request("mnist", "data", vec![0; 300_000]))
        .await
        .unwrap_err();
    assert_error(error, Code::ResourceExhausted, Some(&body));

    let answer = client
        .predictions(request("mnist", "data", digit(4)))
        .await
        .unwrap()
        .into_inner();
    let (_, body) = rest(&server, digit(4)).await;
    assert_eq!(String::from_utf8(answer.prediction).unwrap(), body);
    server.stop().await;
}

/// REST's JSON answer to a management call.
async fn rest_json(method: reqwest::Method, url: String) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A description without what changes between two calls (the process's memory).
fn stable(mut described: Value) -> Value {
    for model in described.as_array_mut().unwrap() {
        for worker in model["workers"].as_array_mut().unwrap() {
            worker.as_object_mut().unwrap().remove("memoryUsage");
        }
    }
    described
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_calls_answer_as_rest() {
    use reqwest::Method;
    let server = TestServer::start(
        &[mnist("1.0", "mnist.mar"), mnist("2.0", "mnist_v2.mar")],
        &[("load_models", ""), ("enable_model_api", "true")],
    )
    .await;
    let mut client = management(&server).await;

    let registered = client
        .register_model(RegisterModelRequest {
            url: "mnist.mar".into(),
            initial_workers: 1,
            synchronous: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .msg;
    assert_eq!(
        registered,
        "Model \"mnist\" Version: 1.0 registered with 1 initial workers"
    );
    // The same registration again: REST's 409, TorchServe's ABORTED.
    let (status, body) = rest_json(Method::POST, server.management("/models?url=mnist.mar")).await;
    assert_eq!(status, 409);
    let error = client
        .register_model(RegisterModelRequest {
            url: "mnist.mar".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(error, Code::Aborted, Some(&body));
    let error = client
        .register_model(RegisterModelRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(error.message(), "Parameter url is required.");

    // list and describe: the REST body's JSON.
    let listed = client
        .list_models(ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .msg;
    let (_, body) = rest_json(Method::GET, server.management("/models")).await;
    assert_eq!(format!("{listed}\n"), body);
    let describe = |version: &str| DescribeModelRequest {
        model_name: "mnist".into(),
        model_version: version.into(),
        customized: false,
    };
    let described = client.describe_model(describe("")).await.unwrap();
    let (_, body) = rest_json(Method::GET, server.management("/models/mnist")).await;
    assert_eq!(
        stable(serde_json::from_str(&described.into_inner().msg).unwrap()),
        stable(serde_json::from_str(&body).unwrap())
    );

    // scale: the REST status text.
    let scaled = client
        .scale_worker(ScaleWorkerRequest {
            model_name: "mnist".into(),
            min_worker: 2,
            synchronous: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .msg;
    let (_, body) = rest_json(
        Method::PUT,
        server.management("/models/mnist?min_worker=2&synchronous=true"),
    )
    .await;
    assert_eq!(
        scaled,
        serde_json::from_str::<Value>(&body).unwrap()["status"]
    );
    let error = client
        .scale_worker(ScaleWorkerRequest {
            model_name: "mnist".into(),
            min_worker: 3,
            max_worker: 2,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "max_worker cannot be less than min_worker."
    );

    // A second version, made the default, then the first unregistered.
    client
        .register_model(RegisterModelRequest {
            url: "mnist_v2.mar".into(),
            initial_workers: 1,
            synchronous: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let set_default = |version: &str| SetDefaultRequest {
        model_name: "mnist".into(),
        model_version: version.into(),
    };
    let (status, body) = rest_json(
        Method::PUT,
        server.management("/models/mnist/7.0/set-default"),
    )
    .await;
    assert_eq!(status, 404);
    let error = client.set_default(set_default("7.0")).await.unwrap_err();
    assert_error(error, Code::NotFound, Some(&body));
    let made = client
        .set_default(set_default("2.0"))
        .await
        .unwrap()
        .into_inner()
        .msg;
    assert_eq!(
        made,
        "Default version successfully updated for model \"mnist\" to \"2.0\""
    );
    let all = client.describe_model(describe("all")).await.unwrap();
    let all: Value = serde_json::from_str(&all.into_inner().msg).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let unregistered = client
        .unregister_model(UnregisterModelRequest {
            model_name: "mnist".into(),
            model_version: "1.0".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .msg;
    assert_eq!(unregistered, "Model \"mnist\" unregistered");
    let (status, body) = rest_json(Method::GET, server.management("/models/mnist/1.0")).await;
    assert_eq!(status, 404);
    let error = client.describe_model(describe("1.0")).await.unwrap_err();
    assert_error(error, Code::NotFound, Some(&body));
    let (status, body) = rest_json(Method::GET, server.management("/models/nope")).await;
    assert_eq!(status, 404);
    let error = client
        .describe_model(DescribeModelRequest {
            model_name: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(error, Code::NotFound, Some(&body));

    // Still serving: the remaining version answers over gRPC inference.
    let answer = inference(&server)
        .await
        .predictions(request("mnist", "data", digit(6)))
        .await
        .unwrap()
        .into_inner();
    let (_, body) = rest(&server, digit(6)).await;
    assert_eq!(String::from_utf8(answer.prediction).unwrap(), body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_api_is_off_by_default() {
    let server = TestServer::start(&[mnist("1.0", "mnist.mar")], &[]).await;
    let mut client = management(&server).await;
    let error = client
        .register_model(RegisterModelRequest {
            url: "mnist.mar".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(error.message(), "Model API disabled");
    let error = client
        .unregister_model(UnregisterModelRequest {
            model_name: "mnist".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    let listed = client
        .list_models(ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .msg;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["models"][0]["modelName"], "mnist");
    server.stop().await;
}

fn with_token<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_takes_its_own_key() {
    let server = TestServer::start(
        &[mnist("1.0", "mnist.mar")],
        &[("disable_token_authorization", "false")],
    )
    .await;
    let keys: Value =
        serde_json::from_slice(&std::fs::read(server.logs.path().join("key_file.json")).unwrap())
            .unwrap();
    let inference_key = keys["inference"]["key"].as_str().unwrap();
    let management_key = keys["management"]["key"].as_str().unwrap();
    let refused =
        "Token Authorization failed. Token either incorrect, expired, or not provided correctly";
    let mut infer = inference(&server).await;
    let mut manage = management(&server).await;

    let error = infer.ping(()).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(error.message(), refused);
    let error = infer
        .predictions(with_token(
            request("mnist", "data", digit(1)),
            management_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    let error = manage
        .list_models(with_token(ListModelsRequest::default(), inference_key))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(error.message(), refused);

    let answer = infer
        .predictions(with_token(
            request("mnist", "data", digit(1)),
            inference_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.prediction.is_empty());
    manage
        .list_models(with_token(ListModelsRequest::default(), management_key))
        .await
        .unwrap();
    server.stop().await;
}

/// `enable_grpc_ssl=true`: both gRPC ports speak TLS with the REST listeners' certificate and key
/// files (the REST ports stay plain), and a plaintext client gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_grpc_ssl_serves_tls_with_the_configured_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let certificates = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = common::test_certificates(certificates.path());
    let (certificate, key) = (certificate.display().to_string(), key.display().to_string());
    let server = TestServer::start(
        &[mnist("1.0", "mnist.mar")],
        &[
            ("enable_grpc_ssl", "true"),
            ("certificate_file", &certificate),
            ("private_key_file", &key),
        ],
    )
    .await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    let channel = |address: std::net::SocketAddr| {
        Channel::from_shared(format!("https://{address}"))
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
    };
    let mut client = InferenceApIsServiceClient::new(
        channel(server.addresses.grpc_inference)
            .connect()
            .await
            .unwrap(),
    );
    let answer = client
        .predictions(request("mnist", "data", digit(5)))
        .await
        .unwrap()
        .into_inner();
    let (_, body) = rest(&server, digit(5)).await;
    assert_eq!(String::from_utf8(answer.prediction).unwrap(), body);
    let mut manage = ManagementApIsServiceClient::new(
        channel(server.addresses.grpc_management)
            .connect()
            .await
            .unwrap(),
    );
    manage
        .list_models(ListModelsRequest::default())
        .await
        .unwrap();
    // Plaintext: the connection or the call fails.
    let url = format!("http://{}", server.addresses.grpc_inference);
    if let Ok(mut plain) = InferenceApIsServiceClient::connect(url).await {
        assert!(plain.ping(()).await.is_err());
    }
    server.stop().await;
}

//! The KServe v2 protocol over real gRPC, with tonic clients generated from our protos under both
//! packages (KServe's `inference` and TorchServe's `org.pytorch.serve.grpc.openinference`):
//! health, metadata and infer answer as the v2 REST API does (which tests/v2.rs holds to bare
//! ONNX Runtime), in raw and typed contents; bad requests get TorchServe's gRPC codes and the
//! server keeps serving.
#![allow(clippy::unwrap_used)]

mod common;

use common::{example, fixture, ArchiveSpec, TestServer};
use oxserve::grpc::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve::grpc::proto::inference::model_infer_request::InferInputTensor;
use oxserve::grpc::proto::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use oxserve::grpc::proto::openinference::grpc_inference_service_client::GrpcInferenceServiceClient as TorchServeClient;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

fn mnist() -> ArchiveSpec<'static> {
    ArchiveSpec::new(
        "mnist",
        example("mnist.onnx"),
        &example("mnist_handler.json").display().to_string(),
    )
}

fn two_inputs() -> ArchiveSpec<'static> {
    ArchiveSpec::new("two", fixture("two_inputs.onnx"), "tensor")
}

async fn client(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    let url = format!("http://{}", server.addresses.grpc_inference);
    GrpcInferenceServiceClient::connect(url).await.unwrap()
}

const A: [f32; 6] = [1.5, -2.0, 0.25, 0.0, 7.0, 3.5];
const B: [i64; 6] = [1, 2, 3, -4, 0, 9];

fn input(name: &str, datatype: &str, contents: Option<InferTensorContents>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![2, 3],
        parameters: Default::default(),
        contents,
    }
}

/// `two_inputs.onnx`'s request, typed or raw.
fn two_request(raw: bool) -> ModelInferRequest {
    let (a, b, raw_input_contents) = if raw {
        let a_bytes = A.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b_bytes = B.iter().flat_map(|v| v.to_le_bytes()).collect();
        (None, None, vec![a_bytes, b_bytes])
    } else {
        let a = InferTensorContents {
            fp32_contents: A.to_vec(),
            ..Default::default()
        };
        let b = InferTensorContents {
            int64_contents: B.to_vec(),
            ..Default::default()
        };
        (Some(a), Some(b), Vec::new())
    };
    ModelInferRequest {
        model_name: "two".into(),
        id: "req-7".into(),
        inputs: vec![input("a", "FP32", a), input("b", "INT64", b)],
        raw_input_contents,
        ..Default::default()
    }
}

/// The answer's outputs as (name, datatype, shape, values as f64), from raw or typed contents.
fn outputs(answer: &ModelInferResponse) -> Vec<(String, String, Vec<i64>, Vec<f64>)> {
    answer
        .outputs
        .iter()
        .enumerate()
        .map(|(index, output)| {
            let values: Vec<f64> = match (&output.contents, answer.raw_output_contents.get(index)) {
                (Some(contents), None) => match output.datatype.as_str() {
                    "FP32" => contents
                        .fp32_contents
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect(),
                    "INT64" => contents.int64_contents.iter().map(|&v| v as f64).collect(),
                    other => panic!("unexpected datatype {other}"),
                },
                (None, Some(raw)) => match output.datatype.as_str() {
                    "FP32" => raw
                        .chunks_exact(4)
                        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                        .collect(),
                    "INT64" => raw
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                    other => panic!("unexpected datatype {other}"),
                },
                other => panic!("an output needs contents or raw contents, not {other:?}"),
            };
            (
                output.name.clone(),
                output.datatype.clone(),
                output.shape.clone(),
                values,
            )
        })
        .collect()
}

/// The v2 REST answer to the same tensors, in the same form.
async fn rest_outputs(server: &TestServer) -> Vec<(String, String, Vec<i64>, Vec<f64>)> {
    let body = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 3], "data": A},
        {"name": "b", "datatype": "INT64", "shape": [2, 3], "data": B},
    ]});
    let answer: Value = reqwest::Client::new()
        .post(server.url("/v2/models/two/infer"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|output| {
            (
                output["name"].as_str().unwrap().to_string(),
                output["datatype"].as_str().unwrap().to_string(),
                serde_json::from_value(output["shape"].clone()).unwrap(),
                serde_json::from_value(output["data"].clone()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata_answer_as_rest_does() {
    let server = TestServer::start(&[mnist(), two_inputs()], &[]).await;
    let mut client = client(&server).await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let server_metadata = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server_metadata.name, "oxserve");
    assert!(server_metadata
        .extensions
        .contains(&"binary_tensor_data".to_string()));
    let ready = ModelReadyRequest {
        name: "two".into(),
        version: String::new(),
    };
    assert!(client.model_ready(ready).await.unwrap().into_inner().ready);

    for model in ["mnist", "two"] {
        let metadata = client
            .model_metadata(ModelMetadataRequest {
                name: model.into(),
                version: "1.0".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let rest: Value = reqwest::get(server.url(&format!("/v2/models/{model}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metadata.name, rest["name"]);
        assert_eq!(json!(metadata.versions), rest["versions"]);
        assert_eq!(metadata.platform, rest["platform"]);
        for (tensors, key) in [(&metadata.inputs, "inputs"), (&metadata.outputs, "outputs")] {
            let as_json: Vec<Value> = tensors
                .iter()
                .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
                .collect();
            assert_eq!(json!(as_json), rest[key], "{model} {key}");
        }
    }
    let unknown = ModelMetadataRequest {
        name: "nobody".into(),
        version: String::new(),
    };
    let status = client.model_metadata(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "Model not found: nobody");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_equals_rest_in_raw_and_typed_contents_under_both_packages() {
    let server = TestServer::start(&[mnist(), two_inputs()], &[]).await;
    let want = rest_outputs(&server).await;
    assert_eq!(want.len(), 2);
    let mut kserve = client(&server).await;
    let url = format!("http://{}", server.addresses.grpc_inference);
    let mut torchserve = TorchServeClient::connect(url).await.unwrap();

    for raw in [false, true] {
        let answer = kserve
            .model_infer(two_request(raw))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.model_name, "two");
        assert_eq!(answer.model_version, "1.0");
        assert_eq!(answer.id, "req-7");
        assert_eq!(
            answer.raw_output_contents.is_empty(),
            !raw,
            "answered in the request's form"
        );
        assert_eq!(outputs(&answer), want, "raw: {raw}");
        let answer = torchserve
            .model_infer(two_request(raw))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outputs(&answer), want, "TorchServe's package, raw: {raw}");
    }

    // Requested outputs only.
    let mut only = two_request(true);
    only.outputs = vec![
        oxserve::grpc::proto::inference::model_infer_request::InferRequestedOutputTensor {
            name: "argmax".into(),
            parameters: Default::default(),
        },
    ];
    let answer = kserve.model_infer(only).await.unwrap().into_inner();
    assert_eq!(outputs(&answer), want[1..].to_vec());

    // A photo through a BYTES input goes through the handler, as /predictions does.
    let digit = std::fs::read(example("digit_7.png")).unwrap();
    let image = ModelInferRequest {
        model_name: "mnist".into(),
        inputs: vec![InferInputTensor {
            name: "data".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                bytes_contents: vec![digit],
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    let answer = kserve.model_infer(image).await.unwrap().into_inner();
    assert_eq!(
        outputs(&answer),
        vec![("data".into(), "INT64".into(), vec![1], vec![7.0])]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_grpc_codes_and_the_server_keeps_serving() {
    let server = TestServer::start(&[two_inputs()], &[("max_request_size", "100000")]).await;
    let mut client = client(&server).await;
    let want = rest_outputs(&server).await;
    let mut wrong_shape = two_request(false);
    wrong_shape.inputs[0].shape = vec![3, 3];
    let mut wrong_datatype = two_request(true);
    wrong_datatype.inputs[1].datatype = "FP32".into();
    let mut missing_raw = two_request(true);
    missing_raw.raw_input_contents.pop();
    let mut unknown_datatype = two_request(false);
    unknown_datatype.inputs[0].datatype = "COMPLEX".into();
    let mut huge_shape = two_request(false);
    huge_shape.inputs[0].shape = vec![i64::MAX, 3];
    let mut unknown_model = two_request(false);
    unknown_model.model_name = "nobody".into();
    let mut oversized = two_request(false);
    oversized.inputs[0].contents.as_mut().unwrap().fp32_contents = vec![0.0; 60_000];
    let cases = [
        (wrong_shape, Code::InvalidArgument),
        (wrong_datatype, Code::InvalidArgument),
        (missing_raw, Code::InvalidArgument),
        (unknown_datatype, Code::InvalidArgument),
        (huge_shape, Code::InvalidArgument),
        (unknown_model, Code::NotFound),
        (oversized, Code::ResourceExhausted),
    ];
    for (index, (request, code)) in cases.into_iter().enumerate() {
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "case {index}: {status:?}");
        assert!(!status.message().is_empty());
        let answer = client
            .model_infer(two_request(true))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outputs(&answer), want, "after case {index}");
    }
    server.stop().await;
}

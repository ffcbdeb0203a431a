//! The KServe v2 REST API over real HTTP, with real ONNX Runtime: metadata of the digits model
//! and of a raw-tensor graph, infer with JSON and with the binary-data extension (answers equal
//! bare ONNX Runtime's on the same tensors), an image through a BYTES input (equal to the
//! `/predictions` answer), requested outputs, bad requests (400, the server keeps serving),
//! unknown models (404), and v2 and `/predictions` requests batching together in one queue.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use common::{example, fixture, metric, ArchiveSpec, TestServer};
use serde_json::{json, Value};

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

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Runs `graph` with bare ONNX Runtime on float32 `a` and int64 `b` (both `[rows, 3]`, as
/// two_inputs.onnx takes) and returns its outputs as flat f64 lists.
fn bare_two_inputs(a: &[f32], b: &[i64]) -> BTreeMap<String, Vec<f64>> {
    let runtime = oxserve::backend::init(None).unwrap();
    let mut session = ort::session::Session::builder(runtime.environment)
        .unwrap()
        .commit_from_file(fixture("two_inputs.onnx"))
        .unwrap();
    let rows = (a.len() / 3) as i64;
    let a = ort::value::Tensor::from_array((vec![rows, 3], a.to_vec())).unwrap();
    let b = ort::value::Tensor::from_array((vec![rows, 3], b.to_vec())).unwrap();
    let outputs = session.run(ort::inputs!["a" => a, "b" => b]).unwrap();
    let (_, sum) = outputs["sum"].try_extract_tensor::<f32>().unwrap();
    let (_, argmax) = outputs["argmax"].try_extract_tensor::<i64>().unwrap();
    BTreeMap::from([
        ("sum".into(), sum.iter().map(|&v| f64::from(v)).collect()),
        ("argmax".into(), argmax.iter().map(|&v| v as f64).collect()),
    ])
}

/// Bare ONNX Runtime's logits for the digits graph on one `[1, 1, 28, 28]` tensor.
fn bare_digits(pixels: &[f32]) -> Vec<f32> {
    let runtime = oxserve::backend::init(None).unwrap();
    let mut session = ort::session::Session::builder(runtime.environment)
        .unwrap()
        .commit_from_file(example("mnist.onnx"))
        .unwrap();
    let input = ort::value::Tensor::from_array((vec![1i64, 1, 28, 28], pixels.to_vec())).unwrap();
    let outputs = session.run(ort::inputs!["input" => input]).unwrap();
    let (_, logits) = outputs["output"].try_extract_tensor::<f32>().unwrap();
    logits.to_vec()
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(want) {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_health_and_error_answers() {
    let server = TestServer::start(&[mnist(), two_inputs()], &[]).await;
    let client = reqwest::Client::new();
    let (status, body) = get(&client, &server.url("/v2")).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "oxserve");
    assert!(body["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));
    assert_eq!(
        get(&client, &server.url("/v2/health/live")).await,
        (200, json!({"live": true}))
    );
    assert_eq!(
        get(&client, &server.url("/v2/health/ready")).await,
        (200, json!({"ready": true}))
    );

    let (status, body) = get(&client, &server.url("/v2/models/mnist")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "name": "mnist", "versions": ["1.0"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}],
        })
    );
    let (status, body) = get(&client, &server.url("/v2/models/two/versions/1.0")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["inputs"],
        json!([
            {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "b", "datatype": "INT64", "shape": [-1, 3]},
        ])
    );
    assert_eq!(
        body["outputs"],
        json!([
            {"name": "sum", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "argmax", "datatype": "INT64", "shape": [-1]},
        ])
    );
    assert_eq!(
        get(&client, &server.url("/v2/models/mnist/ready")).await,
        (200, json!({"name": "mnist", "ready": true}))
    );

    // Unknown models and versions: 404 with the protocol's `error` and TorchServe's fields.
    for path in [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/mnist/versions/9.9",
    ] {
        let (status, body) = get(&client, &server.url(path)).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], body["message"], "{path}");
        assert!(body["error"].as_str().unwrap().contains("nope") || path.contains("9.9"));
    }
    let good = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "b", "datatype": "INT64", "shape": [1, 3], "data": [1, 1, 1]},
    ]});
    let (status, _) = post(&client, &server.url("/v2/models/nope/infer"), &good).await;
    assert_eq!(status, 404);

    // Wrong shape, datatype, name, element count, output: 400, and the next request succeeds.
    let url = server.url("/v2/models/two/infer");
    let mut bad_requests = Vec::new();
    for (pointer, value) in [
        ("/inputs/0/shape", json!([1, 4])),
        ("/inputs/0/datatype", json!("INT64")),
        ("/inputs/1/datatype", json!("FP99")),
        ("/inputs/0/name", json!("c")),
        ("/inputs/0/data", json!([1, 2])),
        ("/inputs/0/shape", json!([1 << 30, 1 << 30])),
        ("/outputs", json!([{"name": "nope"}])),
    ] {
        let mut body = good.clone();
        match body.pointer_mut(pointer) {
            Some(slot) => *slot = value,
            None => body["outputs"] = value,
        }
        bad_requests.push(body);
    }
    for body in &bad_requests {
        let (status, answer) = post(&client, &url, body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer["error"].as_str().is_some(), "{answer}");
        let (status, answer) = post(&client, &url, &good).await;
        assert_eq!(status, 200, "{answer}");
    }
    let response = client.post(&url).body("{").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let (status, answer) = get(&client, &url).await;
    assert_eq!(status, 405);
    assert_eq!(answer["type"], "MethodNotAllowedException");
    assert!(answer["error"].is_string(), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tensors_in_json_and_binary_equal_bare_onnx_runtime() {
    let server = TestServer::start(&[two_inputs(), mnist()], &[]).await;
    let client = reqwest::Client::new();
    let a = [1.5f32, -2.0, 0.25, 0.0, 7.0, 3.5];
    let b = [1i64, 2, 3, -4, 0, 9];
    let want = bare_two_inputs(&a, &b);

    // JSON, nested data, an id.
    let body = json!({"id": "req-1", "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 3], "data": [[1.5, -2.0, 0.25], [0.0, 7.0, 3.5]]},
        {"name": "b", "datatype": "INT64", "shape": [2, 3], "data": b},
    ]});
    let (status, answer) = post(&client, &server.url("/v2/models/two/infer"), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "req-1");
    assert_eq!(answer["model_name"], "two");
    assert_eq!(answer["model_version"], "1.0");
    let outputs = answer["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "sum");
    assert_eq!(outputs[0]["datatype"], "FP32");
    assert_eq!(outputs[0]["shape"], json!([2, 3]));
    assert_close(&floats(&outputs[0]["data"]), &want["sum"]);
    assert_eq!(outputs[1]["name"], "argmax");
    assert_eq!(outputs[1]["datatype"], "INT64");
    assert_close(&floats(&outputs[1]["data"]), &want["argmax"]);

    // Requested outputs only.
    let mut only = body.clone();
    only["outputs"] = json!([{"name": "argmax"}]);
    let (status, answer) = post(
        &client,
        &server.url("/v2/models/two/versions/1.0/infer"),
        &only,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(answer["outputs"][0]["name"], "argmax");

    // The binary-data extension both ways: inputs after the JSON, `sum` back as binary.
    let header = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
        {"name": "b", "datatype": "INT64", "shape": [2, 3], "parameters": {"binary_data_size": 48}},
    ], "outputs": [{"name": "sum", "parameters": {"binary_data": true}}, {"name": "argmax"}]});
    let header = serde_json::to_vec(&header).unwrap();
    let mut request = header.clone();
    request.extend(a.iter().flat_map(|v| v.to_le_bytes()));
    request.extend(b.iter().flat_map(|v| v.to_le_bytes()));
    let response = client
        .post(server.url("/v2/models/two/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .header("Content-Type", "application/octet-stream")
        .body(request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json_length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&bytes[..json_length]).unwrap();
    assert_eq!(answer["outputs"][0]["parameters"]["binary_data_size"], 24);
    assert!(answer["outputs"][0].get("data").is_none());
    let sum: Vec<f64> = bytes[json_length..]
        .chunks_exact(4)
        .map(|chunk| f64::from(f32::from_le_bytes(chunk.try_into().unwrap())))
        .collect();
    assert_close(&sum, &want["sum"]);
    assert_close(&floats(&answer["outputs"][1]["data"]), &want["argmax"]);

    // The digits graph on a raw tensor (handler skipped), also without the batch axis as
    // TorchServe's kservev2 examples send it.
    let pixels: Vec<f32> = (0..784)
        .map(|i| ((i * 37) % 255) as f32 / 255.0 - 0.4)
        .collect();
    let want = bare_digits(&pixels);
    for shape in [json!([1, 1, 28, 28]), json!([1, 28, 28])] {
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": pixels}]});
        let (status, answer) = post(&client, &server.url("/v2/models/mnist/infer"), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outputs"][0]["shape"], json!([1, 10]));
        let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
        assert_close(&floats(&answer["outputs"][0]["data"]), &want);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_in_a_bytes_input_is_answered_as_predictions_is() {
    let server = TestServer::start(&[mnist()], &[]).await;
    let client = reqwest::Client::new();
    let png = std::fs::read(example("digit_7.png")).unwrap();
    let rest = client
        .post(server.url("/predictions/mnist"))
        .body(png.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(rest, "7");
    // As TorchServe's kserve mnist example sends it: base64 text, shape [-1].
    let text = base64::engine::general_purpose::STANDARD.encode(&png);
    let body = json!({"id": "d3b1", "inputs": [{"name": "312a", "shape": [-1], "datatype": "BYTES", "data": [text]}]});
    let (status, answer) = post(&client, &server.url("/v2/models/mnist/infer"), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"id": "d3b1", "model_name": "mnist", "model_version": "1.0", "outputs": [
            {"name": "312a", "datatype": "INT64", "shape": [1], "data": [7]}
        ]})
    );
    // The raw PNG as binary data (a 4-byte length, then the bytes).
    let header = serde_json::to_vec(
        &json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
        "parameters": {"binary_data_size": png.len() + 4}}]}),
    )
    .unwrap();
    let mut request = header.clone();
    request.extend((png.len() as u32).to_le_bytes());
    request.extend(&png);
    let response = client
        .post(server.url("/v2/models/mnist/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["outputs"][0]["data"], json!([7]));
    // Not an image: the handler's 400.
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["not an image"]}]});
    let (status, answer) = post(&client, &server.url("/v2/models/mnist/infer"), &body).await;
    assert_eq!(status, 400, "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_and_predictions_requests_batch_together() {
    let config =
        "batchSize: 16\nmaxBatchDelay: 500\nbatchWait: fill\nminWorkers: 1\nmaxWorkers: 1\n";
    let server = TestServer::start(
        &[ArchiveSpec::new("mlp", fixture("tiny_mlp.onnx"), "tensor").with_config(config)],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let inputs: Vec<[f32; 4]> = (0..12)
        .map(|index| {
            let base = index as f32 * 0.37;
            [base, -base, base * 0.5, 1.0 - base]
        })
        .collect();
    let before = server.metrics_text().await;
    let largest_before = metric(&before, "oxserve_largest_batch_rows", "mlp");
    let tasks: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let (client, input) = (client.clone(), *input);
            let rest = server.url("/predictions/mlp");
            let v2 = server.url("/v2/models/mlp/infer");
            tokio::spawn(async move {
                if index % 2 == 0 {
                    let (status, body) = post(&client, &rest, &json!({"input": [input]})).await;
                    assert_eq!(status, 200, "{body}");
                    floats(&body["output"][0])
                } else {
                    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": input}]});
                    let (status, body) = post(&client, &v2, &body).await;
                    assert_eq!(status, 200, "{body}");
                    floats(&body["outputs"][0]["data"])
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    // Each answer is its own input's: the same as a lone request through the other transport.
    for (index, input) in inputs.iter().enumerate() {
        let alone = if index % 2 == 0 {
            let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": input}]});
            let (_, body) = post(&client, &server.url("/v2/models/mlp/infer"), &body).await;
            floats(&body["outputs"][0]["data"])
        } else {
            let (_, body) = post(
                &client,
                &server.url("/predictions/mlp"),
                &json!({"input": [input]}),
            )
            .await;
            floats(&body["output"][0])
        };
        assert_close(&answers[index], &alone);
    }
    let text = server.metrics_text().await;
    let largest = metric(&text, "oxserve_largest_batch_rows", "mlp");
    assert!(
        largest > 6.0 && largest > largest_before,
        "6 requests of each kind: a run of {largest} rows must have mixed them"
    );
    server.stop().await;
}

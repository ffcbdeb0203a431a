//! The inference API over real HTTP: the example digits model end to end, TorchServe's error
//! answers, and the failure modes (bad input, full queue, oversized body, timeouts, model errors)
//! after each of which the next good request must still succeed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{example, fixture, metric, ArchiveSpec, TestServer};
use serde_json::{json, Value};

fn mnist() -> ArchiveSpec<'static> {
    ArchiveSpec::new(
        "mnist",
        example("mnist.onnx"),
        &example("mnist_handler.json").display().to_string(),
    )
}

fn slow(yaml: &'static str) -> ArchiveSpec<'static> {
    ArchiveSpec::new("slow", fixture("slow_matmul.onnx"), "tensor").with_config(yaml)
}

async fn post_json(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_example_store_classifies_every_digit() {
    let store = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("model-store");
    let server = TestServer::start(
        &[],
        &[
            ("model_store", store.to_str().unwrap()),
            ("load_models", "mnist.mar"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    for digit in 0..10 {
        let png = std::fs::read(example(&format!("digit_{digit}.png"))).unwrap();
        let response = client
            .post(server.url("/predictions/mnist"))
            .body(png)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(
            response.text().await.unwrap(),
            digit.to_string(),
            "digit {digit}"
        );
    }
    assert_eq!(
        common::digit_answer(&server, "/predictions/mnist/1.0", 7).await,
        "7"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_form_and_base64_inputs() {
    let server = TestServer::start(&[mnist()], &[]).await;
    let client = reqwest::Client::new();
    let part = |digit: u32| {
        reqwest::multipart::Part::bytes(
            std::fs::read(example(&format!("digit_{digit}.png"))).unwrap(),
        )
        .file_name(format!("digit_{digit}.png"))
    };
    // One file: the answer itself, as TorchServe.
    let form = reqwest::multipart::Form::new().part("data", part(2));
    let response = client
        .post(server.url("/predictions/mnist"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "2");
    // Several files: one answer each, in order.
    let form = reqwest::multipart::Form::new()
        .part("data", part(8))
        .part("data", part(1))
        .part("data", part(6));
    let response = client
        .post(server.url("/predictions/mnist"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answers: Value = response.json().await.unwrap();
    assert_eq!(answers, json!([8, 1, 6]));
    // Base64 text, as TorchServe's vision handlers accept.
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(example("digit_5.png")).unwrap());
    let response = client
        .post(server.url("/predictions/mnist"))
        .header("content-type", "text/plain")
        .body(encoded)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "5");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_versions_and_routes_answer_as_torchserve() {
    let server = TestServer::start(&[mnist()], &[]).await;
    let client = reqwest::Client::new();
    let cases = [
        (
            "/predictions/nope",
            404,
            "ModelNotFoundException",
            "Model not found: nope",
        ),
        (
            "/predictions/mnist/9.9",
            404,
            "ModelVersionNotFoundException",
            "Model version: 9.9 does not exist for model: mnist",
        ),
        (
            "/predictions",
            404,
            "ResourceNotFoundException",
            "Requested resource is not found, please refer to API document.",
        ),
        (
            "/nowhere",
            404,
            "ResourceNotFoundException",
            "Requested resource is not found, please refer to API document.",
        ),
    ];
    for (path, status, kind, message) in cases {
        let response = client
            .post(server.url(path))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"code": status, "type": kind, "message": message}),
            "{path}"
        );
    }
    let response = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "MethodNotAllowedException");
    let ping: Value = client
        .get(server.url("/ping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping, json!({"status": "Healthy"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_answers_400_and_the_next_request_succeeds() {
    let server = TestServer::start(&[mnist()], &[]).await;
    let client = reqwest::Client::new();
    let jpeg = std::fs::read(fixture("chelsea.jpg")).unwrap();
    let bomb = png_header_claiming(100_000, 100_000);
    let bad_bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not an image", b"hello, world".to_vec(), "not an image"),
        ("empty", Vec::new(), "empty"),
        (
            "truncated JPEG",
            jpeg[..jpeg.len() / 3].to_vec(),
            "cannot decode",
        ),
        ("decompression bomb", bomb, "more than the limit"),
        // Bodies this large are pre-processed before they are queued (oxserve::prepare).
        (
            "large truncated JPEG",
            jpeg[..jpeg.len() * 2 / 3].to_vec(),
            "cannot decode",
        ),
        ("large non-image", vec![b'x'; 64 * 1024], "not an image"),
    ];
    assert!(jpeg.len() * 2 / 3 >= oxserve::prepare::AHEAD_BYTES);
    for (what, body, needle) in bad_bodies {
        let response = client
            .post(server.url("/predictions/mnist"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{what}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["type"], "BadRequestException", "{what}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(needle), "{what}: {message}");
        assert_eq!(
            common::digit_answer(&server, "/predictions/mnist", 3).await,
            "3",
            "after {what}"
        );
    }
    server.stop().await;
}

/// A PNG whose header (with valid CRCs) announces a huge image, with almost no pixel data:
/// a decoder that trusted it would allocate width × height bytes.
fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        let mut body = kind.to_vec();
        body.extend(data);
        png.extend((data.len() as u32).to_be_bytes());
        png.extend(&body);
        png.extend(crc32(&body).to_be_bytes());
    }
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &header);
    // The start of a zlib stream: a real bomb would go on with megabytes of compressed zeros.
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x63, 0x00]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_answer_413_while_streaming() {
    let server = TestServer::start(&[mnist()], &[("max_request_size", "1000")]).await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/predictions/mnist"))
        .body(vec![0u8; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], 413);
    // Chunked, with no Content-Length to check up front: refused as the bytes arrive.
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<Vec<u8>, std::io::Error>(vec![0u8; 200])));
    let response = client
        .post(server.url("/predictions/mnist"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        common::digit_answer(&server, "/predictions/mnist", 9).await,
        "9"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_at_once_and_recovers() {
    let server = TestServer::start(
        &[slow("minWorkers: 1\nmaxWorkers: 1\n")],
        &[("job_queue_size", "1")],
    )
    .await;
    let client = reqwest::Client::new();
    let url = server.url("/predictions/slow");
    // Occupies the only worker for about a second. Each step waits for the server's own account
    // (no fixed sleeps: on a loaded machine a request may take long to reach the queue).
    let busy = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { post_json(&client, &url, json!({"n": [1500]})).await }
    });
    common::wait_for_queue(
        &server,
        "slow",
        "the worker to take the first request",
        |taken, pending| taken == 1.0 && pending == 0,
    )
    .await;
    // Fills the queue's single place.
    let queued = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { post_json(&client, &url, json!({"n": [10]})).await }
    });
    common::wait_for_queue(
        &server,
        "slow",
        "the second request to be queued",
        |_, pending| pending == 1,
    )
    .await;
    let started = Instant::now();
    let (status, body) = post_json(&client, &url, json!({"n": [10]})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "refused at once, not after waiting"
    );
    assert_eq!(body["type"], "ServiceUnavailableException");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("Model \"slow\" has no worker to serve inference request."));
    assert_eq!(busy.await.unwrap().0, 200);
    assert_eq!(queued.await.unwrap().0, 200);
    let (status, _) = post_json(&client, &url, json!({"n": [10]})).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_response_timeout_fails_and_the_worker_recovers() {
    let server = TestServer::start(&[slow("responseTimeout: 1\n")], &[]).await;
    let client = reqwest::Client::new();
    let url = server.url("/predictions/slow");
    let started = Instant::now();
    let (status, body) = post_json(&client, &url, json!({"n": [2200]})).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("response timeout"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "failed at the timeout: {:?}",
        started.elapsed()
    );
    // The run was terminated, so the worker is free again almost at once.
    let started = Instant::now();
    let (status, body) = post_json(&client, &url, json!({"n": [10]})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "worker recovered: {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_error_answers_5xx_and_the_server_keeps_serving() {
    let server = TestServer::start(&[slow("")], &[]).await;
    let client = reqwest::Client::new();
    let url = server.url("/predictions/slow");
    // A negative size passes the request checks but fails inside ONNX Runtime.
    let (status, body) = post_json(&client, &url, json!({"n": [-5]})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        json!({"code": 503, "type": "InternalServerException", "message": "Prediction failed"})
    );
    let (status, body) = post_json(&client, &url, json!({"n": [20]})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["output"][0].is_number());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tensor_handler_serves_any_graph() {
    let server = TestServer::start(
        &[ArchiveSpec::new(
            "two",
            fixture("two_inputs.onnx"),
            "tensor",
        )],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let url = server.url("/predictions/two");
    let (status, body) = post_json(
        &client,
        &url,
        json!({"inputs": {"a": [[1.5, 2.0, 0.5], [0.0, 0.0, 9.0]], "b": [[1, 1, 1], [2, 2, 2]]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"sum": [[2.5, 3.0, 1.5], [2.0, 2.0, 11.0]], "argmax": [1, 2]})
    );
    let (status, body) =
        post_json(&client, &url, json!({"a": [[1.0, 2.0]], "b": [[1, 1, 1]]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"a\""),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_form_under_load_and_every_request_gets_its_own_answer() {
    let config =
        "batchSize: 8\nmaxBatchDelay: 300\nbatchWait: fill\nminWorkers: 1\nmaxWorkers: 1\n";
    let server = TestServer::start(
        &[ArchiveSpec::new("mlp", fixture("tiny_mlp.onnx"), "tensor").with_config(config)],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let url = server.url("/predictions/mlp");
    // Reference answers, one request at a time.
    let inputs: Vec<[f32; 4]> = (0..24)
        .map(|index| {
            let base = index as f32 * 0.37;
            [base, -base, base * 0.5, 1.0 - base]
        })
        .collect();
    let mut expected = Vec::new();
    for input in &inputs {
        let (status, body) = post_json(&client, &url, json!({"input": [input]})).await;
        assert_eq!(status, 200);
        expected.push(body["output"][0].clone());
    }
    let metrics_before = server.metrics_text().await;
    let batches_before = metric(&metrics_before, "oxserve_batches_total", "mlp");
    let tasks: Vec<_> = inputs
        .iter()
        .map(|input| {
            let (client, url, input) = (client.clone(), url.clone(), *input);
            tokio::spawn(async move { post_json(&client, &url, json!({"input": [input]})).await })
        })
        .collect();
    for (task, want) in tasks.into_iter().zip(&expected) {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let got = body["output"][0].as_array().unwrap();
        for (got, want) in got.iter().zip(want.as_array().unwrap()) {
            assert!(
                (got.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-5,
                "{got} vs {want}"
            );
        }
    }
    let text = server.metrics_text().await;
    let batches = metric(&text, "oxserve_batches_total", "mlp") - batches_before;
    assert!(
        batches < 24.0,
        "24 concurrent requests ran in {batches} batches: some must share"
    );
    assert!(metric(&text, "oxserve_largest_batch_rows", "mlp") > 1.0);
    assert_eq!(
        metric(&text, "oxserve_batch_rows_total", "mlp"),
        48.0,
        "every request ran exactly once"
    );
    server.stop().await;
}

/// actix-http's fixed head limits (oxserve::http::listener::MAX_HEADERS, MAX_HEAD_BYTES): past
/// either the request is answered 431 and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_answer_431() {
    use oxserve::http::listener::{MAX_HEADERS, MAX_HEAD_BYTES};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[mnist()], &[]).await;
    let many: String = (0..=MAX_HEADERS)
        .map(|index| format!("x-h{index}: v\r\n"))
        .collect();
    let long = format!("x-long: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
    for headers in [many, long] {
        let mut stream = tokio::net::TcpStream::connect(server.addresses.inference)
            .await
            .unwrap();
        let request = format!("GET /ping HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    }
    assert_eq!(
        common::digit_answer(&server, "/predictions/mnist", 4).await,
        "4"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(
        &[mnist()],
        &[
            // actix-http dates a connection's header deadline from a clock it refreshes every
            // 500 ms, so a header timeout shorter than that can cut off a prompt client.
            ("request_header_timeout_ms", "1000"),
            ("request_body_timeout_ms", "300"),
        ],
    )
    .await;
    let address = server.addresses.inference;
    // Headers that never finish: the connection is closed after the header timeout.
    let mut slow_headers = tokio::net::TcpStream::connect(address).await.unwrap();
    slow_headers
        .write_all(b"POST /predictions/mnist HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        slow_headers.read_to_end(&mut buffer),
    )
    .await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A body that trickles: 408 after the body timeout.
    let mut slow_body = tokio::net::TcpStream::connect(address).await.unwrap();
    slow_body
        .write_all(b"POST /predictions/mnist HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let count = tokio::time::timeout(Duration::from_secs(5), slow_body.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..count]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("RequestTimeoutException"), "{text}");
    let good = reqwest::Client::new()
        .post(server.url("/predictions/mnist"))
        .body(std::fs::read(example("digit_1.png")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(good.text().await.unwrap(), "1");
    server.stop().await;
}

/// A graceful stop: requests accepted before it are answered, then the listeners close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_accepted_requests_then_closes() {
    let server = TestServer::start(&[slow("minWorkers: 1\nmaxWorkers: 1\n")], &[]).await;
    let client = reqwest::Client::new();
    let running: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/predictions/slow"));
            tokio::spawn(async move {
                let response = client.post(url).json(&json!({"n": [500]})).send().await;
                response.unwrap().status().as_u16()
            })
        })
        .collect();
    common::wait_for_queue(
        &server,
        "slow",
        "both requests to arrive",
        |taken, pending| taken + pending as f64 == 2.0,
    )
    .await;
    let address = server.addresses.inference;
    server.stop().await;
    for request in running {
        assert_eq!(request.await.unwrap(), 200, "accepted before the stop");
    }
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

/// One small body cannot become unbounded work: more inputs than `max_request_parts` is a 400
/// before any of them is decoded, as multipart parts or as form fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_too_many_parts_are_refused() {
    let server = TestServer::start(&[mnist()], &[("max_request_parts", "3")]).await;
    let client = reqwest::Client::new();
    let form = (0..4).fold(reqwest::multipart::Form::new(), |form, _| {
        form.part("data", reqwest::multipart::Part::bytes(vec![1u8; 10]))
    });
    let response = client
        .post(server.url("/predictions/mnist"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("max_request_parts"));
    let response = client
        .post(server.url("/predictions/mnist"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("data=a&data=b&data=c&data=d")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        common::digit_answer(&server, "/predictions/mnist", 0).await,
        "0"
    );
    server.stop().await;
}

//! The management API over real HTTP: register → scale → infer → set-default → unregister, sync
//! and async; TorchServe's own management regression cases (test/postman/management_data.json)
//! replayed for their status codes; list pagination; in-flight requests surviving scale-down and
//! unregistration; the model API being off by default.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{example, fixture, ArchiveSpec, TestServer};
use serde_json::{json, Value};

fn mnist(version: &'static str, file: &'static str) -> ArchiveSpec<'static> {
    ArchiveSpec::new(
        "mnist",
        example("mnist.onnx"),
        &example("mnist_handler.json").display().to_string(),
    )
    .versioned(version, file)
}

/// A server with the model API on and nothing loaded at startup.
async fn server(archives: &[ArchiveSpec<'_>]) -> TestServer {
    TestServer::start(
        archives,
        &[("load_models", ""), ("enable_model_api", "true")],
    )
    .await
}

async fn call(method: reqwest::Method, url: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn predict(server: &TestServer, path: &str, digit: u32) -> (u16, String) {
    let body = std::fs::read(example(&format!("digit_{digit}.png"))).unwrap();
    let response = reqwest::Client::new()
        .post(server.url(path))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_scale_infer_set_default_unregister() {
    let server = server(&[mnist("1.0", "mnist.mar"), mnist("2.0", "mnist_v2.mar")]).await;
    let (status, body) = call(Method::POST, server.management("/models?url=mnist.mar")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "Model \"mnist\" Version: 1.0 registered with 0 initial workers. Use scale workers API to add workers for the model."})
    );
    // No worker yet: TorchServe's 503.
    assert_eq!(predict(&server, "/predictions/mnist", 3).await.0, 503);
    let (status, body) = call(
        Method::PUT,
        server.management("/models/mnist?min_worker=1&synchronous=true"),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "Workers scaled to 1 for model: mnist"})
        )
    );
    assert_eq!(
        predict(&server, "/predictions/mnist", 3).await,
        (200, "3".into())
    );

    let (status, body) = call(
        Method::POST,
        server.management("/models?url=mnist_v2.mar&initial_workers=1"),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "Model \"mnist\" Version: 2.0 registered with 1 initial workers"})
        )
    );
    assert_eq!(
        predict(&server, "/predictions/mnist/2.0", 6).await,
        (200, "6".into())
    );
    let (status, all) = call(Method::GET, server.management("/models/mnist/all")).await;
    assert_eq!(status, 200);
    let versions: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["modelVersion"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.0", "2.0"], "default first");

    // The default version cannot go while another remains.
    let (status, body) = call(Method::DELETE, server.management("/models/mnist")).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (403, Some("InvalidModelVersionException"))
    );
    assert_eq!(
        body["message"],
        "Cannot remove default version for model mnist"
    );

    let (status, body) = call(
        Method::PUT,
        server.management("/models/mnist/2.0/set-default"),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "Default version successfully updated for model \"mnist\" to \"2.0\""})
        )
    );
    let (_, described) = call(Method::GET, server.management("/models/mnist")).await;
    assert_eq!(described[0]["modelVersion"], "2.0");

    let (status, body) = call(Method::DELETE, server.management("/models/mnist/1.0")).await;
    assert_eq!(
        (status, body),
        (200, json!({"status": "Model \"mnist\" unregistered"}))
    );
    assert_eq!(predict(&server, "/predictions/mnist/1.0", 3).await.0, 404);
    assert_eq!(
        predict(&server, "/predictions/mnist", 5).await,
        (200, "5".into())
    );
    let (status, _) = call(Method::DELETE, server.management("/models/mnist/")).await;
    assert_eq!(
        status, 200,
        "trailing slash as TorchServe's clients send it"
    );
    let (status, body) = call(Method::GET, server.management("/models/mnist")).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("Model not found: mnist"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_registration_answers_202_then_serves() {
    let server = server(&[mnist("1.0", "mnist.mar")]).await;
    let response = reqwest::Client::new()
        .post(server.management("/models"))
        .json(&json!({"url": "mnist.mar", "initial_workers": 1}))
        .send()
        .await
        .unwrap();
    // A JSON body defaults to synchronous=false, as TorchServe's Gson parser does.
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "Processing worker updates..."})
    );
    for _ in 0..200 {
        let (_, described) = call(Method::GET, server.management("/models/mnist")).await;
        if described[0]["workers"]
            .as_array()
            .is_some_and(|workers| workers.iter().any(|w| w["status"] == "READY"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        predict(&server, "/predictions/mnist", 9).await,
        (200, "9".into())
    );
    let (_, described) = call(Method::GET, server.management("/models/mnist")).await;
    let worker = &described[0]["workers"][0];
    assert!(worker["id"].as_str().unwrap().parse::<u32>().unwrap() >= 9000);
    assert!(worker["startTime"].as_str().unwrap().ends_with('Z'));
    assert!(
        worker["memoryUsage"].as_u64().unwrap() > 10 << 20,
        "the server's resident memory: {worker}"
    );
    assert_eq!(worker["status"], "READY");
    server.stop().await;
}

/// TorchServe's management regression cases that apply to a single model, with the status codes
/// its Postman collection expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torchserve_management_regression_codes() {
    let server = server(&[mnist("1.0", "mnist.mar")]).await;
    let cases: &[(Method, &str, u16)] = &[
        (Method::POST, "/models", 400),
        (Method::POST, "/models?url=&model_name=mnist", 404),
        (Method::POST, "/models?url=../fake.mar", 404),
        (Method::POST, "/models?url=%2e%2e/fake.mar", 404),
        (Method::POST, "/models?url=https://example.com/x.mar", 404),
        (Method::POST, "/models?url=missing.mar", 404),
        (Method::POST, "/models?url=mnist.mar&model_name=mnist&runtime=python4", 400),
        (Method::POST, "/models?url=mnist.mar&model_name=mnist&batch_size=dd&max_batch_delay=junk&synchronous=-1", 200),
        (Method::POST, "/models?url=mnist.mar&model_name=mnist", 409),
        (Method::PUT, "/models/mnist?min_worker=1", 202),
        (Method::PUT, "/models/mnist?min_worker=1&synchronous=true", 200),
        (Method::PUT, "/models/mnist/1.0?min_worker=1&synchronous=true", 200),
        (Method::PUT, "/models/mnist/0.0?min_worker=1&synchronous=true", 404),
        (Method::PUT, "/models/mnist?min_worker=1&number_gpu=1", 202),
        (Method::PUT, "/models/mnist?number_gpu=10", 202),
        (Method::PUT, "/models/mnist?timeout=-1", 202),
        (Method::PUT, "/models/mnist?min_worker=nan&synchronous=nan", 202),
        (Method::PUT, "/models/resnet181?min_worker=1", 404),
        (Method::PUT, "/models/mnist?min_worker=2&max_worker=1", 400),
        (Method::PUT, "/models/mnist?min_worker=-1", 500),
        (Method::PUT, "/models/mnist?max_worker=-1", 400),
        (Method::PUT, "/models/mnist/1.0/set-default", 200),
        (Method::PUT, "/models/mnist/0.0/set-default", 404),
        (Method::PUT, "/models/squeezenet0_1/1.0/set-default", 404),
        (Method::GET, "/models/invalid_squeezenet1_1", 404),
        (Method::GET, "/models/mnist/0.0", 404),
        (Method::GET, "/models?limit=-1", 200),
        // TorchServe's Postman case "List Models": empty values mean the defaults.
        (Method::GET, "/models?limit=&next_page_token=", 200),
        (Method::GET, "/models?limit=1&next_page_token=-1", 200),
        (Method::GET, "/models?next_page_token=12", 200),
        (Method::DELETE, "/models/mnist/0.0", 404),
        (Method::DELETE, "/models/invalid_squeezenet1_1", 404),
        (Method::DELETE, "/models/mnist/?timeout=true&synchronous=-1", 200),
        // An unknown handler registers, then its workers cannot start (TorchServe: 500).
        (Method::POST, "/models?url=mnist.mar&model_name=mnist&handler=invalidHandler", 200),
        (Method::PUT, "/models/mnist?min_worker=1&synchronous=true", 500),
        (Method::DELETE, "/models/mnist", 200),
        // startup_timeout=0 leaves no time to start a worker: the model is not kept.
        (Method::POST, "/models?url=mnist.mar&model_name=mnist&batch_size=3&initial_workers=3&startup_timeout=0", 500),
        (Method::GET, "/models/mnist", 404),
        (Method::POST, "/models?url=mnist.mar&model_name=mnist&startup_timeout=0", 200),
        (Method::DELETE, "/models/mnist", 200),
        (Method::POST, "/models?url=mnist.mar&model_name=mnist&initial_workers=-1", 200),
    ];
    for (method, path, expected) in cases {
        let (status, body) = call(method.clone(), server.management(path)).await;
        assert_eq!(status, *expected, "{method} {path}: {body}");
        if status >= 400 {
            assert!(
                body["code"] == json!(status)
                    && body["type"].is_string()
                    && body["message"].is_string(),
                "{path}: {body}"
            );
        }
    }
    let (_, body) = call(Method::POST, server.management("/models?url=../fake.mar")).await;
    assert_eq!(
        body["message"],
        "Relative path is not allowed in url: ../fake.mar"
    );
    let (_, body) = call(
        Method::PUT,
        server.management("/models/mnist/3.3.3/set-default"),
    )
    .await;
    assert_eq!(
        body["message"],
        "Model version 3.3.3 does not exist for model mnist"
    );
    let (_, body) = call(Method::POST, server.management("/models?url=mnist.mar")).await;
    assert_eq!(
        body["message"],
        "Model version 1.0 is already registered for model mnist"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_sorted_and_paginated_as_torchserve() {
    let server = server(&[mnist("1.0", "mnist.mar")]).await;
    for name in ["charlie", "alpha", "bravo"] {
        let (status, _) = call(
            Method::POST,
            server.management(&format!("/models?url=mnist.mar&model_name={name}")),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (_, page) = call(Method::GET, server.management("/models?limit=2")).await;
    assert_eq!(
        page,
        json!({"nextPageToken": "2", "models": [{"modelName": "alpha", "modelUrl": "mnist.mar"}, {"modelName": "bravo", "modelUrl": "mnist.mar"}]})
    );
    let (_, page) = call(
        Method::GET,
        server.management("/models?limit=2&next_page_token=2"),
    )
    .await;
    assert_eq!(
        page,
        json!({"models": [{"modelName": "charlie", "modelUrl": "mnist.mar"}]})
    );
    let (_, page) = call(Method::GET, server.management("/models?limit=-1")).await;
    assert_eq!(page["models"].as_array().unwrap().len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_and_unregister_finish_in_flight_requests() {
    let slow = ArchiveSpec::new("slow", fixture("slow_matmul.onnx"), "tensor");
    let server = server(&[slow]).await;
    let (status, _) = call(
        Method::POST,
        server.management("/models?url=slow.mar&initial_workers=2"),
    )
    .await;
    assert_eq!(status, 200);
    let client = reqwest::Client::new();
    let send = |n: i64| {
        let (client, url) = (client.clone(), server.url("/predictions/slow"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"n": [n]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let running: Vec<_> = (0..4).map(|_| send(700)).collect();
    common::wait_for_queue(
        &server,
        "slow",
        "the 4 requests to arrive",
        |taken, pending| taken + pending as f64 == 4.0,
    )
    .await;
    let (status, _) = call(
        Method::PUT,
        server.management("/models/slow?min_worker=1&synchronous=true"),
    )
    .await;
    assert_eq!(status, 200);
    for request in running {
        assert_eq!(
            request.await.unwrap(),
            200,
            "accepted before the scale-down, answered after it"
        );
    }
    let running: Vec<_> = (0..3).map(|_| send(700)).collect();
    common::wait_for_queue(
        &server,
        "slow",
        "the 3 more requests to arrive",
        |taken, pending| taken + pending as f64 == 7.0,
    )
    .await;
    let (status, _) = call(Method::DELETE, server.management("/models/slow")).await;
    assert_eq!(status, 200);
    for request in running {
        assert_eq!(
            request.await.unwrap(),
            200,
            "accepted before the unregister, answered before it returned"
        );
    }
    assert_eq!(send(10).await.unwrap(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_api_is_off_by_default_and_apis_describe_themselves() {
    let server = TestServer::start(&[mnist("1.0", "mnist.mar")], &[]).await;
    for (method, path) in [
        (Method::POST, "/models?url=mnist.mar"),
        (Method::DELETE, "/models/mnist"),
    ] {
        let (status, body) = call(method.clone(), server.management(path)).await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(body["type"], "MethodNotAllowedException");
    }
    let (status, body) = call(
        Method::PUT,
        server.management("/models/mnist?min_worker=2&synchronous=true"),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("Workers scaled to 2 for model: mnist")),
        "scaling stays allowed"
    );
    for url in [server.url("/"), server.management("/")] {
        let (status, document) = call(Method::OPTIONS, url.clone()).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(document["openapi"], "3.0.1");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_key_configures_startup_models_under_model_config_yaml() {
    let models = r#"{"mnist": {"1.0": {"minWorkers": 2, "maxWorkers": 3, "batchSize": 4, "maxBatchDelay": 7, "responseTimeout": 9}}}"#;
    let with_yaml = mnist("1.0", "mnist.mar").with_config("batchSize: 6\n");
    let server = TestServer::start(&[with_yaml], &[("models", models)]).await;
    let (status, described) = call(Method::GET, server.management("/models/mnist")).await;
    assert_eq!(status, 200);
    let model = &described[0];
    assert_eq!(
        (model["minWorkers"].as_u64(), model["maxWorkers"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        model["batchSize"], 6,
        "model-config.yaml outranks config.properties"
    );
    assert_eq!(
        (
            model["maxBatchDelay"].as_u64(),
            model["responseTimeout"].as_u64()
        ),
        (Some(7), Some(9))
    );
    assert_eq!(model["workers"].as_array().unwrap().len(), 2);
    assert_eq!(
        predict(&server, "/predictions/mnist", 2).await,
        (200, "2".into())
    );
    server.stop().await;
}

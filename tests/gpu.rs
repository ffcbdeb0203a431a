//! Where models run: TorchServe's `deviceType`/`deviceIds`/`number_of_gpu` contract, and the
//! CUDA execution provider itself.
//!
//! The first test runs everywhere. The others need an NVIDIA GPU and the onnxruntime-gpu library
//! (`scripts/install-onnxruntime.sh --gpu`, plus CUDA 13 and cuDNN 9), so they are ignored by
//! default; run them on such a machine with `cargo test --test gpu -- --ignored`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{digit_answer, example, ArchiveSpec, TestServer};
use serde_json::Value;

fn mnist(yaml: &'static str) -> ArchiveSpec<'static> {
    ArchiveSpec::new(
        "mnist",
        example("mnist.onnx"),
        &example("mnist_handler.json").display().to_string(),
    )
    .with_config(yaml)
}

async fn described(server: &TestServer) -> Value {
    let response = reqwest::get(server.management("/models/mnist"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()[0].clone()
}

async fn all_digits_right(server: &TestServer) {
    for digit in 0..10 {
        assert_eq!(
            digit_answer(server, "/predictions/mnist", digit).await,
            digit.to_string()
        );
    }
}

/// As in TorchServe, `deviceType: gpu` cannot conjure a GPU: with none to use, the model is
/// described and served as a CPU model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_type_gpu_without_gpus_runs_on_the_cpu() {
    let archive = mnist("minWorkers: 2\nmaxWorkers: 2\ndeviceType: gpu\ndeviceIds: [0]\n");
    let server = TestServer::start(&[archive], &[("number_of_gpu", "0")]).await;
    let model = described(&server).await;
    assert_eq!(model["deviceType"], "cpu");
    assert_eq!(model["deviceIds"], serde_json::json!([]));
    let workers = model["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for worker in workers {
        assert_eq!(
            (&worker["gpu"], &worker["gpuUsage"]),
            (&Value::Bool(false), &"N/A".into())
        );
    }
    all_digits_right(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an NVIDIA GPU and onnxruntime-gpu: cargo test --test gpu -- --ignored"]
async fn models_default_to_the_gpu_and_answer_as_on_the_cpu() {
    let server = TestServer::start(
        &[mnist("minWorkers: 2\nmaxWorkers: 2\n")],
        &[("metrics_mode", "prometheus")],
    )
    .await;
    let model = described(&server).await;
    assert_eq!(model["deviceType"], "gpu", "{model}");
    for worker in model["workers"].as_array().unwrap() {
        assert_eq!(worker["gpu"], true, "{worker}");
        let usage = worker["gpuUsage"].as_str().unwrap();
        assert!(usage.starts_with("gpuId::0 utilization.gpu::"), "{usage}");
    }
    all_digits_right(&server).await;
    let metrics = reqwest::get(server.metrics("/metrics?name[]=GPUMemoryUsed"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("GPUMemoryUsed{Level=\"Host\",DeviceId=\"0\","),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an NVIDIA GPU and onnxruntime-gpu: cargo test --test gpu -- --ignored"]
async fn device_ids_and_cpu_type_are_honoured() {
    let on_gpu = TestServer::start(&[mnist("deviceIds: [0]\n")], &[]).await;
    let model = described(&on_gpu).await;
    assert_eq!(
        (&model["deviceType"], &model["deviceIds"]),
        (&"gpu".into(), &serde_json::json!([0]))
    );
    all_digits_right(&on_gpu).await;
    on_gpu.stop().await;

    let on_cpu = TestServer::start(&[mnist("deviceType: cpu\n")], &[]).await;
    let model = described(&on_cpu).await;
    assert_eq!(model["deviceType"], "cpu");
    assert_eq!(model["workers"][0]["gpu"], false);
    all_digits_right(&on_cpu).await;
    on_cpu.stop().await;
}

/// Short batches are padded to `batch_size` rows on the GPU: every answer must still be its own
/// item's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an NVIDIA GPU and onnxruntime-gpu: cargo test --test gpu -- --ignored"]
async fn batches_of_any_size_answer_each_item() {
    let yaml = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 8\nmaxBatchDelay: 20\nbatchWait: fill\n";
    let server = TestServer::start(&[mnist(yaml)], &[]).await;
    assert_eq!(described(&server).await["deviceType"], "gpu");
    for clients in [1, 3, 8, 11] {
        let answers = futures_util::future::join_all(
            (0..clients).map(|client| digit_answer(&server, "/predictions/mnist", client % 10)),
        )
        .await;
        let expected: Vec<String> = (0..clients)
            .map(|client| (client % 10).to_string())
            .collect();
        assert_eq!(answers, expected, "{clients} clients");
    }
    server.stop().await;
}

//! Metrics and logs over real HTTP with real ONNX Runtime: TorchServe's own `/metrics` test
//! patterns (its `test/pytest/test_metrics.py`), counters that move by exactly the requests sent,
//! histograms that count every request, `?name[]=` filtering, a strict check of the standard
//! exposition format and a Prometheus parser over the whole text, `metrics_mode` / `enable_metrics_api`, and the `logs/` files the real
//! binary writes under `LOG_LOCATION` / `METRICS_LOCATION`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{example, ArchiveSpec, TestServer};
use regex::Regex;

fn mnist() -> ArchiveSpec<'static> {
    ArchiveSpec::new(
        "mnist",
        example("mnist.onnx"),
        &example("mnist_handler.json").display().to_string(),
    )
}

async fn predict(client: &reqwest::Client, url: &str, digit: u32) -> (u16, String) {
    let body = std::fs::read(example(&format!("digit_{digit}.png"))).unwrap();
    let response = client.post(url).body(body).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn scrape(client: &reqwest::Client, server: &TestServer, query: &str) -> String {
    let response = client
        .get(server.metrics(&format!("/metrics{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The value of the one series whose line starts with `series` (name and opening labels).
fn value(text: &str, series: &str) -> f64 {
    value_or_zero(text, series, false)
}

/// As [`value`], 0 when the series does not exist yet (as a counter that has not moved).
fn value_or_zero(text: &str, series: &str, missing_is_zero: bool) -> f64 {
    let mut lines = text.lines().filter(|line| line.starts_with(series));
    match (lines.next(), lines.next()) {
        (Some(line), None) => line.rsplit(' ').next().unwrap().parse().unwrap(),
        (None, _) if missing_is_zero => 0.0,
        _ => panic!("not exactly one {series} in:\n{text}"),
    }
}

/// The standard-format checker the unit tests use too.
#[path = "../src/metrics/check.rs"]
mod check;

/// A sample's value as these tests expect it: a plain non-negative number.
const NUMBER: &str = r"\d+(\.\d+)?\n";

/// TorchServe's `test_metrics_prometheus_mode` patterns for the default metrics, for `model`
/// (label sets as the standard format writes them, without TorchServe's trailing comma).
fn torchserve_patterns(model: &str) -> Vec<String> {
    let mut patterns = Vec::new();
    for (name, kind) in [
        ("Requests2XX", "counter"),
        ("QueueTime", "gauge"),
        ("WorkerThreadTime", "gauge"),
        ("CPUUtilization", "gauge"),
        ("MemoryUsed", "gauge"),
        ("MemoryAvailable", "gauge"),
        ("MemoryUtilization", "gauge"),
        ("DiskUsage", "gauge"),
        ("DiskUtilization", "gauge"),
        ("DiskAvailable", "gauge"),
    ] {
        patterns.push(format!("TYPE {name} {kind}"));
        patterns.push(format!(
            r#"{name}\{{Level="Host",Hostname="[^"]+"\}} {NUMBER}"#
        ));
    }
    for name in [
        "ts_inference_requests_total",
        "ts_inference_latency_microseconds",
        "ts_queue_latency_microseconds",
    ] {
        patterns.push(format!("TYPE {name} counter"));
        patterns.push(format!(
            r#"{name}\{{model_name="{model}",model_version="default",hostname="[^"]+"\}} {NUMBER}"#
        ));
    }
    patterns.push("TYPE WorkerLoadTime gauge".into());
    patterns.push(format!(
        r#"WorkerLoadTime\{{WorkerName="[^"]+",Level="Host",Hostname="[^"]+"\}} {NUMBER}"#
    ));
    for name in ["HandlerTime", "PredictionTime"] {
        patterns.push(format!("TYPE {name} gauge"));
        patterns.push(format!(
            r#"{name}\{{ModelName="{model}",Level="Model",Hostname="[^"]+"\}} {NUMBER}"#
        ));
    }
    patterns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_mode_matches_torchserves_tests_and_counts_every_request() {
    // One worker, as in TorchServe's test (its patterns expect one WorkerLoadTime line).
    let server = TestServer::start(
        &[mnist()],
        &[
            ("metrics_mode", "prometheus"),
            ("default_workers_per_model", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    // The host sampler reads once at startup.
    for _ in 0..100 {
        if scrape(&client, &server, "?name[]=CPUUtilization")
            .await
            .contains("CPUUtilization{")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = scrape(&client, &server, "").await;
    let url = server.url("/predictions/mnist");
    for digit in [3, 5, 7] {
        assert_eq!(
            predict(&client, &url, digit).await,
            (200, digit.to_string())
        );
    }
    let after = scrape(&client, &server, "").await;
    println!("{after}");
    check::exposition(&after);

    for pattern in torchserve_patterns("mnist") {
        let matches = Regex::new(&pattern).unwrap().find_iter(&after).count();
        assert_eq!(matches, 1, "pattern {pattern} in:\n{after}");
    }
    // No GPU is used: no GPU family (a family without samples is not listed).
    assert!(!after.contains("GPU"), "{after}");

    let moved = |series: &str| value(&after, series) - value_or_zero(&before, series, true);
    let request = "{model_name=\"mnist\",model_version=\"default\",";
    assert_eq!(moved(&format!("ts_inference_requests_total{request}")), 3.0);
    assert!(moved(&format!("ts_inference_latency_microseconds{request}")) > 0.0);
    assert!(moved(&format!("ts_queue_latency_microseconds{request}")) >= 0.0);
    // The three predictions and the scrape before them.
    assert_eq!(moved("Requests2XX{"), 4.0);
    let model = "{model_name=\"mnist\",model_version=\"1.0\"}";
    for histogram in [
        "oxserve_queue_seconds",
        "oxserve_preprocess_seconds",
        "oxserve_postprocess_seconds",
    ] {
        assert_eq!(
            moved(&format!("{histogram}_count{model}")),
            3.0,
            "{histogram}"
        );
        assert!(
            moved(&format!("{histogram}_sum{model}")) > 0.0,
            "{histogram}"
        );
    }
    let batches = moved(&format!("oxserve_batches_total{model}"));
    assert!((1.0..=3.0).contains(&batches));
    assert_eq!(
        moved(&format!("oxserve_inference_seconds_count{model}")),
        batches
    );
    assert_eq!(moved(&format!("oxserve_batch_size_count{model}")), batches);
    assert_eq!(moved(&format!("oxserve_batch_rows_total{model}")), 3.0);
    assert_eq!(value(&after, &format!("oxserve_live_workers{model}")), 1.0);
    assert_eq!(value(&after, &format!("oxserve_queue_depth{model}")), 0.0);
    let inf_bucket =
        "oxserve_queue_seconds_bucket{model_name=\"mnist\",model_version=\"1.0\",le=\"+Inf\"}";
    assert_eq!(
        value(&after, inf_bucket),
        value(&after, &format!("oxserve_queue_seconds_count{model}"))
    );

    // A standard parser reads the values.
    let lines = after.lines().map(|line| Ok(line.to_string()));
    let scrape_parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    let total = scrape_parsed
        .samples
        .iter()
        .find(|sample| {
            sample.metric == "ts_inference_requests_total"
                && sample.labels.get("model_name") == Some("mnist")
        })
        .unwrap();
    assert_eq!(total.labels.get("model_version"), Some("default"));
    assert!(matches!(total.value, prometheus_parse::Value::Counter(count) if count >= 3.0));
    assert!(scrape_parsed.samples.iter().any(|sample| {
        sample.metric == "oxserve_inference_seconds"
            && matches!(&sample.value, prometheus_parse::Value::Histogram(buckets) if !buckets.is_empty())
    }));

    // A named version gets its own label; an unknown model counts as 4XX only.
    let (status, _) = predict(&client, &server.url("/predictions/mnist/1.0"), 1).await;
    assert_eq!(status, 200);
    let (status, _) = predict(&client, &server.url("/predictions/nope"), 1).await;
    assert_eq!(status, 404);
    let last = scrape(&client, &server, "").await;
    assert_eq!(
        value(
            &last,
            "ts_inference_requests_total{model_name=\"mnist\",model_version=\"1.0\","
        ),
        1.0
    );
    assert_eq!(
        value(&last, "Requests4XX{") - value_or_zero(&after, "Requests4XX{", true),
        1.0
    );
    assert!(!last.contains("model_name=\"nope\""));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_filters_list_only_the_named_families() {
    let server = TestServer::start(&[mnist()], &[("metrics_mode", "prometheus")]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        predict(&client, &server.url("/predictions/mnist"), 2).await,
        (200, "2".to_string())
    );
    let text = scrape(
        &client,
        &server,
        "?name[]=ts_inference_latency_microseconds&name[]=ts_queue_latency_microseconds",
    )
    .await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(
        lines[0],
        "# HELP ts_inference_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds"
    );
    assert_eq!(lines[1], "# TYPE ts_inference_latency_microseconds counter");
    assert!(lines[2].starts_with("ts_inference_latency_microseconds{model_name=\"mnist\",model_version=\"default\",hostname=\""));
    assert_eq!(
        lines[3],
        "# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds"
    );
    check::exposition(&text);
    // Percent-encoded brackets, and a histogram named by one of its samples.
    let text = scrape(
        &client,
        &server,
        "?name%5B%5D=oxserve_inference_seconds_count",
    )
    .await;
    assert!(
        text.starts_with("# HELP oxserve_inference_seconds "),
        "{text}"
    );
    assert!(!text.contains("Requests2XX"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_and_legacy_modes_and_a_disabled_metrics_api_are_torchserves() {
    // log (the default): TorchServe's metrics go to the logs, none to /metrics; oxserve's stay.
    let server = TestServer::start(&[mnist()], &[]).await;
    let client = reqwest::Client::new();
    let url = server.url("/predictions/mnist");
    assert_eq!(predict(&client, &url, 4).await.0, 200);
    let text = scrape(&client, &server, "").await;
    check::exposition(&text);
    assert!(
        !text.contains("Requests2XX") && !text.contains("ts_inference"),
        "{text}"
    );
    assert_eq!(
        value(&text, "oxserve_batch_rows_total{model_name=\"mnist\","),
        1.0
    );
    server.stop().await;

    // legacy: only the three ts_* counters of TorchServe's.
    let server = TestServer::start(&[mnist()], &[("metrics_mode", "legacy")]).await;
    assert_eq!(
        predict(&client, &server.url("/predictions/mnist"), 4)
            .await
            .0,
        200
    );
    let text = scrape(&client, &server, "").await;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter(|family| !family.starts_with("oxserve_"))
        .collect();
    assert_eq!(
        families,
        [
            "ts_inference_requests_total counter",
            "ts_inference_latency_microseconds counter",
            "ts_queue_latency_microseconds counter"
        ]
    );
    server.stop().await;

    // enable_metrics_api=false: no metrics listener at all; inference still works.
    let server = TestServer::start(&[mnist()], &[("enable_metrics_api", "false")]).await;
    assert!(server.addresses.metrics.is_none());
    assert_eq!(
        predict(&client, &server.url("/predictions/mnist"), 9)
            .await
            .0,
        200
    );
    server.stop().await;
}

const OXSERVE: &str = env!("CARGO_BIN_EXE_oxserve");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_torchserves_log_files_where_the_environment_says() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("model_store");
    std::fs::create_dir(&store).unwrap();
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("model-store/mnist.mar");
    std::fs::copy(&archive, store.join("mnist.mar")).unwrap();
    let port = common::free_port();
    std::fs::write(
        dir.path().join("config.properties"),
        format!(
            "inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{}\nmetrics_address=http://127.0.0.1:{}\ngrpc_inference_port=0\ngrpc_management_port=0\n",
            common::free_port(),
            common::free_port()
        ),
    )
    .unwrap();
    let (logs, metrics_logs) = (dir.path().join("my-logs"), dir.path().join("my-metrics"));
    let _stop = common::StopOnDrop::new(dir.path());
    let oxserve = |args: &[&str]| {
        Command::new(OXSERVE)
            .args(args)
            .args([
                "--pid-file",
                dir.path().join("oxserve.pid").to_str().unwrap(),
                // Token authorization is on by default; this test is about log files.
                "--disable-token-auth",
            ])
            .env("LOG_LOCATION", &logs)
            .env("METRICS_LOCATION", &metrics_logs)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let output = oxserve(&[
        "--start",
        "--ncs",
        "--ts-config",
        "config.properties",
        "--model-store",
        "model_store",
        "--models",
        "mnist.mar",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/predictions/mnist");
    for digit in [1, 2, 3] {
        assert_eq!(
            predict(&client, &url, digit).await,
            (200, digit.to_string())
        );
    }
    let output = oxserve(&["--stop"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for name in ["ts_log.log", "access_log.log", "model_log.log"] {
        assert!(logs.join(name).is_file(), "{name} in LOG_LOCATION");
    }
    for name in ["ts_metrics.log", "model_metrics.log"] {
        assert!(
            metrics_logs.join(name).is_file(),
            "{name} in METRICS_LOCATION"
        );
    }
    assert!(!dir.path().join("logs").exists(), "nothing in ./logs");

    let stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3}";
    let count = |text: &str, pattern: &str| {
        Regex::new(&format!("(?m){pattern}"))
            .unwrap()
            .find_iter(text)
            .count()
    };
    let access = read(&logs.join("access_log.log"));
    let prediction_line =
        format!(r#"^{stamp} - /127\.0\.0\.1:\d+ "POST /predictions/mnist HTTP/1\.1" 200 \d+$"#);
    assert_eq!(count(&access, &prediction_line), 3, "{access}");

    let ts_metrics = read(&metrics_logs.join("ts_metrics.log"));
    println!("{ts_metrics}");
    let host = r"\|#hostname:[^,|]+,timestamp:\d+$";
    for (pattern, at_least) in [
        (
            format!(r"^{stamp} - Requests2XX\.Count:1\.0\|#Level:Host{host}"),
            4,
        ),
        (
            format!(
                r"^{stamp} - ts_inference_requests_total\.Count:1\.0\|#model_name:mnist,model_version:default{host}"
            ),
            3,
        ),
        (
            format!(
                r"^{stamp} - ts_inference_latency_microseconds\.Microseconds:\d+\.\d+\|#model_name:mnist,model_version:default{host}"
            ),
            3,
        ),
        (
            format!(r"^{stamp} - QueueTime\.Milliseconds:\d+\.\d+\|#Level:Host{host}"),
            3,
        ),
        (
            format!(r"^{stamp} - WorkerThreadTime\.Milliseconds:\d+\.\d+\|#Level:Host{host}"),
            3,
        ),
        (
            format!(
                r"^{stamp} - WorkerLoadTime\.Milliseconds:\d+\.\d+\|#WorkerName:W-\d+-mnist_1\.0,Level:Host{host}"
            ),
            1,
        ),
        (
            format!(r"^{stamp} - CPUUtilization\.Percent:\d+\.\d+\|#Level:Host{host}"),
            1,
        ),
        (
            format!(r"^{stamp} - DiskAvailable\.Gigabytes:\d+\.\d+\|#Level:Host{host}"),
            1,
        ),
    ] {
        assert!(
            count(&ts_metrics, &pattern) >= at_least,
            "{pattern} x{at_least}"
        );
    }
    let model_metrics = read(&metrics_logs.join("model_metrics.log"));
    for name in ["HandlerTime", "PredictionTime"] {
        let pattern = format!(
            r"^{stamp} - {name}\.ms:\d+\.\d+\|#ModelName:mnist,Level:Model\|#hostname:[^,|]+,requestID:[0-9a-f-]{{36}},timestamp:\d+$"
        );
        assert_eq!(
            count(&model_metrics, &pattern),
            3,
            "{pattern} in\n{model_metrics}"
        );
    }
    let ts_log = read(&logs.join("ts_log.log"));
    assert!(
        count(
            &ts_log,
            &format!(r"^{stamp} \[INFO \] \S+ oxserve::server - ")
        ) >= 1,
        "{ts_log}"
    );
}

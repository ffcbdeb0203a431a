//! Soak and memory gates against the real server binary: saturated load over REST, TorchServe's
//! gRPC and KServe's v2 gRPC with bad requests mixed in, register/unregister cycles, and `kill -9`
//! during registration bursts. CI runs a short version; `scripts/soak.sh` runs the full one
//! (30 minutes, 1,000 cycles, 100 kills) on a release build.
//!
//! Sized by environment: `OXSERVE_SOAK_SECS` (load duration), `OXSERVE_SOAK_CYCLES`,
//! `OXSERVE_SOAK_KILLS`, and `OXSERVE_SOAK_GRAPH` (an image-classifier ONNX graph for the cycles;
//! the tiny ResNet fixture by default).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{example, fixture, pack_into, ArchiveSpec, StopOnDrop};
use oxserve::grpc::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use oxserve::grpc::proto::inference::model_infer_request::InferInputTensor;
use oxserve::grpc::proto::inference::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use oxserve::grpc::proto::torchserve::inference_ap_is_service_client::InferenceApIsServiceClient;
use oxserve::grpc::proto::torchserve::PredictionsRequest;
use prost::Message as _;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

const OXSERVE: &str = env!("CARGO_BIN_EXE_oxserve");
/// The phases saturate the machine: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// RSS may grow this much past warm-up under load, and after the register/unregister cycles.
const LOAD_GROWTH_MB: f64 = 50.0;
const CYCLES_GROWTH_MB: f64 = 100.0;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A server process in its own folder, with `config.properties` there (restarts restore its
/// snapshots, as TorchServe's do when started without `--ts-config`).
struct Server {
    dir: tempfile::TempDir,
    inference: u16,
    management: u16,
    grpc_inference: u16,
    child: Option<Child>,
}

impl Server {
    fn new(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let (inference, management, grpc_inference) = (
            common::free_port(),
            common::free_port(),
            common::free_port(),
        );
        std::fs::write(
            dir.path().join("config.properties"),
            format!(
                "inference_address=http://127.0.0.1:{inference}\n\
                 management_address=http://127.0.0.1:{management}\n\
                 metrics_address=http://127.0.0.1:{}\n\
                 model_store={}\n\
                 enable_model_api=true\n\
                 disable_token_authorization=true\n\
                 grpc_inference_port={grpc_inference}\ngrpc_management_port=0\n{extra}",
                common::free_port(),
                store.display()
            ),
        )
        .unwrap();
        Server {
            dir,
            inference,
            management,
            grpc_inference,
            child: None,
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    async fn start(&mut self) {
        let child = Command::new(OXSERVE)
            .args(["--foreground", "--pid-file", "oxserve.pid"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let ping = format!("http://127.0.0.1:{}/ping", self.inference);
        for _ in 0..1500 {
            if let Ok(response) = reqwest::get(&ping).await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not become healthy");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Resident memory of the server process, in MB.
    fn rss_mb(&self) -> f64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    fn inference_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.inference)
    }

    /// A gRPC channel to the inference port (TorchServe's and KServe's services share it).
    async fn grpc(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.grpc_inference))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn management_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.management)
    }

    async fn model_names(&self, client: &reqwest::Client) -> Vec<String> {
        let listed: Value = client
            .get(self.management_url("/models?limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|model| model["modelName"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(StopOnDrop::new(self.dir.path()));
        self.kill();
    }
}

/// An archive of the shipped example store.
fn example_store(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("model-store")
        .join(name)
}

fn classifier(name: &str) -> ArchiveSpec<'_> {
    let graph = std::env::var("OXSERVE_SOAK_GRAPH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| fixture("tiny_resnet.onnx"));
    ArchiveSpec::new(name, graph, "image_classifier")
}

/// One request of the mix: the model, its body, and what must come back.
struct Case {
    model: &'static str,
    body: Vec<u8>,
    /// `Some(body)`: answered with exactly this (REST's body, which is also gRPC `Predictions`'s
    /// `prediction`); `None`: refused.
    expect: Option<Vec<u8>>,
    /// The v2 `ModelInfer` answer, encoded: for good cases, that of a first call (whose digit must
    /// be REST's).
    expect_v2: Option<Vec<u8>>,
}

/// Good requests (digits, a photo) and bad ones (garbage, truncated files, an unknown model, an
/// empty body, a tiny PNG claiming a huge image).
fn cases(photo_answer: Vec<u8>) -> (Vec<Case>, Vec<Case>) {
    let case = |model, body, expect| Case {
        model,
        body,
        expect,
        expect_v2: None,
    };
    let mut good: Vec<Case> = (0..10)
        .map(|digit| {
            let body = std::fs::read(example(&format!("digit_{digit}.png"))).unwrap();
            case("mnist", body, Some(digit.to_string().into_bytes()))
        })
        .collect();
    let photo = std::fs::read(fixture("chelsea.jpg")).unwrap();
    good.push(case("resnet", photo.clone(), Some(photo_answer)));
    let png = std::fs::read(example("digit_3.png")).unwrap();
    let mut huge_png = png[..33].to_vec();
    huge_png[16..24].copy_from_slice(&[0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0]);
    let bad = [
        ("mnist", b"not an image at all".to_vec()),
        ("resnet", photo[..photo.len() / 3].to_vec()),
        ("mnist", png[..png.len() / 2].to_vec()),
        ("nobody", png.clone()),
        ("mnist", Vec::new()),
        ("resnet", huge_png),
    ]
    .into_iter()
    .map(|(model, body)| case(model, body, None))
    .collect();
    (good, bad)
}

/// The three ways a request reaches a model; the load rotates through them.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Rest,
    /// TorchServe's gRPC `Predictions`.
    Predictions,
    /// KServe v2 gRPC `ModelInfer`, the body as a BYTES input.
    ModelInfer,
}
const PROTOCOLS: [Protocol; 3] = [Protocol::Rest, Protocol::Predictions, Protocol::ModelInfer];

/// The gRPC codes TorchServe maps client errors (4xx) to.
const REFUSALS: [Code; 5] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::OutOfRange,
];

/// What came back: an answer's bytes, a refusal (a 4xx or its gRPC code), or anything else.
enum Reply {
    Answer(Vec<u8>),
    Refused,
    Other(String),
}

fn grpc_reply(result: Result<Vec<u8>, tonic::Status>) -> Reply {
    match result {
        Ok(bytes) => Reply::Answer(bytes),
        Err(status) if REFUSALS.contains(&status.code()) => Reply::Refused,
        Err(status) => Reply::Other(format!("{status:?}")),
    }
}

fn v2_request(case: &Case) -> ModelInferRequest {
    let contents = InferTensorContents {
        bytes_contents: vec![case.body.clone()],
        ..Default::default()
    };
    ModelInferRequest {
        model_name: case.model.into(),
        inputs: vec![InferInputTensor {
            name: "data".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            parameters: Default::default(),
            contents: Some(contents),
        }],
        ..Default::default()
    }
}

/// One load client: a REST client and its own HTTP/2 channel for both gRPC services.
struct Clients {
    rest: reqwest::Client,
    base: String,
    predictions: InferenceApIsServiceClient<Channel>,
    v2: GrpcInferenceServiceClient<Channel>,
}

impl Clients {
    async fn new(server: &Server) -> Clients {
        let channel = server.grpc().await;
        Clients {
            rest: reqwest::Client::new(),
            base: server.inference_url(""),
            predictions: InferenceApIsServiceClient::new(channel.clone()),
            v2: GrpcInferenceServiceClient::new(channel),
        }
    }

    async fn send(&mut self, protocol: Protocol, case: &Case) -> Reply {
        match protocol {
            Protocol::Rest => self.rest(case).await,
            Protocol::Predictions => {
                let request = PredictionsRequest {
                    model_name: case.model.into(),
                    input: [("data".to_string(), case.body.clone())].into(),
                    ..Default::default()
                };
                let answer = self.predictions.predictions(request).await;
                grpc_reply(answer.map(|answer| answer.into_inner().prediction))
            }
            Protocol::ModelInfer => {
                let answer = self.v2.model_infer(v2_request(case)).await;
                grpc_reply(answer.map(|answer| v2_answer(answer.into_inner())))
            }
        }
    }

    async fn rest(&self, case: &Case) -> Reply {
        let url = format!("{}/predictions/{}", self.base, case.model);
        let response = match self.rest.post(url).body(case.body.clone()).send().await {
            Ok(response) => response,
            Err(error) => return Reply::Other(error.to_string()),
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        match status {
            200 => Reply::Answer(body.to_vec()),
            400..=499 => Reply::Refused,
            _ => Reply::Other(format!("{status} {}", String::from_utf8_lossy(&body))),
        }
    }
}

/// A v2 answer, encoded, less the request id the server makes up for each request.
fn v2_answer(mut answer: ModelInferResponse) -> Vec<u8> {
    answer.id.clear();
    answer.encode_to_vec()
}

/// Fills in each good case's v2 answer from one call; the digits' must name the digit REST names.
async fn v2_references(v2: &mut GrpcInferenceServiceClient<Channel>, good: &mut [Case]) {
    for case in good {
        let answer = v2.model_infer(v2_request(case)).await.unwrap();
        let answer = answer.into_inner();
        if case.model == "mnist" {
            let digit: i64 = String::from_utf8_lossy(case.expect.as_ref().unwrap())
                .parse()
                .unwrap();
            let contents = answer.outputs[0].contents.as_ref().unwrap();
            assert_eq!(contents.int64_contents, [digit]);
        }
        case.expect_v2 = Some(v2_answer(answer));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_load_with_bad_requests_keeps_answering_and_memory_flat() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seconds = setting("OXSERVE_SOAK_SECS", 30);
    let mut server = Server::new("load_models=all\ndefault_workers_per_model=1\n");
    std::fs::copy(example_store("mnist.mar"), server.store().join("mnist.mar")).unwrap();
    pack_into(&server.store(), &classifier("resnet"));
    server.start().await;
    let client = reqwest::Client::new();
    let photo = std::fs::read(fixture("chelsea.jpg")).unwrap();
    let reference = client
        .post(server.inference_url("/predictions/resnet"))
        .body(photo)
        .send()
        .await
        .unwrap();
    assert_eq!(reference.status(), 200);
    let (mut good, bad) = cases(reference.bytes().await.unwrap().to_vec());
    let mut v2 = GrpcInferenceServiceClient::new(server.grpc().await);
    v2_references(&mut v2, &mut good).await;
    let (good, bad) = (Arc::new(good), Arc::new(bad));

    // Per protocol: good requests answered, bad ones refused.
    let served: Arc<[AtomicU64; 3]> = Arc::default();
    let refused: Arc<[AtomicU64; 3]> = Arc::default();
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client_index in 0..8u64 {
        let (good, bad) = (Arc::clone(&good), Arc::clone(&bad));
        let (served, refused) = (Arc::clone(&served), Arc::clone(&refused));
        let failures = Arc::clone(&failures);
        let mut clients = Clients::new(&server).await;
        tasks.push(tokio::spawn(async move {
            let mut sent = client_index;
            while Instant::now() < end {
                sent += 1;
                // One request in 20 is bad; every case goes through every protocol in turn.
                let case = if sent % 20 == 0 {
                    &bad[(sent / 20) as usize % bad.len()]
                } else {
                    &good[sent as usize % good.len()]
                };
                let which = sent as usize % PROTOCOLS.len();
                let protocol = PROTOCOLS[which];
                let want = match protocol {
                    Protocol::ModelInfer => &case.expect_v2,
                    _ => &case.expect,
                };
                let failure = match (clients.send(protocol, case).await, want) {
                    (Reply::Answer(body), Some(want)) if &body == want => {
                        served[which].fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    (Reply::Refused, None) => {
                        refused[which].fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    (Reply::Answer(body), _) => {
                        format!("answered {}", String::from_utf8_lossy(&body))
                    }
                    (Reply::Refused, Some(_)) => "refused a good request".to_string(),
                    (Reply::Other(what), _) => what,
                };
                let failure = format!("{protocol:?} {}: {failure}", case.model);
                failures.lock().unwrap().push(failure);
            }
        }));
    }
    // Warm-up: the first tenth of the run (allocator arenas, ONNX Runtime's buffers, pools).
    tokio::time::sleep(Duration::from_secs(seconds / 10 + 1)).await;
    let warm = server.rss_mb();
    let mut peak = warm;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(server.rss_mb());
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = server.rss_mb();
    let count = |counts: &[AtomicU64; 3]| counts.each_ref().map(|c| c.load(Ordering::Relaxed));
    let (served, refused) = (count(&served), count(&refused));
    let (total_served, total_refused): (u64, u64) = (served.iter().sum(), refused.iter().sum());
    let failures = failures.lock().unwrap().clone();
    println!(
        "{seconds} s: {total_served} good answered ({:.0} req/s; REST, gRPC Predictions, v2 ModelInfer: {served:?}), {total_refused} bad refused ({refused:?}), {} failed; RSS after warm-up {warm:.1} MB, peak {peak:.1} MB, end {last:.1} MB",
        total_served as f64 / started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(
        served.iter().chain(&refused).all(|&count| count > 0),
        "every protocol answers good requests and refuses bad ones"
    );
    assert!(
        last - warm < LOAD_GROWTH_MB,
        "RSS grew {:.1} MB after warm-up",
        last - warm
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_unregister_cycles_give_memory_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cycles = setting("OXSERVE_SOAK_CYCLES", 50).max(2);
    let mut server = Server::new("");
    pack_into(&server.store(), &classifier("resnet"));
    server.start().await;
    let client = reqwest::Client::new();
    let photo = std::fs::read(fixture("chelsea.jpg")).unwrap();
    let mut first_answer = None;
    let mut baseline = 0.0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let registered = client
            .post(server.management_url(
                "/models?url=resnet.mar&model_name=resnet&initial_workers=1&synchronous=true",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 200, "cycle {cycle}");
        let answer = client
            .post(server.inference_url("/predictions/resnet"))
            .body(photo.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "cycle {cycle}");
        let answer = answer.bytes().await.unwrap();
        assert_eq!(first_answer.get_or_insert_with(|| answer.clone()), &answer);
        let removed = client
            .delete(server.management_url("/models/resnet"))
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), 200, "cycle {cycle}");
        if cycle == 0 {
            // After one whole cycle ONNX Runtime and the allocator are warm.
            baseline = server.rss_mb();
        } else if cycle % 100 == 0 {
            println!("cycle {cycle}: RSS {:.1} MB", server.rss_mb());
        }
    }
    let end = server.rss_mb();
    println!(
        "{cycles} register/infer/unregister cycles in {:.1} s: RSS {baseline:.1} MB after the first, {end:.1} MB at the end",
        started.elapsed().as_secs_f64()
    );
    assert!(
        end - baseline < CYCLES_GROWTH_MB,
        "RSS grew {:.1} MB over {cycles} cycles",
        end - baseline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_registration_bursts_loses_no_acknowledged_model() {
    let _one = ONE_AT_A_TIME.lock().await;
    let kills = setting("OXSERVE_SOAK_KILLS", 5);
    let mut server = Server::new("");
    std::fs::copy(example_store("mnist.mar"), server.store().join("mnist.mar")).unwrap();
    let client = reqwest::Client::new();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut next = 0u64;
    let mut total_acknowledged = 0usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for round in 0..=kills {
        server.start().await;
        let present = server.model_names(&client).await;
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|name| !present.contains(name))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged models lost: {lost:?}"
        );
        let back: Vec<&String> = removed
            .iter()
            .filter(|name| present.contains(name))
            .collect();
        assert!(
            back.is_empty(),
            "round {round}: unregistered models came back: {back:?}"
        );
        if round == kills {
            break;
        }
        // Clear the last round's models, then register until the kill lands.
        acknowledged.clear();
        removed.clear();
        for name in present {
            let response = client
                .delete(server.management_url(&format!("/models/{name}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            removed.push(name);
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(50 + seed % 400);
        let burst = async {
            loop {
                let name = format!("m{next}");
                next += 1;
                let url =
                    server.management_url(&format!("/models?url=mnist.mar&model_name={name}"));
                match client.post(url).send().await {
                    Ok(response) if response.status() == 200 => acknowledged.push(name),
                    _ => break,
                }
            }
        };
        let pid = server.child.as_ref().unwrap().id();
        let killer = async {
            tokio::time::sleep(delay).await;
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        };
        tokio::join!(burst, killer);
        total_acknowledged += acknowledged.len();
        server.kill();
    }
    println!(
        "{kills} kill -9 rounds: all {total_acknowledged} acknowledged registrations and every removal survived"
    );
    assert!(
        total_acknowledged > 0,
        "no registration was acknowledged before a kill"
    );
}

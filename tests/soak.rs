//! Soak and memory gates against the real server binary: saturated load with bad requests mixed in,
//! register/unregister cycles, and `kill -9` during registration bursts. CI runs a short version;
//! `scripts/soak.sh` runs the full one (30 minutes, 1,000 cycles, 100 kills) on a release build.
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
use serde_json::Value;

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process in its own folder, with `config.properties` there (restarts restore its
/// snapshots, as TorchServe's do when started without `--ts-config`).
struct Server {
    dir: tempfile::TempDir,
    inference: u16,
    management: u16,
    child: Option<Child>,
}

impl Server {
    fn new(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let (inference, management) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("config.properties"),
            format!(
                "inference_address=http://127.0.0.1:{inference}\n\
                 management_address=http://127.0.0.1:{management}\n\
                 metrics_address=http://127.0.0.1:{}\n\
                 model_store={}\n\
                 enable_model_api=true\n\
                 disable_token_authorization=true\n\
                 grpc_inference_port=0\ngrpc_management_port=0\n{extra}",
                free_port(),
                store.display()
            ),
        )
        .unwrap();
        Server {
            dir,
            inference,
            management,
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

/// One request of the mix: where it goes, its body, and what must come back.
struct Case {
    path: &'static str,
    body: Vec<u8>,
    /// `Some(body)`: 200 with exactly this answer; `None`: a 4xx.
    expect: Option<Vec<u8>>,
}

/// Good requests (digits, a photo) and bad ones (garbage, truncated files, an unknown model, an
/// empty body, a tiny PNG claiming a huge image).
fn cases(photo_answer: Vec<u8>) -> (Vec<Case>, Vec<Case>) {
    let mut good: Vec<Case> = (0..10)
        .map(|digit| Case {
            path: "/predictions/mnist",
            body: std::fs::read(example(&format!("digit_{digit}.png"))).unwrap(),
            expect: Some(digit.to_string().into_bytes()),
        })
        .collect();
    let photo = std::fs::read(fixture("chelsea.jpg")).unwrap();
    good.push(Case {
        path: "/predictions/resnet",
        body: photo.clone(),
        expect: Some(photo_answer),
    });
    let png = std::fs::read(example("digit_3.png")).unwrap();
    let mut huge_png = png[..33].to_vec();
    huge_png[16..24].copy_from_slice(&[0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0]);
    let bad = [
        ("/predictions/mnist", b"not an image at all".to_vec()),
        ("/predictions/resnet", photo[..photo.len() / 3].to_vec()),
        ("/predictions/mnist", png[..png.len() / 2].to_vec()),
        ("/predictions/nobody", png.clone()),
        ("/predictions/mnist", Vec::new()),
        ("/predictions/resnet", huge_png),
    ]
    .into_iter()
    .map(|(path, body)| Case {
        path,
        body,
        expect: None,
    })
    .collect();
    (good, bad)
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
    let (good, bad) = cases(reference.bytes().await.unwrap().to_vec());
    let (good, bad) = (Arc::new(good), Arc::new(bad));

    let served = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..8u64)
        .map(|client_index| {
            let (good, bad) = (Arc::clone(&good), Arc::clone(&bad));
            let (served, refused) = (Arc::clone(&served), Arc::clone(&refused));
            let failures = Arc::clone(&failures);
            let base = server.inference_url("");
            let client = client.clone();
            tokio::spawn(async move {
                let mut sent = client_index;
                while Instant::now() < end {
                    sent += 1;
                    // One request in 20 is bad.
                    let case = if sent % 20 == 0 {
                        &bad[(sent / 20) as usize % bad.len()]
                    } else {
                        &good[sent as usize % good.len()]
                    };
                    let response = client
                        .post(format!("{base}{}", case.path))
                        .body(case.body.clone())
                        .send()
                        .await;
                    let outcome = match response {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response.bytes().await.unwrap_or_default();
                            match &case.expect {
                                Some(want) if status == 200 && body.as_ref() == want.as_slice() => {
                                    served.fetch_add(1, Ordering::Relaxed);
                                    Ok(())
                                }
                                None if (400..500).contains(&status) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    Ok(())
                                }
                                _ => Err(format!(
                                    "{} answered {status}: {}",
                                    case.path,
                                    String::from_utf8_lossy(&body)
                                )),
                            }
                        }
                        Err(error) => Err(format!("{}: {error}", case.path)),
                    };
                    if let Err(failure) = outcome {
                        failures.lock().unwrap().push(failure);
                    }
                }
            })
        })
        .collect();
    // Warm-up: the first tenth of the run (allocator arenas, ONNX Runtime's buffers, pools).
    tokio::time::sleep(Duration::from_secs(seconds / 10 + 1)).await;
    let warm = server.rss_mb();
    let mut peak = warm;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(server.rss_mb());
    }
    for client in clients {
        client.await.unwrap();
    }
    let last = server.rss_mb();
    let (served, refused) = (
        served.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    let failures = failures.lock().unwrap().clone();
    println!(
        "{seconds} s: {served} good answered ({:.0} req/s), {refused} bad refused, {} failed; RSS after warm-up {warm:.1} MB, peak {peak:.1} MB, end {last:.1} MB",
        served as f64 / started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(served > 0 && refused > 0);
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

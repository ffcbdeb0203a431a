//! The safe defaults over real HTTP: token authorization on both APIs (TorchServe's key file,
//! errors and rotation), model URLs held to the allow-list (redirects re-checked, hostile archives
//! refused, nothing written outside the store), and snapshots that bring every acknowledged model
//! back after `kill -9`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{example, ArchiveSpec, TestServer};
use serde_json::{json, Value};

fn mnist() -> ArchiveSpec<'static> {
    ArchiveSpec::new(
        "mnist",
        example("mnist.onnx"),
        &example("mnist_handler.json").display().to_string(),
    )
}

fn keys(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("key_file.json")).unwrap()).unwrap()
}

async fn get(url: String, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The digit 6 sent to `mnist` with `token`: the status and the answer.
async fn predict(server: &TestServer, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(server.url("/predictions/mnist"))
        .bearer_auth(token)
        .body(std::fs::read(example("digit_6.png")).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authorization_guards_both_apis() {
    let server = TestServer::start(&[mnist()], &[("disable_token_authorization", "false")]).await;
    let file = keys(server.logs.path());
    let inference = file["inference"]["key"].as_str().unwrap().to_string();
    let management = file["management"]["key"].as_str().unwrap().to_string();
    let api = file["API"]["key"].as_str().unwrap().to_string();
    let refused = json!({
        "code": 400,
        "type": "InvalidKeyException",
        "message": "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
    });
    for (url, token) in [
        (server.url("/predictions/mnist"), None),
        (server.url("/predictions/mnist"), Some("wrong")),
        (server.url("/predictions/mnist"), Some(management.as_str())),
        (server.management("/models"), None),
        (server.management("/models"), Some(inference.as_str())),
    ] {
        assert_eq!(
            get(url.clone(), token).await,
            (400, refused.clone()),
            "{url} with {token:?}"
        );
    }
    // Health probes (Docker, Kubernetes) send no key: /ping answers anyway, whatever it carries.
    for token in [None, Some("wrong"), Some(inference.as_str())] {
        assert_eq!(
            get(server.url("/ping"), token).await,
            (200, json!({"status": "Healthy"})),
            "{token:?}"
        );
    }
    assert_eq!(
        get(server.management("/models"), Some(&management)).await.0,
        200
    );
    assert_eq!(
        get(server.metrics("/metrics"), None).await.0,
        200,
        "metrics need no key, as in TorchServe"
    );
    assert_eq!(predict(&server, &inference).await, (200, "6".into()));

    // Rotation: only with the API key; the old inference key stops working, the new one works.
    assert_eq!(
        get(
            server.management("/token?type=inference"),
            Some(&management)
        )
        .await
        .0,
        400
    );
    assert_eq!(
        get(server.management("/token?type=inference"), Some(&api))
            .await
            .0,
        200
    );
    let rotated = keys(server.logs.path())["inference"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rotated, inference);
    assert_eq!(predict(&server, &inference).await.0, 400);
    assert_eq!(predict(&server, &rotated).await, (200, "6".into()));
    server.stop().await;
}

/// A zip whose one entry climbs out of the folder it is unpacked into.
fn zip_slip_archive() -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    writer
        .start_file("../../escaped-by-oxserve-test.txt", options)
        .unwrap();
    writer.write_all(b"pwned").unwrap();
    writer.start_file("MAR-INF/MANIFEST.json", options).unwrap();
    writer.write_all(b"{}").unwrap();
    writer.finish().unwrap().into_inner()
}

/// A local archive host: `/mnist.mar`, `/evil.mar` (zip slip), `/hop.mar` (a redirect to a host
/// name the allow-list does not name).
async fn archive_host(mnist: Vec<u8>) -> std::net::SocketAddr {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let redirect = format!("http://localhost:{}/mnist.mar", address.port());
    let server = HttpServer::new(move || {
        let (mnist, redirect) = (mnist.clone(), redirect.clone());
        App::new()
            .route(
                "/mnist.mar",
                web::get().to(move || {
                    let mnist = mnist.clone();
                    async move { HttpResponse::Ok().body(mnist) }
                }),
            )
            .route(
                "/evil.mar",
                web::get().to(|| async { HttpResponse::Ok().body(zip_slip_archive()) }),
            )
            .route(
                "/hop.mar",
                web::get().to(move || {
                    let redirect = redirect.clone();
                    async move {
                        HttpResponse::Found()
                            .insert_header(("location", redirect))
                            .finish()
                    }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_urls_obey_the_allow_list_and_hostile_archives_are_refused() {
    let packed = tempfile::tempdir().unwrap();
    let archive = common::pack_into(packed.path(), &mnist());
    let host = archive_host(std::fs::read(&archive).unwrap()).await;
    let allowed = format!("http://127\\.0\\.0\\.1:{}/.*", host.port());
    let server = TestServer::start(
        &[],
        &[
            ("load_models", ""),
            ("enable_model_api", "true"),
            ("allowed_urls", &allowed),
        ],
    )
    .await;
    let register = |url: String| {
        let endpoint = server.management(&format!("/models?url={url}&initial_workers=1"));
        async move {
            let response = reqwest::Client::new().post(endpoint).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = register(format!("http://localhost:{}/mnist.mar", host.port())).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not match any allowed URL"),
        "{body}"
    );
    let (status, body) = register(format!("http://127.0.0.1:{}/hop.mar", host.port())).await;
    assert_eq!(
        status, 404,
        "a redirect to a host off the allow-list: {body}"
    );
    let (status, body) = register(format!("http://127.0.0.1:{}/evil.mar", host.port())).await;
    assert_eq!(status, 400, "{body}");
    let store_parent = server.store.path().parent().unwrap().to_path_buf();
    assert!(!store_parent.join("escaped-by-oxserve-test.txt").exists());
    assert!(
        !server.store.path().join("evil.mar").exists(),
        "a refused download leaves the store"
    );

    let (status, body) = register(format!("http://127.0.0.1:{}/mnist.mar", host.port())).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        server.store.path().join("mnist.mar").is_file(),
        "downloaded into the store"
    );
    let answer = reqwest::Client::new()
        .post(server.url("/predictions/mnist"))
        .body(std::fs::read(example("digit_0.png")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), "0");
    let (status, body) = register(format!("http://127.0.0.1:{}/mnist.mar", host.port())).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["message"], "Model file already exists mnist.mar");
    let removed = reqwest::Client::new()
        .delete(server.management("/models/mnist"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert!(
        !server.store.path().join("mnist.mar").exists(),
        "a downloaded archive leaves with its model"
    );
    server.stop().await;
}

const OXSERVE: &str = env!("CARGO_BIN_EXE_oxserve");

fn start_foreground(dir: &Path) -> Child {
    Command::new(OXSERVE)
        .args(["--foreground", "--pid-file", "oxserve.pid"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(port: u16) {
    for _ in 0..500 {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/ping")).await {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not become healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_model_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("model-store/mnist.mar"),
        store.join("mnist.mar"),
    )
    .unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (inference, management) = (free(), free());
    std::fs::write(
        dir.path().join("config.properties"),
        format!(
            "inference_address=http://127.0.0.1:{inference}\nmanagement_address=http://127.0.0.1:{management}\nmetrics_address=http://127.0.0.1:{}\ngrpc_inference_port=0\ngrpc_management_port=0\nmodel_store={}\nenable_model_api=true\ndisable_token_authorization=true\n",
            free(),
            store.display()
        ),
    )
    .unwrap();
    let _stop = common::StopOnDrop::new(dir.path());
    let mut server = start_foreground(dir.path());
    let killed = server.id();
    wait_healthy(inference).await;
    // A burst of registrations, killed without warning part-way through.
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    let burst = async {
        for index in 0..40 {
            let name = format!("m{index:02}");
            let url = format!(
                "http://127.0.0.1:{management}/models?url=mnist.mar&model_name={name}&batch_size=3"
            );
            match client.post(url).send().await {
                Ok(response) if response.status() == 200 => acknowledged.push(name),
                _ => break,
            }
        }
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.kill().unwrap();
    };
    tokio::join!(burst, killer);
    server.wait().unwrap();
    assert!(
        !acknowledged.is_empty(),
        "some registrations were acknowledged before the kill"
    );
    let left_by = |pid: u32| {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with(&format!("oxserve-model-{pid}-"))
            })
            .count()
    };
    assert!(
        left_by(killed) > 0,
        "the killed server left its unpacked models"
    );
    // A torn file beside the snapshots (as a crash mid-write would leave) is never read.
    let snapshots = dir.path().join("logs/config");
    std::fs::write(
        snapshots.join("29991231235959999-snapshot.cfg"),
        "model_snapshot={\"models\": {tor",
    )
    .unwrap();

    let mut restarted = start_foreground(dir.path());
    wait_healthy(inference).await;
    assert_eq!(
        left_by(killed),
        0,
        "the next start removes what the killed server left"
    );
    let (status, listed) = get(
        format!("http://127.0.0.1:{management}/models?limit=100"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let names: Vec<String> = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["modelName"].as_str().unwrap().to_string())
        .collect();
    for name in &acknowledged {
        assert!(
            names.contains(name),
            "{name} was acknowledged before the kill but is missing after restart: {names:?}"
        );
    }
    let (_, described) = get(
        format!("http://127.0.0.1:{management}/models/{}", acknowledged[0]),
        None,
    )
    .await;
    assert_eq!(described[0]["batchSize"], 3, "settings come back too");
    let _ = Command::new(OXSERVE)
        .args(["--stop", "--pid-file", "oxserve.pid"])
        .current_dir(dir.path())
        .output();
    let _ = restarted.wait();
}

/// `https://` addresses with TorchServe's `private_key_file` / `certificate_file`: every
/// listener speaks TLS with the configured certificate, and plain HTTP gets no answer there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listeners_serve_with_the_configured_certificate() {
    let certificates = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = common::test_certificates(certificates.path());
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let (certificate, key) = (certificate.display().to_string(), key.display().to_string());
    let server = TestServer::start_with(
        &[mnist()],
        &[
            ("inference_address", "https://127.0.0.1:0"),
            ("management_address", "https://127.0.0.1:0"),
            ("metrics_address", "https://127.0.0.1:0"),
            ("certificate_file", &certificate),
            ("private_key_file", &key),
        ],
        client.clone(),
    )
    .await;
    assert!(server.url("/ping").starts_with("https://"));
    let digit = std::fs::read(common::example("digit_5.png")).unwrap();
    let answer = client
        .post(server.url("/predictions/mnist"))
        .body(digit)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.text().await.unwrap(), "5");
    for url in [server.management("/models"), server.metrics("/metrics")] {
        assert_eq!(client.get(url).send().await.unwrap().status(), 200);
    }
    // Without the CA the certificate is not trusted; plain HTTP is not answered.
    assert!(reqwest::get(server.url("/ping")).await.is_err());
    let plain = server.url("/ping").replacen("https://", "http://", 1);
    assert!(reqwest::get(plain).await.is_err());
    server.stop().await;
}

#[test]
fn an_https_address_needs_its_key_and_certificate() {
    let properties = std::collections::BTreeMap::from([(
        "management_address".to_string(),
        "https://127.0.0.1:0".to_string(),
    )]);
    let error = oxserve::config::Config::from_properties(properties, &Default::default())
        .expect_err("no key files");
    assert!(error.0.contains("private_key_file"), "{error}");
}

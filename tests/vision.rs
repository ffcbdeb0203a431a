//! The vision handlers against their references: pre-processing against torchvision's transforms
//! on Pillow's decode of a real photo (goldens made by scripts/export/make_fixtures.py, within
//! 0.01 mean absolute difference, the same top-5), and the image classifier's answer over HTTP
//! against bare ONNX Runtime run on the same pre-processed tensor.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fixture, read_f32, ArchiveSpec, TestServer};
use oxserve::handler::image;
use oxserve_archiver::HandlerConfig;
use serde_json::Value;

fn imagenet_settings() -> oxserve_archiver::handler_config::ImagePreprocess {
    HandlerConfig::builtin("image_classifier")
        .and_then(|config| config.image)
        .unwrap()
}

/// Our Resize(256) → CenterCrop(224) → ToTensor → Normalize of a file, as a [3, 224, 224] buffer.
fn preprocess_file(name: &str) -> Vec<f32> {
    let settings = imagenet_settings();
    let pixels = image::decode(&std::fs::read(fixture(name)).unwrap(), &settings, true).unwrap();
    let (data, height, width) = image::preprocess(&pixels, &settings).unwrap();
    assert_eq!((height, width), (224, 224));
    data
}

fn mean_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum();
    (sum / a.len() as f64) as f32
}

#[test]
fn preprocessing_is_within_a_hundredth_of_torchvision_on_a_real_photo() {
    // PNG: lossless, so this compares resize + crop + normalise alone; JPEG adds the decoders'
    // differences (zune-jpeg's chroma upsampling is not libjpeg-turbo's).
    for (photo, golden) in [
        ("chelsea.png", "chelsea_png_preprocessed.f32"),
        ("chelsea.jpg", "chelsea_preprocessed.f32"),
    ] {
        let ours = preprocess_file(photo);
        let difference = mean_abs_difference(&ours, &read_f32(&fixture(golden)));
        println!("{photo}: mean abs difference to Pillow + torchvision {difference:.5}");
        assert!(difference <= 0.01, "{photo}: {difference}");
    }
}

/// Softmax probabilities, most probable first, as `(class, probability)`.
fn ranked(logits: &[f32]) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|value| (value - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut ranked: Vec<(usize, f32)> = exps.iter().map(|value| value / sum).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

fn tiny_resnet_logits(tensor: Vec<f32>) -> Vec<f32> {
    let runtime = oxserve::backend::init(None).unwrap();
    let mut session = ort::session::Session::builder(runtime.environment)
        .unwrap()
        .commit_from_file(fixture("tiny_resnet.onnx"))
        .unwrap();
    let input = ort::value::Tensor::from_array((vec![1i64, 3, 224, 224], tensor)).unwrap();
    let outputs = session.run(ort::inputs!["input" => input]).unwrap();
    let (_, logits) = outputs["output"].try_extract_tensor::<f32>().unwrap();
    logits.to_vec()
}

#[test]
fn classifier_top5_on_our_tensor_is_torchvisions() {
    let pillow: Vec<f32> =
        serde_json::from_slice(&std::fs::read(fixture("chelsea_tiny_resnet_logits.json")).unwrap())
            .unwrap();
    let expected = ranked(&pillow);
    let ours = ranked(&tiny_resnet_logits(preprocess_file("chelsea.jpg")));
    for ((class, probability), (want_class, want)) in ours.iter().zip(&expected).take(5) {
        println!(
            "class {class}: {probability:.5} (Pillow + torchvision: class {want_class} {want:.5})"
        );
        assert_eq!(class, want_class);
        assert!(
            (probability - want).abs() <= 0.01 * want,
            "{probability} vs {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_answers_equal_bare_onnx_runtime_on_the_same_tensor() {
    let labels_dir = tempfile::tempdir().unwrap();
    let labels = labels_dir.path().join("index_to_name.json");
    let names: serde_json::Map<String, Value> = (0..10)
        .map(|index| {
            (
                index.to_string(),
                serde_json::json!([format!("n0{index}"), format!("class_{index}")]),
            )
        })
        .collect();
    std::fs::write(&labels, serde_json::to_vec(&names).unwrap()).unwrap();
    let mut spec = ArchiveSpec::new("resnet", fixture("tiny_resnet.onnx"), "image_classifier");
    spec.extra_files.push(labels);
    let server = TestServer::start(&[spec], &[]).await;

    // Bare ONNX Runtime on our pre-processed tensor.
    let expected = ranked(&tiny_resnet_logits(preprocess_file("chelsea.png")));

    let response = reqwest::Client::new()
        .post(server.url("/predictions/resnet"))
        .body(std::fs::read(fixture("chelsea.png")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    // TorchServe's shape: a JSON object of 5 labels, most probable first, json.dumps(indent=2).
    assert!(text.starts_with("{\n  \"class_"), "{text}");
    let answer: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(answer.len(), 5);
    for ((label, probability), (class, want)) in answer.iter().zip(&expected) {
        assert_eq!(label, &format!("class_{class}"));
        let got = probability.as_f64().unwrap() as f32;
        assert!(
            (got - want).abs() <= 1e-4,
            "{label}: {got} vs bare ORT {want}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmenter_answers_per_pixel_class_and_probability() {
    let server = TestServer::start(
        &[ArchiveSpec::new(
            "seg",
            fixture("tiny_segmenter.onnx"),
            "image_segmenter",
        )],
        &[],
    )
    .await;
    let response = reqwest::Client::new()
        .post(server.url("/predictions/seg"))
        .body(std::fs::read(fixture("chelsea.jpg")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Vec<Vec<[f64; 2]>> = response.json().await.unwrap();
    assert_eq!(answer.len(), 224);
    assert!(answer.iter().all(|row| row.len() == 224));
    for pixel in answer.iter().flatten() {
        let [class, probability] = *pixel;
        assert!(
            class.fract() == 0.0 && (0.0..4.0).contains(&class),
            "class {class}"
        );
        // The best of four softmax probabilities is at least 1/4.
        assert!(
            (0.25 - 1e-6..=1.0 + 1e-6).contains(&probability),
            "probability {probability}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_answers_labelled_boxes_above_the_threshold() {
    let labels_dir = tempfile::tempdir().unwrap();
    let labels = labels_dir.path().join("index_to_name.json");
    std::fs::write(
        &labels,
        r#"{"0": "background", "1": "cat", "2": "dog", "3": "sofa", "4": "lamp"}"#,
    )
    .unwrap();
    let mut spec = ArchiveSpec::new(
        "detector",
        fixture("tiny_fasterrcnn.onnx"),
        "object_detector",
    );
    spec.extra_files.push(labels);
    let server = TestServer::start(&[spec], &[]).await;
    let response = reqwest::Client::new()
        .post(server.url("/predictions/detector"))
        .body(std::fs::read(fixture("chelsea.png")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Vec<serde_json::Map<String, Value>> = response.json().await.unwrap();
    // torchvision's graph, run by ONNX Runtime in Python on the same ToTensor image.
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture("chelsea_png_fasterrcnn_expected.json")).unwrap(),
    )
    .unwrap();
    let names = ["background", "cat", "dog", "sofa", "lamp"];
    let kept: Vec<usize> = (0..expected["scores"].as_array().unwrap().len())
        .filter(|&index| expected["scores"][index].as_f64().unwrap() >= 0.5)
        .collect();
    assert!(
        !kept.is_empty() && kept.len() < expected["scores"].as_array().unwrap().len(),
        "the fixture has detections on both sides of 0.5"
    );
    assert_eq!(answer.len(), kept.len(), "{answer:?}");
    for (detection, &index) in answer.iter().zip(&kept) {
        // TorchServe's shape: {"<label>": [x1, y1, x2, y2], "score": s}, label first.
        let keys: Vec<&String> = detection.keys().collect();
        let label = names[expected["labels"][index].as_u64().unwrap() as usize];
        assert_eq!(keys, [label, "score"]);
        let score = detection["score"].as_f64().unwrap();
        assert!((score - expected["scores"][index].as_f64().unwrap()).abs() < 1e-3);
        for (got, want) in detection[label]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected["boxes"][index].as_array().unwrap())
        {
            assert!(
                (got.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 0.05,
                "{got} vs {want}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torchvision_fcn_serves_through_the_segmenter() {
    let server = TestServer::start(
        &[ArchiveSpec::new(
            "fcn",
            fixture("tiny_fcn.onnx"),
            "image_segmenter",
        )],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let form = reqwest::multipart::Form::new()
        .part(
            "data",
            reqwest::multipart::Part::bytes(std::fs::read(fixture("chelsea.png")).unwrap()),
        )
        .part(
            "data",
            reqwest::multipart::Part::bytes(std::fs::read(fixture("chelsea.jpg")).unwrap()),
        );
    let response = client
        .post(server.url("/predictions/fcn"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answers: Vec<Vec<Vec<[f64; 2]>>> = response.json().await.unwrap();
    assert_eq!(answers.len(), 2);
    for answer in &answers {
        assert_eq!((answer.len(), answer[0].len()), (224, 224));
    }
    server.stop().await;
}

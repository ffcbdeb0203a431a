//! Workers' sessions come from one prepared graph (ONNX Runtime's format, weights shared in
//! place): they must answer exactly as a session built from the ONNX graph itself, and a graph
//! ONNX Runtime cannot load must fail at preparation with its reason.

use std::path::Path;

use std::collections::BTreeMap;

use oxserve::backend::{build_session, CancelToken, PreparedGraph, Session, SessionSettings};
use oxserve::tensor::{HostTensor, TensorValues};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

fn settings() -> SessionSettings {
    SessionSettings {
        intra_op_threads: 1,
        spinning: false,
        gpu: None,
    }
}

/// The first output of the graph on a deterministic `[rows, 3, 224, 224]` input.
fn run(session: &mut Session, rows: usize) -> Vec<f32> {
    let len = rows * 3 * 224 * 224;
    let data: Vec<f32> = (0..len)
        .map(|index| ((index % 251) as f32 / 125.0) - 1.0)
        .collect();
    let input = HostTensor {
        shape: vec![rows, 3, 224, 224],
        values: TensorValues::F32(data),
    };
    let name = session.input_names().remove(0);
    let cancel = CancelToken::new().expect("a token");
    let outputs = session
        .run(BTreeMap::from([(name, input)]), &cancel)
        .expect("run");
    let output = outputs.into_values().next().expect("an output");
    match output.values {
        TensorValues::F32(values) => values,
        other => panic!("expected f32, got {}", other.dtype()),
    }
}

#[test]
fn shared_weight_sessions_answer_as_the_onnx_graph_does() {
    oxserve::backend::init(None).expect("ONNX Runtime (scripts/install-onnxruntime.sh)");
    let onnx = fixture("tiny_resnet.onnx");
    let mut reference = build_session(&onnx, &settings()).expect("ONNX session");
    let prepared = PreparedGraph::prepare(onnx, false).expect("prepared");
    assert!(
        prepared.shares_weights(),
        "the graph should be saved in ORT format"
    );
    let mut first = prepared.session(&settings()).expect("session");
    let mut second = prepared.session(&settings()).expect("session");
    for rows in [1, 3] {
        let expected = run(&mut reference, rows);
        assert_eq!(expected.len(), rows * 10);
        assert_eq!(run(&mut first, rows), expected);
        assert_eq!(run(&mut second, rows), expected);
    }
}

#[test]
fn a_graph_onnx_runtime_cannot_load_fails_at_preparation() {
    oxserve::backend::init(None).expect("ONNX Runtime (scripts/install-onnxruntime.sh)");
    let error = PreparedGraph::prepare(fixture("invalid_op.onnx"), false)
        .err()
        .expect("refused");
    assert!(error.to_string().contains("session"), "{error}");
}

#[test]
fn a_cancelled_run_fails_as_cancelled() {
    oxserve::backend::init(None).expect("ONNX Runtime (scripts/install-onnxruntime.sh)");
    let mut session = build_session(&fixture("tiny_resnet.onnx"), &settings()).expect("session");
    let name = session.input_names().remove(0);
    let input = HostTensor {
        shape: vec![1, 3, 224, 224],
        values: TensorValues::F32(vec![0.0; 3 * 224 * 224]),
    };
    let cancel = CancelToken::new().expect("a token");
    cancel.cancel();
    let error = session
        .run(BTreeMap::from([(name, input)]), &cancel)
        .expect_err("cancelled before it started");
    assert!(
        matches!(error, oxserve::backend::BackendError::Cancelled),
        "{error:?}"
    );
}

//! A model's worker pool: its sessions' intra-op threads follow the model's own worker count
//! (not the server's default), and are re-planned when the model is scaled.

mod common;

use std::sync::Arc;

use common::{fixture, pack_into, ArchiveSpec};
use oxserve::config::{Cli, Config};
use oxserve::metrics::{Metrics, MetricsMode};
use oxserve::model::{LoadRequest, ModelSettings, ModelVersion, SettingsOverride};

fn load(archive: std::path::PathBuf) -> Arc<ModelVersion> {
    let config = Config::from_properties(Default::default(), &Cli::default()).expect("config");
    ModelVersion::load(LoadRequest {
        archive,
        name: None,
        url: "mlp.mar".into(),
        downloaded: None,
        settings: ModelSettings::defaults(&config),
        apply_model_config: true,
        models_config: None,
        overrides: SettingsOverride::default(),
        loaded_at_startup: false,
        metrics: Arc::new(Metrics::new(MetricsMode::Log, "test".into())),
    })
    .expect("loaded")
}

fn threads(model: &ModelVersion) -> Vec<usize> {
    model
        .worker_snapshot()
        .iter()
        .map(|worker| worker.threads)
        .collect()
}

#[test]
fn a_one_worker_model_runs_on_every_core_and_is_replanned_on_scale() {
    oxserve::backend::init(None).expect("ONNX Runtime (scripts/install-onnxruntime.sh)");
    let store = tempfile::tempdir().expect("store");
    let spec = ArchiveSpec::new("mlp", fixture("tiny_mlp.onnx"), "tensor")
        .with_config("minWorkers: 1\nmaxWorkers: 1\n");
    let model = load(pack_into(store.path(), &spec));
    model.start_workers().expect("workers");
    let cores = Config::cores();
    assert_eq!(threads(&model), vec![cores], "one worker: every core");

    model.scale(2, 2).expect("scaled up");
    assert_eq!(
        threads(&model),
        vec![(cores / 2).max(1); 2],
        "two share the cores"
    );

    model.scale(1, 1).expect("scaled down");
    assert_eq!(threads(&model), vec![cores], "one again: every core again");
    model.shutdown();
}

#[test]
fn intra_op_threads_in_model_config_wins() {
    oxserve::backend::init(None).expect("ONNX Runtime (scripts/install-onnxruntime.sh)");
    let store = tempfile::tempdir().expect("store");
    let spec = ArchiveSpec::new("mlp", fixture("tiny_mlp.onnx"), "tensor")
        .with_config("minWorkers: 1\nmaxWorkers: 1\nintraOpThreads: 3\n");
    let model = load(pack_into(store.path(), &spec));
    model.start_workers().expect("workers");
    assert_eq!(threads(&model), vec![3]);
    model.scale(2, 2).expect("scaled up");
    assert_eq!(threads(&model), vec![3, 3]);
    model.shutdown();
}

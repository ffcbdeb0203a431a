//! The image's configuration and the Kubernetes / KServe manifests agree with the server: their
//! ports are the server's (and TorchServe's gRPC) defaults, their probes are health paths that
//! answer without a key, their arguments parse as oxserve's command line, and their paths are the
//! ones the image and KServe's storage initializer use.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser as _;
use oxserve::auth::KEYLESS_HEALTH_PATHS;
use oxserve::config::{Cli, Config};
use serde_yaml::Value;

/// TorchServe's gRPC ports (docs/configuration.md: `grpc_inference_port`, `grpc_management_port`).
const GRPC_INFERENCE_PORT: u16 = 7070;
const GRPC_MANAGEMENT_PORT: u16 = 7071;
/// Where KServe's storage initializer puts a model's storage (`DefaultModelLocalMountPath`).
const KSERVE_MODEL_MOUNT: &str = "/mnt/models";
/// The v2 (Open Inference) protocol's server health paths.
const V2_LIVE: &str = "/v2/health/live";
const V2_READY: &str = "/v2/health/ready";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every document of a YAML file.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

/// The one document of `kind` in a file.
fn one(path: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = documents(path)
        .into_iter()
        .filter(|document| document["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "{path}: one {kind}");
    found.remove(0)
}

fn properties(path: &str) -> BTreeMap<String, String> {
    oxserve::properties::load(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

fn config(properties: BTreeMap<String, String>) -> Config {
    Config::from_properties(properties, &Cli::default()).unwrap()
}

/// The server's defaults: inference, management, metrics ports.
fn default_ports() -> (u16, u16, u16) {
    let defaults = config(BTreeMap::new());
    (
        defaults.inference_address.port(),
        defaults.management_address.port(),
        defaults.metrics_address.port(),
    )
}

fn port(value: &Value) -> u16 {
    u16::try_from(value.as_u64().unwrap()).unwrap()
}

/// A container's ports by name.
fn container_ports(container: &Value) -> BTreeMap<String, u16> {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["name"].as_str().unwrap().to_string(),
                port(&entry["containerPort"]),
            )
        })
        .collect()
}

/// A probe's `httpGet` path and port.
fn probe(container: &Value, name: &str) -> (String, u16) {
    let get = &container[name]["httpGet"];
    (
        get["path"].as_str().unwrap().to_string(),
        port(&get["port"]),
    )
}

/// The command line a container runs: the image's entry point, then its `args`.
fn command_line(container: &Value) -> Cli {
    let mut line = vec!["oxserve".to_string(), "--foreground".to_string()];
    line.extend(
        container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|arg| arg.as_str().unwrap().to_string()),
    );
    Cli::try_parse_from(&line).unwrap_or_else(|error| panic!("{line:?}: {error}"))
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|entry| entry["name"] == name)
        .map(|entry| entry["value"].as_str().unwrap().to_string())
}

#[test]
fn the_image_binds_the_default_ports_on_every_interface_and_exposes_them() {
    let (inference, management, metrics) = default_ports();
    let image = properties("docker/config.properties");
    let merged = config(image.clone());
    for address in [
        merged.inference_address,
        merged.management_address,
        merged.metrics_address,
    ] {
        assert!(address.ip().is_unspecified(), "{address}");
    }
    assert_eq!(
        (
            merged.inference_address.port(),
            merged.management_address.port(),
            merged.metrics_address.port()
        ),
        (inference, management, metrics)
    );
    assert_eq!(image["grpc_inference_address"], "0.0.0.0");
    assert_eq!(image["grpc_management_address"], "0.0.0.0");
    assert_eq!(
        image["grpc_inference_port"],
        GRPC_INFERENCE_PORT.to_string()
    );
    assert_eq!(
        image["grpc_management_port"],
        GRPC_MANAGEMENT_PORT.to_string()
    );
    assert!(!merged.disable_token_authorization, "keys stay on");
    assert_eq!(
        merged.model_store.as_deref(),
        Some(Path::new("/home/model-server/model-store"))
    );

    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .map(|port| port.parse().unwrap())
        .collect();
    let expected = BTreeSet::from([
        inference,
        management,
        metrics,
        GRPC_INFERENCE_PORT,
        GRPC_MANAGEMENT_PORT,
    ]);
    assert_eq!(exposed, expected);
    // The health check asks /ping, which answers without a key.
    assert!(KEYLESS_HEALTH_PATHS.contains(&"/ping"));
    let check = std::fs::read_to_string(repo("docker/healthcheck.sh")).unwrap();
    assert!(check.contains("GET /ping HTTP/1.0"));
    assert!(check.contains(&format!("HEALTHCHECK_PORT:-{inference}")));
}

#[test]
fn the_kubernetes_deployment_service_and_autoscaler_agree() {
    let (inference, management, metrics) = default_ports();
    let deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    let pod = &deployment["spec"]["template"];
    let containers = pod["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let ports = container_ports(container);
    assert_eq!(
        ports.values().copied().collect::<BTreeSet<u16>>(),
        BTreeSet::from([
            inference,
            management,
            metrics,
            GRPC_INFERENCE_PORT,
            GRPC_MANAGEMENT_PORT
        ])
    );
    assert_eq!(ports["inference"], inference);
    assert_eq!(ports["metrics"], metrics);
    for name in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let (path, port) = probe(container, name);
        assert_eq!((path.as_str(), port), ("/ping", inference), "{name}");
        assert!(KEYLESS_HEALTH_PATHS.contains(&path.as_str()), "{name}");
    }
    let cli = command_line(container);
    assert!(
        cli.ncs,
        "replicas start from the shared store, not snapshots"
    );
    for resources in ["requests", "limits"] {
        assert!(container["resources"][resources]["cpu"].is_string());
        assert!(container["resources"][resources]["memory"].is_string());
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

    // The model store: the image's model_store path, from the claim in pvc.yaml, read-only.
    let image_store = config(properties("docker/config.properties")).model_store;
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        Some(PathBuf::from(mount["mountPath"].as_str().unwrap())),
        image_store
    );
    assert_eq!(mount["readOnly"], true);
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap();
    let claim = one("deploy/kubernetes/pvc.yaml", "PersistentVolumeClaim");
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );

    // The Service sends each of its ports to the container port of the same number.
    let service = one("deploy/kubernetes/service.yaml", "Service");
    let labels = &pod["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[key.as_str().unwrap()], value);
    }
    let served: BTreeSet<u16> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|entry| {
            let target = ports[entry["targetPort"].as_str().unwrap()];
            assert_eq!(port(&entry["port"]), target);
            target
        })
        .collect();
    assert_eq!(
        served,
        BTreeSet::from([inference, metrics, GRPC_INFERENCE_PORT])
    );
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"],
        metrics.to_string()
    );

    let autoscaler = one("deploy/kubernetes/hpa.yaml", "HorizontalPodAutoscaler");
    let target = &autoscaler["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["name"], deployment["metadata"]["name"]);
}

#[test]
fn the_kserve_inference_service_is_a_v2_custom_predictor_on_the_storage_layout() {
    let service = one("deploy/kserve/inferenceservice.yaml", "InferenceService");
    assert_eq!(service["apiVersion"], "serving.kserve.io/v1beta1");
    let containers = service["spec"]["predictor"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(container["name"], "kserve-container");
    assert_eq!(env(container, "PROTOCOL").as_deref(), Some("v2"));
    assert!(env(container, "STORAGE_URI").is_some());

    // The layout of KServe's TorchServe runtime: /mnt/models/{model-store, config/config.properties}.
    let cli = command_line(container);
    assert!(cli.ncs);
    let store = cli.model_store.unwrap();
    let config_file = cli.ts_config.unwrap();
    assert_eq!(store, Path::new(KSERVE_MODEL_MOUNT).join("model-store"));
    assert_eq!(
        config_file,
        Path::new(KSERVE_MODEL_MOUNT).join("config/config.properties")
    );
    // deploy/kserve/config.properties is that file: it serves the container's one port.
    let shipped = config(properties("deploy/kserve/config.properties"));
    assert_eq!(shipped.model_store.as_deref(), Some(store.as_path()));
    assert!(shipped.inference_address.ip().is_unspecified());
    let ports = container_ports(container);
    assert_eq!(ports.len(), 1, "Knative routes to one port");
    assert_eq!(ports["http1"], shipped.inference_address.port());
    assert_eq!(shipped.inference_address.port(), default_ports().0);

    for (name, path) in [("readinessProbe", V2_READY), ("livenessProbe", V2_LIVE)] {
        assert_eq!(
            probe(container, name),
            (path.to_string(), shipped.inference_address.port()),
            "{name}"
        );
        assert!(KEYLESS_HEALTH_PATHS.contains(&path), "{name}");
    }
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
}

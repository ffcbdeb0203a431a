//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for `tests/fuzz_corpus.rs`, which
//! replays their corpus and regression inputs on stable. One function per parser of untrusted
//! input; each drives the real parsing code on arbitrary bytes and ignores whether it succeeds:
//! the only failure is a panic, an abort, a hang or a runaway allocation.

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use oxserve_archiver::handler_config::HandlerConfig;
use oxserve_archiver::unpack::{self, Limits};
use oxserve_archiver::{Dim, ModelConfig, Signature, TensorSpec};

use crate::handler::{Handler, RequestItem};

/// `config.properties`: Java properties text, then the typed config built from its keys.
pub fn properties(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(mut keys) = crate::properties::load(&text) {
        // Host names would be resolved through DNS: keep only literal addresses.
        keys.retain(|key, value| !key.ends_with("_address") || literal_address(value));
        let _ = crate::config::Config::from_properties(keys, &crate::config::Cli::default());
    }
}

/// A config snapshot file, read as the server restores it.
pub fn snapshot(data: &[u8]) {
    with_temp_file("snapshot.cfg", data, |path| {
        let _ = crate::snapshot::read(path);
    });
}

/// `model-config.yaml`.
pub fn model_config(data: &[u8]) {
    let _ = ModelConfig::parse("model-config.yaml", data);
}

/// A handler config, as JSON and as YAML.
pub fn handler_config(data: &[u8]) {
    let _ = HandlerConfig::parse("handler.json", data, false);
    let _ = HandlerConfig::parse("handler.yaml", data, true);
}

/// A model archive: unpacked (zip or tgz, by its magic bytes) and its metadata read, with the
/// server's default limits; then, as `oxserve-archiver convert` reads a TorchServe archive, its
/// handler mapped and its files sorted into kept and not carried.
pub fn archive(data: &[u8]) {
    with_temp_file("model.mar", data, |path| {
        if let Some(dir) = path.parent() {
            if let Ok(extracted) = unpack::extract(path, &dir.join("unpacked"), &Limits::default())
            {
                let _ = oxserve_archiver::torchserve::plan(&extracted, None);
            }
        }
    });
}

/// A JSON tensor request body for the tensor handler.
pub fn tensor_request(data: &[u8]) {
    for handler in tensor_handlers() {
        let _ = handler.preprocess(&item(data));
    }
}

/// An inference request body split into inputs: the first line is the `Content-Type`, the rest
/// the body (multipart, url-encoded form or raw).
pub fn multipart(data: &[u8]) {
    let (head, body) = match data.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let content_type = Some(String::from_utf8_lossy(head).into_owned());
    let body = Bytes::copy_from_slice(body);
    let _ = crate::http::inference::request_items(body, content_type, 8);
}

/// An `Authorization` header as the token check reads it (the server writes `key_file.json` but
/// never reads one back, so the header is the token parser that untrusted bytes reach), and a
/// `token_expiration_min` value.
pub fn token(data: &[u8]) {
    static AUTH: OnceLock<Option<(tempfile::TempDir, crate::auth::TokenAuth)>> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        let hour = std::time::Duration::from_secs(3600);
        let auth = crate::auth::TokenAuth::create(dir.path(), hour).ok()?;
        Some((dir, auth))
    });
    let text = String::from_utf8_lossy(data);
    if let Some((_, auth)) = auth {
        for api in [crate::auth::Api::Inference, crate::auth::Api::Management] {
            let _ = auth.check(api, Some(&text));
        }
    }
    let _ = crate::auth::expiration_from_config(Some(&text));
}

/// A KServe v2 infer body: the first line is the `Inference-Header-Content-Length` value (empty:
/// none), the rest the body (JSON, then binary data). Decoded as the REST API does, then checked
/// against the tensor handlers' graphs, and the answer encoded back with its outputs as binary.
pub fn v2_request(data: &[u8]) {
    let (head, body) = match data.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let header = Some(head.trim()).filter(|value| !value.is_empty());
    let Ok(decoded) = crate::http::v2::codec::decode(Bytes::copy_from_slice(body), header) else {
        return;
    };
    for handler in tensor_handlers() {
        let _ = crate::openinference::validate::items(decoded.request.clone(), handler.signature());
    }
    let echo = crate::openinference::InferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        id: decoded.request.id.clone().unwrap_or_default(),
        outputs: decoded
            .request
            .inputs
            .iter()
            .map(|input| crate::openinference::OutputTensor {
                name: input.name.clone(),
                datatype: input.datatype,
                shape: input.shape.clone(),
                data: input.data.clone(),
            })
            .collect(),
        queue_wait: std::time::Duration::ZERO,
    };
    let _ = crate::http::v2::codec::encode(&echo, &decoded.request.outputs, true);
}

/// A KServe v2 gRPC `ModelInferRequest` as it arrives (protobuf bytes), decoded by prost, mapped
/// to the protocol's request, and checked against the tensor handlers' graphs.
pub fn grpc_model_infer(data: &[u8]) {
    use prost::Message as _;
    let Ok(request) = crate::grpc::proto::inference::ModelInferRequest::decode(data) else {
        return;
    };
    let Ok((request, _)) = crate::grpc::open_inference::infer_request(request) else {
        return;
    };
    for handler in tensor_handlers() {
        let _ = crate::openinference::validate::items(request.clone(), handler.signature());
    }
}

/// A gRPC `PredictionsRequest` message as it arrives (protobuf bytes, which tonic hands to
/// prost), decoded and turned into handler inputs.
pub fn grpc_predictions(data: &[u8]) {
    use prost::Message as _;
    if let Ok(mut request) = crate::grpc::proto::torchserve::PredictionsRequest::decode(data) {
        let _ = crate::grpc::inference::request_items(&mut request);
    }
}

/// An image request item, pre-processed by each built-in vision handler's settings.
pub fn image(data: &[u8]) {
    for handler in image_handlers() {
        let _ = handler.preprocess(&item(data));
    }
}

/// A text request item for the text handlers: the first line is the `Content-Type`, the rest the
/// body (raw UTF-8 or JSON), parsed, checked and tokenized with the tiny test tokenizer.
pub fn text_request(data: &[u8]) {
    let (head, body) = match data.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let item = RequestItem {
        bytes: Bytes::copy_from_slice(body),
        content_type: Some(String::from_utf8_lossy(head).into_owned()),
    };
    for handler in text_handlers() {
        let _ = handler.preprocess(&item);
    }
}

fn item(data: &[u8]) -> RequestItem {
    RequestItem {
        bytes: Bytes::copy_from_slice(data),
        content_type: None,
    }
}

/// Whether `value` is an address `parse_address` takes without a DNS lookup.
fn literal_address(value: &str) -> bool {
    crate::config::host_port(value)
        .parse::<std::net::SocketAddr>()
        .is_ok()
        || value.trim().parse::<std::net::IpAddr>().is_ok()
}

/// Runs `read` on `data` written to a fresh temporary folder, which is removed afterwards.
fn with_temp_file(name: &str, data: &[u8], read: impl FnOnce(&Path)) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join(name);
    if std::fs::write(&path, data).is_ok() {
        read(&path);
    }
}

fn spec(name: &str, dtype: &str, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: dtype.into(),
        shape,
    }
}

fn batch() -> Dim {
    Dim::Symbolic("batch".into())
}

/// Builds handlers once; a config that does not build is left out (the unit test below checks
/// that none is).
fn build(configs: Vec<(Option<HandlerConfig>, Signature)>) -> Vec<Handler> {
    let Ok(no_labels) = tempfile::tempdir() else {
        return Vec::new();
    };
    configs
        .into_iter()
        .filter_map(|(config, signature)| {
            Handler::new(config?, signature, no_labels.path(), true).ok()
        })
        .collect()
}

/// The vision handlers' distinct pre-processing: ImageNet classification (also the segmenter's),
/// the digits example's grey 28×28, and the object detector's unresized `ToTensor`.
fn image_handlers() -> &'static [Handler] {
    static HANDLERS: OnceLock<Vec<Handler>> = OnceLock::new();
    HANDLERS.get_or_init(|| {
        let classifier = |channels: u64, size: u64, classes: u64| Signature {
            inputs: vec![spec(
                "input",
                "float32",
                vec![
                    batch(),
                    Dim::Fixed(channels),
                    Dim::Fixed(size),
                    Dim::Fixed(size),
                ],
            )],
            outputs: vec![spec(
                "output",
                "float32",
                vec![batch(), Dim::Fixed(classes)],
            )],
        };
        let detector = Signature {
            inputs: vec![spec(
                "images",
                "float32",
                vec![Dim::Fixed(3), Dim::Unknown, Dim::Unknown],
            )],
            outputs: ["boxes", "labels", "scores"]
                .into_iter()
                .map(|name| spec(name, "float32", vec![Dim::Unknown]))
                .collect(),
        };
        let mnist = HandlerConfig::parse(
            "mnist_handler.json",
            include_bytes!("../examples/digits/mnist_handler.json"),
            false,
        )
        .ok();
        build(vec![
            (
                HandlerConfig::builtin("image_classifier"),
                classifier(3, 224, 1000),
            ),
            (mnist, classifier(1, 28, 10)),
            (HandlerConfig::builtin("object_detector"), detector),
        ])
    })
}

/// The tensor handler on a one-input graph (which also takes a bare nested list) and on a graph
/// with inputs of several element types.
fn tensor_handlers() -> &'static [Handler] {
    static HANDLERS: OnceLock<Vec<Handler>> = OnceLock::new();
    HANDLERS.get_or_init(|| {
        let output = spec("y", "float32", vec![batch(), Dim::Fixed(2)]);
        let one = Signature {
            inputs: vec![spec("x", "float32", vec![batch(), Dim::Fixed(3)])],
            outputs: vec![output.clone()],
        };
        let several = Signature {
            inputs: vec![
                spec("ids", "int64", vec![batch(), Dim::Unknown]),
                spec("mask", "bool", vec![batch(), Dim::Unknown]),
                spec("pixels", "uint8", vec![Dim::Fixed(2), Dim::Fixed(2)]),
            ],
            outputs: vec![output],
        };
        build(vec![
            (HandlerConfig::builtin("tensor"), one),
            (HandlerConfig::builtin("tensor"), several),
        ])
    })
}

/// The text classifier and embedding handlers on a BERT-like signature, with the committed tiny
/// tokenizer (tests/fixtures/tiny_tokenizer.json).
fn text_handlers() -> &'static [Handler] {
    static HANDLERS: OnceLock<Vec<Handler>> = OnceLock::new();
    HANDLERS.get_or_init(|| {
        let Ok(dir) = tempfile::tempdir() else {
            return Vec::new();
        };
        let tokenizer = include_bytes!("../tests/fixtures/tiny_tokenizer.json");
        if std::fs::write(dir.path().join("tokenizer.json"), tokenizer).is_err() {
            return Vec::new();
        }
        let tokens = |name: &str| spec(name, "int64", vec![batch(), Dim::Unknown]);
        let signature = |output: TensorSpec| Signature {
            inputs: vec![
                tokens("input_ids"),
                tokens("attention_mask"),
                tokens("token_type_ids"),
            ],
            outputs: vec![output],
        };
        let logits = spec("logits", "float32", vec![batch(), Dim::Fixed(3)]);
        let states = spec(
            "last_hidden_state",
            "float32",
            vec![batch(), Dim::Unknown, Dim::Fixed(16)],
        );
        [("text_classifier", logits), ("text_embedding", states)]
            .into_iter()
            .filter_map(|(name, output)| {
                let config = HandlerConfig::builtin(name)?;
                Handler::new(config, signature(output), dir.path(), true).ok()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(dir).expect("the seed folder");
        entries
            .map(|entry| std::fs::read(entry.expect("an entry").path()).expect("a seed"))
            .collect()
    }

    #[test]
    fn every_handler_builds() {
        assert_eq!(image_handlers().len(), 3);
        assert_eq!(tensor_handlers().len(), 2);
        assert_eq!(text_handlers().len(), 2);
    }

    /// The seeds are valid inputs, so the fuzzer starts from the paths past the first checks.
    #[test]
    fn request_seeds_are_accepted() {
        for seed in seeds("image") {
            for handler in image_handlers() {
                handler.preprocess(&item(&seed)).expect("an image seed");
            }
        }
        for seed in seeds("tensor_request") {
            let accepted = tensor_handlers()
                .iter()
                .any(|handler| handler.preprocess(&item(&seed)).is_ok());
            assert!(accepted, "{}", String::from_utf8_lossy(&seed));
        }
        for seed in seeds("v2_request") {
            let mut lines = seed.splitn(2, |&byte| byte == b'\n');
            let head = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
            let header = Some(head.trim()).filter(|value| !value.is_empty());
            let body = Bytes::copy_from_slice(lines.next().unwrap_or_default());
            let decoded = crate::http::v2::codec::decode(body, header).expect("a v2 seed");
            let accepted = tensor_handlers().iter().any(|handler| {
                crate::openinference::validate::items(decoded.request.clone(), handler.signature())
                    .is_ok()
            });
            assert!(accepted, "{}", String::from_utf8_lossy(&seed));
        }
        for seed in seeds("text_request") {
            let mut lines = seed.splitn(2, |&byte| byte == b'\n');
            let head = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
            let item = RequestItem {
                bytes: Bytes::copy_from_slice(lines.next().unwrap_or_default()),
                content_type: Some(head),
            };
            for handler in text_handlers() {
                handler.preprocess(&item).expect("a text seed");
            }
        }
        for seed in seeds("multipart") {
            let mut lines = seed.splitn(2, |&byte| byte == b'\n');
            let head = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
            let body = Bytes::copy_from_slice(lines.next().unwrap_or_default());
            let items = crate::http::inference::request_items(body, Some(head), 8);
            assert!(!items.expect("a request seed").is_empty());
        }
    }
}

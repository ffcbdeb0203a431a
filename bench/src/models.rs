//! The two models the harness measures and everything derived from them: the request body a
//! client sends, the same input pre-processed once into a ready tensor (for the bare limit), and
//! archives packed with the archiver library exactly as `oxserve-archiver` would.
//!
//! - `digits`: the example CNN, a 28x28 PNG through `examples/digits/mnist_handler.json`. Tiny:
//!   every microsecond of server overhead shows.
//! - `resnet18`: torchvision's ResNet-18 (exported on demand, cached), a ~720x720 JPEG through the
//!   built-in `image_classifier` handler. Compute-bound: pre-processing and batching show.
//! - `minilm`: all-MiniLM-L6-v2 (scripts/export/export_minilm.py, cached), one short sentence
//!   through the built-in `text_embedding` handler: tokenization and text batching show.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use oxserve_archiver::handler_config::{HandlerConfig, ImagePreprocess};
use oxserve_archiver::pack::{pack, ArchiveFormat, PackRequest};
use oxserve_archiver::{Dim, Signature, TensorSpec};

/// The sentence the text model's clients send (13 tokens with `[CLS]` and `[SEP]`).
pub const SENTENCE: &str = "The quick brown fox jumps over the lazy dog near the river.";

/// Side of the square JPEG made for ResNet-18: the size of a typical phone photo thumbnail, and the
/// size TorchServe's pre-processing figure (6.5 ms) was measured on.
pub const JPEG_SIDE: u32 = 720;

/// One model under test.
pub struct Model {
    /// Name in reports and in the server's registry.
    pub name: String,
    pub graph: PathBuf,
    /// What `--handler` would be given: a built-in name or a handler config file.
    pub handler: String,
    /// The image pre-processing the handler applies (image models).
    pub preprocess: Option<ImagePreprocess>,
    /// The request body every client sends.
    pub body: Bytes,
    /// One item after pre-processing, as the server builds it.
    pub ready: Ready,
    /// Files the archive carries beside the graph (`--extra-files`).
    pub extra_files: Vec<PathBuf>,
}

/// One request item after pre-processing.
pub enum Ready {
    /// A pre-processed image `[C, H, W]`, for the graph's first input.
    Image { item: Vec<f32>, shape: Vec<usize> },
    /// A tokenized text: graph input name → its token row.
    Tokens(Vec<(String, Vec<i64>)>),
}

/// One input of a bare run: its name (`None`: the graph's first input), shape and values.
pub struct BatchInput {
    pub name: Option<String>,
    pub shape: Vec<usize>,
    pub values: BatchValues,
}

/// The values of a [`BatchInput`].
pub enum BatchValues {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Model {
    /// The example digits CNN and one of its held-out digits.
    pub fn digits(root: &Path) -> anyhow::Result<Model> {
        let dir = root.join("examples/digits");
        let handler = dir.join("mnist_handler.json");
        let config = HandlerConfig::parse(
            "mnist_handler.json",
            &std::fs::read(&handler).with_context(|| format!("reading {}", handler.display()))?,
            false,
        )?;
        let body = std::fs::read(dir.join("digit_7.png")).context("reading digit_7.png")?;
        Model::new(
            "digits",
            dir.join("mnist.onnx"),
            handler.display().to_string(),
            config,
            body,
        )
    }

    /// ResNet-18 with a ~720x720 JPEG made from the committed cat photo.
    pub fn resnet18(root: &Path, graph: PathBuf) -> anyhow::Result<Model> {
        if !graph.is_file() {
            bail!(
                "{} is missing: export it with scripts/export/export_resnet18.py (bench/run.sh does)",
                graph.display()
            );
        }
        let config = HandlerConfig::builtin("image_classifier")
            .context("the image_classifier handler is not built in")?;
        let body = make_jpeg(&root.join("tests/fixtures/chelsea.png"))?;
        Model::new("resnet18", graph, "image_classifier".into(), config, body)
    }

    /// all-MiniLM-L6-v2 and one short sentence, tokenized by the server's own tokenizer.
    pub fn minilm(dir: &Path) -> anyhow::Result<Model> {
        let graph = dir.join("model.onnx");
        if !graph.is_file() {
            bail!(
                "{} is missing: export it with scripts/export/export_minilm.py (bench/run.sh does)",
                graph.display()
            );
        }
        let config = HandlerConfig::builtin("text_embedding")
            .context("the text_embedding handler is not built in")?;
        let settings = config.text.context("text_embedding has no text settings")?;
        let tokens = |name: &str| TensorSpec {
            name: name.into(),
            dtype: "int64".into(),
            shape: vec![
                Dim::Symbolic("batch".into()),
                Dim::Symbolic("sequence".into()),
            ],
        };
        let signature = Signature {
            inputs: vec![
                tokens("input_ids"),
                tokens("attention_mask"),
                tokens("token_type_ids"),
            ],
            outputs: Vec::new(),
        };
        let tokenizer = oxserve::handler::text::TextTokenizer::load(&settings, &signature, dir)
            .map_err(anyhow::Error::msg)?;
        let tokenized = tokenizer
            .tokenize(&[SENTENCE.to_string()])
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let mut rows = Vec::new();
        for (name, tensor) in tokenized.inputs {
            let oxserve::tensor::TensorValues::I64(values) = tensor.values else {
                bail!("input {name} is not int64");
            };
            rows.push((name, values));
        }
        Ok(Model {
            name: "minilm".into(),
            graph,
            handler: "text_embedding".into(),
            preprocess: None,
            body: Bytes::from_static(SENTENCE.as_bytes()),
            ready: Ready::Tokens(rows),
            extra_files: vec![dir.join("tokenizer.json")],
        })
    }

    /// The image pre-processing, for the probes that time it.
    pub fn image(&self) -> anyhow::Result<&ImagePreprocess> {
        self.preprocess
            .as_ref()
            .with_context(|| format!("{} is not an image model", self.name))
    }

    fn new(
        name: &str,
        graph: PathBuf,
        handler: String,
        config: HandlerConfig,
        body: Vec<u8>,
    ) -> anyhow::Result<Model> {
        let preprocess = config
            .image
            .context("the handler has no image pre-processing")?;
        // The server's own functions, so the bare run sees exactly the tensor the server builds.
        let pixels = oxserve::handler::image::decode(&body, &preprocess, true)?;
        let (item, height, width) = oxserve::handler::image::preprocess(&pixels, &preprocess)?;
        Ok(Model {
            name: name.to_string(),
            graph,
            handler,
            preprocess: Some(preprocess),
            body: Bytes::from(body),
            ready: Ready::Image {
                item,
                shape: vec![pixels.channels, height as usize, width as usize],
            },
            extra_files: Vec::new(),
        })
    }

    /// A KServe v2 infer body carrying the ready item as raw tensors in JSON (batch 1): the
    /// handler's pre-processing is skipped, the graph runs on the tensors as sent. An unnamed
    /// input is the image graphs' `input`.
    pub fn v2_body(&self) -> Bytes {
        let inputs: Vec<serde_json::Value> = self
            .ready_batch(1)
            .into_iter()
            .map(|input| {
                let name = input.name.unwrap_or_else(|| "input".into());
                let (datatype, data) = match input.values {
                    BatchValues::F32(values) => ("FP32", serde_json::json!(values)),
                    BatchValues::I64(values) => ("INT64", serde_json::json!(values)),
                };
                serde_json::json!({
                    "name": name, "datatype": datatype, "shape": input.shape, "data": data,
                })
            })
            .collect();
        Bytes::from(serde_json::json!({ "inputs": inputs }).to_string())
    }

    /// `batch` copies of the ready item, stacked: `[batch, C, H, W]` for an image, `[batch,
    /// length]` per token input for a text (equal lengths: no padding).
    pub fn ready_batch(&self, batch: usize) -> Vec<BatchInput> {
        match &self.ready {
            Ready::Image { item, shape } => {
                let mut stacked = vec![batch];
                stacked.extend(shape);
                vec![BatchInput {
                    name: None,
                    shape: stacked,
                    values: BatchValues::F32(item.repeat(batch)),
                }]
            }
            Ready::Tokens(rows) => rows
                .iter()
                .map(|(name, row)| BatchInput {
                    name: Some(name.clone()),
                    shape: vec![batch, row.len()],
                    values: BatchValues::I64(row.repeat(batch)),
                })
                .collect(),
        }
    }

    /// Packs this model as `<store>/<archive_name>.mar`, with `model_config` as its
    /// model-config.yaml, using the archiver library as `oxserve-archiver` does.
    pub fn pack_into(
        &self,
        store: &Path,
        archive_name: &str,
        model_config: &str,
    ) -> anyhow::Result<PathBuf> {
        let staging = tempfile::tempdir_in(store).context("creating a staging folder")?;
        let config_file = staging.path().join("model-config.yaml");
        std::fs::write(&config_file, model_config).context("writing model-config.yaml")?;
        let outcome = pack(&PackRequest {
            model_name: archive_name.to_string(),
            version: "1.0".into(),
            serialized_file: Some(self.graph.clone()),
            model_file: None,
            handler: self.handler.clone(),
            extra_files: self
                .extra_files
                .iter()
                .map(|path| path.display().to_string())
                .collect(),
            runtime: "python".into(),
            export_path: staging.path().join("out"),
            archive_format: ArchiveFormat::Default,
            force: true,
            requirements_file: None,
            config_file: Some(config_file),
            ort_library: None,
            convert: Default::default(),
            carried_files: Vec::new(),
        })
        .with_context(|| format!("packing {archive_name}"))?;
        let target = store.join(format!("{archive_name}.mar"));
        std::fs::rename(&outcome.path, &target)
            .with_context(|| format!("moving the archive to {}", target.display()))?;
        Ok(target)
    }
}

/// A realistic photo-sized JPEG (quality 90) from the committed 451x300 PNG, upscaled: made in
/// memory on every run, so nothing extra is committed.
pub fn make_jpeg(png: &Path) -> anyhow::Result<Vec<u8>> {
    let source = image::open(png).with_context(|| format!("reading {}", png.display()))?;
    let resized = source
        .resize_exact(JPEG_SIDE, JPEG_SIDE, image::imageops::FilterType::Triangle)
        .into_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 90)
        .encode_image(&resized)
        .context("encoding the JPEG")?;
    Ok(jpeg)
}

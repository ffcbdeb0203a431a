//! The two models the harness measures and everything derived from them: the request body a
//! client sends, the same input pre-processed once into a ready tensor (for the bare limit), and
//! archives packed with the archiver library exactly as `oxserve-archiver` would.
//!
//! - `digits`: the example CNN, a 28x28 PNG through `examples/digits/mnist_handler.json`. Tiny:
//!   every microsecond of server overhead shows.
//! - `resnet18`: torchvision's ResNet-18 (exported on demand, cached), a ~720x720 JPEG through the
//!   built-in `image_classifier` handler. Compute-bound: pre-processing and batching show.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use oxserve_archiver::handler_config::{HandlerConfig, ImagePreprocess};
use oxserve_archiver::pack::{pack, ArchiveFormat, PackRequest};

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
    /// The image pre-processing the handler applies.
    pub preprocess: ImagePreprocess,
    /// The request body every client sends.
    pub body: Bytes,
    /// One item after pre-processing, `[C, H, W]`.
    pub item: Vec<f32>,
    pub item_shape: Vec<usize>,
    /// The graph's input (both graphs name it `input`), for v2 raw-tensor requests.
    pub input_name: String,
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
            preprocess,
            body: Bytes::from(body),
            item,
            item_shape: vec![pixels.channels, height as usize, width as usize],
            input_name: "input".into(),
        })
    }

    /// A KServe v2 infer body carrying the ready item as a raw FP32 tensor `[1, C, H, W]` in
    /// JSON: the handler's pre-processing is skipped, the graph runs on the tensor as sent.
    pub fn v2_body(&self) -> Bytes {
        let (shape, data) = self.ready_batch(1);
        let body = serde_json::json!({"inputs": [{
            "name": self.input_name, "datatype": "FP32", "shape": shape, "data": data,
        }]});
        Bytes::from(body.to_string())
    }

    /// `batch` copies of the ready item, stacked: `[batch, C, H, W]`.
    pub fn ready_batch(&self, batch: usize) -> (Vec<usize>, Vec<f32>) {
        let mut shape = vec![batch];
        shape.extend(&self.item_shape);
        (shape, self.item.repeat(batch))
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
            extra_files: Vec::new(),
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

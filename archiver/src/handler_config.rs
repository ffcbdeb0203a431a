//! The declarative handler config: what TorchServe does in a Python handler, oxserve describes as
//! data (pre-processing, which graph input and output to use, post-processing). Built-in handler
//! names resolve to a config here; users can ship their own JSON/YAML instead. Stored in the archive
//! as `MAR-INF/handler.json` and checked against the graph's [`Signature`] at packing and load time.
//! The server's `handler/` modules execute it; this module only defines and validates it.

use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};
use crate::signature::{Signature, TensorSpec};

/// Schema version written into every config.
pub const CONFIG_VERSION: u32 = 1;

/// TorchServe's default handler names that oxserve implements natively.
pub const BUILTIN_HANDLERS: [&str; 7] = [
    "image_classifier",
    "image_segmenter",
    "object_detector",
    "text_classifier",
    "text_embedding",
    "tensor",
    "base_handler",
];

/// The file TorchServe's handlers read class labels from.
pub const DEFAULT_LABELS_FILE: &str = "index_to_name.json";

/// The Hugging Face tokenizer file text handlers read, shipped with `--extra-files`.
pub const DEFAULT_TOKENIZER_FILE: &str = "tokenizer.json";

/// What kind of handler runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerKind {
    ImageClassifier,
    ImageSegmenter,
    ObjectDetector,
    TextClassifier,
    /// Sentence embeddings: pooled (and optionally normalised) hidden states as float lists.
    TextEmbedding,
    /// Raw tensors as JSON in and out, for any graph.
    Tensor,
}

/// A complete handler config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Schema version ([`CONFIG_VERSION`]).
    pub version: u32,
    pub handler: HandlerKind,
    /// Graph input that receives the pre-processed tensor; the graph's first input when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImagePreprocess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextPreprocess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classify: Option<Classification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segmentation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<Detection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<Embedding>,
}

/// Colour model the decoded image is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorMode {
    Rgb,
    Gray,
}

impl ColorMode {
    /// Channels the graph input must have.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }
}

/// torchvision-style image pre-processing: decode → Resize → CenterCrop → ToTensor → Normalize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocess {
    #[serde(default = "rgb")]
    pub color: ColorMode,
    /// `Resize(n)`: scale so the shorter side is `n` (bilinear with antialiasing, as torchvision on
    /// PIL images). No resize when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<u32>,
    /// `CenterCrop(n)`: a centred n×n square. No crop when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_crop: Option<u32>,
    /// Pixel values are multiplied by this first (ToTensor's 1/255).
    #[serde(default = "to_tensor_scale")]
    pub scale: f32,
    /// Per-channel mean subtracted after scaling; empty means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean; empty means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f32>,
    /// Largest decoded image accepted, in pixels (PIL's `MAX_IMAGE_PIXELS` guard against
    /// decompression bombs). Requests beyond it get a 400.
    #[serde(default = "max_image_pixels")]
    pub max_pixels: u64,
}

/// Text pre-processing: a `tokenizer.json` (Hugging Face `tokenizers`) turns UTF-8 text into the
/// graph's `input_ids`, `attention_mask` and `token_type_ids` (those the graph has).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextPreprocess {
    /// Archive file holding the tokenizer.
    #[serde(default = "tokenizer_file")]
    pub tokenizer: String,
    /// Longest token sequence fed to the graph. When absent: the graph's fixed sequence length,
    /// else the tokenizer's own truncation length, else 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Cut longer texts to `max_length` tokens; when off, they are refused (400).
    #[serde(default = "yes")]
    pub truncation: bool,
    /// Longest text accepted, in UTF-8 bytes, checked before tokenizing.
    #[serde(default = "max_text_bytes")]
    pub max_bytes: usize,
    /// Most texts in one request (a JSON list).
    #[serde(default = "max_texts")]
    pub max_texts: usize,
    /// Token budget of one run: rows × padded length stays within it (as well as `batch_size`).
    #[serde(default = "max_batch_tokens")]
    pub max_batch_tokens: usize,
}

/// How hidden states become one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the tokens the attention mask keeps (sentence-transformers' default).
    Mean,
    /// The first (`[CLS]`) token's state.
    Cls,
}

/// Post-processing for sentence-embedding graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embedding {
    /// Graph output: `[batch, sequence, hidden]` states to pool, or `[batch, hidden]` vectors
    /// already pooled. The first output when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default = "mean_pooling")]
    pub pooling: Pooling,
    /// Divide each vector by its L2 norm.
    #[serde(default = "yes")]
    pub normalize: bool,
}

/// What a classification answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassificationResult {
    /// `{label: probability}` for the top k classes (TorchServe's image/text classifiers).
    TopK,
    /// The index of the best class alone, as TorchServe's MNIST example answers.
    Index,
    /// `{label: probability}` for every class in index order (TorchServe's text_classifier,
    /// `map_class_to_label`).
    Classes,
}

/// Post-processing for classifiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classification {
    /// Graph output holding the scores; the first output when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Apply softmax to the scores (off when the graph already outputs probabilities).
    #[serde(default = "yes")]
    pub softmax: bool,
    /// How many classes to report; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default = "top_k_result")]
    pub result: ClassificationResult,
    /// Archive file mapping class indices to names; labels are indices when it is missing.
    #[serde(default = "labels_file")]
    pub labels: String,
}

/// Post-processing for segmentation graphs (torchvision's `out`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segmentation {
    /// Graph output with per-class scores `[N, classes, H, W]`.
    #[serde(default = "segmentation_output")]
    pub output: String,
}

/// Post-processing for detection graphs (torchvision's boxes/labels/scores).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    #[serde(default = "boxes_output")]
    pub boxes: String,
    #[serde(default = "labels_output")]
    pub labels: String,
    #[serde(default = "scores_output")]
    pub scores: String,
    /// Detections scoring below this are dropped (TorchServe's default 0.5).
    #[serde(default = "detection_threshold")]
    pub threshold: f32,
    /// Archive file mapping class indices to names.
    #[serde(default = "labels_file")]
    pub label_names: String,
}

fn rgb() -> ColorMode {
    ColorMode::Rgb
}
fn to_tensor_scale() -> f32 {
    1.0 / 255.0
}
fn max_image_pixels() -> u64 {
    // PIL.Image.MAX_IMAGE_PIXELS, which TorchServe keeps unless limit_max_image_pixels=false.
    89_478_485
}
fn tokenizer_file() -> String {
    DEFAULT_TOKENIZER_FILE.to_string()
}
fn max_text_bytes() -> usize {
    64 * 1024
}
fn max_texts() -> usize {
    64
}
fn max_batch_tokens() -> usize {
    16 * 1024
}
fn mean_pooling() -> Pooling {
    Pooling::Mean
}
fn text_preprocess() -> TextPreprocess {
    TextPreprocess {
        tokenizer: tokenizer_file(),
        max_length: None,
        truncation: true,
        max_bytes: max_text_bytes(),
        max_texts: max_texts(),
        max_batch_tokens: max_batch_tokens(),
    }
}
fn yes() -> bool {
    true
}
fn top_k_result() -> ClassificationResult {
    ClassificationResult::TopK
}
fn labels_file() -> String {
    DEFAULT_LABELS_FILE.to_string()
}
fn segmentation_output() -> String {
    "out".to_string()
}
fn boxes_output() -> String {
    "boxes".to_string()
}
fn labels_output() -> String {
    "labels".to_string()
}
fn scores_output() -> String {
    "scores".to_string()
}
fn detection_threshold() -> f32 {
    0.5
}

/// torchvision's ImageNet normalisation, used by TorchServe's vision handlers.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

fn imagenet_preprocess() -> ImagePreprocess {
    ImagePreprocess {
        color: ColorMode::Rgb,
        resize: Some(256),
        center_crop: Some(224),
        scale: to_tensor_scale(),
        mean: IMAGENET_MEAN.to_vec(),
        std: IMAGENET_STD.to_vec(),
        max_pixels: max_image_pixels(),
    }
}

impl HandlerConfig {
    fn bare(handler: HandlerKind) -> Self {
        HandlerConfig {
            version: CONFIG_VERSION,
            handler,
            input: None,
            image: None,
            text: None,
            classify: None,
            segment: None,
            detect: None,
            embed: None,
        }
    }

    /// The config equivalent to one of TorchServe's default handlers, by name.
    pub fn builtin(name: &str) -> Option<Self> {
        let config = match name {
            "image_classifier" => HandlerConfig {
                image: Some(imagenet_preprocess()),
                classify: Some(Classification {
                    output: None,
                    softmax: true,
                    top_k: Some(5),
                    result: ClassificationResult::TopK,
                    labels: labels_file(),
                }),
                ..Self::bare(HandlerKind::ImageClassifier)
            },
            "image_segmenter" => HandlerConfig {
                image: Some(imagenet_preprocess()),
                segment: Some(Segmentation {
                    output: segmentation_output(),
                }),
                ..Self::bare(HandlerKind::ImageSegmenter)
            },
            "object_detector" => HandlerConfig {
                // TorchServe's object detector applies ToTensor only.
                image: Some(ImagePreprocess {
                    color: ColorMode::Rgb,
                    resize: None,
                    center_crop: None,
                    scale: to_tensor_scale(),
                    mean: Vec::new(),
                    std: Vec::new(),
                    max_pixels: max_image_pixels(),
                }),
                detect: Some(Detection {
                    boxes: boxes_output(),
                    labels: labels_output(),
                    scores: scores_output(),
                    threshold: detection_threshold(),
                    label_names: labels_file(),
                }),
                ..Self::bare(HandlerKind::ObjectDetector)
            },
            "text_classifier" => HandlerConfig {
                input: Some("input_ids".to_string()),
                text: Some(text_preprocess()),
                classify: Some(Classification {
                    output: None,
                    softmax: true,
                    top_k: None,
                    result: ClassificationResult::Classes,
                    labels: labels_file(),
                }),
                ..Self::bare(HandlerKind::TextClassifier)
            },
            "text_embedding" => HandlerConfig {
                input: Some("input_ids".to_string()),
                text: Some(text_preprocess()),
                embed: Some(Embedding {
                    output: None,
                    pooling: Pooling::Mean,
                    normalize: true,
                }),
                ..Self::bare(HandlerKind::TextEmbedding)
            },
            "tensor" | "base_handler" => Self::bare(HandlerKind::Tensor),
            _ => return None,
        };
        Some(config)
    }

    /// Parses a user-supplied config (JSON, or YAML when `yaml` is set), strictly.
    pub fn parse(source_name: &str, bytes: &[u8], yaml: bool) -> Result<Self> {
        let parsed: std::result::Result<Self, String> = if yaml {
            serde_yaml::from_slice(bytes).map_err(|error| error.to_string())
        } else {
            serde_json::from_slice(bytes).map_err(|error| error.to_string())
        };
        let config = parsed.map_err(|reason| {
            ArchiveError::InvalidHandler(format!("invalid handler config {source_name}: {reason}"))
        })?;
        config.validate().map_err(|reason| {
            ArchiveError::InvalidHandler(format!("invalid handler config {source_name}: {reason}"))
        })?;
        Ok(config)
    }

    /// Serialises as pretty JSON for `MAR-INF/handler.json`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks that the sections this kind of handler needs are there and sane.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != CONFIG_VERSION {
            return Err(format!(
                "version {} is not supported (expected {CONFIG_VERSION})",
                self.version
            ));
        }
        let needs = |present: bool, section: &str| {
            if present {
                Ok(())
            } else {
                Err(format!(
                    "handler {:?} needs a `{section}` section",
                    self.handler
                ))
            }
        };
        match self.handler {
            HandlerKind::ImageClassifier => {
                needs(self.image.is_some(), "image")?;
                needs(self.classify.is_some(), "classify")?;
            }
            HandlerKind::ImageSegmenter => {
                needs(self.image.is_some(), "image")?;
                needs(self.segment.is_some(), "segment")?;
            }
            HandlerKind::ObjectDetector => {
                needs(self.image.is_some(), "image")?;
                needs(self.detect.is_some(), "detect")?;
            }
            HandlerKind::TextClassifier => {
                needs(self.text.is_some(), "text")?;
                needs(self.classify.is_some(), "classify")?;
            }
            HandlerKind::TextEmbedding => {
                needs(self.text.is_some(), "text")?;
                needs(self.embed.is_some(), "embed")?;
            }
            HandlerKind::Tensor => {}
        }
        if let Some(image) = &self.image {
            let channels = image.color.channels();
            for (name, values) in [("mean", &image.mean), ("std", &image.std)] {
                if !values.is_empty() && values.len() != channels {
                    return Err(format!(
                        "image.{name} has {} values but {:?} images have {channels} channel(s)",
                        values.len(),
                        image.color
                    ));
                }
            }
            if image
                .std
                .iter()
                .any(|value| *value == 0.0 || !value.is_finite())
            {
                return Err("image.std values must be finite and non-zero".to_string());
            }
            if image.resize == Some(0) || image.center_crop == Some(0) {
                return Err("image.resize and image.center_crop must be positive".to_string());
            }
        }
        if let Some(text) = &self.text {
            if text.max_length == Some(0)
                || text.max_bytes == 0
                || text.max_texts == 0
                || text.max_batch_tokens == 0
            {
                return Err(
                    "text.max_length, max_bytes, max_texts and max_batch_tokens must be positive"
                        .to_string(),
                );
            }
        }
        if self.classify.as_ref().and_then(|classify| classify.top_k) == Some(0) {
            return Err("classify.top_k must be at least 1".to_string());
        }
        Ok(())
    }

    /// The graph input this handler feeds.
    pub fn input_spec<'s>(
        &self,
        signature: &'s Signature,
    ) -> std::result::Result<&'s TensorSpec, String> {
        match &self.input {
            Some(name) => signature
                .input(name)
                .ok_or_else(|| format!("the graph has no input named {name:?}")),
            None => signature
                .inputs
                .first()
                .ok_or_else(|| "the graph has no inputs".to_string()),
        }
    }

    /// Checks this config against a graph: the input and outputs it names exist with usable shapes.
    pub fn check_signature(&self, signature: &Signature) -> std::result::Result<(), String> {
        if self.handler == HandlerKind::Tensor {
            return Ok(());
        }
        let input = self.input_spec(signature)?;
        if let Some(image) = &self.image {
            check_image_input(image, input, self.handler)?;
        }
        let output_named = |name: &str| {
            signature
                .output(name)
                .map(|_| ())
                .ok_or_else(|| format!("the graph has no output named {name:?}"))
        };
        if let Some(classify) = &self.classify {
            match &classify.output {
                Some(name) => output_named(name)?,
                None if signature.outputs.is_empty() => {
                    return Err("the graph has no outputs".into())
                }
                None => {}
            }
        }
        if self.text.is_some() {
            check_text_input(input)?;
        }
        if let Some(name) = self.embed.as_ref().and_then(|embed| embed.output.as_ref()) {
            output_named(name)?;
        }
        if let Some(segment) = &self.segment {
            output_named(&segment.output)?;
        }
        if let Some(detect) = &self.detect {
            for name in [&detect.boxes, &detect.labels, &detect.scores] {
                output_named(name)?;
            }
        }
        Ok(())
    }
}

/// Text graphs take integer token ids `[batch, sequence]`.
fn check_text_input(input: &TensorSpec) -> std::result::Result<(), String> {
    if !matches!(input.dtype.as_str(), "int64" | "int32") {
        return Err(format!(
            "text handlers feed int64 or int32 token ids, but input {input} is {}",
            input.dtype
        ));
    }
    if input.shape.len() != 2 {
        return Err(format!(
            "text handlers need an input of shape [batch, sequence], but the graph has {input}"
        ));
    }
    Ok(())
}

fn check_image_input(
    image: &ImagePreprocess,
    input: &TensorSpec,
    kind: HandlerKind,
) -> std::result::Result<(), String> {
    if input.dtype != "float32" {
        return Err(format!(
            "image handlers feed float32 tensors, but input {input} is {}",
            input.dtype
        ));
    }
    // Detection graphs exported from torchvision take one [C, H, W] image; the others [N, C, H, W].
    let rank = if kind == HandlerKind::ObjectDetector && input.shape.len() == 3 {
        3
    } else {
        4
    };
    if input.shape.len() != rank {
        return Err(format!(
            "image handlers need an input of shape [batch, channels, height, width], but the graph has {input}"
        ));
    }
    let channel_axis = rank - 3;
    if let Some(channels) = input.shape[channel_axis].fixed() {
        if channels as usize != image.color.channels() {
            return Err(format!(
                "input {input} has {channels} channel(s) but the handler produces {:?} images with {}",
                image.color,
                image.color.channels()
            ));
        }
    }
    if let Some(crop) = image.center_crop {
        for axis in [rank - 2, rank - 1] {
            if let Some(size) = input.shape[axis].fixed() {
                if size != u64::from(crop) {
                    return Err(format!(
                        "input {input} expects {size} pixels on axis {axis}, but the handler crops to {crop}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Dim;

    fn image_signature(channels: u64, size: u64) -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: "float32".into(),
                shape: vec![
                    Dim::Symbolic("batch".into()),
                    Dim::Fixed(channels),
                    Dim::Fixed(size),
                    Dim::Fixed(size),
                ],
            }],
            outputs: vec![TensorSpec {
                name: "output".into(),
                dtype: "float32".into(),
                shape: vec![Dim::Symbolic("batch".into()), Dim::Fixed(10)],
            }],
        }
    }

    #[test]
    fn every_builtin_name_resolves_and_validates() {
        for name in BUILTIN_HANDLERS {
            let config = HandlerConfig::builtin(name).expect(name);
            config.validate().expect(name);
            let json = config.to_json();
            assert_eq!(
                HandlerConfig::parse(name, &json, false).expect("round trip"),
                config
            );
        }
        assert!(HandlerConfig::builtin("my_handler.py").is_none());
    }

    #[test]
    fn classifier_matches_imagenet_graph_and_rejects_wrong_crop() {
        let config = HandlerConfig::builtin("image_classifier").expect("builtin");
        config
            .check_signature(&image_signature(3, 224))
            .expect("fits");
        let error = config
            .check_signature(&image_signature(3, 28))
            .expect_err("crop mismatch");
        assert!(error.contains("crops to 224"), "{error}");
        let error = config
            .check_signature(&image_signature(1, 224))
            .expect_err("channels");
        assert!(error.contains("channel"), "{error}");
    }

    #[test]
    fn text_handlers_need_integer_token_ids() {
        let signature = |dtype: &str| Signature {
            inputs: vec![TensorSpec {
                name: "input_ids".into(),
                dtype: dtype.into(),
                shape: vec![
                    Dim::Symbolic("batch".into()),
                    Dim::Symbolic("sequence".into()),
                ],
            }],
            outputs: vec![TensorSpec {
                name: "logits".into(),
                dtype: "float32".into(),
                shape: vec![Dim::Symbolic("batch".into()), Dim::Fixed(2)],
            }],
        };
        for name in ["text_classifier", "text_embedding"] {
            let config = HandlerConfig::builtin(name).expect("builtin");
            config.check_signature(&signature("int64")).expect("fits");
            let error = config
                .check_signature(&signature("float32"))
                .expect_err("float ids");
            assert!(error.contains("token ids"), "{error}");
        }
        let error = HandlerConfig::parse(
            "h.json",
            br#"{"version":1,"handler":"text_embedding","text":{"max_bytes":0},"embed":{}}"#,
            false,
        )
        .expect_err("zero limit");
        assert!(error.to_string().contains("positive"), "{error}");
    }

    #[test]
    fn unknown_fields_and_missing_sections_are_refused() {
        let error = HandlerConfig::parse(
            "h.json",
            br#"{"version":1,"handler":"tensor","bogus":1}"#,
            false,
        )
        .expect_err("unknown field");
        assert!(error.to_string().contains("bogus"), "{error}");
        let error = HandlerConfig::parse(
            "h.json",
            br#"{"version":1,"handler":"image_classifier"}"#,
            false,
        )
        .expect_err("missing section");
        assert!(error.to_string().contains("image"), "{error}");
        let yaml = b"version: 1\nhandler: image_classifier\nimage: {color: gray, mean: [0.5, 0.5]}\nclassify: {}\n";
        let error = HandlerConfig::parse("h.yaml", yaml, true).expect_err("mean length");
        assert!(error.to_string().contains("mean"), "{error}");
    }
}

//! Built-in handlers: the Rust equivalent of TorchServe's default Python handlers, driven by the
//! archive's declarative [`HandlerConfig`]. A handler turns one request item into named input
//! tensors ([`Handler::preprocess`]) and this item's rows of the graph outputs into the JSON answer
//! TorchServe would give ([`Handler::postprocess`]). Pure, synchronous functions of bytes and
//! arrays: workers call them; they never see a session, a queue or an HTTP type.
//!
//! - `image`: decode, resize, crop, normalise (shared by the three vision handlers).
//! - `classifier`: softmax, top-k `{label: prob}` or the best index.
//! - `segmenter`: per-pixel `[class, prob]`.
//! - `detector`: `[{label: box, "score": s}]` above a threshold.
//! - `tensor`: JSON tensors in and out, for any graph.
//! - `text`: tokenizer, text classifier and sentence embeddings, dynamic padding of text runs.

mod classifier;
mod detector;
pub mod image;
mod segmenter;
pub(crate) mod tensor;
pub mod text;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use oxserve_archiver::handler_config::{HandlerConfig, HandlerKind};
use oxserve_archiver::{Signature, TensorSpec};

use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

/// One input of a request: a file part, or the raw body.
#[derive(Debug, Clone)]
pub struct RequestItem {
    pub bytes: Bytes,
    pub content_type: Option<String>,
}

/// One item of a request as a transport hands it to the model: bytes for the handler (a REST
/// body or part, a v2 BYTES element), or graph inputs already typed and checked against the
/// signature (a v2 raw-tensor request), which skip the handler's pre- and post-processing.
#[derive(Debug, Clone)]
pub enum ItemInput {
    Bytes(RequestItem),
    Tensors(Prepared),
}

/// What items must share to be stacked into one run: per input, its name, its shape past the
/// batch axis and its element type.
pub type StackKey = Vec<(String, Vec<usize>, &'static str)>;

/// A request item turned into graph inputs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Graph input name → tensor (with the batch axis when the graph has one).
    pub inputs: Vec<(String, HostTensor)>,
    /// Rows this item contributes along the batch axis.
    pub rows: usize,
    /// For text items: each row's real token count and whether a list was sent.
    pub text: Option<text::TextRows>,
}

impl Prepared {
    /// Items can share a run when their inputs agree on everything but the batch axis.
    pub fn stack_key(&self) -> StackKey {
        self.inputs
            .iter()
            .map(|(name, tensor)| {
                (
                    name.clone(),
                    tensor.shape.iter().skip(1).copied().collect(),
                    tensor.values.dtype(),
                )
            })
            .collect()
    }
}

/// Class index → label, from `index_to_name.json` (TorchServe's `load_label_mapping`).
pub type Labels = BTreeMap<String, String>;

/// A model's handler, ready to run.
#[derive(Debug, Clone)]
pub struct Handler {
    config: HandlerConfig,
    signature: Signature,
    input: TensorSpec,
    labels: Option<Labels>,
    limit_pixels: bool,
    batchable: bool,
    text: Option<text::TextHandler>,
}

impl Handler {
    /// Builds the handler for an unpacked archive; fails when the config does not fit the graph.
    pub fn new(
        config: HandlerConfig,
        signature: Signature,
        archive_root: &Path,
        limit_pixels: bool,
    ) -> Result<Self, String> {
        config.check_signature(&signature)?;
        let input = match config.handler {
            HandlerKind::Tensor => {
                signature
                    .inputs
                    .first()
                    .cloned()
                    .unwrap_or_else(|| TensorSpec {
                        name: String::new(),
                        dtype: "float32".into(),
                        shape: Vec::new(),
                    })
            }
            _ => config.input_spec(&signature)?.clone(),
        };
        let labels_file = config
            .classify
            .as_ref()
            .map(|classify| classify.labels.clone())
            .or_else(|| {
                config
                    .detect
                    .as_ref()
                    .map(|detect| detect.label_names.clone())
            });
        let labels = match labels_file {
            Some(name) => load_labels(&archive_root.join(name))?,
            None => None,
        };
        let batchable = match config.handler {
            HandlerKind::Tensor => signature.supports_batching(),
            HandlerKind::ObjectDetector => false,
            _ => {
                input.has_dynamic_batch()
                    && signature.outputs.iter().all(TensorSpec::has_dynamic_batch)
            }
        };
        let text = match &config.text {
            Some(settings) => Some(text::TextHandler::new(settings, &signature, archive_root)?),
            None => None,
        };
        Ok(Handler {
            config,
            signature,
            input,
            labels,
            limit_pixels,
            batchable,
            text,
        })
    }

    /// The graph's inputs and outputs.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Whether requests may be stacked along the batch axis into one run.
    pub fn batchable(&self) -> bool {
        self.batchable
    }

    /// How text items are padded when stacked into one run; `None` for other models.
    pub fn padding(&self) -> Option<text::Padding> {
        self.text.as_ref().map(text::TextHandler::padding)
    }

    /// Turns one request item into graph inputs. Errors are the client's (400).
    pub fn preprocess(&self, item: &RequestItem) -> Result<Prepared, ServeError> {
        match self.config.handler {
            HandlerKind::ImageClassifier
            | HandlerKind::ImageSegmenter
            | HandlerKind::ObjectDetector => {
                let settings = self.config.image.as_ref().ok_or_else(|| {
                    ServeError::Internal("image handler without image settings".into())
                })?;
                let (data, height, width, channels) =
                    image::prepare(&item.bytes, settings, self.limit_pixels)?;
                let mut shape = vec![channels, height as usize, width as usize];
                if self.input.shape.len() == 4 {
                    shape.insert(0, 1);
                }
                check_fixed_dims(&self.input, &shape)?;
                Ok(Prepared {
                    inputs: vec![(
                        self.input.name.clone(),
                        HostTensor {
                            shape,
                            values: TensorValues::F32(data),
                        },
                    )],
                    rows: 1,
                    text: None,
                })
            }
            HandlerKind::Tensor => tensor::parse_request(&item.bytes, &self.signature),
            HandlerKind::TextClassifier | HandlerKind::TextEmbedding => self
                .text
                .as_ref()
                .ok_or_else(|| ServeError::Internal("text handler without a tokenizer".into()))?
                .preprocess(&item.bytes, item.content_type.as_deref()),
        }
    }

    /// Builds this item's answer from its rows of the graph outputs (`text`: a text item's rows,
    /// from its [`Prepared`]).
    pub fn postprocess(
        &self,
        outputs: &BTreeMap<String, HostTensor>,
        text: Option<&text::TextRows>,
    ) -> Result<serde_json::Value, ServeError> {
        let output = |name: Option<&str>| -> Result<&HostTensor, ServeError> {
            let name = name
                .map(str::to_string)
                .or_else(|| self.signature.outputs.first().map(|spec| spec.name.clone()))
                .unwrap_or_default();
            outputs.get(&name).ok_or_else(|| {
                ServeError::Internal(format!("the graph did not return output {name:?}"))
            })
        };
        let text_rows =
            || text.ok_or_else(|| ServeError::Internal("a text answer without its rows".into()));
        match self.config.handler {
            HandlerKind::TextClassifier => {
                let classify = self.config.classify.as_ref().ok_or_else(|| {
                    ServeError::Internal("classifier without classify settings".into())
                })?;
                text::classify(
                    output(classify.output.as_deref())?,
                    text_rows()?,
                    classify,
                    self.labels.as_ref(),
                )
            }
            HandlerKind::TextEmbedding => {
                let embed = self.config.embed.as_ref().ok_or_else(|| {
                    ServeError::Internal("text_embedding without embed settings".into())
                })?;
                text::embed(output(embed.output.as_deref())?, text_rows()?, embed)
            }
            HandlerKind::ImageClassifier => {
                let classify = self.config.classify.as_ref().ok_or_else(|| {
                    ServeError::Internal("classifier without classify settings".into())
                })?;
                classifier::answer(
                    output(classify.output.as_deref())?,
                    classify,
                    self.labels.as_ref(),
                )
            }
            HandlerKind::ImageSegmenter => {
                let segment = self.config.segment.as_ref().ok_or_else(|| {
                    ServeError::Internal("segmenter without segment settings".into())
                })?;
                segmenter::answer(output(Some(&segment.output))?)
            }
            HandlerKind::ObjectDetector => {
                let detect = self.config.detect.as_ref().ok_or_else(|| {
                    ServeError::Internal("detector without detect settings".into())
                })?;
                detector::answer(
                    output(Some(&detect.boxes))?,
                    output(Some(&detect.labels))?,
                    output(Some(&detect.scores))?,
                    detect.threshold,
                    self.labels.as_ref(),
                )
            }
            HandlerKind::Tensor => Ok(tensor::answer(outputs, &self.signature)),
        }
    }
}

/// A prepared tensor must agree with the graph's fixed dimensions (except a dynamic batch axis).
fn check_fixed_dims(spec: &TensorSpec, shape: &[usize]) -> Result<(), ServeError> {
    if spec.shape.len() != shape.len() {
        return Err(ServeError::BadRequest(format!(
            "input {} needs {} dimensions, the request gives {shape:?}",
            spec.name,
            spec.shape.len()
        )));
    }
    for (axis, (dim, &size)) in spec.shape.iter().zip(shape).enumerate() {
        if let Some(fixed) = dim.fixed() {
            if fixed as usize != size {
                return Err(ServeError::BadRequest(format!(
                    "input {spec} needs size {fixed} on axis {axis}, the request gives {shape:?}"
                )));
            }
        }
    }
    Ok(())
}

/// Reads `index_to_name.json`: values may be a name or a list whose last element is the name;
/// the old `{"object_type_names": [...]}` form is accepted too. Missing file → no labels.
fn load_labels(path: &Path) -> Result<Option<Labels>, String> {
    let Ok(text) = std::fs::read(path) else {
        return Ok(None);
    };
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("labels");
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|error| format!("{name} is not valid JSON: {error}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| format!("{name} must map class indices to names"))?;
    if let Some(serde_json::Value::Array(names)) = object.get("object_type_names") {
        return Ok(Some(
            names
                .iter()
                .enumerate()
                .map(|(index, name)| {
                    (
                        index.to_string(),
                        name.as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        ));
    }
    let mut labels = Labels::new();
    for (key, value) in object {
        let label = match value {
            serde_json::Value::String(label) => label.clone(),
            serde_json::Value::Array(items) => items
                .last()
                .and_then(|item| item.as_str())
                .ok_or_else(|| format!("{name}: the entry for {key} has no name"))?
                .to_string(),
            _ => {
                return Err(format!(
                    "{name}: the entry for {key} must be a name or a list"
                ))
            }
        };
        labels.insert(key.clone(), label);
    }
    Ok(Some(labels))
}

/// A float from a graph as JSON: `f32` widened to `f64` prints the digits Python's `tolist()` +
/// `json.dumps` prints for the same value.
pub(crate) fn json_float(value: f32) -> serde_json::Value {
    serde_json::Number::from_f64(f64::from(value))
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

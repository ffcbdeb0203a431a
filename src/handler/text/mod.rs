//! Text models: TorchServe's `text_classifier` and sentence embeddings (`text_embedding`) with a
//! real tokenizer from the archive.
//!
//! - `request`: the texts of a request item (raw UTF-8 or JSON), checked before tokenizing.
//! - `tokenize`: `tokenizer.json` → the graph's token inputs, truncated, padded per item.
//! - `padding`: dynamic padding and the token budget when the worker stacks items into a run.
//! - `embedding`: pooling and normalisation of hidden states.

mod embedding;
mod padding;
pub mod request;
mod tokenize;

use std::path::Path;

use oxserve_archiver::handler_config::{Classification, Embedding, TextPreprocess};
use oxserve_archiver::Signature;

pub use padding::Padding;
pub use tokenize::TextTokenizer;

use super::{classifier, json_float, Labels, Prepared};
use crate::error::ServeError;
use crate::tensor::HostTensor;
use request::TextLimits;

/// What post-processing needs to know about a text item's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRows {
    /// Real tokens of each text.
    pub lengths: Vec<usize>,
    /// The request sent a list: answer a list in the same order.
    pub listed: bool,
}

/// The text side of a handler: tokenizer and limits.
#[derive(Debug, Clone)]
pub struct TextHandler {
    pub tokenizer: TextTokenizer,
    limits: TextLimits,
    max_batch_tokens: usize,
}

impl TextHandler {
    pub fn new(
        settings: &TextPreprocess,
        signature: &Signature,
        archive_root: &Path,
    ) -> Result<Self, String> {
        Ok(TextHandler {
            tokenizer: TextTokenizer::load(settings, signature, archive_root)?,
            limits: TextLimits {
                max_bytes: settings.max_bytes,
                max_texts: settings.max_texts,
            },
            max_batch_tokens: settings.max_batch_tokens,
        })
    }

    /// How the worker pads this model's runs.
    pub fn padding(&self) -> Padding {
        Padding {
            inputs: self.tokenizer.pad_values(),
            max_tokens: self.max_batch_tokens,
        }
    }

    /// A request item → token inputs, one row per text.
    pub fn preprocess(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<Prepared, ServeError> {
        let texts = request::parse(bytes, content_type, self.limits)?;
        let tokenized = self.tokenizer.tokenize(&texts.texts)?;
        Ok(Prepared {
            inputs: tokenized.inputs,
            rows: texts.texts.len(),
            text: Some(TextRows {
                lengths: tokenized.lengths,
                listed: texts.listed,
            }),
        })
    }
}

/// One answer per text, as a list when the request sent one.
fn per_text(rows: &TextRows, mut answers: Vec<serde_json::Value>) -> serde_json::Value {
    if rows.listed || answers.len() != 1 {
        serde_json::Value::Array(answers)
    } else {
        answers.pop().unwrap_or_default()
    }
}

/// The text_classifier answer: per text, softmax over its scores as `{label: probability}`.
pub fn classify(
    scores: &HostTensor,
    rows: &TextRows,
    settings: &Classification,
    labels: Option<&Labels>,
) -> Result<serde_json::Value, ServeError> {
    let answers = (0..scores.rows())
        .map(|row| classifier::answer(&scores.rows_slice(row, 1), settings, labels))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(per_text(rows, answers))
}

/// The text_embedding answer: per text, its vector as a list of floats.
pub fn embed(
    output: &HostTensor,
    rows: &TextRows,
    settings: &Embedding,
) -> Result<serde_json::Value, ServeError> {
    let answers = embedding::vectors(output, &rows.lengths, settings)?
        .into_iter()
        .map(|vector| serde_json::Value::Array(vector.into_iter().map(json_float).collect()))
        .collect();
    Ok(per_text(rows, answers))
}

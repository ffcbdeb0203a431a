//! Tokenization with the `tokenizers` crate from the archive's `tokenizer.json`: texts become the
//! graph's own token inputs (`input_ids`, `attention_mask`, `token_type_ids`, those it has, in
//! its dtypes), truncated to the graph's maximum length or refused beyond it, and padded to the
//! longest text of the item.

use std::path::Path;

use oxserve_archiver::handler_config::TextPreprocess;
use oxserve_archiver::Signature;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

/// Longest sequence when neither the config, the graph nor the tokenizer names one (BERT's).
const DEFAULT_MAX_LENGTH: usize = 512;
/// Largest tokenizer.json read from an archive.
const MAX_TOKENIZER_BYTES: u64 = 64 * 1024 * 1024;

/// What a graph input receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ids,
    Mask,
    TypeIds,
}

/// One graph input fed by the tokenizer.
#[derive(Debug, Clone)]
pub struct TokenInput {
    pub name: String,
    pub role: Role,
    /// `int64` or `int32`, from the signature.
    pub int32: bool,
}

/// A loaded tokenizer and how its output maps onto the graph's inputs.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    pub inputs: Vec<TokenInput>,
    pub max_length: usize,
    truncation: bool,
    pub pad_id: i64,
}

/// Token inputs for the texts of one item, each padded to the item's longest text.
pub struct Tokenized {
    pub inputs: Vec<(String, HostTensor)>,
    /// Real tokens of each text (the rest of its row is padding).
    pub lengths: Vec<usize>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from the unpacked archive and matches the graph's inputs.
    pub fn load(
        settings: &TextPreprocess,
        signature: &Signature,
        archive_root: &Path,
    ) -> Result<Self, String> {
        let path = archive_root.join(&settings.tokenizer);
        let size = std::fs::metadata(&path)
            .map_err(|error| {
                format!(
                    "text handlers need the tokenizer file {} in the archive (--extra-files): {error}",
                    settings.tokenizer
                )
            })?
            .len();
        if size > MAX_TOKENIZER_BYTES {
            return Err(format!(
                "{} is {size} bytes, more than {MAX_TOKENIZER_BYTES}",
                settings.tokenizer
            ));
        }
        let bytes = std::fs::read(&path)
            .map_err(|error| format!("cannot read {}: {error}", settings.tokenizer))?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|error| {
            format!("{} is not a usable tokenizer: {error}", settings.tokenizer)
        })?;
        let mut inputs = Vec::new();
        for spec in &signature.inputs {
            let role = match spec.name.as_str() {
                "input_ids" => Role::Ids,
                "attention_mask" => Role::Mask,
                "token_type_ids" => Role::TypeIds,
                other => {
                    return Err(format!(
                        "text handlers feed input_ids, attention_mask and token_type_ids; the graph also needs {other:?}"
                    ))
                }
            };
            let int32 = match spec.dtype.as_str() {
                "int64" => false,
                "int32" => true,
                _ => return Err(format!("input {spec} must be int64 or int32")),
            };
            inputs.push(TokenInput {
                name: spec.name.clone(),
                role,
                int32,
            });
        }
        if !inputs.iter().any(|input| input.role == Role::Ids) {
            return Err("the graph has no input_ids input".into());
        }
        let graph_length = signature
            .input("input_ids")
            .and_then(|spec| spec.shape.get(1))
            .and_then(|dim| dim.fixed())
            .and_then(|length| usize::try_from(length).ok());
        let max_length = settings
            .max_length
            .or(graph_length)
            .or_else(|| tokenizer.get_truncation().map(|params| params.max_length))
            .unwrap_or(DEFAULT_MAX_LENGTH);
        let truncation = settings.truncation.then(|| TruncationParams {
            max_length,
            ..TruncationParams::default()
        });
        tokenizer
            .with_truncation(truncation)
            .map_err(|error| format!("cannot set the tokenizer's truncation: {error}"))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|padding| i64::from(padding.pad_id))
            .or_else(|| {
                ["[PAD]", "<pad>"]
                    .iter()
                    .find_map(|token| tokenizer.token_to_id(token))
                    .map(i64::from)
            })
            .unwrap_or(0);
        tokenizer.with_padding(None);
        Ok(TextTokenizer {
            tokenizer,
            inputs,
            max_length,
            truncation: settings.truncation,
            pad_id,
        })
    }

    /// The pad value of each graph input: the pad id for ids, 0 for the mask and type ids.
    pub fn pad_values(&self) -> Vec<(String, i64)> {
        self.inputs
            .iter()
            .map(|input| {
                let value = if input.role == Role::Ids {
                    self.pad_id
                } else {
                    0
                };
                (input.name.clone(), value)
            })
            .collect()
    }

    /// Tokenizes texts into `[texts, longest]` tensors. Errors are the client's (400).
    pub fn tokenize(&self, texts: &[String]) -> Result<Tokenized, ServeError> {
        let mut encodings = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding = self
                .tokenizer
                .encode(text.as_str(), true)
                .map_err(|error| {
                    ServeError::BadRequest(format!("the text cannot be tokenized: {error}"))
                })?;
            let length = encoding.len();
            if length == 0 {
                return Err(ServeError::BadRequest("the text has no tokens".into()));
            }
            if !self.truncation && length > self.max_length {
                return Err(ServeError::BadRequest(format!(
                    "the text is {length} tokens long, more than the model's maximum of {} (truncation is off)",
                    self.max_length
                )));
            }
            encodings.push(encoding);
        }
        let longest = encodings
            .iter()
            .map(|encoding| encoding.len())
            .max()
            .unwrap_or(0);
        let rows = encodings.len();
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let pad = if input.role == Role::Ids {
                self.pad_id
            } else {
                0
            };
            let mut values = Vec::with_capacity(rows * longest);
            for encoding in &encodings {
                let source: &[u32] = match input.role {
                    Role::Ids => encoding.get_ids(),
                    Role::Mask => encoding.get_attention_mask(),
                    Role::TypeIds => encoding.get_type_ids(),
                };
                values.extend(source.iter().map(|&value| i64::from(value)));
                values.resize(values.len() + longest - source.len(), pad);
            }
            let values = if input.int32 {
                TensorValues::I32(
                    values
                        .into_iter()
                        .map(|value| i32::try_from(value).unwrap_or(i32::MAX))
                        .collect(),
                )
            } else {
                TensorValues::I64(values)
            };
            inputs.push((
                input.name.clone(),
                HostTensor {
                    shape: vec![rows, longest],
                    values,
                },
            ));
        }
        Ok(Tokenized {
            inputs,
            lengths: encodings.iter().map(|encoding| encoding.len()).collect(),
        })
    }

    /// Token ids of one text, as the graph receives them (for tests and tools).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, ServeError> {
        self.tokenizer
            .encode(text, true)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|error| {
                ServeError::BadRequest(format!("the text cannot be tokenized: {error}"))
            })
    }
}

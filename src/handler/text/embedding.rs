//! Sentence embeddings from a graph's output: hidden states `[texts, sequence, hidden]` pooled
//! over each text's real tokens (mean, as sentence-transformers does with the attention mask, or
//! the `[CLS]` token), or vectors the graph already pooled `[texts, hidden]`; then optionally L2
//! normalised.

use oxserve_archiver::handler_config::{Embedding, Pooling};

use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

/// One vector per text; `lengths` are the texts' real token counts, in row order.
pub fn vectors(
    output: &HostTensor,
    lengths: &[usize],
    settings: &Embedding,
) -> Result<Vec<Vec<f32>>, ServeError> {
    let TensorValues::F32(values) = &output.values else {
        return Err(ServeError::Internal(format!(
            "embeddings are {}, not float32",
            output.values.dtype()
        )));
    };
    let mismatch = || {
        ServeError::Internal(format!(
            "the embedding output has shape {:?} for {} texts",
            output.shape,
            lengths.len()
        ))
    };
    let mut vectors = match *output.shape.as_slice() {
        [rows, hidden] if rows == lengths.len() => values
            .chunks_exact(hidden.max(1))
            .map(<[f32]>::to_vec)
            .collect(),
        [rows, sequence, hidden] if rows == lengths.len() => {
            let mut vectors = Vec::with_capacity(rows);
            for (row, &length) in lengths.iter().enumerate() {
                let used = match settings.pooling {
                    Pooling::Mean => length.min(sequence),
                    Pooling::Cls => 1.min(sequence),
                };
                let start = row * sequence * hidden;
                let mut sum = vec![0.0f32; hidden];
                for token in 0..used {
                    let state = values
                        .get(start + token * hidden..start + (token + 1) * hidden)
                        .ok_or_else(mismatch)?;
                    for (total, value) in sum.iter_mut().zip(state) {
                        *total += value;
                    }
                }
                let count = used.max(1) as f32;
                vectors.push(sum.into_iter().map(|total| total / count).collect());
            }
            vectors
        }
        _ => return Err(mismatch()),
    };
    if settings.normalize {
        for vector in &mut vectors {
            let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
            // sentence-transformers' Normalize: F.normalize with eps 1e-12.
            let norm = norm.max(1e-12);
            vector.iter_mut().for_each(|value| *value /= norm);
        }
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding_and_normalises() {
        // Two texts, sequence 3, hidden 2: the second text has one real token.
        let output = HostTensor {
            shape: vec![2, 3, 2],
            values: TensorValues::F32(vec![
                1.0, 0.0, 3.0, 0.0, 9.0, 9.0, 0.0, 2.0, 7.0, 7.0, 7.0, 7.0,
            ]),
        };
        let settings = Embedding {
            output: None,
            pooling: Pooling::Mean,
            normalize: false,
        };
        let vectors = vectors(&output, &[2, 1], &settings).expect("pooled");
        assert_eq!(vectors, vec![vec![2.0, 0.0], vec![0.0, 2.0]]);
        let normalised = super::vectors(
            &output,
            &[2, 1],
            &Embedding {
                normalize: true,
                ..settings.clone()
            },
        )
        .expect("pooled");
        assert_eq!(normalised, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let cls = super::vectors(
            &output,
            &[2, 1],
            &Embedding {
                pooling: Pooling::Cls,
                ..settings
            },
        )
        .expect("pooled");
        assert_eq!(cls, vec![vec![1.0, 0.0], vec![0.0, 2.0]]);
    }
}

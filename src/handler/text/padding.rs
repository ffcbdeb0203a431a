//! Dynamic padding for runs of text items: items of different lengths share a run, each padded
//! along the sequence axis to the longest item of that run (not to the graph's maximum), and a
//! run is bounded by a token budget (rows × padded length) as well as by `batch_size`.

use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

use super::super::{Prepared, StackKey};

/// How a model's token inputs are padded when items are stacked.
#[derive(Debug, Clone)]
pub struct Padding {
    /// Graph input name → the value its padding positions get.
    pub inputs: Vec<(String, i64)>,
    /// Most tokens (rows × padded length) in one run.
    pub max_tokens: usize,
}

impl Padding {
    /// The stack key with the sequence length of padded inputs left out, so that items of any
    /// length group together.
    pub fn stack_key(&self, prepared: &Prepared) -> StackKey {
        let mut key = prepared.stack_key();
        for (name, shape, _) in &mut key {
            if self.pads(name) {
                shape.truncate(0);
            }
        }
        key
    }

    /// Tokens per row of this item (its padded length).
    pub fn sequence(&self, prepared: &Prepared) -> usize {
        prepared
            .inputs
            .iter()
            .find(|(name, _)| self.pads(name))
            .and_then(|(_, tensor)| tensor.shape.get(1).copied())
            .unwrap_or(1)
    }

    /// Pads the parts of one input to the longest part's sequence length.
    pub fn pad_parts(
        &self,
        name: &str,
        parts: Vec<HostTensor>,
    ) -> Result<Vec<HostTensor>, ServeError> {
        let Some(value) = self
            .inputs
            .iter()
            .find(|(input, _)| input == name)
            .map(|(_, value)| *value)
        else {
            return Ok(parts);
        };
        let longest = parts
            .iter()
            .filter_map(|part| part.shape.get(1).copied())
            .max()
            .unwrap_or(0);
        parts
            .into_iter()
            .map(|part| pad_columns(part, longest, value))
            .collect()
    }

    fn pads(&self, name: &str) -> bool {
        self.inputs.iter().any(|(input, _)| input == name)
    }
}

/// Widens a `[rows, length]` integer tensor to `[rows, longest]` with `value`.
fn pad_columns(part: HostTensor, longest: usize, value: i64) -> Result<HostTensor, ServeError> {
    let &[rows, length] = part.shape.as_slice() else {
        return Err(ServeError::Internal(format!(
            "token input of shape {:?} is not [rows, sequence]",
            part.shape
        )));
    };
    if length == longest {
        return Ok(part);
    }
    fn widen<T: Copy>(data: &[T], rows: usize, length: usize, longest: usize, pad: T) -> Vec<T> {
        let mut out = Vec::with_capacity(rows * longest);
        for row in data.chunks_exact(length.max(1)).take(rows) {
            out.extend_from_slice(row);
            out.resize(out.len() + longest - length, pad);
        }
        out
    }
    let values = match &part.values {
        TensorValues::I64(data) => TensorValues::I64(widen(data, rows, length, longest, value)),
        TensorValues::I32(data) => TensorValues::I32(widen(
            data,
            rows,
            length,
            longest,
            i32::try_from(value).unwrap_or(0),
        )),
        other => {
            return Err(ServeError::Internal(format!(
                "token inputs are integers, not {}",
                other.dtype()
            )))
        }
    };
    Ok(HostTensor {
        shape: vec![rows, longest],
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(rows: usize, values: Vec<i64>) -> HostTensor {
        HostTensor {
            shape: vec![rows, values.len() / rows],
            values: TensorValues::I64(values),
        }
    }

    #[test]
    fn parts_are_padded_to_the_longest() {
        let padding = Padding {
            inputs: vec![("input_ids".into(), 9)],
            max_tokens: 100,
        };
        let parts = vec![ids(1, vec![1, 2]), ids(2, vec![3, 4, 5, 6, 7, 8])];
        let padded = padding.pad_parts("input_ids", parts).expect("padded");
        assert_eq!(padded[0], ids(1, vec![1, 2, 9]));
        assert_eq!(padded[1], ids(2, vec![3, 4, 5, 6, 7, 8]));
        // Inputs without padding are left alone.
        let other = padding
            .pad_parts("other", vec![ids(1, vec![1])])
            .expect("untouched");
        assert_eq!(other, vec![ids(1, vec![1])]);
    }
}

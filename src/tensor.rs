//! Host tensors: a shape plus typed, row-major data. Handlers produce them, workers stack them
//! along the batch axis into one run's input and split outputs back into rows ([`crate::backend`]
//! converts them to and from ONNX Runtime's values). Kept as flat
//! `Vec`s (not ndarray views) because stacking and splitting along axis 0 is then just slicing.

use crate::error::ServeError;

/// The element types the server moves between JSON, handlers and ONNX Runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    Bool(Vec<bool>),
}

/// A host tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: TensorValues,
}

macro_rules! each_variant {
    ($values:expr, $data:ident => $body:expr) => {
        match $values {
            TensorValues::F32($data) => $body,
            TensorValues::F16($data) => $body,
            TensorValues::F64($data) => $body,
            TensorValues::I64($data) => $body,
            TensorValues::I32($data) => $body,
            TensorValues::U8($data) => $body,
            TensorValues::I8($data) => $body,
            TensorValues::Bool($data) => $body,
        }
    };
}

impl TensorValues {
    pub fn len(&self) -> usize {
        each_variant!(self, data => data.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ONNX element type name, as in signatures.
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorValues::F32(_) => "float32",
            TensorValues::F16(_) => "float16",
            TensorValues::F64(_) => "float64",
            TensorValues::I64(_) => "int64",
            TensorValues::I32(_) => "int32",
            TensorValues::U8(_) => "uint8",
            TensorValues::I8(_) => "int8",
            TensorValues::Bool(_) => "bool",
        }
    }

    /// An empty vector of the same type, with room for `capacity` elements.
    fn empty_like(&self, capacity: usize) -> TensorValues {
        match self {
            TensorValues::F32(_) => TensorValues::F32(Vec::with_capacity(capacity)),
            TensorValues::F16(_) => TensorValues::F16(Vec::with_capacity(capacity)),
            TensorValues::F64(_) => TensorValues::F64(Vec::with_capacity(capacity)),
            TensorValues::I64(_) => TensorValues::I64(Vec::with_capacity(capacity)),
            TensorValues::I32(_) => TensorValues::I32(Vec::with_capacity(capacity)),
            TensorValues::U8(_) => TensorValues::U8(Vec::with_capacity(capacity)),
            TensorValues::I8(_) => TensorValues::I8(Vec::with_capacity(capacity)),
            TensorValues::Bool(_) => TensorValues::Bool(Vec::with_capacity(capacity)),
        }
    }

    /// Appends `other`, which must be of the same type.
    fn extend_from(&mut self, other: &TensorValues) -> Result<(), ServeError> {
        match (self, other) {
            (TensorValues::F32(a), TensorValues::F32(b)) => a.extend_from_slice(b),
            (TensorValues::F16(a), TensorValues::F16(b)) => a.extend_from_slice(b),
            (TensorValues::F64(a), TensorValues::F64(b)) => a.extend_from_slice(b),
            (TensorValues::I64(a), TensorValues::I64(b)) => a.extend_from_slice(b),
            (TensorValues::I32(a), TensorValues::I32(b)) => a.extend_from_slice(b),
            (TensorValues::U8(a), TensorValues::U8(b)) => a.extend_from_slice(b),
            (TensorValues::I8(a), TensorValues::I8(b)) => a.extend_from_slice(b),
            (TensorValues::Bool(a), TensorValues::Bool(b)) => a.extend_from_slice(b),
            (a, b) => {
                return Err(ServeError::Internal(format!(
                    "cannot stack {} with {}",
                    a.dtype(),
                    b.dtype()
                )));
            }
        }
        Ok(())
    }

    /// Elements `[start, end)`.
    fn slice(&self, start: usize, end: usize) -> TensorValues {
        match self {
            TensorValues::F32(data) => TensorValues::F32(data[start..end].to_vec()),
            TensorValues::F16(data) => TensorValues::F16(data[start..end].to_vec()),
            TensorValues::F64(data) => TensorValues::F64(data[start..end].to_vec()),
            TensorValues::I64(data) => TensorValues::I64(data[start..end].to_vec()),
            TensorValues::I32(data) => TensorValues::I32(data[start..end].to_vec()),
            TensorValues::U8(data) => TensorValues::U8(data[start..end].to_vec()),
            TensorValues::I8(data) => TensorValues::I8(data[start..end].to_vec()),
            TensorValues::Bool(data) => TensorValues::Bool(data[start..end].to_vec()),
        }
    }
}

impl HostTensor {
    /// Element count implied by the shape, with overflow checked (hostile shapes must not wrap).
    pub fn element_count(shape: &[usize]) -> Option<usize> {
        shape
            .iter()
            .try_fold(1usize, |count, &dim| count.checked_mul(dim))
    }

    /// A tensor with no elements: what a moved-out tensor leaves behind.
    pub fn empty() -> HostTensor {
        HostTensor {
            shape: vec![0],
            values: TensorValues::F32(Vec::new()),
        }
    }

    /// Rows along axis 0 (1 for scalars).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Stacks tensors with equal trailing shapes along axis 0. A lone tensor is returned as it
    /// is: a request's ResNet-sized image is 600 KB that a copy would cost per run.
    pub fn concat_rows(mut parts: Vec<HostTensor>) -> Result<HostTensor, ServeError> {
        if parts.len() == 1 {
            if let Some(only) = parts.pop() {
                return Ok(only);
            }
        }
        let first = parts
            .first()
            .ok_or_else(|| ServeError::Internal("nothing to stack".into()))?;
        let total_rows: usize = parts.iter().map(|part| part.rows()).sum();
        let capacity: usize = parts.iter().map(|part| part.values.len()).sum();
        let mut values = first.values.empty_like(capacity);
        for part in &parts {
            if part.shape.get(1..) != first.shape.get(1..) {
                return Err(ServeError::Internal(
                    "cannot stack tensors of different shapes".into(),
                ));
            }
            values.extend_from(&part.values)?;
        }
        let mut shape = first.shape.clone();
        if let Some(rows) = shape.first_mut() {
            *rows = total_rows;
        }
        Ok(HostTensor { shape, values })
    }

    /// The tensor with zero rows appended up to `rows` along axis 0 (no-op when it has as many).
    pub fn padded_to_rows(mut self, rows: usize) -> HostTensor {
        let row_len: usize = self.shape.iter().skip(1).product();
        if let Some(current) = self.shape.first_mut().filter(|current| **current < rows) {
            *current = rows;
            each_variant!(&mut self.values, data => data.resize(rows * row_len, Default::default()));
        }
        self
    }

    /// Rows `[start, start + count)` along axis 0.
    pub fn rows_slice(&self, start: usize, count: usize) -> HostTensor {
        let row_len: usize = self.shape.iter().skip(1).product();
        let mut shape = self.shape.clone();
        if let Some(rows) = shape.first_mut() {
            *rows = count;
        }
        HostTensor {
            shape,
            values: self
                .values
                .slice(start * row_len, (start + count) * row_len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_appends_zero_rows_and_keeps_the_given_ones() {
        let a = HostTensor {
            shape: vec![1, 2],
            values: TensorValues::I64(vec![7, 8]),
        };
        let padded = a.clone().padded_to_rows(3);
        assert_eq!(padded.shape, vec![3, 2]);
        assert_eq!(padded.values, TensorValues::I64(vec![7, 8, 0, 0, 0, 0]));
        assert_eq!(padded.rows_slice(0, 1), a);
        assert_eq!(a.clone().padded_to_rows(1), a, "never shortened");
    }

    #[test]
    fn stacking_and_slicing_round_trip() {
        let a = HostTensor {
            shape: vec![1, 2],
            values: TensorValues::F32(vec![1.0, 2.0]),
        };
        let b = HostTensor {
            shape: vec![2, 2],
            values: TensorValues::F32(vec![3.0, 4.0, 5.0, 6.0]),
        };
        let stacked = HostTensor::concat_rows(vec![a.clone(), b.clone()]).expect("stacks");
        assert_eq!(stacked.shape, vec![3, 2]);
        assert_eq!(stacked.rows_slice(1, 2), b);
        assert_eq!(stacked.rows_slice(0, 1), a);
        let c = HostTensor {
            shape: vec![1, 3],
            values: TensorValues::F32(vec![0.0; 3]),
        };
        assert!(HostTensor::concat_rows(vec![a.clone(), c]).is_err());
    }

    #[test]
    fn element_count_overflow_is_caught() {
        assert_eq!(HostTensor::element_count(&[2, 3]), Some(6));
        assert_eq!(HostTensor::element_count(&[usize::MAX, 2]), None);
    }
}

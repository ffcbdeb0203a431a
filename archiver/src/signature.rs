//! The signature of an ONNX graph: its inputs and outputs with element types and shapes,
//! including symbolic dimensions such as a dynamic batch axis. Recorded in the manifest at packing
//! time so the server can check requests and batch without guessing. Pure data: reading it from a
//! graph is `graph.rs`'s job.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One dimension of a tensor shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A dynamic size with the graph's symbol for it (e.g. `"batch"`).
    Symbolic(String),
    /// A dynamic size without a name (serialised as `null`).
    Unknown,
}

impl Dim {
    /// The fixed size, if the dimension has one.
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(size) => Some(*size),
            Dim::Symbolic(_) | Dim::Unknown => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(size) => write!(f, "{size}"),
            Dim::Symbolic(symbol) => f.write_str(symbol),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// Name, element type and shape of one graph input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    /// ONNX element type in lower case: `float32`, `int64`, `uint8`, `bool`, `string`, ...
    pub dtype: String,
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// True when the first axis is dynamic, so requests can be stacked along it.
    pub fn has_dynamic_batch(&self) -> bool {
        matches!(self.shape.first(), Some(Dim::Symbolic(_) | Dim::Unknown))
    }
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(ToString::to_string).collect();
        write!(f, "{}: {}[{}]", self.name, self.dtype, dims.join(", "))
    }
}

/// All inputs and outputs of a graph, in the graph's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// True when every input and output can be stacked along a dynamic first axis.
    pub fn supports_batching(&self) -> bool {
        !self.inputs.is_empty()
            && self.inputs.iter().all(TensorSpec::has_dynamic_batch)
            && self.outputs.iter().all(TensorSpec::has_dynamic_batch)
    }

    /// Looks an input up by name.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|spec| spec.name == name)
    }

    /// Looks an output up by name.
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|spec| spec.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_round_trip_through_json() {
        let spec = TensorSpec {
            name: "input".into(),
            dtype: "float32".into(),
            shape: vec![Dim::Symbolic("batch".into()), Dim::Fixed(3), Dim::Unknown],
        };
        let json = serde_json::to_string(&spec).expect("serialises");
        assert_eq!(
            json,
            r#"{"name":"input","dtype":"float32","shape":["batch",3,null]}"#
        );
        assert_eq!(
            serde_json::from_str::<TensorSpec>(&json).expect("parses"),
            spec
        );
        assert_eq!(spec.to_string(), "input: float32[batch, 3, ?]");
        assert!(spec.has_dynamic_batch());
    }
}

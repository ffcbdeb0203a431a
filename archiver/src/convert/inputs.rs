//! The example input a conversion traces the model with: what TorchServe's handler would feed
//! the model (from the handler config), or what `--input-shape`, `--input-dtype` and
//! `--input-names` say. Also the (different) shapes of the check run, so the check proves the
//! dynamic axes work.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{ArchiveError, Result};
use crate::handler_config::{HandlerConfig, HandlerKind};

/// Element types a conversion's inputs may have.
pub const DTYPES: [&str; 8] = [
    "float32", "float64", "float16", "int64", "int32", "uint8", "int8", "bool",
];

/// The user's overrides of the example input, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct InputOverrides {
    /// `1,3,224,224`, several inputs separated by `;`.
    pub shapes: Option<String>,
    /// One dtype for every input, or one per input separated by `,`.
    pub dtypes: Option<String>,
    /// Input names, separated by `,`.
    pub names: Option<String>,
    /// Output names, separated by `,`.
    pub output_names: Option<String>,
}

/// One graph input as the export script takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputSpec {
    pub name: String,
    pub dtype: String,
    /// The traced shape.
    pub shape: Vec<u64>,
    /// Axis index → symbol of the axes exported as dynamic.
    pub dynamic: BTreeMap<String, String>,
    /// Random values in [0, 1) (images after ToTensor) rather than normally distributed.
    pub unit_range: bool,
}

/// What the export script needs to know about the model's inputs and outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleInputs {
    pub inputs: Vec<InputSpec>,
    /// Shapes of the check run, one per input.
    pub check_shapes: Vec<Vec<u64>>,
    /// Call the model as torchvision's detectors want: a list of one `[C, H, W]` image.
    pub image_list: bool,
    /// Symbol of every output's first axis.
    pub output_axis: String,
    pub output_names: Option<Vec<String>>,
}

/// Works out the example input from the overrides, else from the handler.
pub fn example_inputs(
    handler: &HandlerConfig,
    overrides: &InputOverrides,
) -> Result<ExampleInputs> {
    let output_names = overrides.output_names.as_deref().map(split_names);
    let detector = handler.handler == HandlerKind::ObjectDetector;
    let mut example = match &overrides.shapes {
        Some(text) => from_flags(text, overrides)?,
        None if overrides.dtypes.is_some() || overrides.names.is_some() => {
            return Err(invalid(
                "--input-dtype and --input-names need --input-shape as well".to_string(),
            ))
        }
        None => from_handler(handler)?,
    };
    if detector && example.inputs.len() == 1 && example.inputs[0].shape.len() == 3 {
        // TorchServe's object detector gives the model a batch of ToTensor'd images of any
        // size; a torchvision detector takes them as a list of [C, H, W] tensors.
        let input = &mut example.inputs[0];
        input.dynamic = BTreeMap::from([
            ("1".to_string(), "height".to_string()),
            ("2".to_string(), "width".to_string()),
        ]);
        input.unit_range = true;
        let shape = &input.shape;
        example.check_shapes = vec![vec![shape[0], shape[1] * 5 / 6, shape[2] * 4 / 5]];
        example.image_list = true;
        example.output_axis = "detections".to_string();
    }
    example.output_names = output_names;
    Ok(example)
}

/// The input TorchServe's handler feeds: a batch of one pre-processed image for the vision
/// handlers (its size from the config's crop or resize), one `[3, H, W]` image for detectors.
fn from_handler(handler: &HandlerConfig) -> Result<ExampleInputs> {
    let needs_flags = |what: &str| {
        invalid(format!(
            "the {what} handler cannot tell what input the model takes: give it with --input-shape (e.g. 1,16) and --input-dtype (e.g. int64)"
        ))
    };
    let image = match handler.handler {
        HandlerKind::Tensor => return Err(needs_flags("tensor")),
        HandlerKind::TextClassifier => return Err(needs_flags("text_classifier")),
        _ => handler
            .image
            .as_ref()
            .ok_or_else(|| needs_flags("configured"))?,
    };
    let channels = image.color.channels() as u64;
    let (shape, name) = if handler.handler == HandlerKind::ObjectDetector {
        // TorchServe's object detector does not resize; trace at a common photo size.
        (vec![channels, 480, 640], "images")
    } else {
        let side = u64::from(image.center_crop.or(image.resize).unwrap_or(224));
        (vec![1, channels, side, side], "input")
    };
    let input = InputSpec {
        name: handler.input.clone().unwrap_or_else(|| name.to_string()),
        dtype: "float32".to_string(),
        shape: shape.clone(),
        dynamic: batch_axis(),
        unit_range: false,
    };
    Ok(ExampleInputs {
        check_shapes: vec![check_shape(&shape)],
        inputs: vec![input],
        image_list: false,
        output_axis: "batch".to_string(),
        output_names: None,
    })
}

fn from_flags(text: &str, overrides: &InputOverrides) -> Result<ExampleInputs> {
    let shapes = text
        .split(';')
        .map(parse_shape)
        .collect::<Result<Vec<_>>>()?;
    let dtypes = match overrides.dtypes.as_deref() {
        None => vec!["float32".to_string(); shapes.len()],
        Some(list) => {
            let dtypes = split_names(list);
            for dtype in &dtypes {
                if !DTYPES.contains(&dtype.as_str()) {
                    return Err(invalid(format!(
                        "--input-dtype {dtype:?} is not one of {}",
                        DTYPES.join(", ")
                    )));
                }
            }
            match dtypes.len() {
                1 => vec![dtypes[0].clone(); shapes.len()],
                n if n == shapes.len() => dtypes,
                n => {
                    return Err(invalid(format!(
                        "--input-dtype names {n} types for {} input shapes",
                        shapes.len()
                    )))
                }
            }
        }
    };
    let names = match overrides.names.as_deref() {
        None if shapes.len() == 1 => vec!["input".to_string()],
        None => (0..shapes.len()).map(|i| format!("input_{i}")).collect(),
        Some(list) => {
            let names = split_names(list);
            if names.len() != shapes.len() {
                return Err(invalid(format!(
                    "--input-names names {} inputs for {} input shapes",
                    names.len(),
                    shapes.len()
                )));
            }
            names
        }
    };
    let inputs = shapes
        .iter()
        .zip(dtypes)
        .zip(names)
        .map(|((shape, dtype), name)| InputSpec {
            name,
            dtype,
            shape: shape.clone(),
            dynamic: batch_axis(),
            unit_range: false,
        })
        .collect();
    Ok(ExampleInputs {
        inputs,
        check_shapes: shapes.iter().map(|shape| check_shape(shape)).collect(),
        image_list: false,
        output_axis: "batch".to_string(),
        output_names: None,
    })
}

/// A shape like `1,3,224,224` (`x` also separates, as in `1x3x224x224`).
fn parse_shape(text: &str) -> Result<Vec<u64>> {
    let text = text.trim().trim_start_matches('[').trim_end_matches(']');
    let dims = text
        .split([',', 'x'])
        .map(|dim| {
            dim.trim()
                .parse::<u64>()
                .ok()
                .filter(|&d| (1..=1 << 20).contains(&d))
        })
        .collect::<Option<Vec<_>>>();
    match dims {
        Some(dims) if !dims.is_empty() && dims.len() <= 8 && element_count(&dims) <= 1 << 28 => {
            Ok(dims)
        }
        _ => Err(invalid(format!(
            "--input-shape {text:?} is not a shape like 1,3,224,224 (positive sizes, at most 8 axes, at most 2^28 elements)"
        ))),
    }
}

fn element_count(dims: &[u64]) -> u64 {
    dims.iter().fold(1u64, |acc, &dim| acc.saturating_mul(dim))
}

/// The check runs a batch of two (or one more than traced), so a batch axis fixed by the
/// exporter fails the check instead of the first batched request.
fn check_shape(shape: &[u64]) -> Vec<u64> {
    let mut check = shape.to_vec();
    if let Some(first) = check.first_mut() {
        *first += 1;
    }
    check
}

fn batch_axis() -> BTreeMap<String, String> {
    BTreeMap::from([("0".to_string(), "batch".to_string())])
}

fn split_names(list: &str) -> Vec<String> {
    list.split(',')
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

fn invalid(message: String) -> ArchiveError {
    ArchiveError::InvalidArgument(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_give_torchserves_inputs() {
        let classifier = HandlerConfig::builtin("image_classifier").expect("builtin");
        let example = example_inputs(&classifier, &InputOverrides::default()).expect("ok");
        assert_eq!(example.inputs[0].shape, vec![1, 3, 224, 224]);
        assert_eq!(example.check_shapes, vec![vec![2, 3, 224, 224]]);
        let detector = HandlerConfig::builtin("object_detector").expect("builtin");
        let example = example_inputs(&detector, &InputOverrides::default()).expect("ok");
        assert!(example.image_list);
        assert_eq!(example.inputs[0].shape, vec![3, 480, 640]);
        assert_eq!(example.inputs[0].dynamic.len(), 2);
        let mnist: HandlerConfig = serde_json::from_str(
            r#"{"version":1,"handler":"image_classifier","image":{"color":"gray","resize":28,"scale":1.0}}"#,
        )
        .expect("config");
        let example = example_inputs(&mnist, &InputOverrides::default()).expect("ok");
        assert_eq!(example.inputs[0].shape, vec![1, 1, 28, 28]);
        let tensor = HandlerConfig::builtin("tensor").expect("builtin");
        let error = example_inputs(&tensor, &InputOverrides::default()).expect_err("needs flags");
        assert!(error.to_string().contains("--input-shape"), "{error}");
    }

    #[test]
    fn flags_override_the_handler() {
        let tensor = HandlerConfig::builtin("tensor").expect("builtin");
        let overrides = InputOverrides {
            shapes: Some("1,4; 1x6".to_string()),
            dtypes: Some("float32,int64".to_string()),
            names: Some("a,b".to_string()),
            output_names: Some("y".to_string()),
        };
        let example = example_inputs(&tensor, &overrides).expect("ok");
        assert_eq!(example.inputs.len(), 2);
        assert_eq!(example.inputs[1].shape, vec![1, 6]);
        assert_eq!(example.inputs[1].dtype, "int64");
        assert_eq!(example.inputs[0].name, "a");
        assert_eq!(example.output_names, Some(vec!["y".to_string()]));
        for bad in ["", "0,3", "a,b", "1,2;", &"1,".repeat(9)] {
            let overrides = InputOverrides {
                shapes: Some(bad.to_string()),
                ..InputOverrides::default()
            };
            assert!(example_inputs(&tensor, &overrides).is_err(), "{bad:?}");
        }
        let overrides = InputOverrides {
            shapes: Some("1,4".to_string()),
            dtypes: Some("complex".to_string()),
            ..InputOverrides::default()
        };
        assert!(example_inputs(&tensor, &overrides).is_err());
    }
}

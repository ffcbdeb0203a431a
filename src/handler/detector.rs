//! Detection answers as TorchServe's object_detector: for each detection scoring at least the
//! threshold, `{"<label>": [x1, y1, x2, y2], "score": s}`, in the graph's order.

use super::{json_float, Labels};
use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

/// The answer for one image from torchvision-style `boxes [K,4]`, `labels [K]`, `scores [K]`.
pub fn answer(
    boxes: &HostTensor,
    classes: &HostTensor,
    scores: &HostTensor,
    threshold: f32,
    labels: Option<&Labels>,
) -> Result<serde_json::Value, ServeError> {
    let (TensorValues::F32(boxes), TensorValues::F32(scores)) = (&boxes.values, &scores.values)
    else {
        return Err(ServeError::Internal(
            "detection boxes and scores must be float32".into(),
        ));
    };
    let classes: Vec<i64> = match &classes.values {
        TensorValues::I64(values) => values.clone(),
        TensorValues::I32(values) => values.iter().map(|&v| i64::from(v)).collect(),
        other => {
            return Err(ServeError::Internal(format!(
                "detection labels are {}",
                other.dtype()
            )))
        }
    };
    if boxes.len() != scores.len() * 4 || classes.len() != scores.len() {
        return Err(ServeError::Internal(
            "detection outputs disagree in length".into(),
        ));
    }
    let mut detections = Vec::new();
    for (index, &score) in scores.iter().enumerate() {
        if score < threshold {
            continue;
        }
        let key = classes[index].to_string();
        let label = labels
            .and_then(|labels| labels.get(&key))
            .cloned()
            .unwrap_or(key);
        let corners = boxes[index * 4..index * 4 + 4]
            .iter()
            .map(|&v| json_float(v))
            .collect();
        let mut detection = serde_json::Map::new();
        detection.insert(label, serde_json::Value::Array(corners));
        detection.insert("score".into(), json_float(score));
        detections.push(serde_json::Value::Object(detection));
    }
    Ok(serde_json::Value::Array(detections))
}

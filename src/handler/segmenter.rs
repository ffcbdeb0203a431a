//! Segmentation answers as TorchServe's image_segmenter: softmax over classes, then for every
//! pixel `[class_index_as_float, probability]`, as an `[H][W][2]` nested list.

use super::classifier::softmax;
use super::json_float;
use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

/// The answer for one item whose scores are `[1, classes, H, W]`.
pub fn answer(scores: &HostTensor) -> Result<serde_json::Value, ServeError> {
    let TensorValues::F32(values) = &scores.values else {
        return Err(ServeError::Internal(
            "segmentation scores are not float32".into(),
        ));
    };
    let [_, classes, height, width] = scores.shape[..] else {
        return Err(ServeError::Internal(format!(
            "segmentation output has shape {:?}, not [N, C, H, W]",
            scores.shape
        )));
    };
    let plane = height * width;
    let mut rows = Vec::with_capacity(height);
    let mut pixel_scores = vec![0f32; classes];
    for y in 0..height {
        let mut row = Vec::with_capacity(width);
        for x in 0..width {
            for (class, slot) in pixel_scores.iter_mut().enumerate() {
                *slot = values[class * plane + y * width + x];
            }
            let probabilities = softmax(&pixel_scores);
            // torch.max returns the first maximal index.
            let (best, probability) = probabilities.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |best, (class, &p)| if p > best.1 { (class, p) } else { best },
            );
            row.push(serde_json::Value::Array(vec![
                json_float(best as f32),
                json_float(probability),
            ]));
        }
        rows.push(serde_json::Value::Array(row));
    }
    Ok(serde_json::Value::Array(rows))
}

//! Classification answers as TorchServe's image/text classifiers give them: softmax, then
//! `{label: probability}` for the top k in descending order (`ts/utils/util.py`
//! `map_class_to_label`), or the best class index alone (TorchServe's MNIST example).

use oxserve_archiver::handler_config::{Classification, ClassificationResult};

use super::{json_float, Labels};
use crate::error::ServeError;
use crate::tensor::{HostTensor, TensorValues};

/// Softmax in float32, as `torch.nn.functional.softmax` computes it.
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|score| (score - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|value| value / sum).collect()
}

/// The answer for one item whose scores are `[1, classes]` (or `[classes]`).
pub fn answer(
    scores: &HostTensor,
    settings: &Classification,
    labels: Option<&Labels>,
) -> Result<serde_json::Value, ServeError> {
    let TensorValues::F32(values) = &scores.values else {
        return Err(ServeError::Internal(format!(
            "class scores are {}, not float32",
            scores.values.dtype()
        )));
    };
    let probabilities = if settings.softmax {
        softmax(values)
    } else {
        values.clone()
    };
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    // Descending by probability; ties keep the lower index first, as torch.topk does on CPU.
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(a.cmp(&b))
    });
    match settings.result {
        ClassificationResult::Index => Ok(serde_json::Value::from(
            order.first().copied().unwrap_or(0) as u64,
        )),
        ClassificationResult::TopK => {
            let count = settings.top_k.unwrap_or(order.len()).min(order.len());
            let mut map = serde_json::Map::new();
            for &class in &order[..count] {
                let key = class.to_string();
                let label = labels
                    .and_then(|labels| labels.get(&key))
                    .cloned()
                    .unwrap_or(key);
                map.insert(label, json_float(probabilities[class]));
            }
            Ok(serde_json::Value::Object(map))
        }
        ClassificationResult::Classes => {
            let mut map = serde_json::Map::new();
            for (class, probability) in probabilities.iter().enumerate() {
                let key = class.to_string();
                let label = labels
                    .and_then(|labels| labels.get(&key))
                    .cloned()
                    .unwrap_or(key);
                map.insert(label, json_float(*probability));
            }
            Ok(serde_json::Value::Object(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(result: ClassificationResult) -> Classification {
        Classification {
            output: None,
            softmax: true,
            top_k: Some(2),
            result,
            labels: "x".into(),
        }
    }

    #[test]
    fn top_k_is_ordered_and_labelled() {
        let scores = HostTensor {
            shape: vec![1, 3],
            values: TensorValues::F32(vec![0.0, 2.0, 1.0]),
        };
        let labels = Labels::from([("1".to_string(), "cat".to_string())]);
        let answer = answer(
            &scores,
            &settings(ClassificationResult::TopK),
            Some(&labels),
        )
        .expect("answer");
        let text = serde_json::to_string(&answer).expect("json");
        assert!(text.starts_with("{\"cat\":0.66"), "{text}");
        assert!(text.contains("\"2\":0.24"), "{text}");
        assert_eq!(answer.as_object().map(|map| map.len()), Some(2));
    }

    #[test]
    fn index_result_is_the_argmax() {
        let scores = HostTensor {
            shape: vec![1, 3],
            values: TensorValues::F32(vec![0.0, 2.0, 1.0]),
        };
        let answer = answer(&scores, &settings(ClassificationResult::Index), None).expect("answer");
        assert_eq!(answer, serde_json::json!(1));
    }
}

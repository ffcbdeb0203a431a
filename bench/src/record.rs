//! One measurement's parts that every step shares: its latency summary, and the `BENCH {json}`
//! line that prints it as soon as it is complete.

use std::time::Duration;

use serde::Serialize;

/// Latency summary of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles (no interpolation: every figure is a latency that happened).
    pub fn from_samples(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        let rank = |quantile: f64| {
            let index = (quantile * samples.len() as f64).ceil() as usize;
            ms(samples[index.clamp(1, samples.len()) - 1])
        };
        let total: Duration = samples.iter().sum();
        Latency {
            mean_ms: ms(total) / samples.len() as f64,
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

/// Prints one machine-readable line: `BENCH {"kind": ..., ...}`.
pub fn emit(kind: &str, value: &impl Serialize) {
    let mut json = serde_json::json!({ "kind": kind });
    if let (Some(object), Ok(serde_json::Value::Object(fields))) =
        (json.as_object_mut(), serde_json::to_value(value))
    {
        object.extend(fields);
    }
    println!("BENCH {json}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let latency = Latency::from_samples(&mut samples);
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p90_ms, 90.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert!((latency.mean_ms - 50.5).abs() < 1e-9);
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(Latency::from_samples(&mut one).p99_ms, 7.0);
        assert_eq!(Latency::from_samples(&mut []).p50_ms, 0.0);
    }
}

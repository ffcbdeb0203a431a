//! The metric primitives: a float [`Value`] (a counter adds to it, a gauge sets it), a
//! fixed-bucket [`Histogram`], and a [`Family`] of labelled series. Updates are lock-free atomics;
//! a family's series list is behind a std Mutex held only for a short scan (and, the first time a
//! label set is seen, one insertion), so the hot path never allocates once a series exists.
//! Rendering and naming live in [`super::format`] and [`super::catalog`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One float, stored as its bits so it can be updated without a lock.
#[derive(Debug, Default)]
pub struct Value(AtomicU64);

impl Value {
    /// Adds `amount` (a counter's increment).
    pub fn add(&self, amount: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + amount).to_bits())
            });
    }

    /// Replaces the value (a gauge's update).
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A Prometheus histogram: cumulative `le` buckets, a count and a sum.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, ascending; `+Inf` is implicit.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; the last one is `+Inf`).
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: Value,
}

/// Latency buckets in seconds: 100 µs to a minute (pre-processing and small graphs run in
/// microseconds; queue waits under load reach seconds).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Rows per ONNX Runtime run.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: Value::default(),
        }
    }

    pub fn observe(&self, value: f64) {
        let index = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.add(value);
    }

    /// (upper bound, cumulative count) per bucket, `+Inf` last; then count and sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(index, bucket)| {
                cumulative += bucket.load(Ordering::Relaxed);
                let bound = self.bounds.get(index).copied().unwrap_or(f64::INFINITY);
                (bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            // The buckets' total, not `count`, so that a scrape racing an update stays consistent.
            count: cumulative,
            sum: self.sum.get(),
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// One series: its label values and its value.
type Series = (Box<[String]>, Arc<Value>);

/// Series of one metric, keyed by label values (in the family's label-name order).
#[derive(Debug, Default)]
pub struct Family {
    /// Insertion-ordered; a std Mutex, only held for a scan or one push, never across an await.
    series: Mutex<Vec<Series>>,
}

impl Family {
    /// The series for `labels`, created at zero the first time.
    pub fn series(&self, labels: &[&str]) -> Arc<Value> {
        let Ok(mut series) = self.series.lock() else {
            return Arc::default();
        };
        if let Some((_, value)) = series.iter().find(|(existing, _)| {
            existing
                .iter()
                .map(String::as_str)
                .eq(labels.iter().copied())
        }) {
            return Arc::clone(value);
        }
        let value = Arc::new(Value::default());
        series.push((
            labels.iter().map(|label| label.to_string()).collect(),
            Arc::clone(&value),
        ));
        value
    }

    /// Every series: (label values, current value), in creation order.
    pub fn snapshot(&self) -> Vec<(Box<[String]>, f64)> {
        self.series
            .lock()
            .map(|series| {
                series
                    .iter()
                    .map(|(labels, value)| (labels.clone(), value.get()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_add_and_set() {
        let value = Value::default();
        value.add(1.5);
        value.add(2.0);
        assert_eq!(value.get(), 3.5);
        value.set(-1.0);
        assert_eq!(value.get(), -1.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_last() {
        let histogram = Histogram::new(&[1.0, 2.0]);
        for value in [0.5, 1.0, 1.5, 3.0] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot.buckets,
            vec![(1.0, 2), (2.0, 3), (f64::INFINITY, 4)]
        );
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.sum, 6.0);
    }

    #[test]
    fn a_family_keeps_one_series_per_label_set() {
        let family = Family::default();
        family.series(&["a", "1"]).add(1.0);
        family.series(&["a", "1"]).add(1.0);
        family.series(&["b", "1"]).add(5.0);
        let snapshot = family.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(&*snapshot[0].0, ["a".to_string(), "1".to_string()]);
        assert_eq!(snapshot[0].1, 2.0);
        assert_eq!(snapshot[1].1, 5.0);
    }
}

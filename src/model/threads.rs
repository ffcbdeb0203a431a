//! How many ONNX Runtime intra-op threads each of a model's worker sessions gets.
//!
//! Rule: an explicit count (`intra_op_threads` in config.properties, `intraOpThreads` in the
//! archive's model-config.yaml) wins; otherwise the model's cores are shared by its own workers,
//! `max(1, cores / workers)`, so workers × threads ≈ cores and never more. The plan counts the
//! workers the model is being scaled to (`minWorkers`, `initial_workers`, the scale API), not the
//! server's default, so a one-worker model runs on every core. Other models' workers are not
//! counted: an idle model's workers use no CPU, and counting them would halve a busy model's
//! threads for nothing.
//!
//! Re-planning on scale: when a scale changes a model's plan, its running workers are replaced
//! (new ones started first, then the old ones stopped after their current batch), so every
//! session always runs with the plan for the current worker count (see `super::pool`).

/// Intra-op threads per session for a model running `workers` workers on `cores` cores.
pub fn plan_threads(explicit: Option<usize>, workers: usize, cores: usize) -> usize {
    match explicit {
        Some(threads) => threads.max(1),
        None => (cores / workers.max(1)).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_gets_every_core() {
        assert_eq!(plan_threads(None, 1, 2), 2);
        assert_eq!(plan_threads(None, 1, 16), 16);
    }

    #[test]
    fn workers_share_the_cores_and_never_oversubscribe() {
        for cores in 1..=16 {
            for workers in 1..=8 {
                let threads = plan_threads(None, workers, cores);
                assert!(threads >= 1);
                assert!(
                    workers * threads <= cores.max(workers),
                    "{workers} × {threads} on {cores}"
                );
            }
        }
        assert_eq!(plan_threads(None, 2, 2), 1);
        assert_eq!(plan_threads(None, 4, 16), 4);
    }

    #[test]
    fn an_explicit_count_wins() {
        assert_eq!(plan_threads(Some(3), 1, 2), 3);
        assert_eq!(plan_threads(Some(0), 4, 2), 1);
    }
}

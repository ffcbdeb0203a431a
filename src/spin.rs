//! Polling briefly instead of sleeping at once, while a core is free. On a VM, waking a thread
//! whose core has halted costs far more than the hand-off itself, and a request crosses two
//! hand-offs: HTTP thread → worker (an idle worker polls the queue) and worker → HTTP thread (a
//! waiting request polls for its answer). Nothing polls once the requests in flight and the
//! pollers would take every core, so under load the cores stay the workers'.
//! Kept on a same-run A/B: +24 % req/s for the digits CNN at concurrency 1 on the 2-core VM
//! (docs/performance.md, 2026-12-07).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a request polls for its answer: a small model's whole run.
pub const ANSWER_POLL: Duration = Duration::from_millis(1);
/// How long an idle worker polls its queue before it sleeps.
pub const IDLE_POLL: Duration = Duration::from_micros(200);

/// Requests waiting for an answer, across all models.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Threads polling right now.
static POLLING: AtomicUsize = AtomicUsize::new(0);

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(crate::config::Config::cores)
}

/// Counts a request as in flight while alive (also when its future is dropped midway).
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Calls `ready` until it gives a value or `budget` runs out, if a core is free for it.
pub fn poll<T>(budget: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let busy = IN_FLIGHT.load(Ordering::Relaxed) + POLLING.load(Ordering::Relaxed);
    if busy >= cores() {
        return None;
    }
    POLLING.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + budget;
    let found = loop {
        if let Some(value) = ready() {
            break Some(value);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::hint::spin_loop();
    };
    POLLING.fetch_sub(1, Ordering::Relaxed);
    found
}

/// Lets one of a model's idle workers poll at a time.
#[derive(Debug, Default)]
pub struct OnePoller(AtomicBool);

impl OnePoller {
    /// [`poll`], unless another worker of the model is polling already.
    pub fn poll<T>(&self, budget: Duration, ready: impl FnMut() -> Option<T>) -> Option<T> {
        if self.0.swap(true, Ordering::Acquire) {
            return None;
        }
        let found = poll(budget, ready);
        self.0.store(false, Ordering::Release);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_until_ready_or_the_budget_runs_out_and_never_when_the_cores_are_taken() {
        let mut calls = 0;
        let found = poll(Duration::from_secs(1), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(found, Some(3));
        let started = Instant::now();
        assert_eq!(poll(Duration::from_millis(2), || None::<()>), None);
        assert!(started.elapsed() < Duration::from_secs(1));

        // In one test with the above: the counters are process-wide.
        let requests: Vec<InFlight> = (0..cores()).map(|_| InFlight::start()).collect();
        let mut called = false;
        assert_eq!(
            poll(Duration::from_millis(5), || {
                called = true;
                Some(())
            }),
            None
        );
        assert!(!called);
        drop(requests);
    }
}

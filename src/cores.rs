//! Keeping a free core awake instead of letting it sleep.
//!
//! On a virtual machine, waking a thread whose core has halted costs far more than the hand-off
//! itself (an inter-processor interrupt, a VM exit and entry): ~35 µs per hop on the 2-core VM
//! the benchmark runs on, where a tiny model's whole inference takes ~0.3 ms. A request crosses
//! two such hops inside the server (I/O thread → worker → I/O thread). The worker side is covered
//! by the idle poll in [`crate::batching`]; this module covers the way back: while a request
//! waits for its answer, its I/O thread keeps polling instead of parking, for a short budget and
//! only while every request in flight still has a core of its own besides the polling thread, so
//! the busy-wait never takes CPU time from inference. Under load (more requests in flight than
//! cores) nothing polls.
//!
//! Under load the opposite holds: the cores are the workers', and a woken I/O thread should wait
//! for one instead of taking it. The runtime's threads and the log writers
//! therefore run under Linux's `SCHED_BATCH` policy ([`defer_to_workers`]): the same fair share
//! of CPU time, but a wake-up never preempts the thread on the core; it waits for the next
//! scheduler tick or for a core to go idle, and an idle core takes it at once. A lone request
//! sees no difference; under load an I/O thread handles several connections per turn instead of
//! interrupting a run for each of them. Measured on the 2-core VM, the digits CNN at concurrency
//! 64: ~7 % more requests/s (A/B in alternate windows of one server) and half the load
//! generator's CPU per request (it, too, is woken less often). Workers reset their own policy
//! ([`compete_normally`]): threads inherit it from the thread that starts them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long an I/O thread polls for a worker's answer before parking: a tiny model's whole
/// batch, and a small share of a large one's (whose I/O thread then parks as usual).
pub const ANSWER_POLL: Duration = Duration::from_millis(1);

/// Requests waiting for a worker's answer, across all models.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// I/O threads busy-waiting for an answer.
static POLLING: AtomicUsize = AtomicUsize::new(0);

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(crate::config::Config::cores)
}

/// Counts one more in `counter` while alive (also when the waiting future is dropped midway,
/// as when its client goes away). Also counts a model's idle workers ([`crate::batching`]).
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    pub(crate) fn start(counter: &'a AtomicUsize) -> Counted<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the requests in flight (one worker each at most) and the polling threads, counting
/// `extra` more of them, fit in the cores.
fn fits(extra: usize) -> bool {
    IN_FLIGHT.load(Ordering::Relaxed) + POLLING.load(Ordering::Relaxed) + extra <= cores()
}

/// Whether a helper thread would find a core of its own: the requests in flight, the polling
/// threads and `busy` more (e.g. photos being pre-processed) leave one free.
pub fn spare(busy: usize) -> bool {
    fits(busy + 1)
}

/// Waits for a worker's `answer`: first by polling it for up to `budget` while a core is left
/// over (yielding to the runtime between polls, so other connections are served meanwhile and
/// the I/O driver is polled), then by parking as usual. `None` when the sender was dropped
/// unanswered.
pub async fn answer<T>(mut answer: oneshot::Receiver<T>, budget: Duration) -> Option<T> {
    let _in_flight = Counted::start(&IN_FLIGHT);
    if !budget.is_zero() && fits(1) {
        let polling = Counted::start(&POLLING);
        let until = Instant::now() + budget;
        let polled = loop {
            match answer.try_recv() {
                Ok(value) => break Some(Some(value)),
                Err(oneshot::error::TryRecvError::Closed) => break Some(None),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // More requests came in meanwhile: their workers need the cores.
            if Instant::now() >= until || !fits(0) {
                break None;
            }
            // Lets a thread woken on this core run first (a worker, a client on this machine),
            // then this runtime's other tasks and its I/O driver.
            std::thread::yield_now();
            tokio::task::yield_now().await;
        };
        drop(polling);
        if let Some(value) = polled {
            return value;
        }
    }
    answer.await.ok()
}

/// Puts the calling thread under `SCHED_BATCH` (see the module doc). Only a hint: where the
/// call fails or the platform has no such policy, the thread keeps the one it had.
pub fn defer_to_workers() {
    set_policy(Policy::Batch);
}

/// Puts the calling thread back under the normal policy (for model workers and their ONNX Runtime
/// threads, which inherit it).
pub fn compete_normally() {
    set_policy(Policy::Normal);
}

#[derive(Debug, Clone, Copy)]
enum Policy {
    Normal,
    Batch,
}

#[cfg(target_os = "linux")]
fn set_policy(policy: Policy) {
    let code = match policy {
        Policy::Normal => libc::SCHED_OTHER,
        Policy::Batch => libc::SCHED_BATCH,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call; pid 0 means the
    // calling thread, and the call changes nothing but that thread's scheduling policy.
    #[allow(unsafe_code)]
    let result = unsafe { libc::sched_setscheduler(0, code, &param) };
    if result != 0 {
        tracing::debug!(
            "cannot set the {policy:?} scheduling policy: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn set_policy(_policy: Policy) {}

/// The calling thread's scheduling policy, as the kernel reports it.
#[cfg(all(test, target_os = "linux"))]
fn current_policy() -> i32 {
    // SAFETY: reads the calling thread's policy; no memory is passed.
    #[allow(unsafe_code)]
    unsafe {
        libc::sched_getscheduler(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_within_the_budget_is_taken_by_polling() {
        let (sender, receiver) = oneshot::channel();
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(200));
            sender.send(7).expect("the waiter is there");
        });
        assert_eq!(answer(receiver, Duration::from_millis(50)).await, Some(7));
        worker.join().expect("the worker thread");
    }

    #[tokio::test]
    async fn a_late_answer_is_awaited_after_the_budget() {
        let (sender, receiver) = oneshot::channel();
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            sender.send("late").expect("the waiter is there");
        });
        assert_eq!(
            answer(receiver, Duration::from_millis(1)).await,
            Some("late")
        );
        worker.join().expect("the worker thread");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn policies_are_set_on_the_calling_thread_and_inherited_by_its_threads() {
        let before = current_policy();
        std::thread::spawn(|| {
            defer_to_workers();
            assert_eq!(current_policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(current_policy).join().expect("child");
            assert_eq!(child, libc::SCHED_BATCH, "inherited");
            let reset = std::thread::spawn(|| {
                compete_normally();
                current_policy()
            });
            assert_eq!(reset.join().expect("child"), libc::SCHED_OTHER);
            assert_eq!(
                current_policy(),
                libc::SCHED_BATCH,
                "the parent keeps its own"
            );
        })
        .join()
        .expect("the test thread");
        assert_eq!(current_policy(), before, "other threads untouched");
    }

    #[tokio::test]
    async fn a_dropped_sender_ends_the_wait() {
        let (sender, receiver) = oneshot::channel::<u8>();
        drop(sender);
        assert!(answer(receiver, Duration::from_millis(50)).await.is_none());
    }
}

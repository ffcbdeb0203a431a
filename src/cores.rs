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

    #[tokio::test]
    async fn a_dropped_sender_ends_the_wait() {
        let (sender, receiver) = oneshot::channel::<u8>();
        drop(sender);
        assert!(answer(receiver, Duration::from_millis(50)).await.is_none());
    }
}

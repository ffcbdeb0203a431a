//! The per-model job queue and the batch policy. The queue is bounded (`job_queue_size`): when it
//! is full a request is refused at once with TorchServe's 503, never made to wait. Workers pull
//! batches from it on their own threads ([`next_batch`] blocks), so no async task sits between a
//! request and its worker.
//!
//! Batch policy (TorchServe's parameters, a better default): a worker waits for the first job, then
//! takes every job already queued, up to `batch_size` items. If the batch is still short it waits
//! for more when the model's policy is [`BatchWait::Fill`] (TorchServe's behaviour: up to
//! `max_batch_delay` from the first job). The default [`BatchWait::Eager`] never holds a request
//! back for jobs that may or may not come: under load, requests queue up while workers are busy,
//! so batches form by themselves; a lone request is answered at once instead of after
//! `max_batch_delay`. It waits (again at most `max_batch_delay`) only for jobs certain to come
//! soon and enough to fill the batch: requests already accepted and being pre-processed ahead
//! (photos, see [`crate::prepare`]), only while no other worker of the model is idle (an idle
//! one would take them at once), and only for jobs no other waiting worker counts on. A worker
//! that frees up just as the clients it answered send their next photos would otherwise start a
//! batch of the first one decoded, and batches would stay short. A wait for a batch that would still be short costs more than it gains on a CPU,
//! where a batch is only a few per cent cheaper per item (measured: ResNet-18 at concurrency 4).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::backend::CancelToken;
use crate::cores::Counted;
use crate::error::ServeError;
use crate::prepare::Payload;

/// One answer per request item, or one error for the whole request.
pub type JobResult = Result<Vec<serde_json::Value>, ServeError>;

/// What the request side and the worker share about one job: the request side can cancel the
/// ONNX Runtime run its job is part of (response timeout) and learn how long the job queued.
#[derive(Default)]
pub struct RunHandle {
    /// Set by the worker while the job's batch runs; a std Mutex, never held across an await.
    current: Mutex<Option<CancelToken>>,
    /// Nanoseconds from enqueueing until a worker took the job, plus one (0: not taken yet).
    /// Written once by the worker, read by the request side after the answer arrives.
    queued_nanos: AtomicU64,
}

impl RunHandle {
    /// Called by the worker when it takes the job's batch from the queue.
    pub fn mark_taken(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX - 1);
        self.queued_nanos.store(nanos + 1, Ordering::Release);
    }

    /// How long the job waited for a worker, once one took it.
    pub fn queue_wait(&self) -> Option<Duration> {
        match self.queued_nanos.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos - 1)),
        }
    }

    /// Called by the worker when the batch holding this job starts running.
    pub fn attach(&self, token: &CancelToken) {
        if let Ok(mut current) = self.current.lock() {
            *current = Some(token.clone());
        }
    }

    /// Cancels the run the job is in, if one started (the worker then fails that run's
    /// requests and carries on).
    pub fn terminate(&self) {
        if let Ok(current) = self.current.lock() {
            if let Some(token) = current.as_ref() {
                token.cancel();
            }
        }
    }
}

/// A request waiting for a worker.
pub struct Job {
    pub items: Vec<Payload>,
    /// Pre-processing already spent on `items` before they were queued (see [`crate::prepare`]).
    pub preprocessed: Duration,
    pub reply: oneshot::Sender<JobResult>,
    pub enqueued: Instant,
    pub run_handle: Arc<RunHandle>,
    /// The request's span, so worker logs carry its request id.
    pub span: tracing::Span,
    /// The request id (`x-request-id`), for `log`-mode backend metric lines.
    pub request_id: Option<String>,
}

/// Whether a short batch waits for more jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchWait {
    /// Run what is queued now (default).
    Eager,
    /// Wait up to `max_batch_delay` from the first job for the batch to fill (TorchServe).
    Fill,
}

/// How a model's workers form batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub batch_size: usize,
    pub max_batch_delay: Duration,
    pub wait: BatchWait,
}

/// The bounded queue of one model version.
#[derive(Clone)]
pub struct JobQueue {
    sender: Sender<Job>,
    receiver: Receiver<Job>,
    /// Places held by requests still being pre-processed ahead (see [`crate::prepare`]): they
    /// count against `job_queue_size`, so an overloaded model answers 503 at once instead of
    /// piling requests up in front of the pre-processing pool.
    reserved: Arc<AtomicUsize>,
    /// Set while one idle worker polls the queue (see [`IDLE_POLL`]).
    polling: Arc<AtomicBool>,
    /// Workers waiting for a first job.
    idle: Arc<AtomicUsize>,
    /// Jobs on their way that waiting workers have counted on (see [`Claim`]).
    claimed: Arc<AtomicUsize>,
}

/// A worker's end of a model's queue.
#[derive(Clone)]
pub struct JobReceiver {
    jobs: Receiver<Job>,
    /// Shared by the model's workers: at most one of them polls while idle, the others sleep, so
    /// idle workers never take both cores from the threads that bring the next request in.
    polling: Arc<AtomicBool>,
    /// The queue's places held by requests being pre-processed ahead: jobs on their way.
    reserved: Arc<AtomicUsize>,
    /// Workers of the model waiting for a first job.
    idle: Arc<AtomicUsize>,
    /// Jobs on their way that workers waiting to fill a batch have counted on.
    claimed: Arc<AtomicUsize>,
}

/// The jobs on their way one worker waits for. Each waiting worker counts only on jobs no other
/// waiting worker has claimed: with several workers, each would otherwise wait (up to
/// `max_batch_delay`) for the same few photos, while the clients that would send the rest are
/// the ones held in those short batches (measured on 16 cores, 4 workers, concurrency 16,
/// `batch_size` 8: p50 latencies of 45 ms instead of a few).
struct Claim<'q> {
    claimed: &'q AtomicUsize,
    held: usize,
}

impl Claim<'_> {
    fn release(&mut self) {
        self.claimed
            .fetch_sub(std::mem::take(&mut self.held), Ordering::AcqRel);
    }

    fn hold(&mut self, count: usize) {
        self.release();
        self.claimed.fetch_add(count, Ordering::AcqRel);
        self.held = count;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A place held in the queue; given back when dropped (after the job is submitted or failed).
pub struct Reservation {
    reserved: Arc<AtomicUsize>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(1, Ordering::AcqRel);
    }
}

impl JobQueue {
    pub fn new(capacity: usize) -> Self {
        let (sender, receiver) = crossbeam_channel::bounded(capacity.max(1));
        JobQueue {
            sender,
            receiver,
            reserved: Arc::default(),
            polling: Arc::default(),
            idle: Arc::default(),
            claimed: Arc::default(),
        }
    }

    /// Holds a place for a request that is pre-processed before it is submitted; `None` when
    /// the queued and held places already fill the queue.
    pub fn reserve(&self) -> Option<Reservation> {
        let capacity = self.sender.capacity().unwrap_or(usize::MAX);
        let held = self.reserved.fetch_add(1, Ordering::AcqRel) + 1;
        let reservation = Reservation {
            reserved: Arc::clone(&self.reserved),
        };
        (self.sender.len() + held <= capacity).then_some(reservation)
    }

    /// Queues a job without waiting; a full queue gives the job back.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        self.sender.try_send(job).map_err(|error| match error {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => Box::new(job),
        })
    }

    /// Jobs waiting for a worker.
    pub fn pending(&self) -> usize {
        self.sender.len()
    }

    /// Free places left (held places count as taken).
    pub fn remaining_capacity(&self) -> usize {
        self.sender
            .capacity()
            .unwrap_or(0)
            .saturating_sub(self.sender.len() + self.reserved.load(Ordering::Acquire))
    }

    /// Takes one queued job without waiting (for answering leftovers at shutdown).
    pub fn take(&self) -> Option<Job> {
        self.receiver.try_recv().ok()
    }

    /// The receiving end, for workers.
    pub fn receiver(&self) -> JobReceiver {
        JobReceiver {
            jobs: self.receiver.clone(),
            polling: Arc::clone(&self.polling),
            reserved: Arc::clone(&self.reserved),
            idle: Arc::clone(&self.idle),
            claimed: Arc::clone(&self.claimed),
        }
    }
}

/// How a worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// After the current batch (scale-down while other workers keep serving the queue).
    AfterBatch,
    /// After the queue is empty (unregister, shutdown, scale to zero: in-flight work finishes).
    Drain,
}

/// What a worker's wait for work ended with.
pub enum Next {
    Batch(Vec<Job>),
    /// The worker was asked to stop (scale down, unload, shutdown).
    Stop,
}

/// How long an idle worker polls the queue before it sleeps. Waking a sleeping thread costs
/// ~0.1 ms on a small VM (futex, inter-processor interrupt, a halted vCPU resuming), which a
/// tiny model's request pays twice over; a request that arrives within this window is taken at
/// once. Only gaps between requests are spent polling: under load the queue is never empty, and
/// an idle server sleeps after one window. One worker per model polls at a time: on a 2-core
/// machine, two polling workers would hold both cores while the I/O thread that must bring them
/// the next request waits for one.
pub const IDLE_POLL: Duration = Duration::from_micros(200);

/// How often a worker waiting for jobs on their way checks that they still are (a request whose
/// pre-processing fails never comes; a submitted one holds its place an instant longer) and that
/// no other worker has become idle meanwhile.
const ON_THE_WAY_CHECK: Duration = Duration::from_micros(250);

impl JobReceiver {
    /// No job is waiting.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Whether a batch `missing` items short should wait under [`BatchWait::Eager`]: at least
    /// that many requests are being pre-processed for this queue that no other waiting worker
    /// counts on, and no other worker is idle to take them. If so, `claim` holds them.
    fn jobs_on_the_way(&self, missing: usize, claim: &mut Claim<'_>) -> bool {
        claim.release();
        let unclaimed = self
            .reserved
            .load(Ordering::Acquire)
            .saturating_sub(self.claimed.load(Ordering::Acquire));
        let wait = unclaimed >= missing && self.idle.load(Ordering::Acquire) == 0;
        if wait {
            claim.hold(missing);
        }
        wait
    }
}

/// Polls the queue for up to [`IDLE_POLL`], unless another worker of the model already does.
fn poll_for_job(receiver: &JobReceiver) -> Option<Job> {
    if receiver.polling.swap(true, Ordering::Acquire) {
        return None;
    }
    let until = Instant::now() + IDLE_POLL;
    let job = loop {
        if let Ok(job) = receiver.jobs.try_recv() {
            break Some(job);
        }
        if Instant::now() >= until {
            break None;
        }
        // Not a bare spin: a thread woken on this core (the I/O thread, a client) runs at once
        // instead of waiting out our time slice.
        std::thread::yield_now();
    };
    receiver.polling.store(false, Ordering::Release);
    job
}

/// Blocks until a batch is ready under `policy`, or the worker is told to stop. Once told to
/// drain (`draining` is set), it returns what is still queued and then `Stop`.
pub fn next_batch(
    receiver: &JobReceiver,
    stop: &Receiver<StopMode>,
    policy: &BatchPolicy,
    draining: &mut bool,
    before_waiting: &mut dyn FnMut(),
) -> Next {
    let jobs = &receiver.jobs;
    let first = if *draining {
        match jobs.try_recv() {
            Ok(job) => job,
            Err(_) => return Next::Stop,
        }
    } else if let Ok(job) = jobs.try_recv() {
        job
    } else {
        before_waiting();
        let _idle = Counted::start(&receiver.idle);
        match poll_for_job(receiver) {
            Some(job) => job,
            None => crossbeam_channel::select! {
                recv(stop) -> mode => match mode {
                    Ok(StopMode::Drain) => {
                        *draining = true;
                        match jobs.try_recv() {
                            Ok(job) => job,
                            Err(_) => return Next::Stop,
                        }
                    }
                    _ => return Next::Stop,
                },
                recv(jobs) -> job => match job {
                    Ok(job) => job,
                    Err(_) => return Next::Stop,
                },
            },
        }
    };
    let started = Instant::now();
    let mut items = first.items.len();
    let mut batch = vec![first];
    let eager = policy.wait == BatchWait::Eager;
    let mut claim = Claim {
        claimed: &receiver.claimed,
        held: 0,
    };
    while items < policy.batch_size {
        if let Ok(job) = jobs.try_recv() {
            items += job.items.len();
            batch.push(job);
            continue;
        }
        if eager && !receiver.jobs_on_the_way(policy.batch_size - items, &mut claim) {
            break;
        }
        let Some(left) = policy.max_batch_delay.checked_sub(started.elapsed()) else {
            break;
        };
        before_waiting();
        let wait = if eager {
            left.min(ON_THE_WAY_CHECK)
        } else {
            left
        };
        match jobs.recv_timeout(wait) {
            Ok(job) => {
                items += job.items.len();
                batch.push(job);
            }
            Err(RecvTimeoutError::Timeout) if eager => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Next::Batch(batch)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A queued request with one raw item, and the receiver of its answer.
    pub(crate) fn job() -> (Job, oneshot::Receiver<JobResult>) {
        let (reply, receiver) = oneshot::channel();
        let item = crate::handler::RequestItem {
            bytes: bytes::Bytes::from_static(b"x"),
            content_type: None,
        };
        let job = Job {
            items: vec![Payload::Raw(item)],
            preprocessed: Duration::ZERO,
            reply,
            enqueued: Instant::now(),
            run_handle: Arc::default(),
            span: tracing::Span::none(),
            request_id: None,
        };
        (job, receiver)
    }

    fn policy(wait: BatchWait, delay_ms: u64) -> BatchPolicy {
        BatchPolicy {
            batch_size: 4,
            max_batch_delay: Duration::from_millis(delay_ms),
            wait,
        }
    }

    /// The next batch from `queue` under `policy`, which must be a batch (not a stop).
    fn expect_batch(
        queue: &JobQueue,
        stop: &Receiver<StopMode>,
        policy: &BatchPolicy,
        draining: &mut bool,
    ) -> Vec<Job> {
        match next_batch(&queue.receiver(), stop, policy, draining, &mut || {}) {
            Next::Batch(batch) => batch,
            Next::Stop => panic!("expected a batch"),
        }
    }

    #[test]
    fn held_places_count_against_the_queue_until_dropped() {
        let queue = JobQueue::new(3);
        assert!(queue.submit(job().0).is_ok());
        let first = queue.reserve().expect("a free place");
        let second = queue.reserve().expect("the last place");
        assert!(queue.reserve().is_none(), "queued + held fill the queue");
        assert_eq!(queue.remaining_capacity(), 0);
        drop(first);
        assert_eq!(queue.remaining_capacity(), 1);
        let third = queue.reserve().expect("a place given back");
        drop((second, third));
        assert_eq!(queue.remaining_capacity(), 2);
    }

    #[test]
    fn only_one_idle_worker_polls_at_a_time() {
        let queue = JobQueue::new(2);
        let receiver = queue.receiver();
        receiver.polling.store(true, Ordering::Release);
        assert!(poll_for_job(&receiver).is_none(), "another worker polls");
        assert!(
            receiver.polling.load(Ordering::Acquire),
            "the other worker's turn is left alone"
        );
        receiver.polling.store(false, Ordering::Release);
        assert!(poll_for_job(&receiver).is_none(), "nothing came in");
        assert!(
            !receiver.polling.load(Ordering::Acquire),
            "the turn is given back after polling"
        );
        assert!(queue.submit(job().0).is_ok());
        assert!(poll_for_job(&receiver).is_some());
    }

    #[test]
    fn full_queue_refuses_at_once() {
        let queue = JobQueue::new(2);
        let mut receivers = Vec::new();
        for _ in 0..2 {
            let (job, receiver) = job();
            receivers.push(receiver);
            assert!(queue.submit(job).is_ok());
        }
        assert!(queue.submit(job().0).is_err());
        assert_eq!(queue.pending(), 2);
        assert_eq!(queue.remaining_capacity(), 0);
    }

    #[test]
    fn eager_takes_what_is_queued_and_never_waits() {
        let queue = JobQueue::new(10);
        let (_stop_tx, stop) = crossbeam_channel::bounded::<StopMode>(1);
        let mut draining = false;
        for _ in 0..6 {
            assert!(queue.submit(job().0).is_ok());
        }
        let started = Instant::now();
        let batch = expect_batch(
            &queue,
            &stop,
            &policy(BatchWait::Eager, 5_000),
            &mut draining,
        );
        assert_eq!(batch.len(), 4, "capped at batch_size");
        let batch = expect_batch(
            &queue,
            &stop,
            &policy(BatchWait::Eager, 5_000),
            &mut draining,
        );
        assert_eq!(batch.len(), 2, "the rest, without waiting for more");
        assert!(started.elapsed() < Duration::from_millis(1_000));
    }

    #[test]
    fn eager_waits_only_for_enough_jobs_being_preprocessed_while_no_worker_is_idle() {
        let queue = JobQueue::new(10);
        let (_stop_tx, stop) = crossbeam_channel::bounded::<StopMode>(1);
        let eager = policy(BatchWait::Eager, 2_000);
        let places = |count: usize| -> Vec<Reservation> {
            (0..count)
                .map(|_| queue.reserve().expect("a place"))
                .collect()
        };
        // Three requests being pre-processed fill the batch of 4: it waits for them.
        assert!(queue.submit(job().0).is_ok());
        let held = places(3);
        let late = queue.clone();
        let sender = std::thread::spawn(move || {
            for place in held {
                std::thread::sleep(Duration::from_millis(10));
                assert!(late.submit(job().0).is_ok());
                drop(place);
            }
        });
        let started = Instant::now();
        let batch = expect_batch(&queue, &stop, &eager, &mut false);
        sender.join().expect("sender");
        assert_eq!(batch.len(), 4, "the pre-processed requests joined");
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "no wait beyond them: {:?}",
            started.elapsed()
        );
        // One whose pre-processing fails never comes: the batch can no longer fill, it goes.
        assert!(queue.submit(job().0).is_ok());
        let mut held = places(3);
        let failed = held.pop().expect("a place");
        let failing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(failed);
        });
        let started = Instant::now();
        let batch = expect_batch(&queue, &stop, &eager, &mut false);
        failing.join().expect("failing");
        assert_eq!(batch.len(), 1);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(25) && waited < Duration::from_millis(1_000),
            "waited until the place was given back, not the delay: {waited:?}"
        );
        // Too few on the way to fill the batch: it goes at once.
        assert!(queue.submit(job().0).is_ok());
        let started = Instant::now();
        let batch = expect_batch(&queue, &stop, &eager, &mut false);
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(held);
        // Enough on the way, but another worker is idle and will take them: it goes at once.
        assert!(queue.submit(job().0).is_ok());
        let held = places(3);
        let receiver = queue.receiver();
        let other = Counted::start(&receiver.idle);
        let started = Instant::now();
        let batch = expect_batch(&queue, &stop, &eager, &mut false);
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_millis(500));
        drop((other, held));
        // Enough on the way, but another waiting worker already counts on them: it goes at once.
        assert!(queue.submit(job().0).is_ok());
        let held = places(3);
        let mut other = Claim {
            claimed: &receiver.claimed,
            held: 0,
        };
        other.hold(3);
        let started = Instant::now();
        let batch = expect_batch(&queue, &stop, &eager, &mut false);
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(other);
        assert_eq!(
            receiver.claimed.load(Ordering::Acquire),
            0,
            "claims are given back"
        );
        drop(held);
    }

    #[test]
    fn fill_waits_up_to_the_delay_for_stragglers() {
        let queue = JobQueue::new(10);
        let (_stop_tx, stop) = crossbeam_channel::bounded::<StopMode>(1);
        assert!(queue.submit(job().0).is_ok());
        let late = queue.clone();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            assert!(late.submit(job().0).is_ok());
        });
        let started = Instant::now();
        let batch = expect_batch(&queue, &stop, &policy(BatchWait::Fill, 400), &mut false);
        sender.join().expect("sender");
        assert_eq!(batch.len(), 2, "the straggler joined");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(350),
            "waited the full delay for a third: {waited:?}"
        );
    }

    #[test]
    fn the_worker_is_told_before_it_waits_and_only_then() {
        let queue = JobQueue::new(4);
        let (_stop_tx, stop) = crossbeam_channel::bounded::<StopMode>(1);
        let (queued, _answer) = job();
        assert!(queue.submit(queued).is_ok());
        let mut told = 0;
        let next = next_batch(
            &queue.receiver(),
            &stop,
            &policy(BatchWait::Eager, 10),
            &mut false,
            &mut || told += 1,
        );
        assert!(matches!(next, Next::Batch(ref jobs) if jobs.len() == 1));
        assert_eq!(told, 0, "a job was waiting: no wait, no call");
        let receiver = queue.receiver();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let (queued, answer) = job();
            assert!(queue.submit(queued).is_ok());
            answer
        });
        let next = next_batch(
            &receiver,
            &stop,
            &policy(BatchWait::Eager, 10),
            &mut false,
            &mut || told += 1,
        );
        assert!(matches!(next, Next::Batch(_)));
        assert_eq!(told, 1, "told once, before waiting for the late job");
        drop(late.join());
    }

    #[test]
    fn stop_wakes_an_idle_worker() {
        let queue = JobQueue::new(1);
        let (stop_tx, stop) = crossbeam_channel::bounded::<StopMode>(1);
        stop_tx.send(StopMode::AfterBatch).expect("send");
        let next = next_batch(
            &queue.receiver(),
            &stop,
            &policy(BatchWait::Eager, 10),
            &mut false,
            &mut || {},
        );
        assert!(matches!(next, Next::Stop));
    }

    #[test]
    fn draining_finishes_the_queue_before_stopping() {
        let queue = JobQueue::new(4);
        let (stop_tx, stop) = crossbeam_channel::bounded::<StopMode>(1);
        for _ in 0..3 {
            assert!(queue.submit(job().0).is_ok());
        }
        stop_tx.send(StopMode::Drain).expect("send");
        let single = BatchPolicy {
            batch_size: 1,
            max_batch_delay: Duration::ZERO,
            wait: BatchWait::Eager,
        };
        let mut draining = false;
        let mut served = 0;
        // Whether the stop is seen before or after some jobs, all three are served, then it stops.
        while let Next::Batch(batch) =
            next_batch(&queue.receiver(), &stop, &single, &mut draining, &mut || {})
        {
            served += batch.len();
            assert!(served <= 3);
        }
        assert_eq!(served, 3);
        assert!(draining);
    }
}

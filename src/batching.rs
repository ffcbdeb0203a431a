//! The per-model job queue and the batch policy. The queue is bounded (`job_queue_size`): when it
//! is full a request is refused at once with TorchServe's 503, never made to wait. Workers pull
//! batches from it on their own threads ([`next_batch`] blocks), so no async task sits between a
//! request and its worker.
//!
//! Batch policy (TorchServe's parameters, a better default): a worker waits for the first job, then
//! takes every job already queued, up to `batch_size` items. If the batch is still short it waits
//! for more only when the model's policy is [`BatchWait::Fill`] (TorchServe's behaviour: up to
//! `max_batch_delay` from the first job). The default [`BatchWait::Eager`] never holds a request
//! back for jobs that may or may not come: under load, requests queue up while workers are busy,
//! so batches form by themselves, and a lone request is answered at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::backend::CancelToken;
use crate::error::ServeError;
use crate::prepare::Payload;
use crate::tensor::HostTensor;

/// One answer per request item, or one error for the whole request.
pub type JobResult = Result<Vec<Answer>, ServeError>;

/// One item's answer: the handler's JSON, or (for an item sent as tensors) this item's rows of
/// every graph output, by output name.
#[derive(Debug, Clone)]
pub enum Answer {
    Json(serde_json::Value),
    Tensors(BTreeMap<String, HostTensor>),
}

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
    poller: Arc<crate::spin::OnePoller>,
}

/// A worker's end of a model's queue.
#[derive(Clone)]
pub struct JobReceiver {
    jobs: Receiver<Job>,
    /// One idle worker of the model polls the queue before sleeping (see [`crate::spin`]).
    poller: Arc<crate::spin::OnePoller>,
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
            poller: Arc::default(),
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
            poller: Arc::clone(&self.poller),
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

/// Blocks until a batch is ready under `policy`, or the worker is told to stop. Once told to
/// drain (`draining` is set), it returns what is still queued and then `Stop`.
pub fn next_batch(
    receiver: &JobReceiver,
    stop: &Receiver<StopMode>,
    policy: &BatchPolicy,
    draining: &mut bool,
) -> Next {
    let jobs = &receiver.jobs;
    let polled = || {
        let budget = crate::spin::IDLE_POLL;
        receiver.poller.poll(budget, || jobs.try_recv().ok())
    };
    let first = if *draining {
        match jobs.try_recv() {
            Ok(job) => job,
            Err(_) => return Next::Stop,
        }
    } else if let Some(job) = jobs.try_recv().ok().or_else(polled) {
        job
    } else {
        crossbeam_channel::select! {
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
        }
    };
    let started = Instant::now();
    let mut items = first.items.len();
    let mut batch = vec![first];
    while items < policy.batch_size {
        if let Ok(job) = jobs.try_recv() {
            items += job.items.len();
            batch.push(job);
            continue;
        }
        if policy.wait == BatchWait::Eager {
            break;
        }
        let Some(left) = policy.max_batch_delay.checked_sub(started.elapsed()) else {
            break;
        };
        match jobs.recv_timeout(left) {
            Ok(job) => {
                items += job.items.len();
                batch.push(job);
            }
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
        match next_batch(&queue.receiver(), stop, policy, draining) {
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
    fn stop_wakes_an_idle_worker() {
        let queue = JobQueue::new(1);
        let (stop_tx, stop) = crossbeam_channel::bounded::<StopMode>(1);
        stop_tx.send(StopMode::AfterBatch).expect("send");
        let next = next_batch(
            &queue.receiver(),
            &stop,
            &policy(BatchWait::Eager, 10),
            &mut false,
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
        while let Next::Batch(batch) = next_batch(&queue.receiver(), &stop, &single, &mut draining)
        {
            served += batch.len();
            assert!(served <= 3);
        }
        assert_eq!(served, 3);
        assert!(draining);
    }
}

//! A loaded model version: its unpacked archive, handler, job queue and workers. `infer` is the
//! one entry point both transports call. Loading (`load.rs`: unpacking, settings, handler) and
//! running workers (`pool.rs`: start, scale, stop) are blocking work: callers run them off the
//! async runtime.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxserve_archiver::unpack::ExtractedArchive;
use tokio::sync::oneshot;

use crate::batching::{Answer, Job, JobQueue, RunHandle};
use crate::error::ServeError;
use crate::handler::{Handler, ItemInput, RequestItem};
pub use crate::metrics::ModelStats;
use crate::prepare::Payload;

mod load;
mod pool;
mod settings;
mod threads;
pub mod unpacked;

pub use load::LoadRequest;
pub use pool::WorkerInfo;
use pool::WorkerPool;
pub use settings::{Device, ModelSettings, SettingsOverride};
pub use threads::plan_threads;

/// A request's answers, and how long it waited for a worker.
#[derive(Debug)]
pub struct Inferred<A = serde_json::Value> {
    pub answers: Vec<A>,
    pub queue_wait: Duration,
}

/// A model version that can answer requests.
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub url: String,
    /// The store file downloaded for this model, if any.
    pub downloaded: Option<PathBuf>,
    pub archive: ExtractedArchive,
    pub settings: ModelSettings,
    pub loaded_at_startup: bool,
    pub stats: Arc<ModelStats>,
    handler: Arc<Handler>,
    queue: JobQueue,
    pool: WorkerPool,
    /// Set when the model is being unloaded: new requests are refused.
    closed: AtomicBool,
    /// Keeps the unpacked archive alive; removed when the model is dropped.
    _unpacked: Option<tempfile::TempDir>,
}

impl ModelVersion {
    /// Queues a request and waits for its answers (one per item).
    pub async fn infer(
        &self,
        items: Vec<RequestItem>,
    ) -> Result<Vec<serde_json::Value>, ServeError> {
        self.infer_request(items, None)
            .await
            .map(|inferred| inferred.answers)
    }

    /// [`Self::infer`] for a request with an id, also telling how long it queued.
    pub async fn infer_request(
        &self,
        items: Vec<RequestItem>,
        request_id: Option<String>,
    ) -> Result<Inferred, ServeError> {
        let items = items.into_iter().map(ItemInput::Bytes).collect();
        let inferred = self.call(items, request_id).await?;
        let answers = inferred
            .answers
            .into_iter()
            .map(|answer| match answer {
                Answer::Json(value) => Ok(value),
                Answer::Tensors(_) => Err(ServeError::Internal(
                    "a handler item was answered with raw tensors".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Inferred {
            answers,
            queue_wait: inferred.queue_wait,
        })
    }

    /// The one entry every transport ends in: queues a request's items (bytes for the handler
    /// or checked tensors) and waits for one answer per item.
    pub async fn call(
        &self,
        items: Vec<ItemInput>,
        request_id: Option<String>,
    ) -> Result<Inferred<Answer>, ServeError> {
        if self.live_workers() == 0 {
            return Err(ServeError::NoWorker(self.name.clone()));
        }
        // A request pre-processed ahead holds its queue place meanwhile.
        let (items, preprocessed, place) = if crate::prepare::goes_ahead(&items) {
            let place = self.queue.reserve();
            let place = place.ok_or_else(|| ServeError::NoWorker(self.name.clone()))?;
            let (items, spent) =
                crate::prepare::ahead(&self.handler, items, &self.stats.preprocess).await?;
            (items, spent, Some(place))
        } else {
            let items = items.into_iter().map(Payload::from).collect();
            (items, Duration::ZERO, None)
        };
        let (reply, answer) = oneshot::channel();
        let run_handle = Arc::new(RunHandle::default());
        let job = Job {
            items,
            preprocessed,
            reply,
            enqueued: Instant::now(),
            run_handle: Arc::clone(&run_handle),
            span: tracing::Span::current(),
            request_id,
        };
        let _in_flight = crate::spin::InFlight::start();
        let submitted = self.queue.submit(job);
        drop(place);
        if submitted.is_err() {
            return Err(ServeError::NoWorker(self.name.clone()));
        }
        let mut answer = answer;
        let polled = crate::spin::poll(crate::spin::ANSWER_POLL, || answer.try_recv().ok());
        let answered = match polled {
            Some(result) => Ok(Ok(result)),
            None => tokio::time::timeout(self.settings.response_timeout, answer).await,
        };
        match answered {
            Ok(Ok(result)) => result.map(|answers| Inferred {
                answers,
                queue_wait: run_handle.queue_wait().unwrap_or_default(),
            }),
            Ok(Err(_)) => Err(ServeError::WorkerDied),
            Err(_) => {
                run_handle.terminate();
                tracing::warn!(model = %self.name, "request exceeded the response timeout");
                Err(ServeError::ResponseTimeout {
                    seconds: self.settings.response_timeout.as_secs(),
                })
            }
        }
    }

    /// The model's handler (what it takes, its graph's signature).
    pub fn handler(&self) -> &Handler {
        &self.handler
    }

    /// The worker range the scale API last set: (min, max).
    pub fn worker_range(&self) -> (usize, usize) {
        self.pool.range()
    }

    /// Sets the worker range and starts or stops workers until `min` are live. Stopping lets
    /// in-flight batches finish; scaling to zero first serves everything already queued.
    /// Blocking (session builds).
    pub fn scale(&self, min: usize, max: usize) -> Result<(), ServeError> {
        self.pool.scale(min, max)
    }

    /// Starts the initial workers. Blocking.
    pub fn start_workers(&self) -> Result<(), ServeError> {
        let (min, max) = self.worker_range();
        self.scale(min, max)
    }

    /// Workers ready to take jobs.
    pub fn live_workers(&self) -> usize {
        self.pool.live()
    }

    /// Every worker, for describe.
    pub fn worker_snapshot(&self) -> Vec<WorkerInfo> {
        self.pool.snapshot()
    }

    /// (pending jobs, remaining queue capacity).
    pub fn queue_status(&self) -> (usize, usize) {
        (self.queue.pending(), self.queue.remaining_capacity())
    }

    /// Refuses new requests, serves everything already queued, and stops every worker. Blocking.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let (_, max) = self.worker_range();
        let _ = self.scale(0, max);
        // Anything that slipped in after the last worker looked is answered, not dropped.
        while let Some(job) = self.queue.take() {
            let _ = job.reply.send(Err(ServeError::NoWorker(self.name.clone())));
        }
    }
}

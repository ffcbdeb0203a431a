//! Workers: one OS thread per backend session, looping on the model's bounded queue. A worker
//! builds its session on its own thread, reports readiness once, then for each batch:
//! pre-processes every item (a bad item fails only its own request, 400), stacks items that share
//! a shape along the batch axis in runs of at most `batch_size` rows, runs the session, splits the
//! outputs back per item and post-processes them. A panic or a backend error fails only the
//! requests of that batch; the worker carries on with the next one. Compute never touches the
//! async runtime's threads.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::backend::{CancelToken, PreparedGraph, Session, SessionSettings};
use crate::batching::{
    next_batch, Answer, BatchPolicy, Job, JobReceiver, JobResult, Next, RunHandle, StopMode,
};
use crate::error::ServeError;
use crate::handler::text::Padding;
use crate::handler::{Handler, Prepared, StackKey};
use crate::metrics::model::BatchTimes;
use crate::metrics::ModelStats;
use crate::prepare::Payload;
use crate::tensor::HostTensor;

/// Worker ids are unique in the process and start at TorchServe's `initial_worker_port`.
static NEXT_WORKER_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(9000);

/// The id for a new worker (9000, 9001, ...).
pub fn next_worker_id() -> u32 {
    NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed)
}

/// Worker life cycle, as TorchServe's describe API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    Starting,
    Ready,
    Stopping,
    Stopped,
}

/// Shared view of one worker, read by describe and ping.
pub struct WorkerState {
    /// A [`WorkerStatus`] as u8: written by the worker thread, read by HTTP handlers.
    status: AtomicU8,
    pub started_at: SystemTime,
}

impl WorkerState {
    pub fn status(&self) -> WorkerStatus {
        match self.status.load(Ordering::Acquire) {
            0 => WorkerStatus::Starting,
            1 => WorkerStatus::Ready,
            2 => WorkerStatus::Stopping,
            _ => WorkerStatus::Stopped,
        }
    }

    fn set(&self, status: WorkerStatus) {
        let value = match status {
            WorkerStatus::Starting => 0,
            WorkerStatus::Ready => 1,
            WorkerStatus::Stopping => 2,
            WorkerStatus::Stopped => 3,
        };
        self.status.store(value, Ordering::Release);
    }
}

/// Everything a worker thread needs.
pub struct WorkerContext {
    /// TorchServe-style worker id (9000, 9001, ...).
    pub id: u32,
    /// `name` + `_` + `version`, for thread names and logs.
    pub model_label: String,
    pub graph: Arc<PreparedGraph>,
    pub handler: Arc<Handler>,
    pub session: SessionSettings,
    pub policy: BatchPolicy,
    pub jobs: JobReceiver,
    pub stats: Arc<ModelStats>,
}

/// The owner of one worker thread: stopping it lets the thread finish its current batch.
pub struct WorkerHandle {
    pub id: u32,
    /// The CUDA device its session runs on; `None` on the CPU.
    pub gpu: Option<u32>,
    /// Its session's intra-op threads.
    pub threads: usize,
    pub state: Arc<WorkerState>,
    /// Wakes the worker out of its wait for jobs; capacity 1, so signalling never blocks.
    stop: Sender<StopMode>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts a worker and waits until its session is built (or failed to build).
    pub fn spawn(context: WorkerContext) -> Result<WorkerHandle, ServeError> {
        let (stop, stop_receiver) = crossbeam_channel::bounded(1);
        let (ready, ready_receiver) = std::sync::mpsc::sync_channel(1);
        let state = Arc::new(WorkerState {
            status: AtomicU8::new(0),
            started_at: SystemTime::now(),
        });
        let id = context.id;
        let gpu = context.session.gpu;
        let threads = context.session.intra_op_threads;
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("W-{}-{}", context.id, context.model_label))
            .spawn(move || worker_loop(context, thread_state, stop_receiver, ready))
            .map_err(|error| {
                ServeError::Internal(format!("cannot start a worker thread: {error}"))
            })?;
        match ready_receiver.recv() {
            Ok(Ok(())) => Ok(WorkerHandle {
                id,
                gpu,
                threads,
                state,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ServeError::Internal(
                    "the worker died while starting".into(),
                ))
            }
        }
    }

    /// Asks the worker to stop (see [`StopMode`]); does not wait.
    pub fn request_stop(&self, mode: StopMode) {
        self.state.set(WorkerStatus::Stopping);
        let _ = self.stop.try_send(mode);
    }

    /// Waits for the worker's thread to end.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.stop.try_send(StopMode::AfterBatch);
    }
}

fn worker_loop(
    context: WorkerContext,
    state: Arc<WorkerState>,
    stop: Receiver<StopMode>,
    ready: std::sync::mpsc::SyncSender<Result<(), ServeError>>,
) {
    // Started from an HTTP thread (a registration), this thread and ONNX Runtime's would inherit
    // its policy.
    if let Err(error) = oxserve_sys::compete_normally() {
        tracing::debug!("cannot reset the worker's scheduling policy: {error}");
    }
    let building = Instant::now();
    let mut session = match context.graph.session(&context.session) {
        Ok(session) => session,
        Err(error) => {
            tracing::warn!(worker = context.id, "cannot build the session: {error}");
            state.set(WorkerStatus::Stopped);
            let _ = ready.send(Err(error.into()));
            return;
        }
    };
    tracing::info!(
        worker = context.id,
        "session ready for {} in {:?} ({} intra-op threads)",
        context.model_label,
        building.elapsed(),
        context.session.intra_op_threads
    );
    state.set(WorkerStatus::Ready);
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut draining = false;
    while let Next::Batch(jobs) = next_batch(&context.jobs, &stop, &context.policy, &mut draining) {
        let taken = Instant::now();
        for job in &jobs {
            let waited = taken.saturating_duration_since(job.enqueued);
            job.run_handle.mark_taken(waited);
            context.stats.queue.record(waited.as_secs_f64());
        }
        let mut replies = Replies::new(jobs);
        let mut handler_time = Duration::ZERO;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            process_batch(&mut session, &context, &mut replies, &mut handler_time)
        }));
        if outcome.is_err() {
            tracing::error!(worker = context.id, model = %context.model_label, "a batch panicked; its requests fail, the worker carries on");
            replies.fail_remaining(&ServeError::WorkerDied);
        }
        if !handler_time.is_zero() {
            let ids = context
                .stats
                .wants_request_ids()
                .then(|| replies.request_ids());
            let times = BatchTimes {
                handler: handler_time,
                total: taken.elapsed(),
            };
            context.stats.record_batch(times, ids.as_deref());
        }
        replies.send_all();
    }
    tracing::info!(
        worker = context.id,
        "worker for {} stopped",
        context.model_label
    );
    state.set(WorkerStatus::Stopped);
}

/// The jobs of one batch and what each will be answered.
struct Replies {
    entries: Vec<ReplyEntry>,
}

struct ReplyEntry {
    job: Job,
    reply: Option<oneshot::Sender<JobResult>>,
    answers: Vec<Option<Answer>>,
    error: Option<ServeError>,
}

impl Replies {
    fn new(jobs: Vec<Job>) -> Self {
        let entries = jobs
            .into_iter()
            .map(|mut job| {
                let (placeholder, _) = oneshot::channel();
                let reply = std::mem::replace(&mut job.reply, placeholder);
                ReplyEntry {
                    answers: vec![None; job.items.len()],
                    job,
                    reply: Some(reply),
                    error: None,
                }
            })
            .collect();
        Replies { entries }
    }

    fn fail(&mut self, index: usize, error: ServeError) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.error.get_or_insert(error);
        }
    }

    fn fail_remaining(&mut self, error: &ServeError) {
        for entry in &mut self.entries {
            if entry.answers.iter().any(Option::is_none) {
                entry.error.get_or_insert_with(|| error.clone());
            }
        }
    }

    /// The batch's request ids, comma-separated (TorchServe's `requestID` in metric lines).
    fn request_ids(&self) -> String {
        let ids: Vec<&str> = self
            .entries
            .iter()
            .filter_map(|entry| entry.job.request_id.as_deref())
            .collect();
        ids.join(",")
    }

    fn send_all(&mut self) {
        for entry in &mut self.entries {
            let Some(reply) = entry.reply.take() else {
                continue;
            };
            let result = match entry.error.take() {
                Some(error) => Err(error),
                None => entry
                    .answers
                    .iter_mut()
                    .map(|answer| answer.take().ok_or(ServeError::WorkerDied))
                    .collect(),
            };
            let _ = reply.send(result);
        }
    }
}

/// One pre-processed item and where its answer goes.
struct Slot {
    job: usize,
    item: usize,
    prepared: Prepared,
    /// Sent as tensors: answered with its rows of the outputs, not post-processed.
    raw: bool,
}

/// Runs one batch; adds the time spent in pre-processing, inference and post-processing to
/// `handler_time` (and records each step in the model's histograms).
fn process_batch(
    session: &mut Session,
    context: &WorkerContext,
    replies: &mut Replies,
    handler_time: &mut Duration,
) {
    let handler = &context.handler;
    let stats = &context.stats;
    let mut slots: Vec<Slot> = Vec::new();
    for (job_index, entry) in replies.entries.iter_mut().enumerate() {
        if entry.reply.as_ref().is_none_or(|reply| reply.is_closed()) {
            // The client went away (or timed out) while queued: skip the work.
            continue;
        }
        let _span = entry.job.span.enter();
        *handler_time += entry.job.preprocessed;
        for (item_index, item) in std::mem::take(&mut entry.job.items).into_iter().enumerate() {
            let (prepared, raw) = match item {
                Payload::Ready(prepared) => (prepared, false),
                Payload::Tensors(prepared) => (prepared, true),
                Payload::Raw(item) => {
                    let started = Instant::now();
                    let prepared = catch_unwind(AssertUnwindSafe(|| handler.preprocess(&item)));
                    let took = started.elapsed();
                    stats.preprocess.record(took.as_secs_f64());
                    *handler_time += took;
                    match prepared {
                        Ok(Ok(prepared)) => (prepared, false),
                        Ok(Err(error)) => {
                            entry.error.get_or_insert(error);
                            continue;
                        }
                        Err(_) => {
                            tracing::error!("pre-processing panicked");
                            let error = ServeError::Internal("pre-processing panicked".into());
                            entry.error.get_or_insert(error);
                            continue;
                        }
                    }
                }
            };
            slots.push(Slot {
                job: job_index,
                item: item_index,
                prepared,
                raw,
            });
        }
    }
    // A request with one bad item fails as a whole; its other items need not run.
    slots.retain(|slot| replies.entries[slot.job].error.is_none());
    // On a GPU, every run of a batching model gets `batch_size` rows, short ones padded with
    // zero rows: the extra rows cost the GPU next to nothing, while ONNX Runtime's CUDA kernels
    // are set up again for every change of input shape.
    let batch_size = context.policy.batch_size;
    let pad_to = (context.session.gpu.is_some() && handler.batchable() && batch_size > 1)
        .then_some(batch_size);
    let padding = handler.padding();
    for mut chunk in plan_runs(slots, handler.batchable(), batch_size, padding.as_ref()) {
        let rows: usize = chunk.iter().map(|slot| slot.prepared.rows).sum();
        let started = Instant::now();
        let outcome = run_chunk(
            session,
            context,
            &mut chunk,
            pad_to,
            padding.as_ref(),
            replies,
        );
        let took = started.elapsed();
        *handler_time += took;
        match outcome {
            Ok(per_item) => {
                stats.record_run(rows, took);
                for (slot, outputs) in chunk.iter().zip(per_item) {
                    if slot.raw {
                        let answer = Answer::Tensors(outputs);
                        replies.entries[slot.job].answers[slot.item] = Some(answer);
                        continue;
                    }
                    let started = Instant::now();
                    let answer = catch_unwind(AssertUnwindSafe(|| {
                        handler.postprocess(&outputs, slot.prepared.text.as_ref())
                    }));
                    let took = started.elapsed();
                    stats.postprocess.record(took.as_secs_f64());
                    *handler_time += took;
                    match answer {
                        Ok(Ok(answer)) => {
                            replies.entries[slot.job].answers[slot.item] =
                                Some(Answer::Json(answer))
                        }
                        Ok(Err(error)) => replies.fail(slot.job, error),
                        Err(_) => replies.fail(
                            slot.job,
                            ServeError::Internal("post-processing panicked".into()),
                        ),
                    }
                }
            }
            Err(error) => {
                for slot in &chunk {
                    replies.fail(slot.job, error.clone());
                }
            }
        }
    }
}

/// Groups items that can share a run (same shapes past the batch axis), in arrival order, and cuts
/// each group into runs of at most `batch_size` rows (one item per run when not batchable).
/// With text `padding`, items of any sequence length group together and a run also stays within
/// the token budget (rows × longest item).
fn plan_runs(
    slots: Vec<Slot>,
    batchable: bool,
    batch_size: usize,
    padding: Option<&Padding>,
) -> Vec<Vec<Slot>> {
    let mut groups: Vec<(StackKey, Vec<Slot>)> = Vec::new();
    for slot in slots {
        let key = match padding {
            Some(padding) => padding.stack_key(&slot.prepared),
            None => slot.prepared.stack_key(),
        };
        match groups.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, members)) if batchable => members.push(slot),
            _ => groups.push((key, vec![slot])),
        }
    }
    let mut runs = Vec::new();
    for (_, members) in groups {
        let mut run: Vec<Slot> = Vec::new();
        let mut rows = 0;
        let mut longest = 0;
        for slot in members {
            let sequence = padding.map_or(0, |padding| padding.sequence(&slot.prepared));
            let over_budget = padding.is_some_and(|padding| {
                (rows + slot.prepared.rows).saturating_mul(longest.max(sequence))
                    > padding.max_tokens
            });
            if !run.is_empty()
                && (!batchable || rows + slot.prepared.rows > batch_size.max(1) || over_budget)
            {
                runs.push(std::mem::take(&mut run));
                rows = 0;
                longest = 0;
            }
            rows += slot.prepared.rows;
            longest = longest.max(sequence);
            run.push(slot);
        }
        if !run.is_empty() {
            runs.push(run);
        }
    }
    runs
}

/// Runs one stacked chunk, padded with zero rows up to `pad_to` rows when given (and text inputs
/// to the chunk's longest item with `padding`), and returns each item's rows of every output. The items' input tensors are moved into the run (a lone
/// item's are not copied at all, see [`HostTensor::concat_rows`]).
fn run_chunk(
    session: &mut Session,
    context: &WorkerContext,
    chunk: &mut [Slot],
    pad_to: Option<usize>,
    padding: Option<&Padding>,
    replies: &Replies,
) -> Result<Vec<BTreeMap<String, HostTensor>>, ServeError> {
    let cancel = CancelToken::new()?;
    for slot in chunk.iter() {
        let handle: &Arc<RunHandle> = &replies.entries[slot.job].job.run_handle;
        handle.attach(&cancel);
    }
    let mut inputs = BTreeMap::new();
    let first = &chunk[0].prepared;
    let total: usize = chunk.iter().map(|slot| slot.prepared.rows).sum();
    let has_rows = first
        .inputs
        .iter()
        .all(|(_, tensor)| !tensor.shape.is_empty());
    let padded = pad_to.filter(|rows| *rows > total && has_rows);
    let names: Vec<String> = first.inputs.iter().map(|(name, _)| name.clone()).collect();
    for (index, name) in names.into_iter().enumerate() {
        let parts = chunk
            .iter_mut()
            .map(|slot| std::mem::replace(&mut slot.prepared.inputs[index].1, HostTensor::empty()))
            .collect();
        let parts = match padding {
            Some(padding) => padding.pad_parts(&name, parts)?,
            None => parts,
        };
        let mut stacked = HostTensor::concat_rows(parts)?;
        if let Some(rows) = padded {
            stacked = stacked.padded_to_rows(rows);
        }
        inputs.insert(name, stacked);
    }
    let host = session.run(inputs, &cancel).map_err(|error| {
        tracing::warn!(model = %context.model_label, "inference failed: {error}");
        ServeError::from(error)
    })?;
    if chunk.len() == 1 && padded.is_none() {
        return Ok(vec![host]);
    }
    if host
        .values()
        .any(|tensor| tensor.rows() != padded.unwrap_or(total))
    {
        tracing::warn!(model = %context.model_label, "the graph returned a different number of rows than it was given");
        return Err(ServeError::PredictionFailed);
    }
    let mut start = 0;
    let mut per_item = Vec::with_capacity(chunk.len());
    for slot in chunk {
        let rows = slot.prepared.rows;
        per_item.push(
            host.iter()
                .map(|(name, tensor)| (name.clone(), tensor.rows_slice(start, rows)))
                .collect(),
        );
        start += rows;
    }
    Ok(per_item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorValues;

    fn text_slot(item: usize, length: usize) -> Slot {
        Slot {
            job: 0,
            item,
            prepared: Prepared {
                inputs: vec![(
                    "input_ids".into(),
                    HostTensor {
                        shape: vec![1, length],
                        values: TensorValues::I64(vec![1; length]),
                    },
                )],
                rows: 1,
                text: None,
            },
            raw: false,
        }
    }

    #[test]
    fn text_runs_mix_lengths_within_the_token_budget() {
        let padding = Padding {
            inputs: vec![("input_ids".into(), 0)],
            max_tokens: 25,
        };
        let slots = vec![
            text_slot(0, 5),
            text_slot(1, 10),
            text_slot(2, 20),
            text_slot(3, 3),
        ];
        let runs = plan_runs(slots, true, 8, Some(&padding));
        let items: Vec<Vec<usize>> = runs
            .iter()
            .map(|run| run.iter().map(|slot| slot.item).collect())
            .collect();
        // 2 rows × 10 tokens fit; a third row padded to 20 would be 60 tokens.
        assert_eq!(items, vec![vec![0, 1], vec![2], vec![3]]);
        // Without padding, different lengths never share a run.
        let slots = vec![text_slot(0, 5), text_slot(1, 10), text_slot(2, 5)];
        let runs = plan_runs(slots, true, 8, None);
        assert_eq!(runs.len(), 2);
    }
}

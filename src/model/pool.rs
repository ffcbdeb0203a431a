//! A model version's workers: starting, scaling and stopping them, and the prepared graph their
//! sessions share. Loading the model (archive, handler, settings) is [`super::load`]'s job; this
//! module only runs what was loaded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::backend::{PreparedGraph, SessionSettings};
use crate::batching::{BatchPolicy, JobReceiver, StopMode};
use crate::error::ServeError;
use crate::handler::Handler;
use crate::metrics::ModelStats;
use crate::worker::{WorkerContext, WorkerHandle, WorkerStatus};

use super::settings::{Device, ModelSettings};
use super::threads::plan_threads;

/// One worker, as the describe API shows it.
pub struct WorkerInfo {
    pub id: u32,
    pub started: SystemTime,
    pub status: WorkerStatus,
    /// The CUDA device its session runs on; `None` on the CPU.
    pub gpu: Option<u32>,
    /// Its session's intra-op threads (see [`super::plan_threads`]).
    pub threads: usize,
}

/// What a pool starts its workers with.
pub(super) struct PoolSpec {
    pub name: String,
    pub version: String,
    /// The ONNX graph in the unpacked archive.
    pub graph_path: PathBuf,
    pub handler: Arc<Handler>,
    pub settings: ModelSettings,
    pub jobs: JobReceiver,
    pub stats: Arc<ModelStats>,
    /// A handler given at registration that cannot run; worker starts fail with it.
    pub unusable_handler: Option<String>,
}

/// The workers of one model version.
pub(super) struct WorkerPool {
    spec: PoolSpec,
    /// The graph as the workers' sessions load it: prepared when the first worker starts,
    /// dropped when the last one stops (guarded by `scaling`).
    prepared: Mutex<Option<Arc<PreparedGraph>>>,
    /// Live workers; a std Mutex, only locked for quick bookkeeping, never across an await.
    workers: Mutex<Vec<WorkerHandle>>,
    /// Serialises scale operations so two scale calls never interleave worker starts and stops.
    scaling: Mutex<()>,
    /// The scale API's current minimum and maximum.
    min_workers: AtomicUsize,
    max_workers: AtomicUsize,
    /// This model's turn in its own `deviceIds` rotation (see [`Device::next_worker_gpu`]).
    gpu_rotation: AtomicUsize,
}

fn poisoned(what: &str) -> ServeError {
    ServeError::Internal(format!("{what} poisoned"))
}

impl WorkerPool {
    /// A pool with no workers yet, set to the settings' worker range.
    pub fn new(spec: PoolSpec) -> WorkerPool {
        WorkerPool {
            min_workers: AtomicUsize::new(spec.settings.min_workers),
            max_workers: AtomicUsize::new(spec.settings.max_workers),
            spec,
            prepared: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            scaling: Mutex::new(()),
            gpu_rotation: AtomicUsize::new(0),
        }
    }

    /// The worker range the scale API last set: (min, max).
    pub fn range(&self) -> (usize, usize) {
        (
            self.min_workers.load(Ordering::Acquire),
            self.max_workers.load(Ordering::Acquire),
        )
    }

    fn lock_workers(&self) -> Result<MutexGuard<'_, Vec<WorkerHandle>>, ServeError> {
        self.workers.lock().map_err(|_| poisoned("worker list"))
    }

    /// Sets the worker range and starts or stops workers until `min` are live. Stopping lets
    /// in-flight batches finish; scaling to zero first serves everything already queued. When
    /// the new count changes the thread plan, the running workers are replaced by `min` new ones
    /// with the new plan (started before the old ones stop, so the model keeps serving).
    /// Blocking (session builds).
    pub fn scale(&self, min: usize, max: usize) -> Result<(), ServeError> {
        let _serialised = self.scaling.lock().map_err(|_| poisoned("scale lock"))?;
        self.min_workers.store(min, Ordering::Release);
        self.max_workers.store(max.max(min), Ordering::Release);
        let threads = plan_threads(
            self.spec.settings.intra_op_threads,
            min,
            crate::config::Config::cores(),
        );
        let (current, replanned) = {
            let workers = self.lock_workers()?;
            let replanned = workers.iter().any(|worker| worker.threads != threads);
            (workers.len(), replanned)
        };
        if min == 0 || (current > min && !replanned) {
            self.stop_surplus(min)?;
        } else if !replanned {
            self.start(current, min, threads)?;
        } else {
            self.start(current, current + min, threads)?;
            self.stop_first(current)?;
        }
        oxserve_sys::return_free_memory();
        Ok(())
    }

    /// Stops the `count` oldest workers (after their current batch).
    fn stop_first(&self, count: usize) -> Result<(), ServeError> {
        let old: Vec<WorkerHandle> = self.lock_workers()?.drain(..count).collect();
        old.iter()
            .for_each(|worker| worker.request_stop(StopMode::AfterBatch));
        old.into_iter().for_each(WorkerHandle::join);
        Ok(())
    }

    /// Stops the workers beyond the first `keep`.
    fn stop_surplus(&self, keep: usize) -> Result<(), ServeError> {
        let surplus = self.lock_workers()?.split_off(keep);
        let mode = match keep {
            0 => StopMode::Drain,
            _ => StopMode::AfterBatch,
        };
        surplus.iter().for_each(|worker| worker.request_stop(mode));
        surplus.into_iter().for_each(WorkerHandle::join);
        if keep == 0 {
            self.lock_prepared()?.take();
        }
        Ok(())
    }

    /// Starts workers with `threads` intra-op threads each until `target` are live (`current`
    /// are).
    fn start(&self, current: usize, target: usize, threads: usize) -> Result<(), ServeError> {
        let spec = &self.spec;
        if let (true, Some(handler)) = (target > current, &spec.unusable_handler) {
            tracing::error!(model = %spec.name, "handler {handler:?} is neither built in nor runnable");
            return Err(self.failed());
        }
        let label = format!("{}_{}", spec.name, spec.version);
        for _ in current..target {
            let id = crate::worker::next_worker_id();
            let started = Instant::now();
            let graph = self.prepared_graph()?;
            let session = SessionSettings {
                intra_op_threads: threads,
                spinning: false,
                gpu: spec.settings.device.next_worker_gpu(&self.gpu_rotation),
            };
            let worker = WorkerHandle::spawn(WorkerContext {
                id,
                model_label: label.clone(),
                graph,
                handler: Arc::clone(&spec.handler),
                session,
                policy: BatchPolicy {
                    batch_size: spec.settings.batch_size,
                    max_batch_delay: spec.settings.max_batch_delay,
                    wait: spec.settings.batch_wait,
                },
                jobs: spec.jobs.clone(),
                stats: Arc::clone(&spec.stats),
            })?;
            let took = started.elapsed();
            if took > spec.settings.startup_timeout {
                tracing::error!(model = %spec.name, "a worker took {took:?} to start, more than startup_timeout");
                worker.request_stop(StopMode::AfterBatch);
                worker.join();
                return Err(self.failed());
            }
            spec.stats
                .record_worker_load(&format!("W-{id}-{label}"), took);
            self.lock_workers()?.push(worker);
        }
        Ok(())
    }

    fn failed(&self) -> ServeError {
        ServeError::WorkersFailed {
            model: self.spec.name.clone(),
            version: self.spec.version.clone(),
        }
    }

    /// The graph the workers' sessions share, prepared on first use. Called under `scaling`.
    fn prepared_graph(&self) -> Result<Arc<PreparedGraph>, ServeError> {
        let mut prepared = self.lock_prepared()?;
        if let Some(graph) = prepared.as_ref() {
            return Ok(Arc::clone(graph));
        }
        let path = &self.spec.graph_path;
        let onnx = std::fs::read(path).map_err(|error| {
            ServeError::Internal(format!("cannot read {}: {error}", path.display()))
        })?;
        let started = Instant::now();
        let for_gpu = self.spec.settings.device != Device::Cpu;
        let graph = Arc::new(PreparedGraph::prepare(onnx, for_gpu)?);
        tracing::info!(
            model = %self.spec.name,
            "graph prepared in {:?} (weights shared by all workers: {})",
            started.elapsed(),
            graph.shares_weights()
        );
        *prepared = Some(Arc::clone(&graph));
        Ok(graph)
    }

    fn lock_prepared(&self) -> Result<MutexGuard<'_, Option<Arc<PreparedGraph>>>, ServeError> {
        self.prepared
            .lock()
            .map_err(|_| poisoned("prepared graph lock"))
    }

    /// Workers ready to take jobs.
    pub fn live(&self) -> usize {
        self.workers
            .lock()
            .map(|workers| {
                workers
                    .iter()
                    .filter(|worker| worker.state.status() == WorkerStatus::Ready)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Every worker, for describe.
    pub fn snapshot(&self) -> Vec<WorkerInfo> {
        self.workers
            .lock()
            .map(|workers| {
                workers
                    .iter()
                    .map(|worker| WorkerInfo {
                        id: worker.id,
                        started: worker.state.started_at,
                        status: worker.state.status(),
                        gpu: worker.gpu,
                        threads: worker.threads,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

//! A loaded model version: its unpacked archive, handler, job queue and workers. `infer` is the
//! one entry point both transports call. Loading (unpacking, session builds) is blocking work:
//! callers run [`ModelVersion::load`] off the async runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use oxserve_archiver::unpack::{self, ExtractedArchive, Limits};
use tokio::sync::oneshot;

use crate::backend::{PreparedGraph, SessionSettings};
use crate::batching::{BatchPolicy, Job, JobQueue, RunHandle, StopMode};
use crate::error::ServeError;
use crate::handler::{Handler, RequestItem};
use crate::metrics::Metrics;
pub use crate::metrics::ModelStats;
use crate::prepare::Payload;
use crate::worker::{WorkerContext, WorkerHandle, WorkerStatus};

mod settings;

use settings::{apply_model_config, apply_models_entry, apply_overrides};
pub use settings::{Device, ModelSettings, SettingsOverride};

/// One worker, as the describe API shows it.
pub struct WorkerInfo {
    pub id: u32,
    pub started: SystemTime,
    pub status: WorkerStatus,
    /// The CUDA device its session runs on; `None` on the CPU.
    pub gpu: Option<u32>,
}

/// Where a model came from and what to call it.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The archive: a .mar/.tar.gz file or an unpacked folder.
    pub archive: PathBuf,
    /// Name to register under; the manifest's `modelName` when absent.
    pub name: Option<String>,
    /// `modelUrl` as TorchServe reports it (the archive's file name in the store).
    pub url: String,
    /// The archive's path when it was downloaded for this registration (removed on unregister).
    pub downloaded: Option<PathBuf>,
    pub settings: ModelSettings,
    /// Whether `settings` may be overridden by the archive's model-config.yaml.
    pub apply_model_config: bool,
    /// config.properties' `models` entries; the one for this name and version applies first.
    pub models_config: Option<Arc<crate::config::ModelsConfig>>,
    /// Management-API parameters, which win over model-config.yaml.
    pub overrides: SettingsOverride,
    pub loaded_at_startup: bool,
    /// The server's metrics, which the model's workers report to.
    pub metrics: Arc<Metrics>,
}

/// A request's answers, and how long it waited for a worker.
#[derive(Debug)]
pub struct Inferred {
    pub answers: Vec<serde_json::Value>,
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
    /// The ONNX graph in the unpacked archive.
    graph_path: PathBuf,
    /// The graph as the workers' sessions load it: prepared when the first worker starts,
    /// dropped when the last one stops (guarded by `scaling`).
    prepared: Mutex<Option<Arc<PreparedGraph>>>,
    queue: JobQueue,
    /// Live workers; a std Mutex, only locked for quick bookkeeping, never across an await.
    workers: Mutex<Vec<WorkerHandle>>,
    /// Serialises scale operations so two scale calls never interleave worker starts and stops.
    scaling: Mutex<()>,
    /// The scale API's current minimum and maximum.
    min_workers: AtomicUsize,
    max_workers: AtomicUsize,
    /// This model's turn in its own `deviceIds` rotation (see [`Device::next_worker_gpu`]).
    gpu_rotation: AtomicUsize,
    /// Set when the model is being unloaded: new requests are refused.
    closed: AtomicBool,
    /// A handler given at registration that cannot run; worker starts fail with it.
    unusable_handler: Option<String>,
    /// Keeps the unpacked archive alive; removed when the model is dropped.
    _unpacked: Option<tempfile::TempDir>,
}

impl ModelVersion {
    /// Unpacks the archive safely, checks its handler against the graph, and starts
    /// `min_workers` workers. Blocking.
    pub fn load(request: LoadRequest) -> Result<Arc<ModelVersion>, ServeError> {
        let (archive, unpacked) = unpack_archive(&request.archive)?;
        let manifest = &archive.manifest;
        let name = request
            .name
            .clone()
            .unwrap_or_else(|| manifest.model.model_name.clone());
        oxserve_archiver::manifest::validate_model_name(&name)?;
        let section = manifest.oxserve.as_ref().ok_or_else(|| {
            ServeError::BadRequest(format!(
                "{} was made by torch-model-archiver for a Python handler; oxserve serves ONNX graphs: re-archive it with oxserve-archiver",
                request.url
            ))
        })?;
        let mut handler_config = archive
            .handler
            .clone()
            .ok_or_else(|| ServeError::BadRequest("the archive has no handler config".into()))?;
        // A registration's `handler` replaces the archive's when it names a built-in handler;
        // anything else cannot run, so this model's workers will fail to start.
        let mut unusable_handler = None;
        if let Some(name) = request
            .overrides
            .handler
            .as_deref()
            .filter(|name| *name != manifest.model.handler)
        {
            match oxserve_archiver::HandlerConfig::builtin(name) {
                Some(config) if config.check_signature(&section.signature).is_ok() => {
                    handler_config = config
                }
                _ => unusable_handler = Some(name.to_string()),
            }
        }
        let mut settings = request.settings.clone();
        let version = manifest.model.model_version.clone();
        if let Some(entry) = request
            .models_config
            .as_ref()
            .and_then(|models| models.get(&name)?.get(&version))
        {
            apply_models_entry(&mut settings, entry);
        }
        let mut yaml_sets_workers = false;
        if request.apply_model_config {
            if let Some(config) = &archive.model_config {
                apply_model_config(&mut settings, config);
                yaml_sets_workers = matches!((config.min_workers, config.max_workers), (Some(min), Some(max)) if min > 0 && max >= min);
            }
        }
        apply_overrides(&mut settings, &request.overrides, yaml_sets_workers);
        let handler = Handler::new(
            handler_config,
            section.signature.clone(),
            &archive.root,
            settings.limit_max_image_pixels,
        )
        .map_err(|reason| {
            ServeError::BadRequest(format!(
                "the archive's handler does not fit its graph: {reason}"
            ))
        })?;
        let serialized =
            manifest.model.serialized_file.clone().ok_or_else(|| {
                ServeError::BadRequest("the manifest names no serializedFile".into())
            })?;
        let graph_path = archive.root.join(&serialized);
        if !graph_path.is_file() {
            return Err(ServeError::BadRequest(format!(
                "cannot read {serialized}: the archive has no such file"
            )));
        }
        let stats = Arc::new(ModelStats::new(
            &name,
            &manifest.model.model_version,
            request.metrics,
        ));
        let model = Arc::new(ModelVersion {
            name,
            version: manifest.model.model_version.clone(),
            url: request.url,
            downloaded: request.downloaded,
            loaded_at_startup: request.loaded_at_startup,
            stats,
            handler: Arc::new(handler),
            graph_path,
            prepared: Mutex::new(None),
            queue: JobQueue::new(settings.job_queue_size),
            workers: Mutex::new(Vec::new()),
            scaling: Mutex::new(()),
            min_workers: AtomicUsize::new(settings.min_workers),
            max_workers: AtomicUsize::new(settings.max_workers),
            gpu_rotation: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            unusable_handler,
            archive,
            settings,
            _unpacked: unpacked,
        });
        Ok(model)
    }

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
            let items = items.into_iter().map(Payload::Raw).collect();
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
        let submitted = self.queue.submit(job);
        drop(place);
        if submitted.is_err() {
            return Err(ServeError::NoWorker(self.name.clone()));
        }
        match tokio::time::timeout(self.settings.response_timeout, answer).await {
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

    /// The worker range the scale API last set: (min, max).
    pub fn worker_range(&self) -> (usize, usize) {
        (
            self.min_workers.load(Ordering::Acquire),
            self.max_workers.load(Ordering::Acquire),
        )
    }

    /// Sets the worker range and starts or stops workers until `min` are live. Stopping lets
    /// in-flight batches finish; scaling to zero first serves everything already queued.
    /// Blocking (session builds).
    pub fn scale(&self, min: usize, max: usize) -> Result<(), ServeError> {
        let _serialised = self
            .scaling
            .lock()
            .map_err(|_| ServeError::Internal("scale lock poisoned".into()))?;
        self.min_workers.store(min, Ordering::Release);
        self.max_workers.store(max.max(min), Ordering::Release);
        let current = self
            .workers
            .lock()
            .map_err(|_| ServeError::Internal("worker list poisoned".into()))?
            .len();
        if current > min {
            let surplus = {
                let mut workers = self
                    .workers
                    .lock()
                    .map_err(|_| ServeError::Internal("worker list poisoned".into()))?;
                let keep = workers.len() - (current - min);
                workers.split_off(keep)
            };
            let mode = if min == 0 {
                StopMode::Drain
            } else {
                StopMode::AfterBatch
            };
            surplus.iter().for_each(|worker| worker.request_stop(mode));
            surplus.into_iter().for_each(WorkerHandle::join);
            if min == 0 {
                self.lock_prepared()?.take();
            }
            crate::memory::return_free_memory();
            return Ok(());
        }
        if let (true, Some(handler)) = (min > current, &self.unusable_handler) {
            tracing::error!(model = %self.name, "handler {handler:?} is neither built in nor runnable");
            return Err(ServeError::WorkersFailed {
                model: self.name.clone(),
                version: self.version.clone(),
            });
        }
        for _ in current..min {
            let id = crate::worker::next_worker_id();
            let started = std::time::Instant::now();
            let graph = self.prepared_graph()?;
            let session = SessionSettings {
                intra_op_threads: self.settings.intra_op_threads,
                spinning: false,
                gpu: self.settings.device.next_worker_gpu(&self.gpu_rotation),
            };
            let worker = WorkerHandle::spawn(WorkerContext {
                id,
                model_label: format!("{}_{}", self.name, self.version),
                graph,
                handler: Arc::clone(&self.handler),
                session,
                policy: BatchPolicy {
                    batch_size: self.settings.batch_size,
                    max_batch_delay: self.settings.max_batch_delay,
                    wait: self.settings.batch_wait,
                },
                jobs: self.queue.receiver(),
                stats: Arc::clone(&self.stats),
            })?;
            let took = started.elapsed();
            if took > self.settings.startup_timeout {
                tracing::error!(model = %self.name, "a worker took {took:?} to start, more than startup_timeout");
                worker.request_stop(StopMode::AfterBatch);
                worker.join();
                return Err(ServeError::WorkersFailed {
                    model: self.name.clone(),
                    version: self.version.clone(),
                });
            }
            self.stats
                .record_worker_load(&format!("W-{id}-{}_{}", self.name, self.version), took);
            self.workers
                .lock()
                .map_err(|_| ServeError::Internal("worker list poisoned".into()))?
                .push(worker);
        }
        crate::memory::return_free_memory();
        Ok(())
    }

    /// The graph the workers' sessions share, prepared on first use. Called under `scaling`.
    fn prepared_graph(&self) -> Result<Arc<PreparedGraph>, ServeError> {
        let mut prepared = self.lock_prepared()?;
        if let Some(graph) = prepared.as_ref() {
            return Ok(Arc::clone(graph));
        }
        let onnx = std::fs::read(&self.graph_path).map_err(|error| {
            ServeError::Internal(format!(
                "cannot read {}: {error}",
                self.graph_path.display()
            ))
        })?;
        let started = Instant::now();
        let for_gpu = self.settings.device != Device::Cpu;
        let graph = Arc::new(PreparedGraph::prepare(onnx, for_gpu)?);
        tracing::info!(
            model = %self.name,
            "graph prepared in {:?} (weights shared by all workers: {})",
            started.elapsed(),
            graph.shares_weights()
        );
        *prepared = Some(Arc::clone(&graph));
        Ok(graph)
    }

    fn lock_prepared(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, Option<Arc<PreparedGraph>>>, ServeError> {
        self.prepared
            .lock()
            .map_err(|_| ServeError::Internal("prepared graph lock poisoned".into()))
    }

    /// Starts the initial workers. Blocking.
    pub fn start_workers(&self) -> Result<(), ServeError> {
        let (min, max) = self.worker_range();
        self.scale(min, max)
    }

    /// Workers ready to take jobs.
    pub fn live_workers(&self) -> usize {
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

    /// (id, start time, status) of every worker, for describe.
    pub fn worker_snapshot(&self) -> Vec<WorkerInfo> {
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
                    })
                    .collect()
            })
            .unwrap_or_default()
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

fn unpack_archive(
    path: &Path,
) -> Result<(ExtractedArchive, Option<tempfile::TempDir>), ServeError> {
    if path.is_dir() {
        return Ok((unpack::load_extracted(path)?, None));
    }
    let dir = tempfile::Builder::new()
        .prefix("oxserve-model-")
        .tempdir()
        .map_err(|error| {
            ServeError::Internal(format!("cannot create a folder to unpack into: {error}"))
        })?;
    let archive = unpack::extract(path, &dir.path().join("archive"), &Limits::default())?;
    Ok((archive, Some(dir)))
}

//! Loading a model version: unpacking its archive safely, merging its settings, building its
//! handler and checking it against the graph, and setting up its queue and worker pool (which
//! [`super::pool`] runs). Blocking: callers run it off the async runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use oxserve_archiver::unpack::{self, ExtractedArchive, Limits};

use crate::batching::JobQueue;
use crate::error::ServeError;
use crate::handler::Handler;
use crate::metrics::{Metrics, ModelStats};

use super::pool::{PoolSpec, WorkerPool};
use super::settings::{
    apply_model_config, apply_models_entry, apply_overrides, ModelSettings, SettingsOverride,
};
use super::ModelVersion;

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

impl ModelVersion {
    /// Unpacks the archive safely, merges the model's settings, checks its handler against the
    /// graph and sets up its queue and (empty) worker pool; [`ModelVersion::start_workers`]
    /// starts the workers. Blocking.
    pub fn load(request: LoadRequest) -> Result<Arc<ModelVersion>, ServeError> {
        let (archive, unpacked) = unpack_archive(&request.archive)?;
        let manifest = &archive.manifest;
        let name = request
            .name
            .clone()
            .unwrap_or_else(|| manifest.model.model_name.clone());
        oxserve_archiver::manifest::validate_model_name(&name)?;
        let section = manifest.oxserve.as_ref().ok_or_else(|| {
            ServeError::BadRequest(oxserve_archiver::torchserve::needs_conversion_message(
                &request.url,
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
        let manifest_version = manifest.model.model_version.clone();
        if let Some(entry) = request
            .models_config
            .as_ref()
            .and_then(|models| models.get(&name)?.get(&manifest_version))
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
        let handler = Arc::new(handler);
        let queue = JobQueue::new(settings.job_queue_size);
        let version = manifest.model.model_version.clone();
        let pool = WorkerPool::new(PoolSpec {
            name: name.clone(),
            version: version.clone(),
            graph_path,
            handler: Arc::clone(&handler),
            settings: settings.clone(),
            jobs: queue.receiver(),
            stats: Arc::clone(&stats),
            unusable_handler,
        });
        Ok(Arc::new(ModelVersion {
            name,
            version,
            url: request.url,
            downloaded: request.downloaded,
            loaded_at_startup: request.loaded_at_startup,
            stats,
            handler,
            queue,
            pool,
            closed: AtomicBool::new(false),
            archive,
            settings,
            _unpacked: unpacked,
        }))
    }
}

fn unpack_archive(
    path: &Path,
) -> Result<(ExtractedArchive, Option<tempfile::TempDir>), ServeError> {
    if path.is_dir() {
        return Ok((unpack::load_extracted(path)?, None));
    }
    let dir = super::unpacked::folder()?;
    let archive = unpack::extract(path, &dir.path().join("archive"), &Limits::default())?;
    Ok((archive, Some(dir)))
}

//! Keeping what was registered across restarts, as TorchServe's `SnapshotManager`: after startup,
//! after every state-changing management call and at shutdown, the configuration plus every model
//! version (archive, default, workers, batching) is written as a snapshot under
//! `$LOG_LOCATION/config` (the format and the atomic write are [`crate::snapshot`]'s). A call is
//! acknowledged only after its snapshot is on disk, so a server killed at any moment restarts with
//! every model it acknowledged. On start without `--ts-config` and `--ncs`, the newest snapshot is
//! the configuration, and its models are loaded back here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ServeError;
use crate::model::{LoadRequest, ModelVersion, SettingsOverride};
use crate::snapshot::{self, Snapshot, SnapshotKind, SnapshotModel};
use crate::state::AppState;

/// Called after every state-changing management call, before it is acknowledged: writes a
/// snapshot so the change survives a restart.
pub async fn changed(state: &Arc<AppState>) {
    save(state, SnapshotKind::Snapshot).await;
}

/// The server's state as a snapshot.
fn capture(state: &AppState, kind: SnapshotKind) -> Snapshot {
    let mut models: BTreeMap<String, BTreeMap<String, SnapshotModel>> = BTreeMap::new();
    for (model, is_default) in state.registry.inventory() {
        let (min_workers, max_workers) = model.worker_range();
        let settings = &model.settings;
        models.entry(model.name.clone()).or_default().insert(
            model.version.clone(),
            SnapshotModel {
                default_version: is_default,
                // A downloaded archive is restored from its copy in the store.
                mar_name: model
                    .downloaded
                    .as_ref()
                    .and_then(|path| path.file_name())
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_else(|| model.url.clone()),
                min_workers: min_workers as u32,
                max_workers: max_workers as u32,
                batch_size: settings.batch_size as u32,
                max_batch_delay: settings.max_batch_delay.as_millis() as u32,
                response_timeout: Some(settings.response_timeout.as_secs() as u32),
                startup_timeout: Some(settings.startup_timeout.as_secs() as u32),
                runtime_type: model.archive.manifest.runtime.clone(),
                parallel_level: None,
            },
        );
    }
    let mut properties = state.config.properties.clone();
    properties.remove(snapshot::MODEL_SNAPSHOT_KEY);
    Snapshot::new(kind, properties, models)
}

/// Writes a snapshot now (unless snapshots are off) and returns once it is on disk.
pub async fn save(state: &Arc<AppState>, kind: SnapshotKind) {
    if state.config.ncs {
        return;
    }
    let state = Arc::clone(state);
    let written = tokio::task::spawn_blocking(move || {
        let _serialised = state
            .snapshot_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = snapshot::default_dir(Some(&state.config.log_location));
        let written = snapshot::write(&dir, &capture(&state, kind));
        // Keep the newest few; older ones are history nobody restores.
        let _ = snapshot::prune(&dir, 20);
        written
    })
    .await;
    match written {
        Ok(Ok(path)) => tracing::debug!("snapshot written to {}", path.display()),
        Ok(Err(error)) => tracing::error!("cannot write a config snapshot: {error}"),
        Err(_) => tracing::error!("writing a config snapshot panicked"),
    }
}

/// Loads every model version a restored snapshot lists, with the settings it recorded.
pub async fn restore(state: &Arc<AppState>, snapshot: &Snapshot) {
    let store = state.config.model_store.clone();
    for (name, versions) in &snapshot.models {
        for (version, entry) in versions {
            let located = crate::download::locate(
                &entry.mar_name,
                &state.config.url_policy,
                store.as_deref(),
            )
            .await;
            let archive = match located {
                Ok(located) => located.path,
                Err(error) => {
                    tracing::error!(
                        "snapshot: cannot find {} for {name} {version}: {error}",
                        entry.mar_name
                    );
                    continue;
                }
            };
            let request = LoadRequest {
                archive,
                downloaded: None,
                name: Some(name.clone()),
                url: entry.mar_name.clone(),
                settings: crate::model::ModelSettings::defaults(&state.config),
                apply_model_config: true,
                models_config: None,
                overrides: SettingsOverride {
                    batch_size: Some(entry.batch_size.max(1) as usize),
                    max_batch_delay: Some(Duration::from_millis(u64::from(entry.max_batch_delay))),
                    response_timeout: entry
                        .response_timeout
                        .map(|seconds| Duration::from_secs(u64::from(seconds))),
                    startup_timeout: entry
                        .startup_timeout
                        .map(|seconds| Duration::from_secs(u64::from(seconds))),
                    handler: None,
                    initial_workers: None,
                    workers: Some((entry.min_workers as usize, entry.max_workers as usize)),
                },
                loaded_at_startup: true,
                metrics: Arc::clone(&state.metrics),
            };
            let loaded = tokio::task::spawn_blocking(move || {
                let model = ModelVersion::load(request)?;
                model.start_workers()?;
                Ok::<_, ServeError>(model)
            })
            .await
            .unwrap_or_else(|_| Err(ServeError::Internal("model loading panicked".into())));
            match loaded {
                Ok(model) => {
                    if model.version != *version {
                        tracing::warn!(
                            "snapshot: {} now holds version {}, not {version}",
                            entry.mar_name,
                            model.version
                        );
                    }
                    if state.registry.add(model).is_err() {
                        tracing::error!("snapshot: {name} {version} is listed twice");
                    }
                }
                Err(error) => tracing::error!("snapshot: cannot load {name} {version}: {error}"),
            }
        }
    }
    for (name, versions) in &snapshot.models {
        for (version, entry) in versions {
            if entry.default_version {
                let _ = state.registry.set_default(name, version);
            }
        }
    }
}

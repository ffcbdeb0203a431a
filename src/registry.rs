//! Models by name → versions → default version. Lookups never do I/O and never wait: the map is
//! behind a std `RwLock` held only for the lookup itself. Loading happens elsewhere (off the async
//! runtime); the registry only records the result. The first version registered under a name is
//! its default, as in TorchServe.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::error::ServeError;
use crate::model::ModelVersion;

#[derive(Default)]
struct ModelEntry {
    versions: BTreeMap<String, Arc<ModelVersion>>,
    default_version: String,
}

/// Every registered model.
#[derive(Default)]
pub struct Registry {
    /// Read on every request, written on (un)registration; never held across an await.
    models: RwLock<BTreeMap<String, ModelEntry>>,
}

/// Why a registration was refused.
#[derive(Debug)]
pub enum AddError {
    /// That name and version are already registered.
    VersionExists { name: String, version: String },
}

impl Registry {
    /// Runs `f` on the named model's entry, under the read lock.
    fn with_entry<T>(
        &self,
        name: &str,
        f: impl FnOnce(&ModelEntry) -> Result<T, ServeError>,
    ) -> Result<T, ServeError> {
        let models = self
            .models
            .read()
            .map_err(|_| ServeError::Internal("registry poisoned".into()))?;
        let entry = models
            .get(name)
            .ok_or_else(|| ServeError::ModelNotFound(name.to_string()))?;
        f(entry)
    }

    /// The model version to serve: the default one when `version` is absent.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<ModelVersion>, ServeError> {
        self.with_entry(name, |entry| {
            let wanted = version.unwrap_or(&entry.default_version);
            entry
                .versions
                .get(wanted)
                .cloned()
                .ok_or_else(|| ServeError::ModelVersionNotFound {
                    model: name.to_string(),
                    version: wanted.to_string(),
                })
        })
    }

    /// Every version of a model, default first.
    pub fn versions(&self, name: &str) -> Result<Vec<(Arc<ModelVersion>, bool)>, ServeError> {
        self.with_entry(name, |entry| {
            let mut all: Vec<(Arc<ModelVersion>, bool)> = entry
                .versions
                .iter()
                .map(|(version, model)| (Arc::clone(model), *version == entry.default_version))
                .collect();
            all.sort_by_key(|(_, is_default)| !is_default);
            Ok(all)
        })
    }

    /// The default version of every model, sorted by name (TorchServe's list order).
    pub fn defaults(&self) -> Vec<Arc<ModelVersion>> {
        self.models
            .read()
            .map(|models| {
                models
                    .values()
                    .filter_map(|entry| entry.versions.get(&entry.default_version).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every model version.
    pub fn all(&self) -> Vec<Arc<ModelVersion>> {
        self.models
            .read()
            .map(|models| {
                models
                    .values()
                    .flat_map(|entry| entry.versions.values().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a loaded model version.
    pub fn add(&self, model: Arc<ModelVersion>) -> Result<(), AddError> {
        let mut models = self
            .models
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = models.entry(model.name.clone()).or_default();
        if entry.versions.contains_key(&model.version) {
            return Err(AddError::VersionExists {
                name: model.name.clone(),
                version: model.version.clone(),
            });
        }
        if entry.versions.is_empty() {
            entry.default_version = model.version.clone();
        }
        entry.versions.insert(model.version.clone(), model);
        Ok(())
    }

    /// Removes a version (the default one when `version` is absent), as TorchServe's
    /// `unregisterModel`: the default version cannot go while other versions remain (403).
    pub fn remove(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<ModelVersion>, ServeError> {
        let mut models = self
            .models
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = models
            .get_mut(name)
            .ok_or_else(|| ServeError::ModelNotFound(name.to_string()))?;
        let version = version.unwrap_or(&entry.default_version).to_string();
        if !entry.versions.contains_key(&version) {
            return Err(ServeError::ModelVersionNotFound {
                model: name.to_string(),
                version,
            });
        }
        if version == entry.default_version && entry.versions.len() > 1 {
            return Err(ServeError::DefaultVersionInUse(name.to_string()));
        }
        let removed =
            entry
                .versions
                .remove(&version)
                .ok_or_else(|| ServeError::ModelVersionNotFound {
                    model: name.to_string(),
                    version,
                })?;
        if entry.versions.is_empty() {
            models.remove(name);
        }
        Ok(removed)
    }

    /// Makes `version` the default of `name`.
    pub fn set_default(&self, name: &str, version: &str) -> Result<(), ServeError> {
        let mut models = self
            .models
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = models
            .get_mut(name)
            .ok_or_else(|| ServeError::ModelNotFound(name.to_string()))?;
        if !entry.versions.contains_key(version) {
            return Err(ServeError::DefaultVersionNotFound {
                model: name.to_string(),
                version: version.to_string(),
            });
        }
        entry.default_version = version.to_string();
        Ok(())
    }

    /// Every (name, version, is_default), for snapshots.
    pub fn inventory(&self) -> Vec<(Arc<ModelVersion>, bool)> {
        self.models
            .read()
            .map(|models| {
                models
                    .values()
                    .flat_map(|entry| {
                        entry.versions.iter().map(|(version, model)| {
                            (Arc::clone(model), *version == entry.default_version)
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes every model and returns them, for shutdown.
    pub fn drain(&self) -> Vec<Arc<ModelVersion>> {
        let mut models = self
            .models
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *models)
            .into_values()
            .flat_map(|entry| entry.versions.into_values())
            .collect()
    }
}

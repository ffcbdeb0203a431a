//! TorchServe's config snapshots (`docs/snapshot.md`, `snapshot/FSSnapshotSerializer.java`,
//! `snapshot/SnapshotManager.java`): a Java-properties file `<yyyyMMddHHmmssSSS>-<kind>.cfg` in
//! the snapshot folder holding the server's config keys plus `model_snapshot`, a JSON record of
//! every registered model version and its worker/batch settings.
//!
//! The server writes one at startup, after each state-changing management call and at shutdown
//! ([`write`]), and, started without `--ts-config`, restores the newest one ([`latest`]).
//! Writes are atomic (temp file, fsync, rename without overwrite, fsync of the folder) and
//! `model_snapshot` is the last line, so a torn or truncated file never parses; [`latest`] skips
//! anything that does not parse and never reads temp files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Local, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ServeError;
use crate::properties;

/// The property holding the models' JSON.
pub const MODEL_SNAPSHOT_KEY: &str = "model_snapshot";

/// Snapshot files larger than this are not snapshots (a guard against reading garbage).
const MAX_SNAPSHOT_BYTES: u64 = 16 << 20;

/// Temp files are `.snapshot-<random>.tmp`: never a snapshot name, so never read.
const TEMP_PREFIX: &str = ".snapshot-";
const TEMP_SUFFIX: &str = ".tmp";

/// When a snapshot is taken; the file name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// After a successful startup.
    Startup,
    /// After a management call that changed the models.
    Snapshot,
    /// At `--stop`.
    Shutdown,
}

impl SnapshotKind {
    fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Startup => "startup",
            SnapshotKind::Snapshot => "snapshot",
            SnapshotKind::Shutdown => "shutdown",
        }
    }
}

/// One snapshot: the config keys and the models, by name then version.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Every config key except `model_snapshot`.
    pub properties: BTreeMap<String, String>,
    pub models: BTreeMap<String, BTreeMap<String, SnapshotModel>>,
    /// Milliseconds since the epoch.
    pub created: i64,
    /// The file name, `<yyyyMMddHHmmssSSS>-<kind>.cfg` (local time, as TorchServe).
    pub name: String,
}

/// One model version as TorchServe's `Model.getModelState` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotModel {
    pub default_version: bool,
    /// The archive's file name in the model store.
    pub mar_name: String,
    pub min_workers: u32,
    pub max_workers: u32,
    pub batch_size: u32,
    /// Milliseconds.
    pub max_batch_delay: u32,
    /// Seconds; absent in old snapshots (then the archive's default applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<u32>,
    /// Seconds; absent in snapshots older than TorchServe 0.11.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<u32>,
    #[serde(default = "python")]
    pub runtime_type: String,
    /// Written by TorchServe only when > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_level: Option<u32>,
}

fn python() -> String {
    "python".into()
}

/// The JSON in `model_snapshot`, fields in TorchServe's order.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelSnapshotJson {
    name: String,
    #[serde(default)]
    model_count: usize,
    created: i64,
    models: BTreeMap<String, BTreeMap<String, SnapshotModel>>,
}

impl Snapshot {
    /// A snapshot taken now, named as TorchServe names it.
    pub fn new(
        kind: SnapshotKind,
        properties: BTreeMap<String, String>,
        models: BTreeMap<String, BTreeMap<String, SnapshotModel>>,
    ) -> Snapshot {
        let now = Local::now();
        Snapshot {
            properties,
            models,
            created: now.timestamp_millis(),
            name: format!("{}-{}.cfg", now.format("%Y%m%d%H%M%S%3f"), kind.as_str()),
        }
    }

    /// Model versions recorded (`modelCount`).
    pub fn model_count(&self) -> usize {
        self.models.values().map(BTreeMap::len).sum()
    }
}

/// The snapshot folder: `$LOG_LOCATION/config`, else `./logs/config`.
pub fn default_dir(log_location: Option<&Path>) -> PathBuf {
    log_location.unwrap_or(Path::new("logs")).join("config")
}

/// Whether `name` is a snapshot file name: 17 digits, `-`, a lowercase word, `.cfg`.
pub fn is_snapshot_name(name: &str) -> bool {
    let Some((stamp, rest)) = name.split_once('-') else {
        return false;
    };
    let Some(kind) = rest.strip_suffix(".cfg") else {
        return false;
    };
    stamp.len() == 17
        && stamp.bytes().all(|b| b.is_ascii_digit())
        && !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase())
}

/// Writes `snapshot` as `dir/<snapshot.name>` (creating `dir`), atomically; an existing file of
/// that name is left alone and is an error (TorchServe also refuses to overwrite).
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<PathBuf, ServeError> {
    if !is_snapshot_name(&snapshot.name) {
        return Err(ServeError::Internal(format!(
            "{:?} is not a snapshot file name",
            snapshot.name
        )));
    }
    let io_error = |what: &str, error: std::io::Error| {
        ServeError::Internal(format!("snapshot {}: {what}: {error}", snapshot.name))
    };
    std::fs::create_dir_all(dir).map_err(|error| io_error("cannot create folder", error))?;
    let text = render(snapshot)?;
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(|error| io_error("cannot create temp file", error))?;
    temp.write_all(text.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|error| io_error("cannot write", error))?;
    let path = dir.join(&snapshot.name);
    temp.persist_noclobber(&path)
        .map_err(|error| io_error("cannot rename into place", error.error))?;
    std::fs::File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(|error| io_error("cannot sync folder", error))?;
    Ok(path)
}

/// The file's text: `Properties.store` layout, `model_snapshot` last.
fn render(snapshot: &Snapshot) -> Result<String, ServeError> {
    let json = ModelSnapshotJson {
        name: snapshot.name.clone(),
        model_count: snapshot.model_count(),
        created: snapshot.created,
        models: snapshot.models.clone(),
    };
    let json = serde_json::to_string_pretty(&json)
        .map_err(|error| ServeError::Internal(format!("snapshot json: {error}")))?;
    let date = DateTime::<Utc>::from_timestamp_millis(snapshot.created)
        .unwrap_or_default()
        .format("%a %b %d %H:%M:%S UTC %Y")
        .to_string();
    let entries = snapshot
        .properties
        .iter()
        .filter(|(key, _)| key.as_str() != MODEL_SNAPSHOT_KEY)
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .chain([(MODEL_SNAPSHOT_KEY, json.as_str())]);
    Ok(properties::store(&["Saving snapshot", &date], entries))
}

/// Reads one snapshot file.
pub fn read(path: &Path) -> Result<Snapshot, ServeError> {
    let invalid = |why: String| ServeError::Internal(format!("{}: {why}", path.display()));
    let metadata = std::fs::symlink_metadata(path).map_err(|error| invalid(error.to_string()))?;
    if !metadata.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    if metadata.len() > MAX_SNAPSHOT_BYTES {
        return Err(invalid(format!("larger than {MAX_SNAPSHOT_BYTES} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|error| invalid(error.to_string()))?;
    // TorchServe writes UTF-8; Java's own reader would take ISO-8859-1.
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|error| error.into_bytes().iter().map(|&b| char::from(b)).collect());
    let mut properties = properties::load(&text).map_err(|error| invalid(error.to_string()))?;
    let json = properties
        .remove(MODEL_SNAPSHOT_KEY)
        .ok_or_else(|| invalid(format!("no {MODEL_SNAPSHOT_KEY}")))?;
    let json: ModelSnapshotJson = serde_json::from_str(&json)
        .map_err(|error| invalid(format!("{MODEL_SNAPSHOT_KEY}: {error}")))?;
    Ok(Snapshot {
        properties,
        models: json.models,
        created: json.created,
        name: json.name,
    })
}

/// Snapshot file names in `dir`, newest first (the name's timestamp orders them).
fn snapshot_names(dir: &Path) -> Result<Vec<String>, ServeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(ServeError::Internal(format!(
                "cannot list snapshots in {}: {error}",
                dir.display()
            )))
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| is_snapshot_name(name))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names)
}

/// The newest snapshot in `dir` that parses; unreadable or malformed files are skipped with a
/// warning. `None` when there is none (or no folder).
pub fn latest(dir: &Path) -> Result<Option<Snapshot>, ServeError> {
    for name in snapshot_names(dir)? {
        match read(&dir.join(&name)) {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(error) => tracing::warn!("skipping snapshot {error}"),
        }
    }
    Ok(None)
}

/// Deletes all but the newest `keep` snapshots, and temp files left by a crash more than ten
/// minutes ago. Returns how many files were removed.
pub fn prune(dir: &Path, keep: usize) -> Result<usize, ServeError> {
    let mut doomed: Vec<PathBuf> = snapshot_names(dir)?
        .into_iter()
        .skip(keep)
        .map(|name| dir.join(name))
        .collect();
    let stale_before = SystemTime::now() - Duration::from_secs(600);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_temp = name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX);
            let modified = entry.metadata().and_then(|metadata| metadata.modified());
            if is_temp && modified.is_ok_and(|time| time < stale_before) {
                doomed.push(entry.path());
            }
        }
    }
    let mut removed = 0;
    for path in doomed {
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(error) => tracing::warn!("cannot remove {}: {error}", path.display()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;

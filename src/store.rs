//! The model store: which archives `--models` / `load_models` name, and how `url`s resolve to files
//! inside the store. Only files directly in the store are served: no `..`, no subfolders, no
//! symlinks leading out of it.

use std::path::{Path, PathBuf};

use crate::error::ServeError;

/// One startup model: an optional name override and the archive to load.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreEntry {
    pub name: Option<String>,
    pub path: PathBuf,
    /// The archive's file name, reported as `modelUrl`.
    pub url: String,
}

/// Whether a store entry looks like a model archive.
fn is_archive(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    name.ends_with(".mar")
        || name.ends_with(".tar.gz")
        || path.join("MAR-INF/MANIFEST.json").is_file()
}

/// Resolves `--models` items (`all`, `a.mar`, `name=a.mar`) against the store.
pub fn startup_models(
    store: Option<&Path>,
    items: &[String],
) -> Result<Vec<StoreEntry>, ServeError> {
    let mut entries = Vec::new();
    for item in items {
        let store =
            store.ok_or_else(|| ServeError::BadRequest("--models needs --model-store".into()))?;
        if item == "all" {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(store)
                .map_err(|error| {
                    ServeError::BadRequest(format!(
                        "cannot read model store {}: {error}",
                        store.display()
                    ))
                })?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| is_archive(path))
                .collect();
            paths.sort();
            for path in paths {
                let url = path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("")
                    .to_string();
                entries.push(StoreEntry {
                    name: None,
                    path,
                    url,
                });
            }
            continue;
        }
        let (name, url) = match item.split_once('=') {
            Some((name, url)) => (Some(name.to_string()), url),
            None => (None, item.as_str()),
        };
        entries.push(StoreEntry {
            name,
            path: resolve(store, url)?,
            url: url.to_string(),
        });
    }
    Ok(entries)
}

/// A `url` naming a file directly inside the store, with TorchServe's 404 answers
/// (`ModelArchive.downloadModel`) for everything else.
pub fn resolve(store: &Path, url: &str) -> Result<PathBuf, ServeError> {
    if url.is_empty() {
        return Err(ServeError::ArchiveNotFound("empty url".into()));
    }
    let lowered = url.to_ascii_lowercase();
    if url.contains("..") || lowered.contains("%2e%2e") {
        return Err(ServeError::ArchiveNotFound(format!(
            "Relative path is not allowed in url: {url}"
        )));
    }
    if url.contains("://") {
        return Err(ServeError::ArchiveNotFound(format!(
            "Given URL {url} does not match any allowed URL(s)"
        )));
    }
    let not_found = || ServeError::ArchiveNotFound(format!("Model not found at: {url}"));
    if url.contains('/') || url.contains('\\') {
        return Err(not_found());
    }
    let path = store.join(url);
    let real_store = store
        .canonicalize()
        .map_err(|_| ServeError::ArchiveNotFound("Model store has not been configured.".into()))?;
    let real = path.canonicalize().map_err(|_| not_found())?;
    if real.parent() != Some(real_store.as_path()) {
        return Err(not_found());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_urls_are_refused() {
        let store = tempfile::tempdir().expect("tempdir");
        std::fs::write(store.path().join("a.mar"), b"x").expect("write");
        assert!(resolve(store.path(), "a.mar").is_ok());
        for bad in ["", "../a.mar", "sub/a.mar", "http://x/a.mar", "missing.mar"] {
            assert!(resolve(store.path(), bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/etc/passwd", store.path().join("link.mar")).expect("symlink");
        assert!(resolve(store.path(), "link.mar").is_err());
    }

    #[test]
    fn all_lists_archives_sorted() {
        let store = tempfile::tempdir().expect("tempdir");
        for name in ["b.mar", "a.mar", "notes.txt"] {
            std::fs::write(store.path().join(name), b"x").expect("write");
        }
        let entries = startup_models(Some(store.path()), &["all".to_string()]).expect("lists");
        let urls: Vec<&str> = entries.iter().map(|entry| entry.url.as_str()).collect();
        assert_eq!(urls, ["a.mar", "b.mar"]);
    }
}

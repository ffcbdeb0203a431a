//! The model store: which archives `--models` / `load_models` name. Whether a `url` may be
//! served, and where its file is, is [`crate::download::locate`]'s decision.

use std::path::{Path, PathBuf};

use crate::error::ServeError;

/// One startup model: an optional name override and the archive's url (a store file name or
/// an allowed URL), reported as `modelUrl`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreEntry {
    pub name: Option<String>,
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
                entries.push(StoreEntry { name: None, url });
            }
            continue;
        }
        let (name, url) = match item.split_once('=') {
            Some((name, url)) => (Some(name.to_string()), url),
            None => (None, item.as_str()),
        };
        entries.push(StoreEntry {
            name,
            url: url.to_string(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

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

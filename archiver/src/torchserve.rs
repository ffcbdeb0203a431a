//! Reading an archive made by torch-model-archiver for `oxserve-archiver convert`: which file is
//! the model, which handler of ours replaces its handler, which files are kept as they are, and
//! what cannot be carried (custom Python handlers, requirements, Python helper code). The archive
//! is untrusted: names from its manifest must be plain file names inside it.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{ArchiveError, Result};
use crate::handler_config::BUILTIN_HANDLERS;
use crate::manifest::MANIFEST_PATH;
use crate::unpack::{ExtractedArchive, Limits};

/// What converting an old archive will do.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertPlan {
    pub model_name: String,
    pub version: String,
    pub runtime: String,
    /// A built-in handler name or the handler config file the user gave.
    pub handler: String,
    pub serialized_file: PathBuf,
    pub model_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    /// Files kept as they are: (archive path, file).
    pub carried_files: Vec<(String, PathBuf)>,
    /// One line per part of the old archive that the new one does not carry, and why.
    pub not_carried: Vec<String>,
}

/// The server's answer to an archive made by torch-model-archiver (a PyTorch model and a Python
/// handler, no ONNX graph and handler config): the command that converts it.
pub fn needs_conversion_message(archive: &str) -> String {
    format!(
        "{archive} is a TorchServe archive (a PyTorch model for a Python handler), which oxserve cannot serve as it is: convert it with `oxserve-archiver convert {archive}` and register the converted archive"
    )
}

/// TorchServe's name for a default handler, as its manifests record it (`image_classifier`,
/// possibly with a `:handle` entry point), mapped to our built-in handler of the same name.
pub fn builtin_handler(recorded: &str) -> Option<&'static str> {
    let name = recorded.split(':').next().unwrap_or(recorded);
    let name = name.strip_prefix("ts.torch_handler.").unwrap_or(name);
    BUILTIN_HANDLERS
        .into_iter()
        .find(|builtin| *builtin == name && *builtin != "tensor")
}

/// Works out the conversion of an unpacked TorchServe archive. `handler` is the user's
/// `--handler`, which replaces the archive's.
pub fn plan(archive: &ExtractedArchive, handler: Option<&str>) -> Result<ConvertPlan> {
    let manifest = &archive.manifest;
    if manifest.oxserve.is_some() {
        return Err(ArchiveError::InvalidArgument(format!(
            "{} is already an oxserve archive: serve it as it is",
            manifest.model.model_name
        )));
    }
    let root = &archive.root;
    let member = |name: &str, field: &str| -> Result<PathBuf> {
        let path = plain_member(root, name).ok_or_else(|| {
            ArchiveError::MalformedArchive(format!(
                "the manifest's {field} {name:?} is not a file at the archive's root"
            ))
        })?;
        Ok(path)
    };
    let serialized_name = manifest.model.serialized_file.as_deref().ok_or_else(|| {
        ArchiveError::MalformedArchive(
            "the manifest names no serializedFile: there is no model to convert".to_string(),
        )
    })?;
    let serialized_file = member(serialized_name, "serializedFile")?;
    let model_file = match manifest.model.model_file.as_deref() {
        Some(name) => Some(member(name, "modelFile")?),
        None => None,
    };
    let config_file = match manifest.model.config_file.as_deref() {
        Some(name) => Some(member(name, "configFile")?),
        None => None,
    };
    let recorded = manifest.model.handler.as_str();
    let mut not_carried = Vec::new();
    let mut skip: Vec<&str> = vec![serialized_name];
    skip.extend(manifest.model.model_file.as_deref());
    skip.extend(manifest.model.config_file.as_deref());
    let handler = match (handler, builtin_handler(recorded)) {
        (Some(chosen), _) => {
            if builtin_handler(recorded).is_none() {
                not_carried.push(format!(
                    "{recorded}: a custom Python handler, which oxserve never runs; replaced by --handler {chosen}"
                ));
            }
            chosen.to_string()
        }
        (None, Some(builtin)) => builtin.to_string(),
        (None, None) => {
            return Err(ArchiveError::InvalidHandler(custom_handler_advice(
                root, recorded,
            )))
        }
    };
    if builtin_handler(recorded).is_none() {
        skip.push(recorded.split(':').next().unwrap_or(recorded));
    }
    if let Some(requirements) = manifest.model.requirements_file.as_deref() {
        skip.push(requirements);
        not_carried.push(format!(
            "{requirements}: Python requirements, never installed (oxserve runs no Python)"
        ));
    }
    let mut carried_files = Vec::new();
    let mut budget = Limits::default().max_entries;
    collect(
        root,
        "",
        &skip,
        &mut carried_files,
        &mut not_carried,
        &mut budget,
    )?;
    Ok(ConvertPlan {
        model_name: manifest.model.model_name.clone(),
        version: manifest.model.model_version.clone(),
        runtime: manifest.runtime.clone(),
        handler,
        serialized_file,
        model_file,
        config_file,
        carried_files,
        not_carried,
    })
}

/// The one line telling a user with a custom handler what to do instead.
fn custom_handler_advice(root: &Path, recorded: &str) -> String {
    let file = recorded.split(':').next().unwrap_or(recorded);
    let source = plain_member(root, file)
        .and_then(|path| fs::read(path).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).to_string())
        .unwrap_or_default();
    let suggestion = [
        ("ImageClassifier", "image_classifier"),
        ("ImageSegmenter", "image_segmenter"),
        ("ObjectDetector", "object_detector"),
        ("TextClassifier", "text_classifier"),
    ]
    .into_iter()
    .find(|(class, _)| source.contains(class))
    .map(|(class, builtin)| {
        format!(
            "it builds on TorchServe's {class}: rerun with --handler {builtin}, or with --handler my_handler.json (a handler config, like examples/digits/mnist_handler.json) if it changes the pre- or post-processing"
        )
    })
    .unwrap_or_else(|| {
        format!(
            "rerun with a built-in handler ({}) or --handler my_handler.json, a handler config describing its pre- and post-processing",
            BUILTIN_HANDLERS.join(", ")
        )
    });
    format!("the archive's handler {recorded} is custom Python code, which oxserve never runs; {suggestion}")
}

/// `name` as a file directly in `root`, when it is a plain file name of a regular file there.
fn plain_member(root: &Path, name: &str) -> Option<PathBuf> {
    let mut components = Path::new(name).components();
    let single = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    );
    let path = root.join(name);
    let regular = fs::symlink_metadata(&path)
        .map(|metadata| metadata.is_file())
        .unwrap_or(false);
    (single && regular).then_some(path)
}

/// Every regular file of the archive except the manifest folder and `skip`, with its path.
fn collect(
    dir: &Path,
    prefix: &str,
    skip: &[&str],
    carried: &mut Vec<(String, PathBuf)>,
    not_carried: &mut Vec<String>,
    budget: &mut usize,
) -> Result<()> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|error| ArchiveError::io(format!("cannot list {}", dir.display()), error))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    paths.sort();
    for path in paths {
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let archive_path = format!("{prefix}{name}");
        if *budget == 0 {
            return Err(ArchiveError::UnsafeArchive(format!(
                "more than {} entries",
                Limits::default().max_entries
            )));
        }
        *budget -= 1;
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if archive_path == MANIFEST_PATH.split('/').next().unwrap_or("MAR-INF")
                || name == "__pycache__"
            {
                continue;
            }
            collect(
                &path,
                &format!("{archive_path}/"),
                skip,
                carried,
                not_carried,
                budget,
            )?;
        } else if !metadata.is_file() {
            not_carried.push(format!("{archive_path}: not a regular file"));
        } else if skip.contains(&archive_path.as_str()) {
            continue;
        } else if name.ends_with(".py") {
            not_carried.push(format!(
                "{archive_path}: Python code, which oxserve never runs"
            ));
        } else {
            carried.push((archive_path, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchserve_handler_names_map_to_ours() {
        assert_eq!(
            builtin_handler("image_classifier"),
            Some("image_classifier")
        );
        assert_eq!(
            builtin_handler("ts.torch_handler.object_detector:handle"),
            Some("object_detector")
        );
        assert_eq!(builtin_handler("base_handler"), Some("base_handler"));
        assert_eq!(builtin_handler("mnist_handler.py"), None);
        assert_eq!(builtin_handler("tensor"), None);
    }

    #[test]
    fn manifest_names_must_be_plain_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("model.pt"), b"x").expect("write");
        assert!(plain_member(dir.path(), "model.pt").is_some());
        for bad in ["../model.pt", "/etc/passwd", "a/model.pt", "", "missing.pt"] {
            assert!(plain_member(dir.path(), bad).is_none(), "{bad}");
        }
    }
}

//! Packing a model archive as torch-model-archiver does: every artifact flat at the root plus
//! `MAR-INF/MANIFEST.json`, in one of TorchServe's four formats. oxserve adds the resolved handler
//! config (`MAR-INF/handler.json`) and the graph's signature. Output is written to a temporary
//! file or folder beside the target and renamed into place, so a failure never leaves a partial
//! archive behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::convert::{self, ConvertOptions};
use crate::error::{ArchiveError, Result};
use crate::handler_config::{HandlerConfig, BUILTIN_HANDLERS};
use crate::manifest::{
    self, Manifest, ModelSection, OxserveSection, FORMAT_VERSION, HANDLER_CONFIG_PATH,
    MANIFEST_PATH,
};
use crate::model_config::ModelConfig;
use crate::{graph, runtime};

/// TorchServe's `--archive-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// Deflated zip, `<name>.mar`.
    Default,
    /// Stored (uncompressed) zip, `<name>.mar`.
    ZipStore,
    /// Gzipped tar, `<name>.tar.gz`, with a `<name>/` root folder.
    Tgz,
    /// A plain folder `<name>/`.
    NoArchive,
}

impl ArchiveFormat {
    /// Parses TorchServe's spelling.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "default" => Ok(Self::Default),
            "zip-store" => Ok(Self::ZipStore),
            "tgz" => Ok(Self::Tgz),
            "no-archive" => Ok(Self::NoArchive),
            other => Err(ArchiveError::InvalidArgument(format!(
                "archive format {other:?} is not one of default, zip-store, tgz, no-archive"
            ))),
        }
    }

    /// The output path for a model in an export folder.
    pub fn output_path(self, export_path: &Path, model_name: &str) -> PathBuf {
        match self {
            Self::Default | Self::ZipStore => export_path.join(format!("{model_name}.mar")),
            Self::Tgz => export_path.join(format!("{model_name}.tar.gz")),
            Self::NoArchive => export_path.join(model_name),
        }
    }
}

/// Everything torch-model-archiver's flags say, already split and typed.
#[derive(Debug, Clone)]
pub struct PackRequest {
    pub model_name: String,
    pub version: String,
    pub serialized_file: Option<PathBuf>,
    pub model_file: Option<PathBuf>,
    /// A built-in handler name, or a handler config file (.json/.yaml/.yml).
    pub handler: String,
    /// The `--extra-files` items, already split on commas: files, folders or glob patterns.
    pub extra_files: Vec<String>,
    pub runtime: String,
    pub export_path: PathBuf,
    pub archive_format: ArchiveFormat,
    pub force: bool,
    pub requirements_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    /// Explicit ONNX Runtime library, if the user named one.
    pub ort_library: Option<PathBuf>,
    /// How to convert a serialized file that is a PyTorch model rather than ONNX.
    pub convert: ConvertOptions,
    /// Files stored under the given archive paths as they are (what `convert` keeps of an old
    /// archive: extra files with their folders, in place).
    pub carried_files: Vec<(String, PathBuf)>,
}

/// What a successful pack produced.
#[derive(Debug)]
pub struct PackOutcome {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Things the user should know that did not stop packing (e.g. a carried requirements file).
    pub warnings: Vec<String>,
    /// What a conversion did and how well its check agreed; empty when the graph was ONNX.
    pub notes: Vec<String>,
}

/// One file to put in the archive.
struct Entry {
    archive_path: String,
    contents: EntrySource,
}

enum EntrySource {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Validates the request, reads the graph's signature with ONNX Runtime, and writes the archive.
pub fn pack(request: &PackRequest) -> Result<PackOutcome> {
    manifest::validate_model_name(&request.model_name)?;
    manifest::validate_model_version(&request.version)?;
    if !manifest::RUNTIMES.contains(&request.runtime.as_str()) {
        return Err(ArchiveError::InvalidArgument(format!(
            "runtime {:?} is not one of {}",
            request.runtime,
            manifest::RUNTIMES.join(", ")
        )));
    }
    let target = request
        .archive_format
        .output_path(&request.export_path, &request.model_name);
    if target.exists() && !request.force {
        return Err(ArchiveError::OutputExists(target));
    }
    let mut warnings = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();

    let serialized = request.serialized_file.as_ref().ok_or_else(|| {
        ArchiveError::InvalidArgument(
            "--serialized-file is required: oxserve serves ONNX graphs (export one with torch.onnx.export)".to_string(),
        )
    })?;
    let source_bytes = read_input(serialized)?;
    let (handler, handler_file) = resolve_handler(&request.handler)?;
    let loaded = runtime::init(request.ort_library.as_deref())?;
    let mut notes = Vec::new();
    let (graph_name, graph_bytes, conversion) = if convert::needs_conversion(&source_bytes) {
        drop(source_bytes);
        let converted = convert::to_onnx(
            loaded.environment,
            serialized,
            request.model_file.as_deref(),
            &handler,
            &request.convert,
        )?;
        notes = converted.summary;
        (converted.file_name, converted.graph, Some(converted.record))
    } else {
        (file_name(serialized)?, source_bytes, None)
    };
    let signature = graph::read_signature(loaded.environment, &graph_name, &graph_bytes)?;
    handler.check_signature(&signature).map_err(|reason| {
        ArchiveError::InvalidHandler(format!(
            "handler {} does not fit {graph_name}: {reason}",
            request.handler
        ))
    })?;
    entries.push(Entry {
        archive_path: graph_name.clone(),
        contents: EntrySource::Bytes(graph_bytes),
    });

    // A converted model's file was consumed by the conversion; an ONNX graph's is only carried.
    let carried_model_file = request.model_file.as_ref().filter(|_| conversion.is_none());
    if let Some(model_file) = carried_model_file {
        warnings.push(format!(
            "{} is carried but not executed: oxserve runs the ONNX graph, not Python model code",
            model_file.display()
        ));
        entries.push(file_entry(model_file)?);
    }
    if let Some(handler_file) = &handler_file {
        entries.push(file_entry(handler_file)?);
    }
    let config_file = match &request.config_file {
        Some(path) => {
            let bytes = read_input(path)?;
            ModelConfig::parse(&path.display().to_string(), &bytes)?;
            let entry = Entry {
                archive_path: file_name(path)?,
                contents: EntrySource::Bytes(bytes),
            };
            let name = entry.archive_path.clone();
            entries.push(entry);
            Some(name)
        }
        None => None,
    };
    let requirements_file = match &request.requirements_file {
        Some(path) => {
            warnings.push(format!(
                "{} is carried but never installed: oxserve runs no Python code",
                path.display()
            ));
            let entry = file_entry(path)?;
            let name = entry.archive_path.clone();
            entries.push(entry);
            Some(name)
        }
        None => None,
    };
    for item in &request.extra_files {
        entries.extend(expand_extra_file(item)?);
    }
    for (archive_path, path) in &request.carried_files {
        entries.push(Entry {
            archive_path: archive_path.clone(),
            contents: EntrySource::File(path.clone()),
        });
    }

    let manifest = Manifest {
        created_on: manifest::created_on_now(),
        runtime: request.runtime.clone(),
        model: ModelSection {
            model_name: request.model_name.clone(),
            serialized_file: Some(graph_name),
            // A handler file is stored at the root, so the manifest names it by file name.
            handler: match &handler_file {
                Some(path) => file_name(path)?,
                None => request.handler.clone(),
            },
            model_file: carried_model_file.map(|path| file_name(path)).transpose()?,
            model_version: request.version.clone(),
            requirements_file,
            config_file,
        },
        archiver_version: env!("CARGO_PKG_VERSION").to_string(),
        oxserve: Some(OxserveSection {
            format_version: FORMAT_VERSION,
            handler_config: HANDLER_CONFIG_PATH.to_string(),
            signature,
            conversion,
        }),
    };
    entries.push(Entry {
        archive_path: HANDLER_CONFIG_PATH.to_string(),
        contents: EntrySource::Bytes(handler.to_json()),
    });
    entries.push(Entry {
        archive_path: MANIFEST_PATH.to_string(),
        contents: EntrySource::Bytes(manifest.to_json()),
    });
    check_unique(&entries)?;
    check_labels_present(&handler, &entries)?;

    fs::create_dir_all(&request.export_path).map_err(|error| {
        ArchiveError::io(
            format!(
                "cannot create export path {}",
                request.export_path.display()
            ),
            error,
        )
    })?;
    write_output(request, &target, &entries)?;
    Ok(PackOutcome {
        path: target,
        manifest,
        warnings,
        notes,
    })
}

/// A built-in name, or a handler config file. Python handlers are refused.
fn resolve_handler(handler: &str) -> Result<(HandlerConfig, Option<PathBuf>)> {
    if let Some(config) = HandlerConfig::builtin(handler) {
        return Ok((config, None));
    }
    let path = Path::new(handler);
    let extension = path.extension().and_then(|ext| ext.to_str()).unwrap_or("");
    match extension {
        "json" | "yaml" | "yml" => {
            let bytes = read_input(path)?;
            let config = HandlerConfig::parse(handler, &bytes, extension != "json")?;
            Ok((config, Some(path.to_path_buf())))
        }
        _ if extension == "py" || handler.contains(".py:") => Err(ArchiveError::InvalidHandler(format!(
            "handler {handler} is Python code, which oxserve never runs: use a built-in handler ({}) or a handler config file (.json/.yaml) that describes the pre- and post-processing",
            BUILTIN_HANDLERS.join(", ")
        ))),
        _ => Err(ArchiveError::InvalidHandler(format!(
            "unknown handler {handler:?}: use a built-in handler ({}) or a handler config file (.json/.yaml)",
            BUILTIN_HANDLERS.join(", ")
        ))),
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|error| ArchiveError::MissingInput {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            ArchiveError::InvalidArgument(format!("{} has no usable file name", path.display()))
        })
}

fn file_entry(path: &Path) -> Result<Entry> {
    if !path.is_file() {
        return Err(ArchiveError::MissingInput {
            path: path.to_path_buf(),
            reason: "no such file".to_string(),
        });
    }
    Ok(Entry {
        archive_path: file_name(path)?,
        contents: EntrySource::File(path.to_path_buf()),
    })
}

/// One `--extra-files` item: a file goes to the root, a folder's contents are copied recursively
/// (as torch-model-archiver does, skipping `__MACOSX`, `__pycache__` and dot-folders), a pattern
/// with `*` or `?` matches files in its folder.
fn expand_extra_file(item: &str) -> Result<Vec<Entry>> {
    let item = item.trim();
    if item.is_empty() {
        return Ok(Vec::new());
    }
    let path = Path::new(item);
    let name = file_name(path)?;
    if name.contains(['*', '?']) {
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut matched = Vec::new();
        for entry in read_dir_sorted(dir)? {
            let entry_name = entry
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if entry.is_file() && wildcard_match(&name, &entry_name) {
                matched.push(file_entry(&entry)?);
            }
        }
        if matched.is_empty() {
            return Err(ArchiveError::MissingInput {
                path: path.to_path_buf(),
                reason: "the pattern matches no file".to_string(),
            });
        }
        return Ok(matched);
    }
    if path.is_dir() {
        let mut entries = Vec::new();
        copy_dir(path, "", &mut entries)?;
        return Ok(entries);
    }
    Ok(vec![file_entry(path)?])
}

fn copy_dir(dir: &Path, prefix: &str, entries: &mut Vec<Entry>) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        let name = file_name(&path)?;
        let archive_path = format!("{prefix}{name}");
        let metadata = fs::symlink_metadata(&path)
            .map_err(|error| ArchiveError::io(format!("cannot read {}", path.display()), error))?;
        if metadata.is_dir() {
            if name.starts_with('.') || name == "__MACOSX" || name == "__pycache__" {
                continue;
            }
            copy_dir(&path, &format!("{archive_path}/"), entries)?;
        } else if metadata.is_file() {
            entries.push(Entry {
                archive_path,
                contents: EntrySource::File(path),
            });
        }
        // Symlinks and special files are not carried: archives hold regular files only.
    }
    Ok(())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let reader = fs::read_dir(dir).map_err(|error| ArchiveError::MissingInput {
        path: dir.to_path_buf(),
        reason: error.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = reader
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    Ok(paths)
}

/// `*` matches any run of characters, `?` any one character.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(star_at) = star {
            p = star_at + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

fn check_unique(entries: &[Entry]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        if !seen.insert(entry.archive_path.as_str()) {
            return Err(ArchiveError::InvalidArgument(format!(
                "two inputs would both be stored as {:?} in the archive; rename one",
                entry.archive_path
            )));
        }
    }
    Ok(())
}

/// A handler config that names a labels file other than the default (or a tokenizer) must find it
/// in the archive.
fn check_labels_present(handler: &HandlerConfig, entries: &[Entry]) -> Result<()> {
    let wanted = handler
        .classify
        .as_ref()
        .map(|classify| classify.labels.as_str())
        .into_iter()
        .chain(
            handler
                .detect
                .as_ref()
                .map(|detect| detect.label_names.as_str()),
        )
        .chain(handler.text.as_ref().map(|text| text.tokenizer.as_str()));
    for name in wanted {
        let optional = name == crate::handler_config::DEFAULT_LABELS_FILE;
        if !optional && !entries.iter().any(|entry| entry.archive_path == name) {
            return Err(ArchiveError::InvalidHandler(format!(
                "the handler config needs {name:?} in the archive: add it with --extra-files"
            )));
        }
    }
    Ok(())
}

fn write_output(request: &PackRequest, target: &Path, entries: &[Entry]) -> Result<()> {
    let export = &request.export_path;
    let io_error = |error: std::io::Error| {
        ArchiveError::io(
            format!("cannot write to export path {}", export.display()),
            error,
        )
    };
    if request.archive_format == ArchiveFormat::NoArchive {
        let staging = tempfile::Builder::new()
            .prefix(".oxserve-archiver-")
            .tempdir_in(export)
            .map_err(io_error)?;
        for entry in entries {
            let path = staging.path().join(&entry.archive_path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io_error)?;
            }
            match &entry.contents {
                EntrySource::File(source) => fs::copy(source, &path).map(|_| ()),
                EntrySource::Bytes(bytes) => fs::write(&path, bytes),
            }
            .map_err(io_error)?;
        }
        remove_existing(target).map_err(io_error)?;
        let staged = staging.keep();
        return fs::rename(&staged, target).map_err(|error| {
            let _ = fs::remove_dir_all(&staged);
            io_error(error)
        });
    }
    let mut staging = tempfile::Builder::new()
        .prefix(".oxserve-archiver-")
        .tempfile_in(export)
        .map_err(io_error)?;
    match request.archive_format {
        ArchiveFormat::Default | ArchiveFormat::ZipStore => write_zip(
            staging.as_file_mut(),
            entries,
            request.archive_format == ArchiveFormat::ZipStore,
        )?,
        ArchiveFormat::Tgz => write_tgz(staging.as_file_mut(), entries, &request.model_name)?,
        ArchiveFormat::NoArchive => unreachable!("handled above"),
    }
    staging.as_file_mut().flush().map_err(io_error)?;
    // Temporary files are private (0600); an archive is meant to be shared like any output file.
    fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(io_error)?;
    if target.is_dir() {
        fs::remove_dir_all(target).map_err(io_error)?;
    }
    staging
        .persist(target)
        .map(|_| ())
        .map_err(|error| io_error(error.error))
}

fn remove_existing(target: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(target) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(target),
        Ok(_) => fs::remove_file(target),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

fn entry_bytes(entry: &Entry) -> Result<std::borrow::Cow<'_, [u8]>> {
    match &entry.contents {
        EntrySource::Bytes(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
        EntrySource::File(path) => read_input(path).map(std::borrow::Cow::Owned),
    }
}

fn write_zip(file: &mut fs::File, entries: &[Entry], stored: bool) -> Result<()> {
    use zip::write::SimpleFileOptions;
    let zip_error = |error: zip::result::ZipError| {
        ArchiveError::io("cannot write the archive", std::io::Error::other(error))
    };
    let method = if stored {
        zip::CompressionMethod::Stored
    } else {
        zip::CompressionMethod::Deflated
    };
    let now = chrono::Local::now().naive_local();
    let timestamp = {
        use chrono::{Datelike, Timelike};
        zip::DateTime::from_date_and_time(
            u16::try_from(now.year()).unwrap_or(1980),
            now.month() as u8,
            now.day() as u8,
            now.hour() as u8,
            now.minute() as u8,
            now.second() as u8,
        )
        .unwrap_or_default()
    };
    let options = SimpleFileOptions::default()
        .compression_method(method)
        .last_modified_time(timestamp)
        .unix_permissions(0o644)
        .large_file(true);
    let mut writer = zip::ZipWriter::new(file);
    for entry in entries {
        writer
            .start_file(entry.archive_path.as_str(), options)
            .map_err(zip_error)?;
        writer
            .write_all(&entry_bytes(entry)?)
            .map_err(|error| ArchiveError::io("cannot write the archive", error))?;
    }
    writer.finish().map_err(zip_error)?;
    Ok(())
}

fn write_tgz(file: &mut fs::File, entries: &[Entry], model_name: &str) -> Result<()> {
    let io_error = |error: std::io::Error| ArchiveError::io("cannot write the archive", error);
    let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for entry in entries {
        let bytes = entry_bytes(entry)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(
                &mut header,
                format!("{model_name}/{}", entry.archive_path),
                bytes.as_ref(),
            )
            .map_err(io_error)?;
    }
    builder
        .into_inner()
        .and_then(|encoder| encoder.finish())
        .map_err(io_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("*.json", "index_to_name.json"));
        assert!(wildcard_match("digit_?.png", "digit_3.png"));
        assert!(!wildcard_match("*.json", "model.onnx"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn formats_parse_and_name_outputs() {
        let export = Path::new("/x");
        assert_eq!(
            ArchiveFormat::parse("tgz")
                .expect("tgz")
                .output_path(export, "m"),
            Path::new("/x/m.tar.gz")
        );
        assert_eq!(
            ArchiveFormat::parse("no-archive")
                .expect("dir")
                .output_path(export, "m"),
            Path::new("/x/m")
        );
        assert!(ArchiveFormat::parse("rar").is_err());
    }

    #[test]
    fn python_handlers_are_refused_with_guidance() {
        let error = resolve_handler("my_handler.py")
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("never runs") && error.contains("image_classifier"),
            "{error}"
        );
        let error = resolve_handler("nonsense")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("unknown handler"), "{error}");
    }
}

//! Reading model archives safely. Archives are untrusted input (anyone with the management API,
//! or a remote URL, supplies them), so extraction refuses absolute paths, `..`, symlinks, device
//! files and duplicate names, and caps the entry count, the total unpacked size and the
//! compression ratio (zip bombs); sizes are counted as bytes are written, never trusted from
//! headers. It accepts TorchServe's three shapes: zip (`.mar`), gzipped tar (`.tar.gz`) and a
//! plain folder, and always extracts into a folder it creates itself.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{ArchiveError, Result};
use crate::handler_config::HandlerConfig;
use crate::manifest::{Manifest, MANIFEST_PATH};
use crate::model_config::ModelConfig;

/// Caps applied while reading an archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: usize,
    /// Sum of all unpacked file sizes.
    pub max_total_bytes: u64,
    /// Largest allowed unpacked/packed ratio for entries over [`Limits::ratio_floor_bytes`].
    pub max_ratio: u64,
    /// Entries smaller than this are exempt from the ratio check (tiny files compress well).
    pub ratio_floor_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_total_bytes: 4 << 30,
            // Real ONNX weights compress ~1.1×; deflate's ceiling is ~1030×. 200× leaves room for
            // sparse or zero-initialised tensors and still stops bombs.
            max_ratio: 200,
            ratio_floor_bytes: 1 << 20,
        }
    }
}

/// An archive unpacked into a folder, with its parsed metadata.
#[derive(Debug, Clone)]
pub struct ExtractedArchive {
    /// The folder holding the archive's files (the archive root).
    pub root: PathBuf,
    pub manifest: Manifest,
    /// The resolved handler config, for archives made by oxserve-archiver.
    pub handler: Option<HandlerConfig>,
    /// The parsed `model-config.yaml`, if the manifest names one.
    pub model_config: Option<ModelConfig>,
}

/// Unpacks `archive` (zip, tar.gz or folder) into `dest`, which must not exist yet and is
/// created here. A folder archive is read in place. On error, `dest` is removed again.
pub fn extract(archive: &Path, dest: &Path, limits: &Limits) -> Result<ExtractedArchive> {
    let metadata = fs::symlink_metadata(archive).map_err(|error| {
        ArchiveError::MalformedArchive(format!("cannot open {}: {error}", archive.display()))
    })?;
    if metadata.is_dir() {
        return load_extracted(archive);
    }
    if !metadata.is_file() {
        return Err(ArchiveError::UnsafeArchive(format!(
            "{} is not a regular file",
            archive.display()
        )));
    }
    fs::create_dir(dest)
        .map_err(|error| ArchiveError::io(format!("cannot create {}", dest.display()), error))?;
    let result = unpack_file(archive, dest, limits).and_then(|root| load_extracted(&root));
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn unpack_file(archive: &Path, dest: &Path, limits: &Limits) -> Result<PathBuf> {
    let mut magic = [0u8; 4];
    let mut file = fs::File::open(archive).map_err(|error| {
        ArchiveError::MalformedArchive(format!("cannot open {}: {error}", archive.display()))
    })?;
    let read = file.read(&mut magic).unwrap_or(0);
    drop(file);
    if read >= 4 && (magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06") {
        unpack_zip(archive, dest, limits)?;
        Ok(dest.to_path_buf())
    } else if read >= 2 && magic[..2] == [0x1f, 0x8b] {
        unpack_tgz(archive, dest, limits)?;
        // TorchServe's tgz archives hold a single `<name>/` folder.
        if dest.join(MANIFEST_PATH).is_file() {
            return Ok(dest.to_path_buf());
        }
        let children: Vec<PathBuf> = fs::read_dir(dest)
            .map_err(|error| ArchiveError::io("cannot list the unpacked archive", error))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        match children.as_slice() {
            [only] if only.is_dir() => Ok(only.clone()),
            _ => Ok(dest.to_path_buf()),
        }
    } else {
        Err(ArchiveError::MalformedArchive(format!(
            "{} is neither a zip (.mar) nor a .tar.gz archive",
            archive.display()
        )))
    }
}

/// Checks an entry name and turns it into a relative path that stays inside the target.
fn safe_relative_path(name: &str) -> Result<PathBuf> {
    let refuse = |why: &str| Err(ArchiveError::UnsafeArchive(format!("entry {name:?} {why}")));
    if name.is_empty() || name.contains('\0') {
        return refuse("has an empty or NUL-containing name");
    }
    if name.contains('\\') {
        return refuse("uses backslashes, which could name a path outside the archive");
    }
    let path = Path::new(name);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return refuse("climbs out of the archive with `..`"),
            Component::RootDir | Component::Prefix(_) => return refuse("is an absolute path"),
        }
    }
    if clean.as_os_str().is_empty() {
        return refuse("names no file");
    }
    Ok(clean)
}

/// Tracks the caps across entries.
struct Budget<'l> {
    limits: &'l Limits,
    entries: usize,
    total: u64,
    names: BTreeSet<PathBuf>,
}

impl<'l> Budget<'l> {
    fn new(limits: &'l Limits) -> Self {
        Budget {
            limits,
            entries: 0,
            total: 0,
            names: BTreeSet::new(),
        }
    }

    fn admit(&mut self, relative: &Path) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::UnsafeArchive(format!(
                "more than {} entries",
                self.limits.max_entries
            )));
        }
        if !self.names.insert(relative.to_path_buf()) {
            return Err(ArchiveError::UnsafeArchive(format!(
                "entry {} appears twice",
                relative.display()
            )));
        }
        Ok(())
    }

    /// Copies one entry's bytes, counting them against the caps as they are written.
    fn copy(
        &mut self,
        reader: &mut dyn Read,
        target: &Path,
        packed_size: Option<u64>,
    ) -> Result<()> {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|error| ArchiveError::io("cannot unpack", error))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(|error| {
                ArchiveError::io(format!("cannot create {}", target.display()), error)
            })?;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut written: u64 = 0;
        loop {
            let count = reader.read(&mut buffer).map_err(|error| {
                ArchiveError::MalformedArchive(format!("cannot read an entry: {error}"))
            })?;
            if count == 0 {
                break;
            }
            written += count as u64;
            self.total += count as u64;
            if self.total > self.limits.max_total_bytes {
                return Err(ArchiveError::UnsafeArchive(format!(
                    "it unpacks to more than {} bytes",
                    self.limits.max_total_bytes
                )));
            }
            if let Some(packed) = packed_size {
                if written > self.limits.ratio_floor_bytes
                    && written > packed.max(1).saturating_mul(self.limits.max_ratio)
                {
                    return Err(ArchiveError::UnsafeArchive(format!(
                        "entry {} expands more than {}× (a zip bomb?)",
                        target.display(),
                        self.limits.max_ratio
                    )));
                }
            }
            out.write_all(&buffer[..count]).map_err(|error| {
                ArchiveError::io(format!("cannot write {}", target.display()), error)
            })?;
        }
        Ok(())
    }
}

fn unpack_zip(archive: &Path, dest: &Path, limits: &Limits) -> Result<()> {
    let file = fs::File::open(archive)
        .map_err(|error| ArchiveError::io("cannot open the archive", error))?;
    // No entry can hold more packed bytes than the whole file: a header claiming otherwise would
    // hide an entry's real expansion ratio.
    let archive_len = file
        .metadata()
        .map_err(|error| ArchiveError::io("cannot read the archive", error))?
        .len();
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|error| ArchiveError::MalformedArchive(format!("not a readable zip: {error}")))?;
    // The zip reader keys entries by name and keeps only one of a duplicated name, so the
    // per-name check below would never see the second: ask the reader instead.
    if zip.has_duplicate_names() {
        return Err(ArchiveError::UnsafeArchive(
            "an entry name appears twice in the zip directory".to_string(),
        ));
    }
    if zip.len() > limits.max_entries {
        return Err(ArchiveError::UnsafeArchive(format!(
            "more than {} entries",
            limits.max_entries
        )));
    }
    let mut budget = Budget::new(limits);
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|error| {
            ArchiveError::MalformedArchive(format!("cannot read entry {index}: {error}"))
        })?;
        let name = entry
            .name()
            .map_err(|error| {
                ArchiveError::MalformedArchive(format!(
                    "entry {index} has an unreadable name: {error}"
                ))
            })?
            .to_string();
        let relative = safe_relative_path(&name)?;
        if entry.enclosed_name().is_none() {
            return Err(ArchiveError::UnsafeArchive(format!(
                "entry {name:?} escapes the archive"
            )));
        }
        if entry.is_symlink() {
            return Err(ArchiveError::UnsafeArchive(format!(
                "entry {name:?} is a symbolic link"
            )));
        }
        if let Some(mode) = entry.unix_mode() {
            let kind = mode & 0o170000;
            if kind != 0 && kind != 0o100000 && kind != 0o040000 {
                return Err(ArchiveError::UnsafeArchive(format!(
                    "entry {name:?} is not a regular file"
                )));
            }
        }
        budget.admit(&relative)?;
        let target = dest.join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&target)
                .map_err(|error| ArchiveError::io("cannot unpack", error))?;
            continue;
        }
        let packed = entry.compressed_size().min(archive_len);
        budget.copy(&mut entry, &target, Some(packed))?;
    }
    Ok(())
}

fn unpack_tgz(archive: &Path, dest: &Path, limits: &Limits) -> Result<()> {
    let file = fs::File::open(archive)
        .map_err(|error| ArchiveError::io("cannot open the archive", error))?;
    let packed_total = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut budget = Budget::new(limits);
    let entries = tar.entries().map_err(|error| {
        ArchiveError::MalformedArchive(format!("not a readable tar.gz: {error}"))
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|error| {
            ArchiveError::MalformedArchive(format!("cannot read an entry: {error}"))
        })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let relative = safe_relative_path(&name)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(ArchiveError::UnsafeArchive(format!(
                "entry {name:?} is a link or special file"
            )));
        }
        budget.admit(&relative)?;
        let target = dest.join(&relative);
        if kind.is_dir() {
            fs::create_dir_all(&target)
                .map_err(|error| ArchiveError::io("cannot unpack", error))?;
            continue;
        }
        // A gzip stream has one ratio for the whole archive; apply the cap against it.
        budget.copy(&mut entry, &target, Some(packed_total))?;
    }
    Ok(())
}

/// Parses the manifest, handler config and model config of an unpacked archive.
pub fn load_extracted(root: &Path) -> Result<ExtractedArchive> {
    let manifest_bytes = fs::read(root.join(MANIFEST_PATH)).map_err(|_| {
        ArchiveError::MalformedArchive(format!(
            "{MANIFEST_PATH} is missing: is this a model archive?"
        ))
    })?;
    let manifest = Manifest::from_json(&manifest_bytes)?;
    let read_member = |name: &str| -> Result<Vec<u8>> {
        let relative = safe_relative_path(name)?;
        fs::read(root.join(&relative)).map_err(|_| {
            ArchiveError::MalformedArchive(format!(
                "the manifest names {name:?}, which the archive lacks"
            ))
        })
    };
    let handler = match &manifest.oxserve {
        Some(section) => {
            let bytes = read_member(&section.handler_config)?;
            let config = HandlerConfig::parse(&section.handler_config, &bytes, false)
                .map_err(|error| ArchiveError::MalformedArchive(error.to_string()))?;
            Some(config)
        }
        None => None,
    };
    let model_config = match &manifest.model.config_file {
        Some(name) => Some(ModelConfig::parse(name, &read_member(name)?)?),
        None => None,
    };
    if let Some(serialized) = &manifest.model.serialized_file {
        read_member_exists(root, serialized)?;
    }
    Ok(ExtractedArchive {
        root: root.to_path_buf(),
        manifest,
        handler,
        model_config,
    })
}

fn read_member_exists(root: &Path, name: &str) -> Result<()> {
    let relative = safe_relative_path(name)?;
    if root.join(relative).is_file() {
        Ok(())
    } else {
        Err(ArchiveError::MalformedArchive(format!(
            "the manifest names {name:?}, which the archive lacks"
        )))
    }
}

/// Reads only the manifest of an archive, without unpacking it (for listings and `inspect`).
pub fn read_manifest(archive: &Path) -> Result<Manifest> {
    let dir = tempfile::tempdir()
        .map_err(|error| ArchiveError::io("cannot create a temporary folder", error))?;
    let extracted = extract(archive, &dir.path().join("archive"), &Limits::default())?;
    Ok(extracted.manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_names_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "", "."] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            safe_relative_path("./a/b.json").expect("ok"),
            Path::new("a/b.json")
        );
    }
}

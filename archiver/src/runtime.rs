//! Finding and loading the ONNX Runtime shared library. Both binaries need it (the archiver reads
//! graph signatures, the server runs graphs), so it lives in this lower crate. `ort` is built with
//! `load-dynamic`: nothing is linked at build time, and this module decides at run time which
//! `libonnxruntime.so` to load, in this order:
//!
//! 1. an explicit path (a CLI flag), file or folder;
//! 2. `ORT_DYLIB_PATH`;
//! 3. the project-local `.onnxruntime/` folder that `scripts/install-onnxruntime.sh` fills, searched
//!    upwards from the working directory and from the executable;
//! 4. next to the executable (or in `../lib` beside it, the Docker image's layout);
//! 5. an installed Python `onnxruntime` package (`onnxruntime/capi/`).
//!
//! When none is found it returns one line saying how to install it. It never downloads anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{ArchiveError, Result};

/// The project-local folder the install script writes to.
pub const LOCAL_DIR: &str = ".onnxruntime";
/// File name of the library on this platform.
pub const LIBRARY_NAME: &str = "libonnxruntime.so";
/// What to tell a user whose machine has no ONNX Runtime.
pub const INSTALL_HINT: &str = "install it with `scripts/install-onnxruntime.sh` (fetches the onnxruntime==1.31.1 wheel from PyPI into .onnxruntime/), or `pip install onnxruntime==1.31.1`, or set ORT_DYLIB_PATH to a libonnxruntime.so";

/// Where the loaded library came from, for the startup log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    EnvVar,
    ProjectLocal,
    NextToExecutable,
    PythonPackage,
}

/// The library that was loaded.
#[derive(Debug, Clone)]
pub struct LoadedRuntime {
    pub path: PathBuf,
    pub source: Source,
    /// The process-wide ONNX Runtime environment every session is built in.
    pub environment: &'static ort::environment::Environment,
}

/// Finds the library without loading it.
pub fn locate(explicit: Option<&Path>) -> Result<(PathBuf, Source)> {
    if let Some(path) = explicit {
        return library_in(path)
            .map(|found| (found, Source::Flag))
            .ok_or_else(|| {
                ArchiveError::Runtime(format!(
                    "ONNX Runtime not found at {}: {INSTALL_HINT}",
                    path.display()
                ))
            });
    }
    if let Some(value) = std::env::var_os("ORT_DYLIB_PATH").filter(|value| !value.is_empty()) {
        let path = PathBuf::from(value);
        return library_in(&path)
            .map(|found| (found, Source::EnvVar))
            .ok_or_else(|| {
                ArchiveError::Runtime(format!(
                    "ORT_DYLIB_PATH={} does not name a libonnxruntime.so: {INSTALL_HINT}",
                    path.display()
                ))
            });
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    roots.extend(exe_dir.clone());
    for root in &roots {
        for dir in root.ancestors() {
            if let Some(found) = library_in(&dir.join(LOCAL_DIR)) {
                return Ok((found, Source::ProjectLocal));
            }
        }
    }
    if let Some(dir) = exe_dir {
        for candidate in [dir.clone(), dir.join("../lib")] {
            if let Some(found) = library_in(&candidate) {
                return Ok((found, Source::NextToExecutable));
            }
        }
    }
    if let Some(found) = python_package_library() {
        return Ok((found, Source::PythonPackage));
    }
    Err(ArchiveError::Runtime(format!(
        "ONNX Runtime (libonnxruntime.so) not found: {INSTALL_HINT}"
    )))
}

/// Locates and loads the library once per process and creates the global ONNX Runtime
/// environment. Later calls return the first outcome (the explicit path is only honoured once).
pub fn init(explicit: Option<&Path>) -> Result<LoadedRuntime> {
    static LOADED: OnceLock<std::result::Result<LoadedRuntime, String>> = OnceLock::new();
    static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let (path, source) = locate(explicit).map_err(|error| error.to_string())?;
            let builder = ort::init_from(&path).map_err(|error| {
                // LoadDynamicError's Display hides dlopen's reason; its source has it. Build no
                // ort::Error here: that would call into the library that just failed to load.
                let reason = std::error::Error::source(&error)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                format!(
                    "cannot load ONNX Runtime from {}: {error} {reason}; {INSTALL_HINT}",
                    path.display()
                )
            })?;
            let environment = builder
                .with_name("oxserve")
                .with_telemetry(false)
                .build()
                .map_err(|error| format!("cannot start ONNX Runtime: {error}"))?;
            let environment = ENVIRONMENT.get_or_init(|| environment);
            Ok(LoadedRuntime {
                path,
                source,
                environment,
            })
        })
        .clone()
        .map_err(ArchiveError::Runtime)
}

/// `path` itself if it is a file, else the library inside the folder `path` (also `lib/` and
/// versioned names such as `libonnxruntime.so.1.31.1`).
fn library_in(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    if !path.is_dir() {
        return None;
    }
    for dir in [path.to_path_buf(), path.join("lib"), path.join("capi")] {
        let exact = dir.join(LIBRARY_NAME);
        if exact.is_file() {
            return Some(exact);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut versioned: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|candidate| {
                candidate
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(&format!("{LIBRARY_NAME}.")))
            })
            .collect();
        versioned.sort();
        if let Some(found) = versioned.pop() {
            return Some(found);
        }
    }
    None
}

/// Asks an installed Python where its `onnxruntime` package lives (the last resort: it costs a
/// process start, so it comes after every file-system lookup).
fn python_package_library() -> Option<PathBuf> {
    for python in ["python3", "python"] {
        let output = Command::new(python)
            .args([
                "-c",
                "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
            ])
            .stderr(std::process::Stdio::null())
            .output();
        let Ok(output) = output else { continue };
        if !output.status.success() {
            continue;
        }
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if let Some(found) = library_in(&Path::new(&dir).join("capi")) {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_path_says_how_to_install() {
        let error =
            locate(Some(Path::new("/nonexistent/libonnxruntime.so"))).expect_err("must fail");
        let text = error.to_string();
        assert!(text.contains("install-onnxruntime.sh"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn versioned_library_in_folder_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = dir.path().join("capi");
        std::fs::create_dir(&lib).expect("mkdir");
        std::fs::write(lib.join("libonnxruntime.so.1.31.1"), b"x").expect("write");
        assert_eq!(
            library_in(dir.path()),
            Some(lib.join("libonnxruntime.so.1.31.1"))
        );
    }
}

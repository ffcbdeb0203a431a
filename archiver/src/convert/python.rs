//! Running the embedded export script in the user's Python: which interpreter (`--python`, then
//! `OXSERVE_PYTHON`, then `python3` on PATH), its progress lines relayed to stderr as they come,
//! and its one-line failures turned into errors. The server never runs any of this.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{ArchiveError, Result};

/// The export script, embedded so the archiver is a single file.
pub const EXPORT_SCRIPT: &str = include_str!("export_onnx.py");

/// What to install, said once wherever torch is missing.
pub const INSTALL_TORCH: &str = "install PyTorch (`pip install torch torchvision`) or name a Python that has it with --python or OXSERVE_PYTHON";

/// Environment variable naming the Python to convert with.
pub const PYTHON_ENV: &str = "OXSERVE_PYTHON";

/// The script's exit status when `import torch` fails.
const NO_TORCH_STATUS: i32 = 3;
/// The prefix of the script's own lines; the rest (warnings, tracebacks) is PyTorch's.
const PREFIX: &str = "oxserve-archiver: ";

/// The Python to run: the flag, else `OXSERVE_PYTHON`, else `python3`.
pub fn interpreter(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(PYTHON_ENV)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Runs the script on a job file; progress lines go to stderr as they arrive. `what` names the
/// file being converted, for the messages.
pub fn run_script(
    python: &Path,
    script: &Path,
    job: &Path,
    report: &Path,
    verbose: bool,
    what: &str,
) -> Result<()> {
    let no_torch = |reason: String| {
        ArchiveError::Conversion(format!(
            "converting {what} to ONNX needs PyTorch, but {reason}: {INSTALL_TORCH}"
        ))
    };
    let mut child = Command::new(python)
        .arg(script)
        .arg(job)
        .arg(report)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            no_torch(format!(
                "no Python was found at {} ({error})",
                python.display()
            ))
        })?;
    let mut failure = None;
    let mut others: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(message) = line.strip_prefix(PREFIX) {
                match message.strip_prefix("error: ") {
                    Some(error) => failure = Some(error.to_string()),
                    None => eprintln!("{line}"),
                }
            } else {
                if verbose {
                    eprintln!("  {line}");
                }
                others.push(line);
                if others.len() > 20 {
                    others.remove(0);
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|error| ArchiveError::io(format!("cannot run {}", python.display()), error))?;
    if status.code() == Some(NO_TORCH_STATUS) {
        return Err(no_torch(format!(
            "{} cannot import torch",
            python.display()
        )));
    }
    if status.success() {
        return Ok(());
    }
    let message = failure.unwrap_or_else(|| {
        let tail: Vec<&str> = others
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        format!(
            "{} stopped ({status}) while converting {what}: {}",
            python.display(),
            tail.join(" | ")
        )
    });
    Err(ArchiveError::Conversion(message))
}

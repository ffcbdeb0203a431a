//! Converting a PyTorch model to ONNX while packing: an eager model (a model file with one
//! `torch.nn.Module` subclass plus its state_dict, loaded as TorchServe does) or a TorchScript
//! archive is exported by a script embedded in the archiver, run in the user's own Python with
//! torch; the graph is then checked against PyTorch in ONNX Runtime before anything is written.
//!
//! - [`inputs`]: the example input, from the handler or the `--input-*` flags.
//! - [`python`]: finding the Python and running the script.
//! - [`check`]: ONNX Runtime against PyTorch on the same random input.

pub mod check;
pub mod inputs;
pub mod python;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};
use crate::handler_config::HandlerConfig;
use crate::manifest::Conversion;

pub use inputs::InputOverrides;

/// The opset the TorchScript-based exporter is asked for (the dynamo one uses at least 18).
pub const OPSET: u32 = 17;

/// How to convert, beyond what the pack flags say.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// The Python with torch (`--python`); else `OXSERVE_PYTHON`, else `python3`.
    pub python: Option<PathBuf>,
    pub inputs: InputOverrides,
    /// Relay PyTorch's own output and print per-output differences.
    pub verbose: bool,
}

/// A converted graph.
#[derive(Debug)]
pub struct Converted {
    /// The archive file name of the graph (the serialized file's stem + `.onnx`).
    pub file_name: String,
    pub graph: Vec<u8>,
    pub record: Conversion,
    /// Lines for the user: what was done and how well the check agreed.
    pub summary: Vec<String>,
}

/// True when a serialized file is a PyTorch file to convert rather than an ONNX graph.
pub fn needs_conversion(bytes: &[u8]) -> bool {
    crate::graph::pytorch_file_kind(bytes).is_some()
}

#[derive(Serialize)]
struct Job<'a> {
    serialized_file: &'a Path,
    model_file: Option<&'a Path>,
    output: PathBuf,
    work_dir: &'a Path,
    inputs: &'a [inputs::InputSpec],
    check_shapes: &'a [Vec<u64>],
    image_list: bool,
    output_axis: &'a str,
    output_names: &'a Option<Vec<String>>,
    opset: u32,
    allow_dynamo: bool,
    seed: u64,
    verbose: bool,
}

#[derive(Deserialize)]
struct Report {
    torch_version: String,
    source: String,
    exporter: String,
    opset: u32,
    inputs: Vec<check::SavedTensor>,
    outputs: Vec<check::SavedTensor>,
}

/// Exports `serialized` (with `model_file` for an eager model) to ONNX and checks it. Nothing is
/// written outside a temporary folder, which is removed on return.
pub fn to_onnx(
    environment: &ort::environment::Environment,
    serialized: &Path,
    model_file: Option<&Path>,
    handler: &HandlerConfig,
    options: &ConvertOptions,
) -> Result<Converted> {
    let started = Instant::now();
    let what = serialized
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_else(|| serialized.display().to_string());
    let example = inputs::example_inputs(handler, &options.inputs)?;
    let work = tempfile::Builder::new()
        .prefix("oxserve-convert-")
        .tempdir()
        .map_err(|error| ArchiveError::io("cannot create a temporary folder", error))?;
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let serialized_abs = absolute(serialized);
    let model_file_abs = model_file.map(absolute);
    let job = Job {
        serialized_file: &serialized_abs,
        model_file: model_file_abs.as_deref(),
        output: work.path().join("model.onnx"),
        work_dir: work.path(),
        inputs: &example.inputs,
        check_shapes: &example.check_shapes,
        image_list: example.image_list,
        output_axis: &example.output_axis,
        output_names: &example.output_names,
        opset: OPSET,
        allow_dynamo: true,
        seed: 0,
        verbose: options.verbose,
    };
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = work.path().join(name);
        std::fs::write(&path, bytes)
            .map_err(|error| ArchiveError::io(format!("cannot write {}", path.display()), error))?;
        Ok(path)
    };
    let script = write("export_onnx.py", python::EXPORT_SCRIPT.as_bytes())?;
    let job_path = write("job.json", &serde_json::to_vec(&job).unwrap_or_default())?;
    let report_path = work.path().join("report.json");
    let python = python::interpreter(options.python.as_deref());
    python::run_script(
        &python,
        &script,
        &job_path,
        &report_path,
        options.verbose,
        &what,
    )?;
    let report: Report = std::fs::read(&report_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ArchiveError::Conversion(format!(
                "the export script left no readable report for {what}"
            ))
        })?;
    let graph = std::fs::read(&job.output).map_err(|error| {
        ArchiveError::io(format!("cannot read the graph exported from {what}"), error)
    })?;
    let agreement = check::compare(environment, &graph, &report.inputs, &report.outputs)?;
    let stem = serialized
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|stem| !stem.is_empty())
        .unwrap_or("model");
    let mut summary = vec![format!(
        "converted {what} ({} model) to ONNX in {:.1} s: opset {}, {} exporter, PyTorch {}",
        report.source,
        started.elapsed().as_secs_f64(),
        report.opset,
        report.exporter,
        report.torch_version
    )];
    summary.push(format!(
        "checked against PyTorch on a random input: max abs diff {:.3e}, max rel diff {:.3e} (tolerance {})",
        agreement.max_abs_diff,
        agreement.max_rel_diff,
        check::tolerance_text()
    ));
    if options.verbose {
        summary.extend(agreement.details.iter().map(|line| format!("  {line}")));
    }
    Ok(Converted {
        file_name: format!("{stem}.onnx"),
        graph,
        record: Conversion {
            source_file: what,
            source_kind: report.source,
            exporter: report.exporter,
            opset: report.opset,
            torch_version: report.torch_version,
            max_abs_diff: agreement.max_abs_diff,
            max_rel_diff: agreement.max_rel_diff,
        },
        summary,
    })
}

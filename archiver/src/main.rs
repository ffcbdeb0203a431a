//! `oxserve-archiver`: torch-model-archiver's command line, packing ONNX graphs into `.mar` archives.
//! `oxserve-archiver inspect X.mar` prints what an archive holds; `oxserve-archiver convert
//! old.mar` turns an archive made by torch-model-archiver into an oxserve one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use oxserve_archiver::convert::{ConvertOptions, InputOverrides};
use oxserve_archiver::pack::{pack, ArchiveFormat, PackRequest};
use oxserve_archiver::{runtime, torchserve, unpack};

/// Packs a model and its handler into a TorchServe-style model archive. Takes
/// torch-model-archiver's flags with the same meaning and defaults. A PyTorch model (a state_dict
/// with --model-file, or TorchScript) is exported to ONNX with the user's Python and torch, and
/// checked against PyTorch before the archive is written.
#[derive(Parser, Debug)]
// `-v/--version` is the model version, as in torch-model-archiver, so clap's own flag is off.
#[command(
    name = "oxserve-archiver",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    pack: PackArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print an archive's manifest, handler config and graph signature.
    Inspect {
        /// A .mar, .tar.gz or unpacked archive folder.
        archive: PathBuf,
    },
    /// Convert an archive made by torch-model-archiver (.mar, .tar.gz or folder) into an oxserve
    /// archive with the same model name and version: its model exported to ONNX and checked, its
    /// handler mapped to ours, its extra files and model-config.yaml kept.
    Convert(Box<ConvertCommand>),
}

#[derive(Args, Debug)]
struct ConvertCommand {
    /// The TorchServe archive.
    archive: PathBuf,
    /// Where to save the new archive (created if missing); the current folder by default.
    #[arg(long = "export-path", default_value = ".")]
    export_path: PathBuf,
    /// Replaces the archive's handler: a built-in handler or a handler config file (.json/.yaml).
    /// Needed when the archive has a custom Python handler.
    #[arg(long)]
    handler: Option<String>,
    /// default (deflated .mar), zip-store (uncompressed .mar), tgz (.tar.gz) or no-archive (a folder).
    #[arg(long = "archive-format", default_value = "default")]
    archive_format: String,
    /// Overwrite an existing archive of the same name.
    #[arg(long, short = 'f')]
    force: bool,
    #[command(flatten)]
    conversion: ConversionArgs,
    /// Show PyTorch's own messages and every output's differences.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// libonnxruntime.so to use (else ORT_DYLIB_PATH, ./.onnxruntime, next to this program, Python's).
    #[arg(long = "ort-library", env = "OXSERVE_ORT_LIBRARY")]
    ort_library: Option<PathBuf>,
}

/// How a PyTorch model is converted to ONNX.
#[derive(Args, Debug, Clone)]
struct ConversionArgs {
    /// The Python with torch that converts PyTorch models (else OXSERVE_PYTHON, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The model's input shape(s) for the export, e.g. 1,3,224,224 (several: separated by ';');
    /// the first axis is the dynamic batch. Default: what the handler feeds.
    #[arg(long = "input-shape")]
    input_shape: Option<String>,
    /// The input element type(s): float32 (default), int64, ... (one, or one per input).
    #[arg(long = "input-dtype")]
    input_dtype: Option<String>,
    /// The graph's input names, comma-separated (default: input).
    #[arg(long = "input-names")]
    input_names: Option<String>,
    /// The graph's output names, comma-separated (default: output, or the keys of a returned dict).
    #[arg(long = "output-names")]
    output_names: Option<String>,
}

impl ConversionArgs {
    fn options(&self, verbose: bool) -> ConvertOptions {
        ConvertOptions {
            python: self.python.clone(),
            inputs: InputOverrides {
                shapes: self.input_shape.clone(),
                dtypes: self.input_dtype.clone(),
                names: self.input_names.clone(),
                output_names: self.output_names.clone(),
            },
            verbose,
        }
    }
}

#[derive(Args, Debug)]
struct PackArgs {
    /// Exported model name; the archive is saved as <model-name>.mar. Letters, digits, '_', '-', '.'.
    #[arg(long = "model-name", short = 'n')]
    model_name: Option<String>,
    /// Model's version.
    #[arg(long = "version", short = 'v')]
    version: Option<String>,
    /// The model: an ONNX graph, a TorchScript .pt, or a state_dict .pth with --model-file
    /// (the last two are exported to ONNX).
    #[arg(long = "serialized-file", short = 's')]
    serialized_file: Option<PathBuf>,
    /// Python file defining the model class (one torch.nn.Module subclass), for a state_dict.
    #[arg(long = "model-file", short = 'm')]
    model_file: Option<PathBuf>,
    /// A built-in handler (image_classifier, image_segmenter, object_detector, text_classifier,
    /// text_embedding, tensor) or a handler config file (.json/.yaml). Python handlers are not accepted.
    #[arg(long)]
    handler: Option<String>,
    /// Comma-separated files, folders (copied recursively) or patterns to add, e.g. index_to_name.json.
    #[arg(long = "extra-files")]
    extra_files: Option<String>,
    /// TorchServe runtime type recorded in the manifest.
    #[arg(long, short = 'r', default_value = "python")]
    runtime: String,
    /// Where to save the archive (created if missing); the current folder by default.
    #[arg(long = "export-path", default_value = ".")]
    export_path: PathBuf,
    /// default (deflated .mar), zip-store (uncompressed .mar), tgz (.tar.gz) or no-archive (a folder).
    #[arg(long = "archive-format", default_value = "default")]
    archive_format: String,
    /// Overwrite an existing archive of the same name.
    #[arg(long, short = 'f')]
    force: bool,
    /// requirements.txt (carried for compatibility; never installed).
    #[arg(long = "requirements-file")]
    requirements_file: Option<PathBuf>,
    /// TorchServe model-config.yaml (minWorkers, maxWorkers, batchSize, maxBatchDelay, ...), validated.
    #[arg(long = "config-file", short = 'c')]
    config_file: Option<PathBuf>,
    /// libonnxruntime.so to use (else ORT_DYLIB_PATH, ./.onnxruntime, next to this program, Python's).
    #[arg(long = "ort-library", env = "OXSERVE_ORT_LIBRARY")]
    ort_library: Option<PathBuf>,
    #[command(flatten)]
    conversion: ConversionArgs,
    /// Show PyTorch's own messages and every output's differences while converting.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect { archive }) => inspect(archive, cli.pack.ort_library),
        Some(Command::Convert(command)) => run_convert(*command),
        None => run_pack(cli.pack),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("oxserve-archiver: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_pack(args: PackArgs) -> Result<(), String> {
    let required = |value: Option<String>, flag: &str| {
        value.ok_or_else(|| format!("the argument {flag} is required"))
    };
    let request = PackRequest {
        model_name: required(args.model_name, "--model-name")?,
        version: required(args.version, "-v/--version")?,
        handler: required(args.handler, "--handler")?,
        serialized_file: args.serialized_file,
        model_file: args.model_file,
        extra_files: args
            .extra_files
            .map(|list| list.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        runtime: args.runtime,
        export_path: args.export_path,
        archive_format: ArchiveFormat::parse(&args.archive_format).map_err(|e| e.to_string())?,
        force: args.force,
        requirements_file: args.requirements_file,
        config_file: args.config_file,
        ort_library: args.ort_library,
        convert: args.conversion.options(args.verbose),
        carried_files: Vec::new(),
    };
    finish(&request)
}

fn finish(request: &PackRequest) -> Result<(), String> {
    let outcome = pack(request).map_err(|error| error.to_string())?;
    for note in &outcome.notes {
        eprintln!("oxserve-archiver: {note}");
    }
    for warning in &outcome.warnings {
        eprintln!("oxserve-archiver: warning: {warning}");
    }
    println!("{}", outcome.path.display());
    Ok(())
}

fn run_convert(command: ConvertCommand) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let extracted = unpack::extract(
        &command.archive,
        &dir.path().join("archive"),
        &unpack::Limits::default(),
    )
    .map_err(|error| error.to_string())?;
    let plan = torchserve::plan(&extracted, command.handler.as_deref())
        .map_err(|error| error.to_string())?;
    for line in &plan.not_carried {
        eprintln!("oxserve-archiver: not carried: {line}");
    }
    let request = PackRequest {
        model_name: plan.model_name,
        version: plan.version,
        serialized_file: Some(plan.serialized_file),
        model_file: plan.model_file,
        handler: plan.handler,
        extra_files: Vec::new(),
        runtime: plan.runtime,
        export_path: command.export_path,
        archive_format: ArchiveFormat::parse(&command.archive_format).map_err(|e| e.to_string())?,
        force: command.force,
        requirements_file: None,
        config_file: plan.config_file,
        ort_library: command.ort_library,
        convert: command.conversion.options(command.verbose),
        carried_files: plan.carried_files,
    };
    finish(&request)
}

fn inspect(archive: PathBuf, ort_library: Option<PathBuf>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let extracted = unpack::extract(
        &archive,
        &dir.path().join("archive"),
        &unpack::Limits::default(),
    )
    .map_err(|error| error.to_string())?;
    let manifest_json = String::from_utf8_lossy(&extracted.manifest.to_json()).to_string();
    println!("MAR-INF/MANIFEST.json:\n{manifest_json}\n");
    match &extracted.handler {
        Some(handler) => println!(
            "handler config:\n{}\n",
            String::from_utf8_lossy(&handler.to_json())
        ),
        None => {
            println!("handler config: none (not an oxserve archive: a TorchServe Python handler)\n")
        }
    }
    let signature = match &extracted.manifest.oxserve {
        Some(section) => Some(section.signature.clone()),
        None => {
            // A TorchServe archive: read the graph now if it is ONNX.
            let serialized = extracted
                .manifest
                .model
                .serialized_file
                .clone()
                .unwrap_or_default();
            let bytes =
                std::fs::read(extracted.root.join(&serialized)).map_err(|e| e.to_string())?;
            let loaded = runtime::init(ort_library.as_deref()).map_err(|e| e.to_string())?;
            oxserve_archiver::graph::read_signature(loaded.environment, &serialized, &bytes).ok()
        }
    };
    match signature {
        Some(signature) => {
            println!("graph signature:");
            for input in &signature.inputs {
                println!("  input  {input}");
            }
            for output in &signature.outputs {
                println!("  output {output}");
            }
        }
        None => println!(
            "graph signature: unknown (the serialized file is not ONNX: `oxserve-archiver convert {}` exports it)",
            archive.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

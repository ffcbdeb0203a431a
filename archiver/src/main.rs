//! `oxserve-archiver`: torch-model-archiver's command line, packing ONNX graphs into `.mar` archives.
//! `oxserve-archiver inspect X.mar` prints what an archive holds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use oxserve_archiver::pack::{pack, ArchiveFormat, PackRequest};
use oxserve_archiver::{runtime, unpack};

/// Packs an ONNX graph exported from PyTorch and its handler into a TorchServe-style model
/// archive. Takes torch-model-archiver's flags with the same meaning and defaults.
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
}

#[derive(Args, Debug)]
struct PackArgs {
    /// Exported model name; the archive is saved as <model-name>.mar. Letters, digits, '_', '-', '.'.
    #[arg(long = "model-name", short = 'n')]
    model_name: Option<String>,
    /// Model's version.
    #[arg(long = "version", short = 'v')]
    version: Option<String>,
    /// The ONNX graph (from torch.onnx.export, TorchScript or eager).
    #[arg(long = "serialized-file", short = 's')]
    serialized_file: Option<PathBuf>,
    /// Python model file (carried for compatibility; oxserve runs the ONNX graph, never this file).
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect { archive }) => inspect(archive, cli.pack.ort_library),
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
    };
    let outcome = pack(&request).map_err(|error| error.to_string())?;
    for warning in &outcome.warnings {
        eprintln!("oxserve-archiver: warning: {warning}");
    }
    println!("{}", outcome.path.display());
    Ok(())
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
        None => println!("graph signature: unknown (the serialized file is not ONNX)"),
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

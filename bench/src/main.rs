//! `oxserve-bench`: measures oxserve against the physical limit, bare ONNX Runtime on the same
//! graph with the same session settings, in one run on one machine, and reports every figure
//! as a ratio to that limit (shared machines drift; ratios taken in the same run hold).
//!
//! Run it through `bench/run.sh`, which installs ONNX Runtime, exports ResNet-18 when missing and
//! builds the release binaries first.
//!
//! # Layout
//! - [`models`]: the digits CNN and ResNet-18: request bodies, ready tensors, archives.
//! - [`bare`]: the limit, bare ONNX Runtime on ready tensors.
//! - [`server`]: the oxserve process under test: spawn, stop, RSS and CPU from /proc.
//! - [`load`]: the closed-loop HTTP load generator.
//! - [`grpc`]: the same closed loop over gRPC `Predictions`.
//! - [`cases`]: the server sweep over concurrencies, with samplers beside the load.
//! - [`probes`]: pre-processing cost, cold start, memory with two models.
//! - [`record`]: a measurement's latency summary and its `BENCH {json}` line (stable keys, for
//!   scripts and CI).
//! - [`report`]: the records, tables, and the summary against the targets.

mod bare;
mod cases;
mod grpc;
mod load;
mod models;
mod probes;
mod record;
mod report;
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use crate::bare::Sessions;
use crate::cases::{Sweep, Timing};
use crate::models::Model;
use crate::report::{BareCase, ServerCase};
use crate::server::Binaries;

/// Benchmark oxserve against bare ONNX Runtime on the same graphs.
#[derive(Parser, Debug)]
#[command(name = "oxserve-bench")]
struct Args {
    /// Smoke run for CI: seconds in all (0.2 s warm-up, 0.5 s per case, concurrency 1 and 16,
    /// one cold start, few pre-processing runs). Its figures are too short to quote.
    #[arg(long)]
    quick: bool,
    /// Warm-up before each measured window, in seconds [default: 1.5, or 0.2 with --quick].
    #[arg(long)]
    warmup: Option<f64>,
    /// Measured window of each case, in seconds [default: 5, or 0.5 with --quick].
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent clients, comma-separated [default: 1,4,16,64, or 1,16 with --quick].
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Server batch sizes (model-config.yaml `batchSize`) and bare batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch_sizes: Vec<usize>,
    /// Models to measure: digits, resnet18, minilm (all-MiniLM-L6-v2, exported on demand).
    #[arg(long, value_delimiter = ',', default_value = "digits,resnet18")]
    models: Vec<String>,
    /// `maxBatchDelay` in the archives, in ms: TorchServe's default. oxserve's default batching
    /// never waits for it (a batch is what is queued); it matters only with `batchWait: fill`.
    #[arg(long, default_value_t = 100)]
    max_batch_delay: u64,
    /// The ResNet-18 graph [default: <root>/.cache/models/resnet18.onnx].
    #[arg(long)]
    resnet: Option<PathBuf>,
    /// The oxserve binary under test [default: <root>/target/release/oxserve].
    #[arg(long)]
    oxserve: Option<PathBuf>,
    /// The repository root [default: the checkout this binary was built from].
    #[arg(long)]
    root: Option<PathBuf>,
    /// A config.properties line for the server under test, e.g. `--set intra_op_threads=2` or
    /// `--set default_workers_per_model=1`; the bare runs use the sessions it implies (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run both sides on the first GPU (ONNX Runtime's CUDA provider; needs the onnxruntime-gpu
    /// library, `scripts/install-onnxruntime.sh --gpu`). Without it the server under test is
    /// held to the CPU (`number_of_gpu=0`), like the bare runs.
    #[arg(long)]
    gpu: bool,
    /// Workers of the model under test (model-config.yaml `minWorkers`/`maxWorkers`), and so the
    /// bare runs' sessions [default: the server's default workers per model].
    #[arg(long)]
    workers: Option<usize>,
    /// Skip the pre-processing, cold-start and memory measurements.
    #[arg(long)]
    no_probes: bool,
    /// A Python with torchvision and Pillow: the JPEG is also put through TorchServe's
    /// pre-processing (scripts/bench/torchvision_preprocess.py) for its time and tensor.
    /// `bench/run.sh` passes the one it finds.
    #[arg(long)]
    python: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = match &args.root {
        Some(root) => root.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the bench crate has no parent folder")?
            .to_path_buf(),
    };
    let timing = Timing {
        warmup: seconds(args.warmup.unwrap_or(if args.quick { 0.2 } else { 1.5 }))?,
        duration: seconds(args.duration.unwrap_or(if args.quick { 0.5 } else { 5.0 }))?,
    };
    let concurrencies = match (args.concurrency.is_empty(), args.quick) {
        (false, _) => args.concurrency.clone(),
        (true, true) => vec![1, 16],
        (true, false) => vec![1, 4, 16, 64],
    };
    // The digits model also as KServe v2 raw tensors: alone and saturated.
    let v2_concurrencies: Vec<usize> = [concurrencies.iter().min(), concurrencies.iter().max()]
        .into_iter()
        .flatten()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let binaries = binaries(&root, args.oxserve.clone())?;
    // The bare runs load the very library the server is given.
    oxserve::backend::init(Some(&binaries.ort_library)).map_err(anyhow::Error::msg)?;
    let mut set = args.set.clone();
    if !args.gpu {
        set.push("number_of_gpu=0".into());
    }
    let sessions = Sessions::server_default(&set, args.gpu, args.workers)?;
    let models = load_models(&root, &args)?;
    record::emit(
        "meta",
        &serde_json::json!({
            "quick": args.quick,
            "cores": oxserve::config::Config::cores(),
            "sessions": sessions.count,
            "intra_op_threads": sessions.intra_op_threads,
            "gpu": args.gpu,
            "warmup_s": timing.warmup.as_secs_f64(),
            "duration_s": timing.duration.as_secs_f64(),
            "concurrency": concurrencies,
            "batch_sizes": args.batch_sizes,
            "load_average": server::load_average(),
            "ort_library": binaries.ort_library.display().to_string(),
        }),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bare_cases: Vec<BareCase> = Vec::new();
    let mut server_cases: Vec<ServerCase> = Vec::new();
    let mut http_floor: Option<ServerCase> = None;
    let mut grpc_cases: Vec<ServerCase> = Vec::new();
    for (model_index, model) in models.iter().enumerate() {
        for (batch_index, &batch) in args.batch_sizes.iter().enumerate() {
            // The limit: one session at a time for the lone client's latency, then the server's
            // sessions, between the sweep's cases (see `cases`), so that a machine whose speed
            // changes shows as drift, not as a ratio.
            let bare_run = |phase, sessions, duration| -> anyhow::Result<BareCase> {
                eprintln!(
                    "bare ONNX Runtime: {} batch {batch} ({phase}) ...",
                    model.name
                );
                let case = bare::measure(model, batch, phase, sessions, timing.warmup, duration)?;
                record::emit("bare", &case);
                Ok(case)
            };
            let lone = bare_run(
                "lone",
                Sessions {
                    count: 1,
                    ..sessions
                },
                timing.duration,
            )?;
            eprintln!("oxserve: {} batch_size {batch}", model.name);
            let sweep = Sweep {
                model,
                batch_size: batch,
                max_batch_delay_ms: args.max_batch_delay,
                concurrencies: &concurrencies,
                timing: Timing {
                    duration: case_window(timing.duration, &lone),
                    ..timing
                },
                config: &set,
                workers: args.workers,
                // Once per run, on the first server, at the highest concurrency.
                http_floor: (model_index == 0 && batch_index == 0)
                    .then(|| concurrencies.iter().copied().max())
                    .flatten(),
                v2_concurrencies: if model.name == "digits" {
                    &v2_concurrencies
                } else {
                    &[]
                },
                // gRPC beside REST on the digits CNN's first server.
                grpc: model.name == "digits" && batch_index == 0,
            };
            let bracket = timing.duration.min(BRACKET);
            let mut limit = |phase| bare_run(phase, sessions, bracket);
            let outcome = cases::run_sweep(&binaries, &runtime, &sweep, &mut limit, &lone)?;
            if let Some(floor) = outcome.http_floor {
                record::emit("http_floor", &floor);
                http_floor = Some(floor);
            }
            for case in &outcome.cases {
                record::emit("server", case);
            }
            for case in &outcome.grpc {
                record::emit("grpc", case);
            }
            grpc_cases.extend(outcome.grpc);
            bare_cases.push(lone);
            bare_cases.extend(outcome.limits);
            server_cases.extend(outcome.cases);
        }
    }

    let probes = if args.no_probes {
        None
    } else {
        Some(probes::run_all(
            &binaries,
            &root,
            &models,
            args.quick,
            args.python.as_deref(),
        )?)
    };

    report::print_bare(&bare_cases);
    report::print_server(&server_cases);
    if let Some(floor) = &http_floor {
        report::print_http_floor(floor, &server_cases);
    }
    report::print_grpc(&grpc_cases, &server_cases);
    if args.quick {
        println!(
            "\n(--quick: windows too short for the figures below to mean anything; a smoke run)"
        );
    }
    report::print_targets(&server_cases, probes.as_ref());
    println!(
        "\nload average at the end: {} (figures from a busy machine are not final)",
        server::load_average()
    );
    Ok(())
}

/// The measured window of the server's cases at one batch size: `duration`, or longer when it
/// would hold fewer than [`MIN_RUNS`] of a lone session's runs (at most three times as long).
/// The server's throughput is counted in answered requests, which come in whole batches: with
/// ResNet-18's 200-ms batches of 8, a 5-s window holds ~25 per worker, and where it falls cuts
/// one more or less, ±4 % per worker.
fn case_window(duration: Duration, lone: &BareCase) -> Duration {
    let runs = Duration::from_secs_f64(lone.latency.p50_ms * 1e-3 * MIN_RUNS as f64);
    runs.clamp(duration, duration * 3)
}

/// Runs of one session a server case's window should hold (see [`case_window`]).
const MIN_RUNS: u32 = 50;

/// The measured window of each bare run between the server's cases (its warm-up is the cases'):
/// long enough for ~20 batches of 8 ResNet-18 images, short enough to sit close to the cases.
const BRACKET: Duration = Duration::from_secs(3);

fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).context("durations must be positive numbers of seconds")
}

/// The binary under test and the ONNX Runtime library both sides use.
fn binaries(root: &Path, oxserve: Option<PathBuf>) -> anyhow::Result<Binaries> {
    let oxserve = oxserve.unwrap_or_else(|| root.join("target/release/oxserve"));
    if !oxserve.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release` (bench/run.sh does)",
            oxserve.display()
        );
    }
    let (ort_library, _) = oxserve_archiver::runtime::locate(None)?;
    Ok(Binaries {
        oxserve,
        ort_library,
    })
}

fn load_models(root: &Path, args: &Args) -> anyhow::Result<Vec<Model>> {
    args.models
        .iter()
        .map(|name| match name.as_str() {
            "digits" => Model::digits(root),
            "resnet18" => Model::resnet18(
                root,
                args.resnet
                    .clone()
                    .unwrap_or_else(|| root.join(".cache/models/resnet18.onnx")),
            ),
            "minilm" => Model::minilm(&root.join(".cache/models/all-minilm-l6-v2")),
            other => bail!("unknown model {other:?}: digits, resnet18 or minilm"),
        })
        .collect()
}

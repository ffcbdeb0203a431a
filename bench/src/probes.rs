//! The other targets, each a short measurement of its own: what pre-processing one JPEG
//! costs, how fast `oxserve --start` is healthy on the example store, and the RSS of a server
//! holding two ResNet-18-sized models with two workers each.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::models::Model;
use crate::record::{self, Latency};
use crate::server::{free_ports, http_call, rss_mib, Binaries, ServerProcess};

/// Pre-processing of one request body.
#[derive(Debug, Serialize)]
pub struct PreprocessCost {
    pub model: String,
    pub input_bytes: usize,
    pub iterations: usize,
    /// What a lone request waits for: `image::prepare`, as the server calls it.
    pub total: Latency,
    /// The same as two calls (`decode` + `preprocess`), timed apart below.
    pub one_thread: Latency,
    /// Of that, decode and colour conversion...
    pub decode: Latency,
    /// ... and resize, crop and normalise into the float tensor.
    pub resize_normalize: Latency,
    /// TorchServe's own pipeline on the same bytes, when a Python with torchvision was given.
    pub torchserve: Option<TorchvisionReference>,
}

/// `scripts/bench/torchvision_preprocess.py` on the same JPEG: what TorchServe's
/// image_classifier spends on it on this machine, and how far its tensor is from oxserve's.
#[derive(Debug, Serialize)]
pub struct TorchvisionReference {
    pub p50_ms: f64,
    pub p90_ms: f64,
    /// TorchServe's median over oxserve's, a lone request's and on one thread.
    pub speedup: f64,
    pub speedup_one_thread: f64,
    /// Pillow's decode alone (libjpeg-turbo, full size): what reproducing TorchServe's pixels
    /// costs at least with the decoder it uses.
    pub pillow_decode_p50_ms: Option<f64>,
    /// Largest and mean |oxserve − torchvision| over the tensor, in normalised units (one 8-bit
    /// level is 1 / (255 × std) ≈ 0.017–0.018 of them).
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    /// Values equal to within float rounding (1e-5).
    pub equal_fraction: f64,
    pub pillow: String,
    pub libjpeg_turbo: Option<String>,
    pub torchvision: String,
}

/// Runs TorchServe's pre-processing (PIL + torchvision, in `python`) on the model's body and
/// compares it with oxserve's tensor.
pub fn torchvision_reference(
    root: &Path,
    python: &Path,
    model: &Model,
    iterations: usize,
    (ours_p50_ms, one_thread_p50_ms): (f64, f64),
) -> anyhow::Result<TorchvisionReference> {
    use oxserve::handler::image::prepare;
    let folder = tempfile::tempdir()?;
    let (image, tensor_path) = (
        folder.path().join("input.jpg"),
        folder.path().join("tensor"),
    );
    std::fs::write(&image, &model.body)?;
    let script = root.join("scripts/bench/torchvision_preprocess.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(&image)
        .arg(iterations.to_string())
        .arg(&tensor_path)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    #[derive(serde::Deserialize)]
    struct Printed {
        p50_ms: f64,
        p90_ms: f64,
        #[serde(default)]
        decode_p50_ms: Option<f64>,
        pillow: String,
        libjpeg_turbo: Option<String>,
        torchvision: String,
    }
    let printed: Printed = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading {}'s output", script.display()))?;
    let theirs: Vec<f32> = std::fs::read(&tensor_path)?
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .collect();
    let (ours, _, _, _) = prepare(&model.body, model.image()?, true)?;
    if ours.len() != theirs.len() {
        bail!(
            "torchvision's tensor has {} values, oxserve's {}",
            theirs.len(),
            ours.len()
        );
    }
    let differences: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| f64::from((a - b).abs()))
        .collect();
    let count = differences.len().max(1) as f64;
    Ok(TorchvisionReference {
        p50_ms: printed.p50_ms,
        p90_ms: printed.p90_ms,
        speedup: printed.p50_ms / ours_p50_ms,
        speedup_one_thread: printed.p50_ms / one_thread_p50_ms,
        pillow_decode_p50_ms: printed.decode_p50_ms,
        max_abs_diff: differences.iter().copied().fold(0.0, f64::max),
        mean_abs_diff: differences.iter().sum::<f64>() / count,
        equal_fraction: differences.iter().filter(|&&d| d < 1e-5).count() as f64 / count,
        pillow: printed.pillow,
        libjpeg_turbo: printed.libjpeg_turbo,
        torchvision: printed.torchvision,
    })
}

/// Times `oxserve::handler::image::prepare` (a request's path) and `decode` + `preprocess` on the
/// model's request body, alternating so that both see the same machine.
pub fn preprocess_cost(model: &Model, iterations: usize) -> anyhow::Result<PreprocessCost> {
    use oxserve::handler::image::{decode, prepare, preprocess};
    let settings = model.image()?;
    // Warm caches and the allocator first, as a running server has.
    for _ in 0..iterations.min(10) {
        let pixels = decode(&model.body, settings, true)?;
        std::hint::black_box(preprocess(&pixels, settings)?);
        std::hint::black_box(prepare(&model.body, settings, true)?);
    }
    let (mut decode_times, mut resize_times, mut serial, mut totals) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let started = Instant::now();
        let pixels = decode(&model.body, settings, true)?;
        let decoded = Instant::now();
        std::hint::black_box(preprocess(&pixels, settings)?);
        let finished = Instant::now();
        decode_times.push(decoded - started);
        resize_times.push(finished - decoded);
        serial.push(finished - started);
        // A request arrives after a pause, as a lone client's do.
        std::thread::sleep(Duration::from_millis(1));
        let started = Instant::now();
        std::hint::black_box(prepare(&model.body, settings, true)?);
        totals.push(started.elapsed());
    }
    Ok(PreprocessCost {
        model: model.name.clone(),
        input_bytes: model.body.len(),
        iterations,
        total: Latency::from_samples(&mut totals),
        one_thread: Latency::from_samples(&mut serial),
        decode: Latency::from_samples(&mut decode_times),
        resize_normalize: Latency::from_samples(&mut resize_times),
        torchserve: None,
    })
}

/// `oxserve --start` on the example store, until it has answered /ping (which is when `--start`
/// returns), then `--stop`.
#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub stop_ms: Vec<f64>,
}

/// Runs the start/stop cycle `runs` times. Each run has its own ports, pid file and working
/// folder (`--start` writes `logs/` into it), so nothing clashes with another oxserve.
pub fn cold_start(binaries: &Binaries, root: &Path, runs: usize) -> anyhow::Result<ColdStart> {
    let store = root.join("model-store");
    let (mut runs_ms, mut stop_ms) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("oxserve-bench-cold-")
            .tempdir()?;
        let [inference, management, metrics] = free_ports()?;
        let config = dir.path().join("config.properties");
        std::fs::write(
            &config,
            format!("inference_address=http://{inference}\nmanagement_address=http://{management}\nmetrics_address=http://{metrics}\ngrpc_inference_port=0\ngrpc_management_port=0\n"),
        )?;
        let pid_file = dir.path().join("oxserve.pid");
        let oxserve = |action: &str| {
            let mut command = Command::new(&binaries.oxserve);
            command
                .arg(action)
                .arg("--pid-file")
                .arg(&pid_file)
                .current_dir(dir.path())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            command
        };
        let started = Instant::now();
        let output = oxserve("--start")
            .args([
                "--ncs",
                "--disable-token-auth",
                "--models",
                "mnist.mar",
                "--model-store",
            ])
            .arg(&store)
            .arg("--ts-config")
            .arg(&config)
            .arg("--ort-library")
            .arg(&binaries.ort_library)
            .output()
            .context("running oxserve --start")?;
        let elapsed = started.elapsed();
        let healthy = matches!(http_call(inference, "GET", "/ping", &[]), Ok((200, _)));
        let stopping = Instant::now();
        let stopped = oxserve("--stop")
            .output()
            .context("running oxserve --stop")?;
        stop_ms.push(stopping.elapsed().as_secs_f64() * 1e3);
        if !output.status.success() || !healthy {
            bail!(
                "oxserve --start failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if !stopped.status.success() {
            bail!(
                "oxserve --stop failed: {}",
                String::from_utf8_lossy(&stopped.stderr)
            );
        }
        runs_ms.push(elapsed.as_secs_f64() * 1e3);
    }
    let mut sorted = runs_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(ColdStart {
        median_ms: sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
        runs_ms,
        stop_ms,
    })
}

/// RSS of one server holding two copies of a model, two workers each.
#[derive(Debug, Serialize)]
pub struct Memory {
    pub model: String,
    pub models: usize,
    pub workers_each: usize,
    /// Once /ping is healthy: every session built, nothing run yet.
    pub rss_loaded_mib: f64,
    /// After every worker has run requests (ONNX Runtime's arenas are allocated by then).
    pub rss_serving_mib: f64,
}

/// Loads `model` twice (as `<name>_a` and `<name>_b`, two workers each), then sends each model
/// requests from two threads at once so that both of its workers run.
pub fn two_models(binaries: &Binaries, model: &Model) -> anyhow::Result<Memory> {
    const WORKERS: usize = 2;
    let store = tempfile::Builder::new()
        .prefix("oxserve-bench-memory-")
        .tempdir()?;
    let names = [format!("{}_a", model.name), format!("{}_b", model.name)];
    for name in &names {
        model.pack_into(
            store.path(),
            name,
            &format!("minWorkers: {WORKERS}\nmaxWorkers: {WORKERS}\n"),
        )?;
    }
    let mut server = ServerProcess::start(binaries, store.path(), &[])?;
    let rss_loaded_mib = rss_mib(server.pid())?;
    let inference = server.inference;
    let answers: Vec<anyhow::Result<u16>> = std::thread::scope(|scope| {
        let senders: Vec<_> = names
            .iter()
            .flat_map(|name| std::iter::repeat_n(name, WORKERS))
            .map(|name| {
                scope.spawn(move || -> anyhow::Result<u16> {
                    let mut last = 0;
                    for _ in 0..4 {
                        last = http_call(
                            inference,
                            "POST",
                            &format!("/predictions/{name}"),
                            &model.body,
                        )?
                        .0;
                    }
                    Ok(last)
                })
            })
            .collect();
        senders
            .into_iter()
            .map(|sender| {
                sender
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a request thread panicked")))
            })
            .collect()
    });
    for answer in answers {
        let status = answer?;
        if status != 200 {
            bail!("the memory probe's request got HTTP {status}");
        }
    }
    // Let freed buffers settle before reading.
    std::thread::sleep(Duration::from_millis(100));
    let rss_serving_mib = rss_mib(server.pid())?;
    server.check_alive()?;
    server.stop()?;
    Ok(Memory {
        model: model.name.clone(),
        models: names.len(),
        workers_each: WORKERS,
        rss_loaded_mib,
        rss_serving_mib,
    })
}

/// The probes' results, for the summary.
pub struct Probes {
    pub preprocess: Option<PreprocessCost>,
    pub cold_start: ColdStart,
    pub memory: Option<Memory>,
}

/// Runs every probe that the chosen models allow, emitting each result as a `BENCH` line.
pub fn run_all(
    binaries: &Binaries,
    root: &Path,
    models: &[Model],
    quick: bool,
    python: Option<&Path>,
) -> anyhow::Result<Probes> {
    let resnet = models.iter().find(|model| model.name == "resnet18");
    let preprocess = match resnet {
        Some(model) => {
            eprintln!("pre-processing one {}-byte JPEG ...", model.body.len());
            let iterations = if quick { 20 } else { 300 };
            let mut cost = preprocess_cost(model, iterations)?;
            if let Some(python) = python {
                eprintln!("the same JPEG through TorchServe's PIL + torchvision pipeline ...");
                let ours = (cost.total.p50_ms, cost.one_thread.p50_ms);
                match torchvision_reference(root, python, model, iterations, ours) {
                    Ok(reference) => cost.torchserve = Some(reference),
                    Err(error) => eprintln!("  skipped: {error:#}"),
                }
            }
            record::emit("preprocess", &cost);
            Some(cost)
        }
        None => None,
    };
    eprintln!("cold start: oxserve --start on model-store/ ...");
    let cold_start = cold_start(binaries, root, if quick { 1 } else { 5 })?;
    record::emit("cold_start", &cold_start);
    let memory = match resnet {
        Some(model) => {
            eprintln!("memory: two {} models, two workers each ...", model.name);
            let memory = two_models(binaries, model)?;
            record::emit("memory", &memory);
            Some(memory)
        }
        None => None,
    };
    Ok(Probes {
        preprocess,
        cold_start,
        memory,
    })
}

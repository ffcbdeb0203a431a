//! The server sweep: for one model and one batch size, pack the archive, start a fresh oxserve
//! process on it, run every concurrency against it (warm-up, then the measured window) while
//! sampling the server's RSS and CPU beside the load, and relate each result to the bare limit.
//!
//! The limit is measured between cases, while the server under test sits idle: once before the
//! first case and once after each, so every case is bracketed by the two bare runs nearest to it
//! in time. On a shared machine whose speed drifts by 10 % over half a minute, a limit measured
//! only at the two ends of a sweep was ~20 s away from its last case.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::grpc::GrpcSpec;
use crate::load::{self, LoadSpec, Window};
use crate::models::Model;
use crate::record::Latency;
use crate::report::{BareCase, ServerCase};
use crate::server::{cpu_seconds, rss_mib, Binaries, ServerProcess};

/// Per-case timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one sweep runs.
pub struct Sweep<'a> {
    pub model: &'a Model,
    pub batch_size: usize,
    /// `maxBatchDelay` written into model-config.yaml, in ms.
    pub max_batch_delay_ms: u64,
    pub concurrencies: &'a [usize],
    pub timing: Timing,
    /// Extra config.properties lines (`--set`).
    pub config: &'a [String],
    /// The model's own worker count (model-config.yaml), when not the server's default.
    pub workers: Option<usize>,
    /// Also drive `GET /ping` at this concurrency on the same server: the HTTP floor.
    pub http_floor: Option<usize>,
    /// Also send the ready tensor as KServe v2 raw-tensor requests at these concurrencies.
    pub v2_concurrencies: &'a [usize],
    /// Also drive gRPC `Predictions` on the same server, at the lowest and highest concurrency.
    pub grpc: bool,
}

/// The cases of one sweep, the bare runs that bracket them, and the HTTP floor when it was asked
/// for.
pub struct SweepOutcome {
    pub cases: Vec<ServerCase>,
    /// One more than the cases: case `i` lies between bare runs `i` and `i + 1`.
    pub limits: Vec<BareCase>,
    pub http_floor: Option<ServerCase>,
    /// The gRPC cases, when asked for.
    pub grpc: Vec<ServerCase>,
}

/// Runs the sweep. `limit` measures bare ONNX Runtime at the sweep's batch size (its argument is
/// the phase to report); `lone` is the one-session limit the concurrency-1 latency is held to.
/// The cases come back related to their brackets ([`ServerCase::relate`]).
pub fn run_sweep(
    binaries: &Binaries,
    runtime: &tokio::runtime::Runtime,
    sweep: &Sweep,
    limit: &mut dyn FnMut(&'static str) -> anyhow::Result<BareCase>,
    lone: &BareCase,
) -> anyhow::Result<SweepOutcome> {
    let store = tempfile::Builder::new()
        .prefix("oxserve-bench-store-")
        .tempdir()?;
    let name = &sweep.model.name;
    // The batching keys, and the workers when asked for; the bare run has as many sessions.
    let mut model_config = format!(
        "batchSize: {}\nmaxBatchDelay: {}\n",
        sweep.batch_size, sweep.max_batch_delay_ms
    );
    if let Some(workers) = sweep.workers {
        model_config.push_str(&format!("minWorkers: {workers}\nmaxWorkers: {workers}\n"));
    }
    sweep.model.pack_into(store.path(), name, &model_config)?;
    let extra: Vec<&str> = sweep.config.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start(binaries, store.path(), &extra)?;
    let mut cases = Vec::new();
    let mut limits = vec![limit("before")?];
    for &concurrency in sweep.concurrencies {
        eprintln!(
            "  oxserve {name} batch_size={} concurrency={concurrency} ...",
            sweep.batch_size
        );
        let mut case = run_case(runtime, &server, sweep, concurrency, Load::Predictions)?;
        server.check_alive()?;
        let after = limit("after")?;
        if let Some(before) = limits.last() {
            case.relate(before, &after, lone);
        }
        limits.push(after);
        cases.push(case);
    }
    for &concurrency in sweep.v2_concurrencies {
        eprintln!("  oxserve {name} v2 raw tensor concurrency={concurrency} ...");
        let mut case = run_case(runtime, &server, sweep, concurrency, Load::V2Tensor)?;
        server.check_alive()?;
        let after = limit("after")?;
        if let Some(before) = limits.last() {
            case.relate(before, &after, lone);
        }
        limits.push(after);
        cases.push(case);
    }
    let http_floor = match sweep.http_floor {
        Some(concurrency) => {
            eprintln!("  oxserve GET /ping concurrency={concurrency} (the HTTP floor) ...");
            let case = run_case(runtime, &server, sweep, concurrency, Load::Ping)?;
            server.check_alive()?;
            Some(case)
        }
        None => None,
    };
    let mut grpc = Vec::new();
    if sweep.grpc {
        let lowest = sweep.concurrencies.iter().copied().min();
        let highest = sweep.concurrencies.iter().copied().max();
        for concurrency in [lowest, highest].into_iter().flatten() {
            if grpc
                .iter()
                .any(|case: &ServerCase| case.concurrency == concurrency)
            {
                continue;
            }
            eprintln!("  oxserve {name} over gRPC concurrency={concurrency} ...");
            grpc.push(run_case(runtime, &server, sweep, concurrency, Load::Grpc)?);
            server.check_alive()?;
        }
    }
    let (errors, warnings) = server.log_problems();
    if errors + warnings > 0 {
        eprintln!(
            "  note: the server logged {errors} ERROR and {warnings} WARN lines; last lines:\n{}",
            server.log_tail()
        );
    }
    server.stop()?;
    Ok(SweepOutcome {
        cases,
        limits,
        http_floor,
        grpc,
    })
}

/// What the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// The model's request body to `/predictions/{model}`.
    Predictions,
    /// The ready tensor as a KServe v2 JSON request to `/v2/models/{model}/infer`.
    V2Tensor,
    /// `GET /ping`: the cheapest request the server answers, so the cost of HTTP itself (keep-alive
    /// connection, parsing, routing, the access-log line, the answer) on this machine.
    Ping,
    /// The same body as the `data` input of gRPC `Predictions`.
    Grpc,
}

/// One concurrency: load, RSS sampling and CPU accounting run side by side on the harness's
/// single-threaded runtime.
fn run_case(
    runtime: &tokio::runtime::Runtime,
    server: &ServerProcess,
    sweep: &Sweep,
    concurrency: usize,
    load: Load,
) -> anyhow::Result<ServerCase> {
    let name = &sweep.model.name;
    let pid = server.pid();
    let (batches_before, rows_before, run_before) = server.batch_counters(name)?;
    let window = Window::after(sweep.timing.warmup, sweep.timing.duration);
    let (path, body) = match load {
        Load::Predictions | Load::Grpc => (
            format!("/predictions/{name}"),
            Some(sweep.model.body.clone()),
        ),
        Load::V2Tensor => (
            format!("/v2/models/{name}/infer"),
            Some(sweep.model.v2_body()),
        ),
        Load::Ping => ("/ping".into(), None),
    };
    let driven = async {
        match load {
            Load::Grpc => {
                let spec = GrpcSpec {
                    address: server.grpc_inference,
                    model: name.clone(),
                    body: sweep.model.body.clone(),
                    concurrency,
                };
                crate::grpc::drive(spec, window).await
            }
            Load::Predictions | Load::V2Tensor | Load::Ping => {
                let spec = LoadSpec {
                    address: server.inference,
                    path,
                    body,
                    concurrency,
                };
                load::drive(spec, window).await
            }
        }
    };
    let (outcome, rss_max_mib, cpu) = runtime
        .block_on(async { tokio::join!(driven, sample_rss(pid, window), cpu_during(pid, window)) });
    let (batches_after, rows_after, run_after) = server.batch_counters(name)?;
    if let Some(error) = &outcome.first_error {
        eprintln!("  {} errors; the first: {error}", outcome.errors);
    }
    let mut latencies = outcome.latencies;
    let requests = latencies.len() as u64;
    let seconds = sweep.timing.duration.as_secs_f64();
    let rps = requests as f64 / seconds;
    let latency = Latency::from_samples(&mut latencies);
    let (server_cpu_cores, client_cpu_cores) = cpu.context("reading CPU times from /proc")?;
    Ok(ServerCase {
        model: match load {
            Load::Predictions => name.clone(),
            Load::V2Tensor => format!("{name} v2"),
            Load::Ping => "GET /ping".into(),
            Load::Grpc => format!("{name} (gRPC)"),
        },
        batch_size: sweep.batch_size,
        concurrency,
        seconds,
        requests,
        rps,
        latency,
        errors: outcome.errors,
        rss_max_mib,
        server_cpu_cores,
        client_cpu_cores,
        client_us_per_request: client_cpu_cores * seconds * 1e6 / requests.max(1) as f64,
        mean_batch_rows: (rows_after - rows_before) / (batches_after - batches_before).max(1.0),
        run_us_per_row: (run_after - run_before) * 1e6 / (rows_after - rows_before).max(1.0),
        bare_items_per_s: f64::NAN,
        bare_p50_ms: f64::NAN,
        bare_drift: f64::NAN,
        throughput_ratio: f64::NAN,
        p50_delta_ms: f64::NAN,
    })
}

/// Highest VmRSS of the server from the start of the warm-up to the end of the window, read every
/// 20 ms (a /proc read costs microseconds).
async fn sample_rss(pid: u32, window: Window) -> f64 {
    let mut highest: f64 = 0.0;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < window.to {
        ticker.tick().await;
        if let Ok(rss) = rss_mib(pid) {
            highest = highest.max(rss);
        }
    }
    highest
}

/// CPU used inside the window, in cores, by the server and by this harness.
async fn cpu_during(pid: u32, window: Window) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep_until(window.from.into()).await;
    let (server_from, client_from, from) =
        (cpu_seconds(Some(pid))?, cpu_seconds(None)?, Instant::now());
    tokio::time::sleep_until(window.to.into()).await;
    let (server_to, client_to) = (cpu_seconds(Some(pid))?, cpu_seconds(None)?);
    let wall = from.elapsed().as_secs_f64();
    Ok((
        (server_to - server_from) / wall,
        (client_to - client_from) / wall,
    ))
}

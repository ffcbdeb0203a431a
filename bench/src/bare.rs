//! The limit: bare ONNX Runtime running the graph on ready tensors (pre-processed once), with the
//! sessions the server would build — `oxserve::backend::PreparedGraph` (the graph optimised once,
//! weights shared) with the server's default session count and intra-op threads — each session
//! looping on its own thread. No HTTP, no
//! queue, no decode: whatever oxserve adds on top shows as the distance to these figures.

use std::time::{Duration, Instant};

use std::borrow::Cow;

use anyhow::Context;
use ort::session::SessionInputValue;
use ort::value::TensorRef;
use oxserve::backend::{PreparedGraph, SessionSettings};

use crate::models::{BatchInput, BatchValues, Model};
use crate::record::Latency;
use crate::report::BareCase;

/// How the server would run a model by default, and so how the limit is measured.
#[derive(Debug, Clone, Copy)]
pub struct Sessions {
    pub count: usize,
    pub intra_op_threads: usize,
    /// On the first GPU, through the CUDA provider.
    pub gpu: bool,
}

impl Sessions {
    /// The sessions the server gives a model under the `--set` lines: `workers` of them when the
    /// archive sets that many (`--workers`), else `oxserve::model::ModelSettings::defaults`'
    /// count, each with the threads `oxserve::model::plan_threads` plans for that count.
    pub fn server_default(
        set: &[String],
        gpu: bool,
        workers: Option<usize>,
    ) -> anyhow::Result<Sessions> {
        let mut properties = std::collections::BTreeMap::new();
        for line in set {
            let (key, value) = line
                .split_once('=')
                .with_context(|| format!("--set {line:?}: expected KEY=VALUE"))?;
            properties.insert(key.trim().to_string(), value.trim().to_string());
        }
        let mut config =
            oxserve::config::Config::from_properties(properties, &oxserve::config::Cli::default())?;
        config.gpus = usize::from(gpu);
        let settings = oxserve::model::ModelSettings::defaults(&config);
        let count = workers.unwrap_or(settings.min_workers).max(1);
        Ok(Sessions {
            count,
            intra_op_threads: oxserve::model::plan_threads(
                settings.intra_op_threads,
                count,
                oxserve::config::Config::cores(),
            ),
            gpu,
        })
    }
}

/// Runs `batch`-row inputs through `sessions.count` sessions in closed loops: `warmup`, then
/// `duration` measured. Latency is one `session.run` including input binding and output read.
///
/// Throughput is each session's own rate, summed: the runs that ended inside the window over the
/// time those runs' cycles took (finish to finish, so the loop's own work counts). Counting
/// completions in the window alone would be off by up to one run per session depending on
/// where the window fell: with ResNet-18's 200-ms batches of 8, that is ±7 % of a 3-s window.
pub fn measure(
    model: &Model,
    batch: usize,
    phase: &'static str,
    sessions: Sessions,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<BareCase> {
    let graph = std::fs::read(&model.graph)
        .with_context(|| format!("reading {}", model.graph.display()))?;
    let settings = SessionSettings {
        intra_op_threads: sessions.intra_op_threads,
        // The server never spins (model/pool.rs); spinning would flatter the limit.
        spinning: false,
        gpu: sessions.gpu.then_some(0),
    };
    let inputs = model.ready_batch(batch);
    // Sessions are built before the clock starts, as the server builds them before serving.
    let prepared = PreparedGraph::prepare(graph, sessions.gpu)?;
    let built = (0..sessions.count)
        .map(|_| prepared.session(&settings))
        .collect::<Result<Vec<_>, _>>()?;
    let measured_from = Instant::now() + warmup;
    let end = measured_from + duration;
    let per_session: Vec<anyhow::Result<Session>> = std::thread::scope(|scope| {
        let workers: Vec<_> = built
            .into_iter()
            .map(|session| {
                let inputs = &inputs;
                scope.spawn(move || session_loop(session, inputs, measured_from, end))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a bare session thread panicked")))
            })
            .collect()
    });
    let mut samples = Vec::new();
    let mut runs_per_s = 0.0;
    for result in per_session {
        let session = result?;
        if !session.cycles.is_zero() {
            runs_per_s += session.latencies.len() as f64 / session.cycles.as_secs_f64();
        }
        samples.extend(session.latencies);
    }
    let runs = samples.len() as u64;
    Ok(BareCase {
        model: model.name.clone(),
        batch,
        phase,
        sessions: sessions.count,
        intra_op_threads: sessions.intra_op_threads,
        runs,
        items_per_s: runs_per_s * batch as f64,
        latency: Latency::from_samples(&mut samples),
    })
}

/// What one session's loop measured: the runs that ended inside the window.
struct Session {
    latencies: Vec<Duration>,
    /// Their cycles added up: from the end of the run before each to its own end.
    cycles: Duration,
}

/// One session's closed loop.
fn session_loop(
    mut session: oxserve::backend::Session,
    inputs: &[BatchInput],
    measured_from: Instant,
    end: Instant,
) -> anyhow::Result<Session> {
    let session = session.ort_mut();
    let first_input = session
        .inputs()
        .first()
        .map(|input| input.name().to_string())
        .context("the graph has no input")?;
    let mut measured = Session {
        latencies: Vec::new(),
        cycles: Duration::ZERO,
    };
    let mut previous = Instant::now();
    loop {
        let started = Instant::now();
        if started >= end {
            return Ok(measured);
        }
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for input in inputs {
            let name = input.name.as_deref().unwrap_or(first_input.as_str());
            let shape = input.shape.clone();
            let value = match &input.values {
                BatchValues::F32(data) => {
                    SessionInputValue::from(TensorRef::from_array_view((shape, data.as_slice()))?)
                }
                BatchValues::I64(data) => {
                    SessionInputValue::from(TensorRef::from_array_view((shape, data.as_slice()))?)
                }
            };
            values.push((Cow::Borrowed(name), value));
        }
        let outputs = session.run(values)?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>()?;
        std::hint::black_box(values.first());
        let finished = Instant::now();
        if finished >= measured_from && finished <= end {
            measured.latencies.push(finished - started);
            measured.cycles += finished - previous;
        }
        previous = finished;
    }
}

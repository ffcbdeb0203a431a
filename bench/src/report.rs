//! What a run found: the measurements' records (each also printed as a `BENCH {json}` line by
//! [`crate::record::emit`] as soon as it is complete), and the human-readable tables and the
//! issue's targets at the end. Pure formatting: nothing here measures anything.

use serde::Serialize;

use crate::probes::Probes;
use crate::record::Latency;

/// The limit: bare ONNX Runtime on ready tensors.
#[derive(Debug, Clone, Serialize)]
pub struct BareCase {
    pub model: String,
    pub batch: usize,
    /// `lone` (one session), or `before` the sweep's first case / `after` one of its cases.
    pub phase: &'static str,
    pub sessions: usize,
    pub intra_op_threads: usize,
    pub runs: u64,
    pub items_per_s: f64,
    #[serde(flatten)]
    pub latency: Latency,
}

/// oxserve over HTTP at a fixed concurrency, with its ratios to the limit.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCase {
    pub model: String,
    pub batch_size: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: u64,
    pub rps: f64,
    #[serde(flatten)]
    pub latency: Latency,
    /// Answers other than 200, plus requests that got no answer (connection errors).
    pub errors: u64,
    /// Highest VmRSS of the server process seen while the case ran.
    pub rss_max_mib: f64,
    /// CPU the server process used during the measured window, in cores (2.0 = both cores busy).
    pub server_cpu_cores: f64,
    /// CPU this harness (the load generator) used during the window, in cores: the honest cost of
    /// measuring on the same machine.
    pub client_cpu_cores: f64,
    /// The same, per answered request, in microseconds of CPU.
    pub client_us_per_request: f64,
    /// Rows per batch the server ran (its metrics, over warm-up and window).
    pub mean_batch_rows: f64,
    /// Wall time of the server's ONNX Runtime runs per row (its metrics, over warm-up and
    /// window), to set against bare's run p50 over its batch size: how much slower the graph
    /// itself runs beside the HTTP work than alone.
    pub run_us_per_row: f64,
    /// The limit at the same batch size: the mean of the bare runs just before and just after
    /// this case.
    pub bare_items_per_s: f64,
    pub bare_p50_ms: f64,
    /// Bare items/s just after this case over just before it: far from 1.0, the machine's speed
    /// changed during the case and its ratio is not to be trusted.
    pub bare_drift: f64,
    /// rps / bare items/s at the same batch size.
    pub throughput_ratio: f64,
    /// p50 - bare p50 at the same batch size; at concurrency 1, minus the p50 of bare runs made
    /// one at a time (the `lone` phase), as the server's lone client gets.
    pub p50_delta_ms: f64,
}

impl ServerCase {
    /// Fills in the ratios to the limit measured just before and just after this case.
    pub fn relate(&mut self, before: &BareCase, after: &BareCase, lone: &BareCase) {
        self.bare_items_per_s = (before.items_per_s + after.items_per_s) / 2.0;
        self.bare_p50_ms = (before.latency.p50_ms + after.latency.p50_ms) / 2.0;
        self.bare_drift = after.items_per_s / before.items_per_s;
        self.throughput_ratio = self.rps / self.bare_items_per_s;
        if self.concurrency == 1 {
            self.bare_p50_ms = lone.latency.p50_ms;
        }
        self.p50_delta_ms = self.latency.p50_ms - self.bare_p50_ms;
    }
}

/// The table of bare runs.
pub fn print_bare(cases: &[BareCase]) {
    println!("\nBare ONNX Runtime on ready tensors (the limit)");
    println!(
        "{:<10} {:>5} {:>6} {:>9} {:>11} {:>9} {:>9} {:>9}",
        "model", "batch", "phase", "sessions", "items/s", "p50 ms", "p90 ms", "p99 ms"
    );
    for case in cases {
        println!(
            "{:<10} {:>5} {:>6} {:>5}x{:<3} {:>11.1} {:>9.3} {:>9.3} {:>9.3}",
            case.model,
            case.batch,
            case.phase,
            case.sessions,
            case.intra_op_threads,
            case.items_per_s,
            case.latency.p50_ms,
            case.latency.p90_ms,
            case.latency.p99_ms
        );
    }
}

/// The table of server cases.
pub fn print_server(cases: &[ServerCase]) {
    println!(
        "\noxserve over HTTP, closed loop (ratio = rps / bare items/s at the same batch size; bare = the runs just before and just after each case; drift = after / before)"
    );
    println!(
        "{:<10} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>6} {:>6} {:>6} {:>6} {:>9} {:>6}",
        "model",
        "batch",
        "conc",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "RSS MiB",
        "srvCPU",
        "cliCPU",
        "rows/b",
        "ratio",
        "Δp50 ms",
        "drift"
    );
    for case in cases {
        println!(
            "{:<10} {:>5} {:>5} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>6} {:>8.1} {:>6.2} {:>6.2} {:>6.2} {:>6.3} {:>9.3} {:>6.2}",
            case.model,
            case.batch_size,
            case.concurrency,
            case.rps,
            case.latency.p50_ms,
            case.latency.p90_ms,
            case.latency.p99_ms,
            case.errors,
            case.rss_max_mib,
            case.server_cpu_cores,
            case.client_cpu_cores,
            case.mean_batch_rows,
            case.throughput_ratio,
            case.p50_delta_ms,
            case.bare_drift
        );
    }
}

/// `GET /ping` on the same server against the predictions at the same concurrency: the CPU each
/// request costs when it is nothing but HTTP, and when it carries an inference.
pub fn print_http_floor(floor: &ServerCase, cases: &[ServerCase]) {
    let per_request = |cores: f64, rps: f64| cores * 1e6 / rps.max(f64::MIN_POSITIVE);
    println!(
        "\nHTTP floor, GET /ping at concurrency {} on the first server: {:.0} req/s, p50 {:.3} ms, {} errors; CPU per request: server {:.1} us, load generator {:.1} us",
        floor.concurrency,
        floor.rps,
        floor.latency.p50_ms,
        floor.errors,
        per_request(floor.server_cpu_cores, floor.rps),
        floor.client_us_per_request
    );
    for case in cases
        .iter()
        .filter(|case| case.concurrency == floor.concurrency)
    {
        println!(
            "  {} batch {} at the same concurrency: server {:.1} us of CPU per request, bare ONNX Runtime {:.1} us per item (cores / bare items/s); ONNX Runtime's runs take {:.1} us per row in the server, {:.1} bare (run p50 / batch)",
            case.model,
            case.batch_size,
            per_request(case.server_cpu_cores, case.rps),
            per_request(oxserve::config::Config::cores() as f64, case.bare_items_per_s),
            case.run_us_per_row,
            case.bare_p50_ms * 1000.0 / case.batch_size.max(1) as f64
        );
    }
}

/// gRPC beside REST on the same server: p50 at the lowest concurrency (target: within 0.1 ms of
/// REST's) and throughput at the highest (target: within 10 % of REST's).
pub fn print_grpc(grpc: &[ServerCase], rest: &[ServerCase]) {
    if grpc.is_empty() {
        return;
    }
    println!("\ngRPC Predictions beside REST (same server, same body):");
    let highest = grpc.iter().map(|case| case.concurrency).max().unwrap_or(1);
    for case in grpc {
        let name = case.model.trim_end_matches(" (gRPC)");
        let Some(twin) = rest.iter().find(|twin| {
            twin.model == name
                && twin.batch_size == case.batch_size
                && twin.concurrency == case.concurrency
        }) else {
            continue;
        };
        let delta = case.latency.p50_ms - twin.latency.p50_ms;
        let ratio = case.rps / twin.rps.max(f64::MIN_POSITIVE);
        let verdict = match case.concurrency == highest && case.concurrency > 1 {
            true => format!(
                "saturated req/s {:.1} % of REST's (target >= 90 %)",
                ratio * 100.0
            ),
            false => format!("p50 {delta:+.3} ms vs REST (target <= +0.100 ms)"),
        };
        println!(
            "  {name} batch {} concurrency {}: gRPC {:.0} req/s p50 {:.3} ms, REST {:.0} req/s p50 {:.3} ms, {} errors: {verdict}",
            case.batch_size,
            case.concurrency,
            case.rps,
            case.latency.p50_ms,
            twin.rps,
            twin.latency.p50_ms,
            case.errors
        );
    }
}

/// How a figure stands against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Meets,
    Misses,
    /// The limit the figure is a ratio to moved by more than 10 % during its case: the machine's
    /// speed changed, so the figure proves nothing either way.
    Unreliable,
}

impl Verdict {
    pub fn new(met: bool) -> Verdict {
        if met {
            Verdict::Meets
        } else {
            Verdict::Misses
        }
    }

    /// The verdict of a ratio measured against a limit that drifted by `drift` (after / before).
    pub fn of_ratio(met: bool, drift: f64) -> Verdict {
        if drifted(drift) {
            Verdict::Unreliable
        } else {
            Verdict::new(met)
        }
    }
}

/// Whether the bare limit moved by more than 10 % across a case.
fn drifted(drift: f64) -> bool {
    (drift - 1.0).abs() > 0.10
}

/// A figure against its target, for the closing summary.
pub fn print_target(name: &str, measured: &str, target: &str, verdict: Verdict) {
    let verdict = match verdict {
        Verdict::Meets => "meets",
        Verdict::Misses => "MISSES",
        Verdict::Unreliable => "unreliable (drift)",
    };
    println!("  {name:<44} {measured:>14}   target {target:<12} {verdict}");
}

/// The project's targets (issues 6 and 33), each against what this run measured.
pub fn print_targets(server: &[ServerCase], probes: Option<&Probes>) {
    println!("\nTargets");
    let drifting = server
        .iter()
        .filter(|case| drifted(case.bare_drift))
        .count();
    if drifting > 0 {
        println!("  warning: during {drifting} cases the bare limit moved by more than 10 % (the drift column): the machine's speed changed, so their ratios are unreliable");
    }
    let best = |model: &str| {
        server
            .iter()
            .filter(|case| case.model == model && case.concurrency >= 16)
            .max_by(|a, b| a.throughput_ratio.total_cmp(&b.throughput_ratio))
    };
    let find = |model: &str, batch_size: usize, concurrency: usize| {
        server.iter().find(|case| {
            case.model == model && case.batch_size == batch_size && case.concurrency == concurrency
        })
    };
    if let Some(case) = best("resnet18") {
        let measured = format!("{:.3}x", case.throughput_ratio);
        print_target(
            "resnet18 saturated (best C>=16) / bare",
            &measured,
            ">= 0.88x",
            Verdict::of_ratio(case.throughput_ratio >= 0.88, case.bare_drift),
        );
    }
    if let Some(case) = find("digits", 1, 1) {
        let measured = format!("{:+.3} ms", case.p50_delta_ms);
        print_target(
            "digits C=1 p50 - bare p50",
            &measured,
            "<= 0.2 ms",
            Verdict::of_ratio(case.p50_delta_ms <= 0.2, case.bare_drift),
        );
    }
    if let Some(case) = best("digits") {
        let measured = format!("{:.3}x", case.throughput_ratio);
        print_target(
            "digits saturated (best C>=16) / bare",
            &measured,
            ">= 0.80x",
            Verdict::of_ratio(case.throughput_ratio >= 0.80, case.bare_drift),
        );
    }
    if let (Some(one), Some(eight)) = (find("resnet18", 1, 16), find("resnet18", 8, 16)) {
        let measured = format!("{:.1} vs {:.1}", eight.rps, one.rps);
        print_target(
            "resnet18 C=16 req/s: batch 8 vs batch 1",
            &measured,
            "8 > 1",
            Verdict::new(eight.rps > one.rps),
        );
        // What batching can give here at most: the same comparison for bare ONNX Runtime.
        println!(
            "  (bare ONNX Runtime, batch 8 vs batch 1: {:.1} vs {:.1} items/s)",
            eight.bare_items_per_s, one.bare_items_per_s
        );
    }
    let Some(probes) = probes else {
        return;
    };
    if let Some(cost) = &probes.preprocess {
        let measured = format!(
            "{:.3} ms (one thread: {:.3} ms)",
            cost.total.p50_ms, cost.one_thread.p50_ms
        );
        println!("  720x720 JPEG pre-processing (median): {measured}");
        if let Some(reference) = &cost.torchserve {
            println!(
                "  TorchServe's pipeline on the same JPEG (Pillow {} / libjpeg-turbo {}, torchvision {}): {:.3} ms, {:.1}x oxserve's ({:.1}x on one thread); tensors: max |diff| {:.2e}, {:.1} % equal",
                reference.pillow,
                reference.libjpeg_turbo.as_deref().unwrap_or("?"),
                reference.torchvision,
                reference.p50_ms,
                reference.speedup,
                reference.speedup_one_thread,
                reference.max_abs_diff,
                100.0 * reference.equal_fraction
            );
            if let Some(floor) = reference.pillow_decode_p50_ms {
                let times = cost.one_thread.p50_ms / floor;
                print_target(
                    "JPEG on one thread / Pillow's decode alone",
                    &format!("{times:.2}x"),
                    "<= 1.5x",
                    Verdict::new(times <= 1.5),
                );
            }
        }
    }
    let measured = format!("{:.0} ms", probes.cold_start.median_ms);
    print_target(
        "cold start, --start to /ping (median)",
        &measured,
        "<= 500 ms",
        Verdict::new(probes.cold_start.median_ms <= 500.0),
    );
    if let Some(memory) = &probes.memory {
        let rss = memory.rss_serving_mib.max(memory.rss_loaded_mib);
        let measured = format!("{rss:.0} MiB");
        print_target(
            "RSS, 2 x resnet18 x 2 workers, serving",
            &measured,
            "<= 350 MiB",
            Verdict::new(rss <= 350.0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_against_a_moving_limit_is_no_verdict() {
        assert_eq!(Verdict::of_ratio(true, 1.28), Verdict::Unreliable);
        assert_eq!(Verdict::of_ratio(false, 0.85), Verdict::Unreliable);
        assert_eq!(Verdict::of_ratio(true, 1.04), Verdict::Meets);
        assert_eq!(Verdict::of_ratio(false, 0.96), Verdict::Misses);
    }
}

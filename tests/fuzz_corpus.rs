//! Replays every fuzz target's seed corpus (`fuzz/corpus/<target>/`) and every input the fuzzer
//! found a bug with (`fuzz/regressions/<target>/`) through the same entry points, so that stable
//! `cargo test` keeps them fixed without the fuzzer.

use std::path::Path;
use std::time::{Duration, Instant};

type Target = fn(&[u8]);

/// The fuzzer's hang limit is 1 s (optimised, under AddressSanitizer); twice that leaves room for
/// a debug build on a busy machine.
const SLOW: Duration = Duration::from_secs(2);

const TARGETS: [(&str, Target); 13] = [
    ("properties", oxserve::fuzzing::properties),
    ("snapshot", oxserve::fuzzing::snapshot),
    ("model_config", oxserve::fuzzing::model_config),
    ("handler_config", oxserve::fuzzing::handler_config),
    ("archive", oxserve::fuzzing::archive),
    ("tensor_request", oxserve::fuzzing::tensor_request),
    ("multipart", oxserve::fuzzing::multipart),
    ("image", oxserve::fuzzing::image),
    ("v2_request", oxserve::fuzzing::v2_request),
    ("grpc_predictions", oxserve::fuzzing::grpc_predictions),
    ("grpc_model_infer", oxserve::fuzzing::grpc_model_infer),
    ("text_request", oxserve::fuzzing::text_request),
    ("token", oxserve::fuzzing::token),
];

/// Runs `target` on every file in `dir` (a missing folder has none), each within [`SLOW`];
/// returns how many.
fn replay(dir: &Path, target: Target) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("a readable folder").path();
        if path.is_file() {
            let data = std::fs::read(&path).expect("a readable input");
            eprintln!("replaying {}", path.display());
            let started = Instant::now();
            target(&data);
            let took = started.elapsed();
            assert!(took < SLOW, "{} took {took:?}", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn corpus_and_regressions_replay_without_failing() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let seeds = replay(&fuzz.join("corpus").join(name), target);
        assert!(seeds > 0, "fuzz/corpus/{name} has no seeds");
        replay(&fuzz.join("regressions").join(name), target);
    }
}

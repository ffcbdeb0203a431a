#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer) for the given seconds
# each, then prints one summary line per target. Inputs that crash, hang (> 1 s) or allocate past
# 2 GiB are copied into fuzz/regressions/<target>/, which `cargo test` (tests/fuzz_corpus.rs)
# replays on stable: fix the bug, keep the input.
#
#   scripts/fuzz.sh                 # 900 s per target
#   scripts/fuzz.sh 60 image        # 60 s, only the image target
#   OXSERVE_FUZZ_JOBS=2 scripts/fuzz.sh   # two targets at a time
#
# Needs the nightly toolchain (it has the sanitizer runtimes); installs cargo-fuzz if missing.
# New inputs the fuzzer finds go to fuzz/target/corpus/, not into the committed seeds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-900}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(properties snapshot model_config handler_config archive tensor_request multipart image v2_request
    grpc_predictions grpc_model_infer text_request token)
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The fuzz crate is outside the workspace; it builds against the server's pinned versions.
cp Cargo.lock fuzz/Cargo.lock
unset CARGO_TARGET_DIR
# -a: debug assertions, so integer overflows are found too.
cargo +nightly fuzz build -a

# One target: its summary line goes to fuzz/target/<target>.summary.
run_target() {
  local target="$1"
  local work="fuzz/target/corpus/$target"
  local artifacts="fuzz/artifacts/$target"
  local log="fuzz/target/$target.log"
  mkdir -p "$work"
  rm -rf "$artifacts"
  local status=0
  cargo +nightly fuzz run -a "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  local runs
  runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
  local found=0
  if [ -d "$artifacts" ]; then
    mkdir -p "fuzz/regressions/$target"
    for input in "$artifacts"/*; do
      [ -f "$input" ] || continue
      cp "$input" "fuzz/regressions/$target/"
      found=$((found + 1))
    done
  fi
  local line="$target: ${seconds} s, ${runs:-0} executions, $found crashes (exit $status)"
  if [ "$found" -gt 0 ] || [ "$status" -ne 0 ]; then
    line="$line; see $log and fuzz/regressions/$target/"
  fi
  echo "$line" | tee "fuzz/target/$target.summary"
}

# OXSERVE_FUZZ_JOBS targets at a time (default 1; one core each).
jobs="${OXSERVE_FUZZ_JOBS:-1}"
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  run_target "$target" &
done
wait

echo
echo "summary:"
for target in "${targets[@]}"; do
  printf '  %s\n' "$(cat "fuzz/target/$target.summary")"
done

#!/usr/bin/env bash
# The full soak (tests/soak.rs at its long sizes, release build): 30 minutes saturated on the
# example models over REST, TorchServe's gRPC and KServe's v2 gRPC, with 1 request in 20 bad (0
# failed good requests, RSS growth < 50 MB after warm-up); 1,000 register/infer/unregister cycles
# of ResNet-18 (RSS back within 100 MB); 100 `kill -9` during registration bursts (no acknowledged
# model lost). CI runs the same test short.
#
#   scripts/soak.sh                     # the sizes above
#   OXSERVE_SOAK_SECS=300 scripts/soak.sh
#
# ResNet-18 comes from scripts/export (needs torch, see README); without it the cycles use the tiny
# ResNet fixture, and the script says so.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export OXSERVE_SOAK_SECS="${OXSERVE_SOAK_SECS:-1800}"
export OXSERVE_SOAK_CYCLES="${OXSERVE_SOAK_CYCLES:-1000}"
export OXSERVE_SOAK_KILLS="${OXSERVE_SOAK_KILLS:-100}"
resnet="${OXSERVE_SOAK_GRAPH:-.cache/models/resnet18.onnx}"
if [ -f "$resnet" ]; then
  export OXSERVE_SOAK_GRAPH="$(cd "$(dirname "$resnet")" && pwd)/$(basename "$resnet")"
else
  echo "soak: $resnet not found: the cycles use tests/fixtures/tiny_resnet.onnx" >&2
fi
scripts/install-onnxruntime.sh
cargo test --release --test soak -- --nocapture --test-threads 1

#!/usr/bin/env bash
# Rebuilds model-store/mnist.mar from the committed digits CNN with oxserve-archiver, exactly as a
# TorchServe user would run torch-model-archiver. Run after changing examples/digits/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release -q -p oxserve-archiver
target/release/oxserve-archiver --model-name mnist --version 1.0 \
  --serialized-file examples/digits/mnist.onnx \
  --handler examples/digits/mnist_handler.json \
  --export-path model-store --force

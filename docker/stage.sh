#!/usr/bin/env bash
# Stages what the image's /usr/local holds, from a release build of this checkout:
#   DEST/bin/oxserve, DEST/bin/oxserve-archiver      (debug info stripped)
#   DEST/lib/libonnxruntime.so*                      (ONNX Runtime's PyPI wheel, CPU or GPU build)
#   DEST/lib/nvidia/*.so*                            (gpu only: CUDA 13 and cuDNN 9 from NVIDIA's
#                                                     pip wheels, the libraries the CUDA provider loads)
# Used by the Dockerfile's `build` stage and, for the `prebuilt` target, by scripts/docker-test.sh.
#
#   docker/stage.sh DEST [cpu|gpu]
#
# The binaries are taken from ${CARGO_TARGET_DIR:-target}/release (build them first with
# `cargo build --release --locked -p oxserve -p oxserve-archiver`). Needs python3 with pip.
set -euo pipefail

dest=${1:?usage: $0 DEST [cpu|gpu]}
flavour=${2:-cpu}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
release="${CARGO_TARGET_DIR:-$root/target}/release"

# The CUDA 13 / cuDNN 9 wheels onnxruntime-gpu 1.31 runs with (the CUDA provider's libraries and
# what they link), pinned.
NVIDIA_WHEELS=(
  nvidia-cuda-runtime==13.2.86
  nvidia-cublas==13.4.1.3
  nvidia-curand==10.4.5.25
  nvidia-cufft==12.2.0.57
  nvidia-cuda-nvrtc==13.2.86
  nvidia-nvjitlink==13.5.37
  nvidia-cudnn-cu13==9.26.0.51
)

case "$flavour" in
  cpu) ort_flag=() ;;
  gpu) ort_flag=(--gpu) ;;
  *) echo "usage: $0 DEST [cpu|gpu]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rm -rf "$dest/bin" "$dest/lib"
mkdir -p "$dest/bin" "$dest/lib"
for binary in oxserve oxserve-archiver; do
  [ -x "$release/$binary" ] || { echo "error: $release/$binary is missing: build it first" >&2; exit 1; }
  # Line tables are for local profiling; the image keeps symbols (readable backtraces) only.
  strip --strip-debug -o "$dest/bin/$binary" "$release/$binary"
done

ORT_INSTALL_DIR="$work/onnxruntime" "$root/scripts/install-onnxruntime.sh" "${ort_flag[@]}"
cp -a "$work/onnxruntime/lib/." "$dest/lib/"

if [ "$flavour" = gpu ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$work/wheels" "${NVIDIA_WHEELS[@]}"
  mkdir -p "$dest/lib/nvidia"
  python3 - "$work/wheels" "$dest/lib/nvidia" <<'PY'
import glob, os, re, shutil, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
# Shared libraries only (no static archives, headers or Python files), flattened.
shared = re.compile(r"^nvidia/.+/lib/[^/]+\.so(\.[0-9.]+)?$")
for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if shared.match(name):
                with archive.open(name) as src, open(os.path.join(out, os.path.basename(name)), "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
PY
fi
chmod -R a+rX "$dest"
du -sh "$dest"

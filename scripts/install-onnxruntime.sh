#!/usr/bin/env bash
# Installs ONNX Runtime's shared library into the project-local, git-ignored folder .onnxruntime/,
# taken from the PyPI wheel `onnxruntime` (the only place it can be fetched offline-friendly: PyPI
# is a package registry). Both oxserve binaries find it there without help.
#
#   scripts/install-onnxruntime.sh            # CPU build, into ./.onnxruntime
#   scripts/install-onnxruntime.sh --gpu      # GPU build (wheel onnxruntime-gpu, x86-64, ~256 MB):
#                                             # adds the CUDA 13 execution provider
#   ORT_INSTALL_DIR=/opt/ort scripts/install-onnxruntime.sh
#
# The GPU build also needs CUDA 13 and cuDNN 9 at run time: a system install on the loader's path,
# or the nvidia-* pip packages (`pip install nvidia-cuda-runtime nvidia-cublas nvidia-curand
# nvidia-cufft nvidia-cuda-nvrtc nvidia-cudnn-cu13`), which the server finds in the local Python.
#
# Needs python3 with pip (only to download and unzip the wheel; nothing is installed into Python).
# The wheel is pinned by version and sha256. Re-running is a no-op once installed.
set -euo pipefail

ORT_VERSION=1.31.1
# sha256 of onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_{x86_64,aarch64}.whl
SHA256_X86_64=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
SHA256_AARCH64=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
# sha256 of onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl (no aarch64 wheel)
SHA256_GPU_X86_64=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6

package=onnxruntime
flavour=$ORT_VERSION
case "${1:-}" in
  "") ;;
  --gpu) package=onnxruntime-gpu; flavour="$ORT_VERSION-gpu" ;;
  *) echo "usage: $0 [--gpu]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${ORT_INSTALL_DIR:-$root/.onnxruntime}"

if [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$flavour" ] && [ -f "$dest/lib/libonnxruntime.so" ]; then
  echo "ONNX Runtime $flavour already installed in $dest"
  exit 0
fi

case "$(uname -m)/$package" in
  x86_64/onnxruntime) arch=x86_64; sha=$SHA256_X86_64 ;;
  aarch64/onnxruntime|arm64/onnxruntime) arch=aarch64; sha=$SHA256_AARCH64 ;;
  x86_64/onnxruntime-gpu) arch=x86_64; sha=$SHA256_GPU_X86_64 ;;
  *) echo "error: no $package wheel is pinned for $(uname -m)" >&2; exit 1 ;;
esac

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "error: python3 with pip is needed to download the onnxruntime wheel (apt-get install python3-pip)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$package==$ORT_VERSION --hash=sha256:$sha" > "$work/requirements.txt"
# The wheel's library does not link libpython, so a fixed cp311 wheel serves any local Python.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --python-version 3.11 --implementation cp \
  --platform manylinux_2_28_$arch --platform manylinux_2_27_$arch --platform manylinux2014_$arch \
  -r "$work/requirements.txt" -d "$work"

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/lib"
"$python" - "$work" "$dest.tmp/lib" <<'PY'
import glob, os, shutil, sys, zipfile
work, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "onnxruntime*.whl"))[0]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with archive.open(name) as src, open(os.path.join(out, base), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest.tmp/lib/libonnxruntime.so"
echo "$flavour" > "$dest.tmp/VERSION"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "installed ONNX Runtime $flavour into $dest"

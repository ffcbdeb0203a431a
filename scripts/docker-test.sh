#!/usr/bin/env bash
# Builds oxserve's Docker image on this machine and checks it as a user would: `docker run` with
# the example model store mounted, the README's digit, the management API, /metrics, a non-root
# process, a registered model kept across `docker restart`, and `docker stop` exiting 0.
#
#   scripts/docker-test.sh           # image `oxserve` (CPU), then the checks
#   scripts/docker-test.sh --gpu     # also image `oxserve:gpu`: checked on the CPU here, and with
#                                    # `--gpus all` where a GPU and NVIDIA's container toolkit are
#
# Works on a fresh Debian machine without a container registry: as root it installs Debian's
# docker.io engine when `docker` is missing and starts dockerd when none answers. When the base
# images cannot be pulled it makes one with debootstrap from Debian's packages (trimmed as
# debian:bookworm-slim is) and imports it as oxserve-base:bookworm; when rust: cannot be pulled it
# builds the binaries on the host (`cargo build --release --locked`) and builds the Dockerfile's
# `prebuilt` target from them. Environment: BASE_IMAGE, BUILD_IMAGE (the Dockerfile's build
# arguments), OXSERVE_DOCKER_TARGET (runtime or prebuilt), IMAGE (default oxserve).
#
# Ends with one line `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
gpu=false
case "${1:-}" in
  "") ;;
  --gpu) gpu=true ;;
  *) echo "usage: $0 [--gpu]" >&2; exit 2 ;;
esac
image=${IMAGE:-oxserve}
name="oxserve-docker-test-$$"
volume="$name-snapshots"
passed=0
failed=0

say() { printf '\n== %s\n' "$*"; }
die() { echo "error: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
check() { # check DESCRIPTION COMMAND...: one check, counted.
  local description=$1
  shift
  if "$@"; then
    passed=$((passed + 1)); echo "PASS $description"
  else
    failed=$((failed + 1)); echo "FAIL $description"
  fi
}

cleanup() {
  docker rm -f "$name" "$name-gpu" >/dev/null 2>&1
  docker volume rm "$volume" >/dev/null 2>&1
}
trap cleanup EXIT

# ---- The engine.
if ! command -v docker >/dev/null; then
  say "installing Debian's docker.io"
  [ "$(id -u)" = 0 ] || die "docker is missing; install it (apt-get install docker.io) or run as root"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null \
    || die "cannot install docker.io"
fi
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "no Docker engine answers, and starting one needs root"
  say "starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not start; see /var/log/dockerd.log"
fi

# ---- Base images: pulled, or made from Debian's packages.
pullable() { docker image inspect "$1" >/dev/null 2>&1 || timeout 300 docker pull -q "$1" >/dev/null 2>&1; }

base=${BASE_IMAGE:-debian:bookworm-slim}
if ! pullable "$base"; then
  base=oxserve-base:bookworm
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    say "making $base with debootstrap (debian:bookworm-slim cannot be pulled)"
    if ! command -v debootstrap >/dev/null; then
      [ "$(id -u)" = 0 ] || die "debootstrap is missing and installing it needs root"
      apt-get install -y -qq debootstrap >/dev/null || die "cannot install debootstrap"
    fi
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" \
      >/tmp/oxserve-debootstrap.log 2>&1 || die "debootstrap failed; see /tmp/oxserve-debootstrap.log"
    # What debian:bookworm-slim leaves out: package caches and lists, documentation, locales.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
      "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
    tar -C "$rootfs" -c . | docker import - "$base" >/dev/null || die "docker import failed"
    rm -rf "$rootfs"
  fi
fi

# ---- The image: compiled in the Dockerfile, or from binaries built here.
build_image=${BUILD_IMAGE:-rust:1-bookworm}
target=${OXSERVE_DOCKER_TARGET:-}
if [ -z "$target" ]; then
  if pullable "$build_image"; then target=runtime; else target=prebuilt; fi
fi
build() { # build TAG FLAVOUR
  local tag=$1 flavour=$2
  if [ "$target" = prebuilt ]; then
    say "building the release binaries on the host"
    cargo build --release --locked -p oxserve -p oxserve-archiver || die "cargo build failed"
    find docker/dist -mindepth 1 ! -name .gitignore -delete
    docker/stage.sh docker/dist "$flavour" || die "staging failed"
  fi
  say "docker build -t $tag (target $target, base $base, $flavour)"
  docker build -t "$tag" --target "$target" --build-arg BASE_IMAGE="$base" \
    --build-arg BUILD_IMAGE="$build_image" --build-arg ONNXRUNTIME="$flavour" . \
    || die "docker build failed"
  if [ "$target" = prebuilt ]; then find docker/dist -mindepth 1 ! -name .gitignore -delete; fi
}
build "$image" cpu
$gpu && build "$image:gpu" gpu

size_mb() { echo $(( $(docker image inspect -f '{{.Size}}' "$1") / 1000000 )); }
say "image $image: $(size_mb "$image") MB"

# ---- Running it as a user does.
host_port() { docker port "$1" "$2" | head -n1 | sed 's/.*://'; }
wait_healthy() { # wait_healthy PORT: /ping answers 200, without a key, within 60 s
  for _ in $(seq 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ping")" = 200 ] && return 0
    sleep 0.5
  done
  return 1
}
key() { # key CONTAINER SECTION: read from key_file.json as the README says
  docker exec "$1" cat /home/model-server/key_file.json \
    | python3 -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]]['key'])" "$2"
}
answer() { # answer PORT KEY MODEL DIGIT: the class the README's curl gets
  curl -s -H "Authorization: Bearer $2" "http://127.0.0.1:$1/predictions/$3" \
    -T "examples/digits/digit_$4.png"
}
models() { # models PORT KEY: the model names the management API lists
  curl -s -H "Authorization: Bearer $2" "http://127.0.0.1:$1/models" \
    | python3 -c "import json, sys; print(' '.join(m['modelName'] for m in json.load(sys.stdin)['models']))"
}
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

start() { # start NAME IMAGE [docker run options...]: the README's command, ports on loopback
  local container=$1 tag=$2
  shift 2
  docker run -d --name "$container" -p 127.0.0.1::8080 -p 127.0.0.1::8081 -p 127.0.0.1::8082 \
    -v "$root/model-store:/home/model-server/model-store" "$@" "$tag" --enable-model-api >/dev/null
}

say "docker run $image with the example model store"
docker volume create "$volume" >/dev/null
start "$name" "$image" -v "$volume:/home/model-server/logs/config" || die "docker run failed"
inference=$(host_port "$name" 8080)
management=$(host_port "$name" 8081)
metrics=$(host_port "$name" 8082)
check "/ping answers 200 without a key" wait_healthy "$inference"
inference_key=$(key "$name" inference)
management_key=$(key "$name" management)
check "the keys are read with docker exec cat key_file.json" test -n "$inference_key" -a -n "$management_key"
check "the README's curl of digit_7.png answers 7" test "$(answer "$inference" "$inference_key" mnist 7)" = 7
check "predictions without the key are refused (400)" \
  test "$(status_of "http://127.0.0.1:$inference/predictions/mnist" -T examples/digits/digit_7.png)" = 400
check "the management API lists mnist" test "$(models "$management" "$management_key")" = mnist
check "the management API refuses no key (400)" test "$(status_of "http://127.0.0.1:$management/models")" = 400
metrics_page=$(curl -s "http://127.0.0.1:$metrics/metrics")
check "/metrics answers with TorchServe's counters" grep -q '^ts_inference_requests_total' <<<"$metrics_page"
check "the process runs as uid 1000, not root" \
  test "$(docker exec "$name" awk '/^Uid:/ {print $2}' /proc/1/status)" = 1000
check "the image exposes 8080-8082 and 7070-7071" test "$(docker image inspect -f \
  '{{range $port, $_ := .Config.ExposedPorts}}{{$port}} {{end}}' "$image")" = \
  "7070/tcp 7071/tcp 8080/tcp 8081/tcp 8082/tcp "
healthy=false
for _ in $(seq 40); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$name")" = healthy ] && { healthy=true; break; }
  sleep 1
done
check "Docker's HEALTHCHECK reports healthy" $healthy

say "registering digits=mnist.mar through the API, then docker restart"
check "registering a model answers 200" test "$(status_of -X POST -H "Authorization: Bearer $management_key" \
  "http://127.0.0.1:$management/models?url=mnist.mar&model_name=digits&initial_workers=1")" = 200
check "the registered model answers" test "$(answer "$inference" "$inference_key" digits 3)" = 3
docker restart "$name" >/dev/null
inference=$(host_port "$name" 8080)
management=$(host_port "$name" 8081)
check "after the restart /ping answers 200" wait_healthy "$inference"
inference_key=$(key "$name" inference)
management_key=$(key "$name" management)
check "after the restart the management API lists digits and mnist" \
  test "$(models "$management" "$management_key")" = "digits mnist"
check "after the restart digits answers" test "$(answer "$inference" "$inference_key" digits 3)" = 3

say "docker stop"
started=$(date +%s)
docker stop "$name" >/dev/null
elapsed=$(( $(date +%s) - started ))
check "docker stop: exit code 0 within the stop timeout (${elapsed} s)" \
  test "$(docker inspect -f '{{.State.ExitCode}}' "$name")" = 0 -a "$elapsed" -lt 10
check "SIGTERM drained the server: 'oxserve stopped' logged twice (restart, stop)" \
  test "$(docker logs "$name" 2>&1 | grep -c 'oxserve stopped')" = 2

if $gpu; then
  say "image $image:gpu: $(size_mb "$image:gpu") MB"
  start "$name-gpu" "$image:gpu" || die "docker run $image:gpu failed"
  inference=$(host_port "$name-gpu" 8080)
  check "$image:gpu serves (on the CPU without a GPU)" wait_healthy "$inference"
  check "$image:gpu answers the README's digit" \
    test "$(answer "$inference" "$(key "$name-gpu" inference)" mnist 7)" = 7
  docker rm -f "$name-gpu" >/dev/null
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    start "$name-gpu" "$image:gpu" --gpus all || die "docker run --gpus all failed"
    inference=$(host_port "$name-gpu" 8080)
    check "$image:gpu with --gpus all serves" wait_healthy "$inference"
    check "$image:gpu with --gpus all runs models on the GPU" \
      grep -q 'GPU(s) in use' <(docker logs "$name-gpu" 2>&1)
    check "$image:gpu with --gpus all answers the README's digit" \
      test "$(answer "$inference" "$(key "$name-gpu" inference)" mnist 7)" = 7
  else
    echo "(no GPU here: $image:gpu was not run with --gpus all)"
  fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

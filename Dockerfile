# oxserve's image: the two binaries, ONNX Runtime's library and TorchServe's layout under
# /home/model-server, run as the non-root user `model-server` (uid 1000).
#
#   docker build -t oxserve .                                  # compiles in a rust: image
#   docker run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:8081:8081 -p 127.0.0.1:8082:8082 \
#     -v $PWD/model-store:/home/model-server/model-store oxserve
#
# Targets (both end in the same runtime layers on the `runtime-base` stage):
#   runtime    (default) compiles both binaries in BUILD_IMAGE and fetches ONNX Runtime's library
#              from its PyPI wheel;
#   prebuilt   takes the binaries and libraries already staged in docker/dist/ (bin/, lib/), for
#              machines that cannot pull a rust: image: scripts/docker-test.sh builds them on the
#              host and stages them. It comes before `build` so that Docker's classic builder,
#              which builds every stage up to the target, never needs BUILD_IMAGE for it (on the
#              way to `runtime` it copies docker/dist/, empty in a checkout: nothing).
# The GPU variant: `--build-arg ONNXRUNTIME=gpu` (or `scripts/docker-test.sh --gpu` for the
# prebuilt target) carries onnxruntime-gpu's library and the CUDA 13 / cuDNN 9 libraries of
# NVIDIA's pip wheels in /usr/local/lib/nvidia; run it with `docker run --gpus all`.
#
# Base images are build arguments, so a locally imported base works as well as a pulled one:
#   docker build --build-arg BASE_IMAGE=oxserve-base:bookworm --target prebuilt -t oxserve .
#
# Token authorization is on, as in TorchServe: the keys are written to
# /home/model-server/key_file.json (`docker exec <container> cat key_file.json`). The health
# probes (/ping, /v2/health/live, /v2/health/ready) answer without a key.

ARG BASE_IMAGE=debian:bookworm-slim
ARG BUILD_IMAGE=rust:1-bookworm

# ---- Everything but the binaries: user, folders, configuration, ports, health check, command.
FROM ${BASE_IMAGE} AS runtime-base
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin model-server \
    && mkdir -p /home/model-server/model-store /home/model-server/logs/config \
    && chown -R model-server:model-server /home/model-server
COPY --chown=model-server:model-server docker/config.properties /home/model-server/config.properties
COPY --chown=model-server:model-server model-store/ /home/model-server/model-store/
COPY docker/healthcheck.sh /usr/local/bin/oxserve-healthcheck
USER model-server
WORKDIR /home/model-server
# Inference, management, metrics; gRPC inference and management.
EXPOSE 8080 8081 8082 7070 7071
# /ping needs no key, so the check works with token authorization on.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["oxserve-healthcheck"]
# No --ts-config and no --ncs: ./config.properties is read on the first start, and once a
# management change has written a snapshot to logs/config/, the newest snapshot is restored on
# every later start (mount a volume there to keep registered models across containers).
# Extra arguments go after the image name: `docker run ... oxserve --enable-model-api`.
ENTRYPOINT ["oxserve", "--foreground"]
# The GPU variant's CUDA libraries (absent, and so unused, in the CPU image).
ENV LD_LIBRARY_PATH=/usr/local/lib/nvidia

# ---- Prebuilt: binaries and libraries staged in docker/dist/ by scripts/docker-test.sh.
FROM runtime-base AS prebuilt
COPY docker/dist/ /usr/local/

# ---- Compiled here (needs BUILD_IMAGE and PyPI).
FROM ${BUILD_IMAGE} AS build
ARG ONNXRUNTIME=cpu
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p oxserve -p oxserve-archiver \
    && docker/stage.sh /dist "$ONNXRUNTIME"

FROM runtime-base AS runtime
COPY --from=build /dist/ /usr/local/

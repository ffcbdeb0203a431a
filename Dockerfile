# oxserve: build stage compiles both binaries and fetches ONNX Runtime from its PyPI wheel; the
# runtime stage carries only the binaries, libonnxruntime and the example store, as a non-root user.
#
#   docker build -t oxserve .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8081:8081 -p 8082:8082 \
#     -v $PWD/model-store:/home/model-server/model-store oxserve
#
# Token authorization is on, as in TorchServe: the keys are in /home/model-server/key_file.json
# (`docker exec <container> cat key_file.json`); send `Authorization: Bearer <key>`.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/install-onnxruntime.sh && cargo build --release --workspace --locked

FROM debian:bookworm-slim
RUN useradd --create-home --uid 1000 model-server
COPY --from=build /src/target/release/oxserve /src/target/release/oxserve-archiver /usr/local/bin/
# The server finds libonnxruntime.so in ../lib beside its executable.
COPY --from=build /src/.onnxruntime/lib/ /usr/local/lib/
COPY --chown=model-server docker/config.properties /home/model-server/config.properties
COPY --chown=model-server model-store/ /home/model-server/model-store/
USER model-server
WORKDIR /home/model-server
EXPOSE 8080 8081 8082 7070 7071
CMD ["oxserve", "--foreground", "--ncs", "--ts-config", "/home/model-server/config.properties"]

# Multi-stage: build the abi3 wheel with the Rust toolchain, run it on a slim Python.
FROM rust:1-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-dev python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN pip3 install --break-system-packages "maturin>=1.9,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust ./rust
COPY python ./python
RUN maturin build --release --locked --out /dist

FROM python:3.12-slim-bookworm
COPY --from=build /dist/*.whl /tmp/
# the sidecar's dependencies (grpcio, xds-protos, prometheus-client, PyYAML) come with the [serve] extra
RUN pip install --no-cache-dir "$(ls /tmp/*.whl)[serve]" && rm /tmp/*.whl
USER 65532:65532
# /metrics on every interface; ext_proc on 127.0.0.1:18080, for an Envoy in the same network namespace (a pod).
# A shared deployment listens on 0.0.0.0 with tlsCertFile, tlsKeyFile and tlsClientCaFile (docs/envoy.md):
# whoever reaches the gRPC port can charge any team
EXPOSE 9092
ENTRYPOINT ["llmtally"]
CMD ["serve"]

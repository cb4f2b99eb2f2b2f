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
# the package version (pyproject's, from Cargo.toml): docker build --build-arg VERSION=$(...) to stamp another
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="llmtally" \
      org.opencontainers.image.description="Exact token accounting for LLM traffic through Envoy (ext_proc sidecar)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /dist/*.whl /tmp/
# the sidecar's dependencies (grpcio, xds-protos, prometheus-client, PyYAML) come with the [serve] extra, the
# OTLP exporters with [otel]; in two steps, so that opentelemetry-proto's files are installed after the older
# copy xds-protos ships in the same directory (grpc/grpc#42926)
RUN pip install --no-cache-dir "$(ls /tmp/*.whl)[serve]" \
 && pip install --no-cache-dir "$(ls /tmp/*.whl)[serve,otel]" && rm /tmp/*.whl
USER 65532:65532
# /metrics on every interface; ext_proc on 127.0.0.1:18080, for an Envoy in the same network namespace (a pod).
# A shared deployment listens on 0.0.0.0 with tlsCertFile, tlsKeyFile and tlsClientCaFile (docs/envoy.md):
# whoever reaches the gRPC port can charge any team
EXPOSE 9092
# ready while the ext_proc service is serving (the metrics port's /readyz; metricsAddr's default port)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9092/readyz', timeout=2)"]
ENTRYPOINT ["llmtally"]
CMD ["serve"]

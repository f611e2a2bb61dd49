# syntax=docker/dockerfile:1
# One image for every clusternet-aa component; the Deployment's `command` picks the component.
#   docker build -t ghcr.io/clusternet-aa/clusternet-aa:0.1.0 .
# The manifests under manifests/ run it as UID 65532 with a read-only root filesystem, so the
# bytecode is compiled at build time.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/clusternet-aa
COPY pyproject.toml README.md ./
COPY clusternet_aa ./clusternet_aa
RUN /opt/clusternet-aa/bin/pip install --no-cache-dir . \
    && /opt/clusternet-aa/bin/python -m compileall -q /opt/clusternet-aa

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="clusternet-aa" \
      org.opencontainers.image.description="Manage many Kubernetes clusters as if they were local" \
      org.opencontainers.image.source="https://github.com/clusternet-aa/clusternet-aa" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.clusternet-aa.entrypoints="clusternet-hub clusternet-controller-manager clusternet-agent clusternet-certs kubectl-clusternet clusternet-sandbox clusternet-kubesim clusternet-tunnel-demo"
RUN useradd --system --uid 65532 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin clusternet
COPY --from=build /opt/clusternet-aa /opt/clusternet-aa
ENV PATH="/opt/clusternet-aa/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT []
CMD ["clusternet-hub", "--help"]

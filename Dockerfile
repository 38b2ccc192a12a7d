# syntax=docker/dockerfile:1
# k3s-deploy operator image.
#
# Two stages: the builder makes the wheel and installs it with its dependencies into a virtualenv;
# the final stage copies only that virtualenv, so no compiler, pip cache, wheel or source tree ships.
# The image runs as uid 65532 and writes nothing outside /tmp, so it works with
# `readOnlyRootFilesystem: true` and an emptyDir mounted at /tmp (see manifests/base/deployment.yaml).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/k3s-deploy \
 && /opt/k3s-deploy/bin/pip install /wheels/k3s_deploy-*.whl \
 && /opt/k3s-deploy/bin/pip uninstall -y pip setuptools wheel \
 && /opt/k3s-deploy/bin/python -m compileall -q /opt/k3s-deploy/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="k3s-deploy" \
      org.opencontainers.image.description="Kubernetes operator that turns Proxmox VE VMs into K3s clusters" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/k3s-deploy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
COPY --from=builder /opt/k3s-deploy /opt/k3s-deploy
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["k3s-deploy", "run"]

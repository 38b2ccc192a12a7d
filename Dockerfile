# syntax=docker/dockerfile:1
# k3s-deploy operator image.
#
# Two stages: the builder makes the wheel and installs it with its dependencies into a virtualenv;
# the final stage copies only that virtualenv, so no compiler, pip cache, wheel or source tree ships.
# The image runs as uid 65532 and writes nothing outside /tmp, so it works with
# `readOnlyRootFilesystem: true` and an emptyDir mounted at /tmp (see manifests/base/deployment.yaml).

# The default base, pinned by digest (docs/operations.md, "Building the image", says how to bump it).
# `./dev image` passes another with --build-arg PYTHON_IMAGE=... when this one cannot be pulled.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, from the lock files only (every file checked against its sha256; wheels only),
# so a source change rebuilds from here on and the dependency layer stays cached.
COPY requirements/operator.lock requirements/build.lock ./requirements/
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary :all: -r requirements/build.lock \
 && python -m venv /opt/k3s-deploy \
 && /opt/k3s-deploy/bin/pip install --require-hashes --no-deps --only-binary :all: -r requirements/operator.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
# The wheel is built with the locked hatchling (no isolated build env fetching an unpinned one).
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/k3s-deploy/bin/pip install --no-deps --no-index /wheels/k3s_deploy-*.whl \
 && /opt/k3s-deploy/bin/pip check \
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

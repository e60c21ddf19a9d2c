# syntax=docker/dockerfile:1.7
#
# mlplatform/airflow: Airflow with the platform installed, for docker-compose.yml (api-server,
# scheduler, dag-processor, triggerer, the airflow-init one-shot, and the MLflow server) and for
# the official Airflow Helm chart (deploy/k8s/airflow-values.yaml). CPU only: GPU training runs in
# docker/trainer.Dockerfile's image.
#
# Build, from the repository root (docker/airflow.Dockerfile.dockerignore keeps the context small):
#
#   DOCKER_BUILDKIT=1 docker build -f docker/airflow.Dockerfile -t mlplatform/airflow:latest .
#
# Why this shape:
# - Everything Python comes from the repository's uv.lock (`uv sync --frozen --no-dev`): Airflow
#   3.3, its providers, MLflow, Feast, GX, DVC, TensorFlow, psycopg ... exactly as the tests run
#   them, rather than pip-installing the project over the apache/airflow image's own constraints.
# - The project is installed editable from /opt/mlplatform, so Settings.repo_root (the checkout
#   holding dags/, pipelines/, plugins/) is /opt/mlplatform, as AIRFLOW__CORE__DAGS_FOLDER says.
# - Horovod (CPU, Gloo) is built by scripts/install_horovod.sh, the same script as `make env`, for
#   the local training backend (training in the scheduler's task processes).
# - No secret is a build argument or an ENV: they reach the containers at run time only.
# - User 50000, group 0: the Airflow Helm chart's default uid/gid.
# - No HEALTHCHECK: one image runs six different services; each gets its own probe where it runs
#   (docker-compose.yml's healthcheck, the Helm chart's liveness probes).
# checkov:skip=CKV_DOCKER_2:the health check differs per service and is set where each runs

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ------------------------------------------------------------------------------------------------
# builder: the locked venv, the project (editable), Horovod compiled against the venv's TensorFlow
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ARG PYTHON_VERSION

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    MLPLATFORM_CACHE=/tmp/mlplatform-cache

# g++/make/binutils: Horovod's build (scripts/install_horovod.sh); git: the project's git-based
# lineage. Distribution packages unpinned on purpose: they follow the base image's updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make binutils git \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /opt/mlplatform
# dependencies first (a layer that changes only with the lock), then the project
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --python "/usr/local/bin/python${PYTHON_VERSION}"
COPY . .
RUN uv sync --frozen --no-dev --python "/usr/local/bin/python${PYTHON_VERSION}" \
    && bash scripts/install_horovod.sh /opt/venv \
    && rm -rf /tmp/mlplatform-cache

# ------------------------------------------------------------------------------------------------
# runtime: the same Python base, git (lineage), curl (health checks), the venv and the project
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /models \
    && chown 50000:0 /models

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/mlplatform /opt/mlplatform
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/mlplatform
# build-time check: the platform, Airflow and Horovod import, and the DAG folder is there
RUN python -c "import mlplatform.settings, airflow, horovod.tensorflow" \
    && test -d /opt/mlplatform/dags
USER 50000:0

CMD ["airflow", "version"]

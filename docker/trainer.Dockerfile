# syntax=docker/dockerfile:1.7
#
# mlplatform/trainer: the production trainer image (issue 5's KubernetesPodOperator / MPIJob backend).
# TensorFlow 2.21 with its CUDA 12.5 / cuDNN 9.3 libraries from pip, Horovod 0.28.1 built from the
# sdist with NCCL (GPU collectives), Gloo and Open MPI, and the trainer package (training/).
#
# Build, from the repository root (the context needs training/, pyproject.toml and uv.lock; see
# docker/trainer.Dockerfile.dockerignore, which keeps everything else out of the context):
#
#   DOCKER_BUILDKIT=1 docker build -f docker/trainer.Dockerfile -t mlplatform/trainer:latest .
#
# Use (no GPU needed for the first two):
#
#   docker run --rm mlplatform/trainer:latest                                  # trainer --help
#   docker run --rm mlplatform/trainer:latest horovodrun --check-build
#   docker run --rm --gpus all -v /data:/data mlplatform/trainer:latest \
#     horovodrun -np 4 -H localhost:4 python -m training.train --spec-json "$(cat spec.json)"
#
# Why the versions:
# - TensorFlow 2.21's `and-cuda` extra asks for CUDA >= 12.5.82 / cuDNN >= 9.3.0.75 / NCCL >= 2.27.7,
#   the versions it is built and tested with: those exact libraries are pinned below, and the
#   CUDA base image (nvcc for Horovod's kernels, NCCL for its static link) is 12.5.1 to match.
# - Every other Python package is pinned to the repository's uv.lock: `uv export` turns the lock
#   into a constraints file, so the image cannot drift from the locked environment.
# - Horovod 0.28.1 (the last release) needs two source patches to build and load against TF 2.21
#   with a GPU (see the Horovod step below).

ARG CUDA_VERSION=12.5.1
ARG UBUNTU=ubuntu22.04
ARG UV_VERSION=0.13.9

# ------------------------------------------------------------------------------------------------
# uv, only to export the lock (builder stage)
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ------------------------------------------------------------------------------------------------
# builder: the venv with TensorFlow etc., and Horovod compiled against it
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.11 (the project's version; Ubuntu 22.04 ships 3.10) from the deadsnakes PPA, a C++
# toolchain, and Open MPI (Horovod's MPI controller, for MPIJob launchers). The -devel base already
# has nvcc and NCCL (libnccl-dev: nccl.h, libnccl_static.a). Distribution packages are left
# unpinned on purpose: they track the base image's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-dev python3.11-venv \
        g++ make binutils libopenmpi-dev openmpi-bin \
    && rm -rf /var/lib/apt/lists/*

# The trainer's dependencies, every one pinned: the CUDA libraries that TensorFlow 2.21 was built
# against (its `and-cuda` extra only sets lower bounds), everything else by uv.lock as constraints.
COPY --from=uv /uv /usr/local/bin/uv
COPY pyproject.toml uv.lock /tmp/lock/
RUN python3.11 -m venv /opt/venv \
    && uv export --project /tmp/lock --frozen --no-dev --no-emit-project --no-hashes \
        --format requirements-txt > /tmp/lock/constraints.txt \
    && uv pip install --python /opt/venv/bin/python -c /tmp/lock/constraints.txt \
        "tensorflow[and-cuda]==2.21.0" \
        nvidia-cublas-cu12==12.5.3.2 nvidia-cuda-cupti-cu12==12.5.82 \
        nvidia-cuda-nvcc-cu12==12.5.82 nvidia-cuda-nvrtc-cu12==12.5.82 \
        nvidia-cuda-runtime-cu12==12.5.82 nvidia-cudnn-cu12==9.3.0.75 \
        nvidia-cufft-cu12==11.2.3.61 nvidia-curand-cu12==10.3.6.82 \
        nvidia-cusolver-cu12==11.6.3.83 nvidia-cusparse-cu12==12.5.1.3 \
        nvidia-nccl-cu12==2.27.7 nvidia-nvjitlink-cu12==12.5.82 \
        pandas pyarrow scikit-learn mlflow boto3 pydantic \
        cloudpickle psutil pyyaml packaging \
        setuptools wheel cmake==4.4.5 \
    && rm -rf /tmp/lock
# (cloudpickle, psutil, pyyaml, packaging: Horovod's runtime dependencies, as its wheel is
# installed with --no-deps; setuptools, wheel, cmake: its build, as scripts/install_horovod.sh
# builds it; cmake is removed afterwards. cmake 4 needs CMAKE_POLICY_VERSION_MINIMUM=3.5 for the
# bundled gloo.)

# Horovod 0.28.1 from the sdist, built against the venv's TensorFlow.
# - HOROVOD_GPU_OPERATIONS=NCCL: allreduce/allgather/broadcast on the GPU through NCCL, linked
#   statically (Horovod's default, from the base image's libnccl_static.a) with a static CUDA
#   runtime, so the built library needs only the driver at run time.
# - HOROVOD_WITH_GLOO + HOROVOD_WITH_MPI: `horovodrun --gloo` in one pod, `mpirun` from an MPIJob.
# - HOROVOD_BUILD_CUDA_CC_LIST: V100, T4, A100, A10/RTX 30xx, L4/L40, H100 (PTX for the newest).
# The two source patches. scripts/install_horovod.sh's one-line sed (keying xla_mpi_ops.cc on
# HAVE_GPU) only serves CPU builds; a GPU build compiles that file, so here:
# 1. xla_mpi_ops.cc (Horovod's XLA custom-call ops, used only with HOROVOD_ENABLE_XLA_OPS=1 and
#    jit-compiled functions, which the trainer does not use) is compiled out: with HAVE_GPU it
#    includes tensorflow/compiler/xla/client/xla_builder.h, gone from TF 2.21, and uses
#    xla::StatusOr, gone from XLA.
# 2. mpi_ops.cc declares stream_executor::gpu::AsGpuStreamValue(Stream*), which TF 2.21 no longer
#    exports: unpatched, the build links but `import horovod.tensorflow` fails on an undefined
#    symbol. The declaration becomes an inline function returning the same CUDA stream through
#    Stream::platform_specific_handle(). The grep checks fail the build if a patch did not apply.
ARG HOROVOD_VERSION=0.28.1
ARG HOROVOD_BUILD_CUDA_CC_LIST=70,75,80,86,89,90
WORKDIR /tmp/horovod
RUN pip download --no-binary :all: --no-deps "horovod==${HOROVOD_VERSION}" \
    && tar -xzf "horovod-${HOROVOD_VERSION}.tar.gz" \
    && ops="horovod-${HOROVOD_VERSION}/horovod/tensorflow" \
    && sed -i 's|^#if TENSORFLOW_VERSION >= 2006000000$|#if 0 // XLA ops: API gone in TF 2.21|' \
        "${ops}/xla_mpi_ops.cc" \
    && sed -i -e '/^\/\/ Forward declaration of AsGpuStreamValue$/,/^} \/\/ namespace gpu$/d' \
        -e '/^#endif \/\/ TENSORFLOW_VERSION >= 2011000000$/a namespace stream_executor { namespace gpu { inline GpuStreamHandle AsGpuStreamValue(Stream* stream) { return static_cast<GpuStreamHandle>(stream->platform_specific_handle().stream); } } }  // TF >= 2.16 no longer exports it' \
        "${ops}/mpi_ops.cc" \
    && grep -q '^#if 0 // XLA ops' "${ops}/xla_mpi_ops.cc" \
    && grep -q 'platform_specific_handle().stream' "${ops}/mpi_ops.cc" \
    && ! grep -q '^GpuStreamHandle AsGpuStreamValue(Stream\* stream);$' "${ops}/mpi_ops.cc" \
    && CMAKE_POLICY_VERSION_MINIMUM=3.5 \
       HOROVOD_CUDA_HOME=/usr/local/cuda \
       HOROVOD_GPU_OPERATIONS=NCCL \
       HOROVOD_BUILD_CUDA_CC_LIST="${HOROVOD_BUILD_CUDA_CC_LIST}" \
       HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
       HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
       MAKEFLAGS="-j$(nproc)" \
       pip wheel --no-deps --no-build-isolation -w /tmp/horovod/dist "./horovod-${HOROVOD_VERSION}" \
    && pip install --no-deps /tmp/horovod/dist/horovod-*.whl \
    && find /opt/venv -name 'mpi_lib*.so' -exec strip --strip-debug {} + \
    && uv pip uninstall --python /opt/venv/bin/python cmake \
    && rm -rf /tmp/horovod

# ------------------------------------------------------------------------------------------------
# runtime: the CUDA base image (driver hooks, no toolkit: TensorFlow brings its CUDA libraries and
# Horovod links CUDA and NCCL statically), Python 3.11, Open MPI + ssh for MPIJob, the venv.
FROM nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU} AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 libopenmpi3 openmpi-bin openssh-client openssh-server \
    && apt-get purge -y --auto-remove software-properties-common gpg-agent \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# Build-time checks: Horovod has TensorFlow, NCCL, Gloo and MPI; TensorFlow is a CUDA build.
RUN horovodrun --check-build | tee /tmp/check-build.txt \
    && grep -q '\[X\] TensorFlow' /tmp/check-build.txt \
    && grep -q '\[X\] NCCL' /tmp/check-build.txt \
    && grep -q '\[X\] Gloo' /tmp/check-build.txt \
    && grep -q '\[X\] MPI' /tmp/check-build.txt \
    && python -c "import tensorflow as tf, horovod.tensorflow; assert tf.test.is_built_with_cuda()" \
    && rm /tmp/check-build.txt

# The trainer, run as an unprivileged user. USER is numeric so that Kubernetes' runAsNonRoot can
# verify it without a runAsUser.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash trainer
WORKDIR /app
COPY --chown=1000:1000 training/ /app/training/
RUN python -m training.train --help > /dev/null
USER 1000:1000

# No wrapper: the pod (or MPIJob) command is the full `horovodrun ... python -m training.train ...`
# (or `python -m training.train ...` for one process), as operators/ builds it.
ENTRYPOINT []
CMD ["python", "-m", "training.train", "--help"]

#!/usr/bin/env bash
# Build Horovod 0.28.1 (TensorFlow + Gloo, CPU) from the sdist against the venv's TensorFlow and
# install it into the venv. The built wheel is cached keyed on the TensorFlow version, so the
# ~2 minute build happens once per machine and TF version.
#
# Usage: scripts/install_horovod.sh [VENV_DIR]     (default: <repo>/.venv)
#
# Env: MLPLATFORM_CACHE  cache root (default ~/.cache/mlplatform); wheels live under
#                        $MLPLATFORM_CACHE/wheels/horovod-0.28.1-tf<TFVER>/
#
# Why the extra steps (see shared/TOOLING.md, "Horovod"):
#   - CMAKE_POLICY_VERSION_MINIMUM=3.5: cmake 4 rejects the bundled gloo's cmake_minimum_required.
#   - the xla_mpi_ops.cc patch: its XLA custom-call code only compiles with a GPU build on TF 2.21.
#   - strip --strip-debug on mpi_lib*.so: ~51 MB -> ~2 MB.
#   - install WITH deps: without pyyaml, horovodrun dies on "No module named yaml".
set -euo pipefail

HOROVOD_VERSION=0.28.1
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO_ROOT/.venv}"
case "$VENV" in
  /*) ;;
  *) VENV="$REPO_ROOT/$VENV" ;;
esac
PY="$VENV/bin/python"

log() { echo "[install_horovod] $*"; }
die() { echo "[install_horovod] ERROR: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no python interpreter at $PY (create the venv first: uv sync)"

if TF_CPP_MIN_LOG_LEVEL=2 "$PY" -c "import horovod.tensorflow" >/dev/null 2>&1 && [ -x "$VENV/bin/horovodrun" ]; then
  log "horovod already installed in $VENV ($("$PY" -c 'import horovod; print(horovod.__version__)' 2>/dev/null)); nothing to do"
  exit 0
fi

command -v uv >/dev/null 2>&1 || die "uv not found on PATH"

TF_VERSION="$("$PY" -c "import importlib.metadata as m; print(m.version('tensorflow'))")" \
  || die "tensorflow is not installed in $VENV"
CACHE_ROOT="${MLPLATFORM_CACHE:-$HOME/.cache/mlplatform}"
CACHE_DIR="$CACHE_ROOT/wheels/horovod-${HOROVOD_VERSION}-tf${TF_VERSION}"
mkdir -p "$CACHE_DIR"

find_cached_wheel() {
  find "$CACHE_DIR" -maxdepth 1 -name "horovod-${HOROVOD_VERSION}-*.whl" | sort | head -n 1
}

WHEEL="$(find_cached_wheel)"
if [ -n "$WHEEL" ]; then
  log "using cached wheel $WHEEL"
else
  for tool in g++ make strip; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: install build tools (apt-get install -y build-essential binutils)"
  done

  WORK="$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT

  log "installing build tools (pip setuptools wheel cmake) into $VENV"
  uv pip install --quiet --python "$PY" pip setuptools wheel cmake

  log "downloading horovod==${HOROVOD_VERSION} sdist"
  if python3 -m pip --version >/dev/null 2>&1; then
    DL_PY=python3
  else
    DL_PY="$PY"
  fi
  "$DL_PY" -m pip download --quiet --no-binary :all: --no-deps -d "$WORK/sdist" "horovod==${HOROVOD_VERSION}"
  SDIST="$(find "$WORK/sdist" -maxdepth 1 -name "horovod-${HOROVOD_VERSION}.tar.gz" | head -n 1)"
  [ -n "$SDIST" ] || die "sdist download produced no horovod-${HOROVOD_VERSION}.tar.gz"
  tar -xzf "$SDIST" -C "$WORK"
  SRC="$WORK/horovod-${HOROVOD_VERSION}"
  [ -d "$SRC" ] || die "unexpected sdist layout: $SRC missing"

  XLA="$SRC/horovod/tensorflow/xla_mpi_ops.cc"
  PATCHED='^#if TENSORFLOW_VERSION >= 2006000000 && HAVE_GPU$'
  sed -i 's/^#if TENSORFLOW_VERSION >= 2006000000$/#if TENSORFLOW_VERSION >= 2006000000 \&\& HAVE_GPU/' "$XLA"
  grep -q "$PATCHED" "$XLA" \
    || die "patch of $XLA did not apply (pattern '#if TENSORFLOW_VERSION >= 2006000000' not found)"
  log "patched horovod/tensorflow/xla_mpi_ops.cc (XLA ops only with GPU)"

  log "building horovod ${HOROVOD_VERSION} against tensorflow ${TF_VERSION} (~2 min, once per TF version)"
  start=$(date +%s)
  (
    cd "$SRC"
    CMAKE_POLICY_VERSION_MINIMUM=3.5 \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=GLOO \
    MAKEFLAGS="-j$(nproc)" \
      "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WORK/dist" . >"$WORK/build.log" 2>&1
  ) || { tail -n 60 "$WORK/build.log" >&2; die "horovod build failed (log tail above)"; }
  log "built in $(( $(date +%s) - start )) s"

  BUILT="$(find "$WORK/dist" -maxdepth 1 -name "horovod-${HOROVOD_VERSION}-*.whl" | head -n 1)"
  [ -n "$BUILT" ] || die "pip wheel produced no wheel"

  log "stripping debug symbols from mpi_lib*.so ($(du -h "$BUILT" | cut -f1) before)"
  "$PY" -m wheel unpack --dest "$WORK/unpacked" "$BUILT" >/dev/null
  UNPACKED="$(find "$WORK/unpacked" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
  n=0
  while IFS= read -r -d '' so; do
    strip --strip-debug "$so"
    n=$((n + 1))
  done < <(find "$UNPACKED" -name 'mpi_lib*.so' -print0)
  [ "$n" -gt 0 ] || die "no mpi_lib*.so found in the built wheel"
  mkdir -p "$WORK/stripped"
  "$PY" -m wheel pack --dest-dir "$WORK/stripped" "$UNPACKED" >/dev/null  # rewrites RECORD hashes
  STRIPPED="$(find "$WORK/stripped" -maxdepth 1 -name '*.whl' | head -n 1)"
  [ -n "$STRIPPED" ] || die "wheel pack produced no wheel"

  cp "$STRIPPED" "$CACHE_DIR/.tmp-$(basename "$STRIPPED")"
  mv "$CACHE_DIR/.tmp-$(basename "$STRIPPED")" "$CACHE_DIR/$(basename "$STRIPPED")"
  WHEEL="$CACHE_DIR/$(basename "$STRIPPED")"
  log "cached $WHEEL ($(du -h "$WHEEL" | cut -f1))"
fi

log "installing $(basename "$WHEEL") into $VENV"
uv pip install --quiet --python "$PY" --reinstall-package horovod "$WHEEL"

[ -x "$VENV/bin/horovodrun" ] || die "horovodrun missing from $VENV/bin after install"
# horovod.tensorflow has no __version__ of its own: import it (loads mpi_lib against TF), then ask
# the package.
VERSION="$(TF_CPP_MIN_LOG_LEVEL=2 "$PY" -c "import horovod.tensorflow, horovod; print(horovod.__version__)")" \
  || die "installed, but 'import horovod.tensorflow' fails"
log "horovod $VERSION ready (horovodrun: $VENV/bin/horovodrun)"

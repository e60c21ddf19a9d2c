#!/usr/bin/env bash
# Install the infrastructure-as-code scanner (checkov) into its own locked environment, .venv-iac/.
#
# Usage: scripts/install_iac.sh [VENV_DIR]      (default: <repo>/.venv-iac)
#
# Why apart from .venv: checkov's pins (its own boto3/botocore, networkx, packaging ...) conflict
# with Airflow's, so it cannot live in the platform's uv.lock. tools/iac/pyproject.toml + uv.lock
# pin it; `uv sync --frozen` installs exactly that lock. Idempotent: a no-op when the venv is in
# sync. tests/test_terraform.py and tests/test_k8s_deploy.py run .venv-iac/bin/checkov and skip,
# saying so, when it is missing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO_ROOT/.venv-iac}"
case "$VENV" in
  /*) ;;
  *) VENV="$REPO_ROOT/$VENV" ;;
esac
UV="$(command -v uv 2>/dev/null || echo "python3 -m uv")"

UV_PROJECT_ENVIRONMENT="$VENV" $UV sync --quiet --frozen --project "$REPO_ROOT/tools/iac" --python 3.11
echo "[install_iac] $("$VENV/bin/checkov" --version 2>/dev/null | sed 's/^/checkov /') in $VENV"

"""Rendering the deployment files offline, for tests/test_compose.py and tests/test_secrets.py.

``docker-compose config`` (v1.29; renders without a Docker engine) is run on docker-compose.yml
with an env file of *sentinel* secrets and an environment holding nothing else, so that a rendered
value equal to a sentinel provably came from the environment, and any other secret-looking value
was written into a file.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"

#: every secret that docker-compose.yml reads from its env file, with a recognisable sentinel value
COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "sentinel-postgres-password-7f3a",
    "REDIS_PASSWORD": "sentinel-redis-password-7f3a",
    "MINIO_ROOT_USER": "sentinel-minio-root-user",
    "MINIO_ROOT_PASSWORD": "sentinel-minio-root-password-7f3a",
    "MLP_S3_ACCESS_KEY": "sentinel-s3-access-key",
    "MLP_S3_SECRET_KEY": "sentinel-s3-secret-key-7f3a",
    "AIRFLOW_FERNET_KEY": "sentinel-fernet-key-7f3a",
    "AIRFLOW_JWT_SECRET": "sentinel-jwt-secret-7f3a",
    "AIRFLOW_API_SECRET_KEY": "sentinel-api-secret-key-7f3a",
}


def docker_compose() -> str:
    """The docker-compose (v1) binary, or skip saying how to get it."""
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip(
            "docker-compose is not installed (make env installs it: scripts/install_services.sh, "
            "apt-get install docker-compose)"
        )
    return found


def run_compose_config(tmp_path: Path, secrets: dict[str, str]) -> subprocess.CompletedProcess:
    """``docker-compose config`` of the repository's file with ``secrets`` as its env file and an
    otherwise empty environment (the caller's shell cannot leak values into the result)."""
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()), encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [
            docker_compose(),
            "--project-directory", str(REPO),
            "-f", str(COMPOSE_FILE),
            "--env-file", str(env_file),
            "config",
        ],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def render_compose(tmp_path: Path) -> dict[str, Any]:
    """docker-compose.yml rendered with the sentinel secrets, as a dict."""
    out = run_compose_config(tmp_path, COMPOSE_SECRETS)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@cache
def airflow_options() -> dict[str, set[str]]:
    """Airflow's own configuration options, section -> option names, from the installed
    ``airflow/config_templates/config.yml`` (read as YAML: importing Airflow costs seconds)."""
    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    sections = yaml.safe_load(path.read_text())
    return {name: set(section.get("options") or {}) for name, section in sections.items()}


def unknown_airflow_options(pairs: list[tuple[str, str]]) -> list[str]:
    """The ``section.option`` pairs that are not Airflow options (typos Airflow would ignore)."""
    options = airflow_options()
    return [f"{s}.{o}" for s, o in pairs if o not in options.get(s, set())]

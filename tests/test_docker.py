"""Images: no Docker engine here, so the Dockerfiles are linted (hadolint) and checked for the
properties the platform relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_trainer_dockerfile_lints_clean():
    out = subprocess.run(
        [str(HADOLINT), str(REPO / "docker" / "trainer.Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_trainer_image_builds_horovod_with_nccl_and_checks_it():
    text = (REPO / "docker" / "trainer.Dockerfile").read_text()
    assert "nvidia/cuda:" in text
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in text
    assert "HOROVOD_WITH_TENSORFLOW=1" in text
    assert "horovodrun --check-build" in text
    assert "training/ /app/training/" in text


def test_airflow_dockerfile_lints_clean():
    out = subprocess.run(
        [str(HADOLINT), str(REPO / "docker" / "airflow.Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_airflow_image_installs_the_locked_project_and_horovod():
    text = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in text  # uv.lock, not a second set of pins
    assert "scripts/install_horovod.sh" in text  # the local training backend
    assert "USER 50000:0" in text  # the Airflow Helm chart's uid/gid


def test_airflow_dockerfile_passes_checkov():
    from tests.deploy_scan import checkov_report, describe, under

    report = checkov_report("dockerfile")
    failed = under(report["failed"], "/repo/docker/airflow.Dockerfile")
    assert not failed, describe(failed)
    assert len(under(report["passed"], "/repo/docker/airflow.Dockerfile")) > 10

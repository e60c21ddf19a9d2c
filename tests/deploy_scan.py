"""One checkov run over every deployment file, shared by the tests that judge its findings
(test_terraform, test_k8s_deploy, test_docker, test_secrets): checkov costs 10-20 s a start on the
2-core machine, so it is started once per test session, not once per test.

The scanned tree (a temporary directory)::

    repo/       terraform/, deploy/, docker/, docker-compose.yml: copies of the repository's files
    rendered/   the trainer pod, MPIJob and infra validation's serving pod as mlplatform renders
                them in production
    control/    a bare S3 bucket (terraform): must fail the checks our buckets pass
    hot/        docker-compose.yml rendered with the secrets scripts/compose_env.sh generates:
                the secret scanner must find them (only when docker-compose is installed)

checkov runs offline (``BC_SKIP_MAPPING=TRUE``) from its own locked env, ``.venv-iac``
(scripts/install_iac.sh); a test skips, saying so, when it is missing.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.conftest import REPO

CHECKOV = REPO / ".venv-iac" / "bin" / "checkov"
FRAMEWORKS = ("terraform", "kubernetes", "dockerfile", "secrets")
CONTROL_TF = 'resource "aws_s3_bucket" "bare" {\n  bucket = "bare"\n}\n'


def rendered_trainer_manifests() -> list[dict[str, Any]]:
    """The trainer pod (one worker, one GPU) and MPIJob (two workers) that mlplatform.k8s renders
    with production settings: S3 keys from the Secret ``mlplatform-s3``, the MLflow URI from the
    Secret ``mlplatform-mlflow``."""
    from mlplatform import k8s
    from mlplatform.config import TrainingConfig, load_pipeline
    from mlplatform.settings import get_settings

    env = {
        "MLP_MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLP_K8S_MLFLOW_SECRET": "mlplatform-mlflow",
        "MLP_K8S_S3_SECRET": "mlplatform-s3",
    }
    with mock.patch.dict(os.environ, env):
        cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
        settings = get_settings()
        tracking_uri = k8s.pod_tracking_uri(settings, k8s.KubernetesSettings())
        training_set = {"train_uri": "s3://b/train.parquet", "holdout_uri": "s3://b/h.parquet"}
        out = []
        for workers in (1, 2):
            one = cfg.model_copy(
                update={
                    "training": TrainingConfig(image="reg/t:1", workers=workers, gpus_per_worker=1)
                }
            )
            spec = k8s.trainer_spec(
                one, training_set, output_dir="s3://b/out", artifact_location="s3://b/a",
                tracking_uri=tracking_uri, run_name="r", tags={},
            )  # fmt: skip
            if workers > 1:
                out.append(k8s.mpijob_manifest(one, spec, settings=settings, name="mlp-demo-t"))
            else:
                out.append(k8s.trainer_pod_spec(one, spec, settings=settings))
        return out


def rendered_serving_pod() -> dict[str, Any]:
    """Infra validation's ``tensorflow/serving`` pod for an ``s3://`` model base, S3 keys from the
    Secret ``mlplatform-s3`` (mlplatform.infra_runners.kubernetes renders it)."""
    from mlplatform.config import load_pipeline
    from mlplatform.infra_runners.kubernetes import KubernetesRunner
    from mlplatform.settings import get_settings

    env = {"MLP_STORAGE_URI": "s3://b/runs", "MLP_K8S_S3_SECRET": "mlplatform-s3"}
    with mock.patch.dict(os.environ, env):
        cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
        return KubernetesRunner(get_settings()).render(cfg, 1, Path("/x/demo/run/infra_validate"))


def compose_env_secrets(directory: Path) -> dict[str, str]:
    """Secrets as scripts/compose_env.sh generates them (written under ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "generated.env"
    subprocess.run(
        ["bash", str(REPO / "scripts" / "compose_env.sh"), str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _build_tree(root: Path) -> None:
    repo = root / "repo"
    for sub in ("terraform", "deploy", "docker"):
        shutil.copytree(REPO / sub, repo / sub, ignore=shutil.ignore_patterns(".terraform*"))
    shutil.copy(REPO / "docker-compose.yml", repo / "docker-compose.yml")
    (root / "rendered").mkdir()
    for i, manifest in enumerate(rendered_trainer_manifests()):
        (root / "rendered" / f"trainer-{i}.json").write_text(json.dumps(manifest, indent=1))
    (root / "rendered" / "serving.json").write_text(json.dumps(rendered_serving_pod(), indent=1))
    (root / "control" / "bare").mkdir(parents=True)
    (root / "control" / "bare" / "main.tf").write_text(CONTROL_TF)
    if shutil.which("docker-compose"):
        from tests.deploy_render import run_compose_config

        (root / "hot").mkdir()
        secrets = compose_env_secrets(root / "hot")
        out = run_compose_config(root / "hot", secrets)
        assert out.returncode == 0, out.stderr
        (root / "hot" / "rendered-compose.yml").write_text(out.stdout)


@cache
def _scan() -> dict[str, dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="mlp-checkov-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    _build_tree(root)
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    out = subprocess.run(
        [str(CHECKOV), "-d", str(root), "--framework", *FRAMEWORKS,
         "--enable-secret-scan-all-files", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    # exit code 1 = failed checks (the controls fail on purpose); anything else is checkov failing
    assert out.returncode in (0, 1), out.stderr[-2000:]
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_framework = {r["check_type"]: r for r in reports}
    return {"root": {"path": str(root)}, **by_framework}


def checkov_report(framework: str) -> dict[str, Any]:
    """checkov's report for ``framework`` over the tree above (one run per session); a framework
    that found nothing to scan has an empty report."""
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV}: run scripts/install_iac.sh (make env)")
    report = _scan().get(framework, {})
    results = report.get("results", {})
    return {
        "summary": report.get("summary", {}),
        "passed": results.get("passed_checks", []),
        "failed": results.get("failed_checks", []),
        "skipped": results.get("skipped_checks", []),
    }


def under(checks: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The checks of files under ``prefix`` of the scanned tree (``/repo/terraform/`` ...)."""
    return [c for c in checks if c["file_path"].startswith(prefix)]


def describe(checks: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']}): "
        f"{c['check_name']}"
        for c in checks
    )

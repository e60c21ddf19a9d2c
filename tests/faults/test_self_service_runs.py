"""Self-service runs end to end through Airflow (issue 13, items 3, 4 and 5).

Slow: real ``mlplatform run`` processes (``dag.test`` of the training DAG, real Great
Expectations, Feast, Horovod training, MLflow and the serving layout).

* A batch that fails validation fails its run at the first try of ``validate`` (never retried:
  the data must change first), the command's one line is the cause, and ``mlplatform status``
  says what became of the run of a pipeline that has no model yet.
* Two pipelines run side by side, at the same time, each on its own batch: neither touches the
  other's data versions, features, registry entries, served models or monitoring reference.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform import datagen
from tests.conftest import REPO
from tests.faults.test_run_faults import _cli, _set

pytestmark = pytest.mark.slow


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _task(home: Path, run_id: str, task_id: str) -> tuple[int, str]:
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        return db.execute(
            "select try_number, state from task_instance where run_id = ? and task_id = ?",
            (run_id, task_id),
        ).fetchone()


def _status(home: Path, pipelines: Path, name: str) -> str:
    proc = _cli(home, pipelines, "status", name)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return out


def test_a_validation_failure_is_not_retried_and_status_says_why(mlp_home, pipelines_dir, tmp_path):
    bad = datagen.write(datagen.generate(600, seed=41, bad_fraction=0.3), tmp_path / "bad.csv")
    proc = _cli(mlp_home, pipelines_dir, "run", "demo", "--data", str(bad))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, out + err
    line = err.strip()
    assert "\n" not in line and line.startswith("mlplatform: validation failed: "), err
    assert "exit" not in line.split("quarantined")[0]  # the cause, not an exit code
    (started,) = (mlp_home / "logs").glob("demo-*.json.started")
    run_id = json.loads(started.read_text())["run_id"]
    # failed at its first try: the DAG's retries=1 does not apply to a validation failure
    assert _task(mlp_home, run_id, "validate") == (1, "failed")
    status = _status(mlp_home, pipelines_dir, "demo")
    assert "demo: no model registered yet" in status
    assert "validation failed: " in status and "train  manual__" in status


def test_two_pipelines_side_by_side_touch_nothing_of_each_other(mlp_home, pipelines_dir, tmp_path):
    from mlflow import MlflowClient

    from serving.layout import read_models_config

    _set(pipelines_dir, epochs=2)
    demo = (pipelines_dir / "demo.yaml").read_text()
    twin = demo.replace("name: demo\n", "name: twin\n", 1).replace(
        "model_name: demo", "model_name: twin"
    )
    (pipelines_dir / "twin.yaml").write_text(twin)
    a = datagen.write(datagen.generate(1200, seed=51), tmp_path / "a.csv")
    b = datagen.write(datagen.generate(1200, seed=52), tmp_path / "b.csv")
    check = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "check", "twin", "--data", str(b)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**_cli_env(mlp_home, pipelines_dir)},
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    first = _cli(mlp_home, pipelines_dir, "run", "demo", "--data", str(a))
    second = _cli(mlp_home, pipelines_dir, "run", "twin", "--data", str(b))
    out_a, err_a = first.communicate(timeout=1500)
    out_b, err_b = second.communicate(timeout=1500)
    assert first.returncode == 0, out_a + err_a
    assert second.returncode == 0, out_b + err_b
    assert f"data_version={_md5(a)}" in out_a and _md5(b) not in out_a
    assert f"data_version={_md5(b)}" in out_b and _md5(a) not in out_b

    # they ran at the same time (one pipeline's runs serialize; two pipelines' do not)
    def span(pipeline: str) -> tuple[float, float]:
        (run,) = (mlp_home / "storage" / pipeline).glob("manual__*")
        return (
            (run / "start_run" / "summary.json").stat().st_mtime,
            (run / "end_run" / "summary.json").stat().st_mtime,
        )

    (start_a, end_a), (start_b, end_b) = span("demo"), span("twin")
    assert start_a < end_b and start_b < end_a, "the two runs did not overlap"

    # registry: each model has one version, from its own batch and its own run directory
    client = MlflowClient(f"sqlite:///{mlp_home / 'mlflow.db'}")
    for model, batch in (("demo", a), ("twin", b)):
        (version,) = client.search_model_versions(f"name='{model}'")
        assert version.tags["data_version"] == _md5(batch)
        assert f"/storage/{model}/" in version.tags["training_set_uri"]  # the monitor's reference
        assert client.get_model_version_by_alias(model, "champion").version == version.version
    # served models: both in models.config, each its own version directory
    served = read_models_config(mlp_home / "serving" / "models")
    assert {name: info["labels"].get("stable") for name, info in served.items()} == {
        "demo": 1,
        "twin": 1,
    }
    # features: each pipeline's offline store holds only its own batch
    for pipeline, batch in (("demo", a), ("twin", b)):
        stored = sorted(
            p.stem for p in (mlp_home / "feast" / pipeline / "offline").glob("*.parquet")
        )
        assert stored == [_md5(batch)], (pipeline, stored)
    # data versions: each batch versioned under its own pipeline
    for pipeline, batch in (("demo", a), ("twin", b)):
        versions = _cli(mlp_home, pipelines_dir, "data", "versions", pipeline)
        listing, _ = versions.communicate(timeout=300)
        assert _md5(batch) in listing and _md5(a if batch == b else b) not in listing
    # status names each pipeline's own run as promoted
    assert "promoted: served version 1" in _status(mlp_home, pipelines_dir, "twin")


def _cli_env(home: Path, pipelines: Path) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "MLP_HOME": str(home),
        "MLP_PIPELINES_PATH": str(pipelines),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }

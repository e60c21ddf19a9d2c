"""Self-service runs end to end through Airflow (issue 13, items 3, 4 and 5).

Slow: real ``mlplatform run`` processes (``dag.test`` of the training DAG, real Great
Expectations, Feast, Horovod training, MLflow and the serving layout).

* A batch that fails validation fails its run at the first try of ``validate`` (never retried:
  the data must change first), the command's one line is the cause, and ``mlplatform status``
  says what became of the run of a pipeline that has no model yet.
* Two pipelines side by side (item 5) are tested with the concurrent runs of one pipeline, in
  ``tests/faults/test_run_faults.py`` (one set of full runs serves both).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from mlplatform import datagen
from tests.faults.test_run_faults import _cli

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

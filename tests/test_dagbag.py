"""DAG files: import without errors, fast, and without heavy libraries at parse time."""

from __future__ import annotations

import json
import subprocess
import sys

from mlplatform.contracts import TRAIN_STAGES
from tests.conftest import REPO

HEAVY = [
    "tensorflow",
    "keras",
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "horovod",
    "dvc",
    "sklearn",
]

PROBE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
stats = [{"file": s.file, "seconds": s.duration.total_seconds() if hasattr(s.duration, "total_seconds") else s.duration, "dags": s.dag_num} for s in bag.dagbag_stats]
heavy = sorted(m for m in sys.argv[2].split(",") if m in sys.modules)
print(json.dumps({"errors": {k: v for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dag_ids), "stats": stats, "heavy": heavy}))
"""


def _load(dags_dir, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {}), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(dags_dir), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dagbag_loads_every_dag_without_heavy_imports(mlp_home):
    """Parse cost is kept low by what the DAG files import (checked here), not by a wall-clock
    bound, which would fail on a loaded machine; the parse times are printed for the log."""
    result = _load(REPO / "dags")
    assert result["errors"] == {}
    assert "mlp_demo_train" in result["dag_ids"]
    assert result["stats"], "no DAG file was parsed"
    print({stat["file"]: round(stat["seconds"], 3) for stat in result["stats"]})
    assert result["heavy"] == [], f"heavy libraries imported while parsing DAGs: {result['heavy']}"


def test_train_dag_chains_every_stage(mlp_home):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["mlp_demo_train"]
    order = TRAIN_STAGES
    assert set(dag.task_ids) == set(order)
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).get_flat_relative_ids(upstream=False), (
            f"{upstream} !-> {downstream}"
        )
    end = dag.get_task("end_run")
    assert end.is_teardown and "start_run" in end.upstream_task_ids, (
        "end_run must be start_run's teardown"
    )
    assert dag.params["data_uri"] == ""


def _bag_in_process():
    """The DAG folder parsed in this process (the factory reads the settings from the
    environment at parse time); the heavy-import check above needs a clean interpreter, these
    structural checks do not."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_a_bad_pipeline_yaml_does_not_hide_the_others(mlp_home, pipelines_dir):
    (pipelines_dir / "broken.yaml").write_text("name: broken\nsource: {}\n")
    bag = _bag_in_process()
    assert bag.import_errors == {}
    assert "mlp_demo_train" in bag.dag_ids
    assert "mlp_broken_train" not in bag.dag_ids
    assert "mlp_broken_invalid" in bag.dag_ids  # the placeholder that shows the error


def test_kubernetes_backend_swaps_in_the_pod_operator(mlp_home, monkeypatch):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    monkeypatch.setenv("MLP_TRAINING_BACKEND", "kubernetes")
    bag = _bag_in_process()
    assert bag.import_errors == {}
    train = bag.dags["mlp_demo_train"].get_task("train")
    assert type(train).__name__ == "HorovodKubernetesTrainOperator"
    assert isinstance(train, KubernetesPodOperator)

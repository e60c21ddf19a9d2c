"""The custom-DAG example (``dags/examples/custom_step.py``, ``docs/custom_dags.md``): it loads in
the DagBag with its own step in the chain, and that step's check passes clean data and fails leaky
data before training. The slow test runs the whole DAG on a small demo batch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "dags" / "examples" / "custom_step.py"
DAG_ID = "mlp_demo_custom_step"
CHAIN = ["start_run", "ingest", "validate", "features", "training_set", "leakage_check", "train", "register", "gate", "infra_validate", "promote", "end_run"]  # fmt: skip


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_step_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_rows(tmp_path, leak: bool) -> str:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 200)
    rows = pd.DataFrame(
        {
            "tenure_months": rng.normal(20, 5, 200),
            "monthly_charges": label * 10.0 + rng.normal(0, 0.01, 200) if leak else rng.random(200),
            "support_calls": np.full(200, 3.0),  # constant: no correlation, never a leak
            "usage_minutes": rng.random(200),
            "churned": label,
        }
    )
    path = tmp_path / ("leaky.parquet" if leak else "clean.parquet")
    rows.to_parquet(path, index=False)
    return path.as_uri()


def test_example_dag_loads_with_its_own_step_in_the_chain(mlp_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags[DAG_ID]
    assert dag.fileloc == str(EXAMPLE), "the DAGs folder is walked recursively"
    assert "mlp_demo_train" in bag.dags
    assert set(dag.task_ids) == set(CHAIN)
    for upstream, downstream in zip(CHAIN, CHAIN[1:], strict=False):
        assert downstream in dag.get_task(upstream).get_flat_relative_ids(upstream=False), (
            f"{upstream} !-> {downstream}"
        )
    assert dag.get_task("leakage_check").upstream_task_ids == {"training_set"}
    assert "leakage_check" in dag.get_task("train").upstream_task_ids
    assert dag.get_task("end_run").is_teardown
    assert dag.default_args["run_scope"] == "custom"
    assert dag.get_task("leakage_check").retries == 0
    assert "example" in dag.tags


def test_leakage_findings_flag_a_feature_that_is_the_label(mlp_home, tmp_path):
    example = _example()
    numeric = ["tenure_months", "monthly_charges", "support_calls", "usage_minutes"]
    leaky = example.leakage_findings(_train_rows(tmp_path, True), "churned", numeric, 0.98)
    assert leaky["leaks"] == ["monthly_charges"] and leaky["rows"] == 200
    assert leaky["correlations"]["support_calls"] is None
    clean = example.leakage_findings(_train_rows(tmp_path, False), "churned", numeric, 0.98)
    assert clean["leaks"] == []
    assert all(abs(r) < 0.5 for r in clean["correlations"].values() if r is not None)


def test_leakage_check_operator_fails_before_training_on_a_leak(mlp_home, tmp_path):
    from mlplatform.config import load_pipeline
    from mlplatform.settings import get_settings
    from mlplatform.stages import ValidationFailed

    example = _example()
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    ok = example.LeakageCheckOperator(
        task_id="check_ok",
        pipeline="demo",
        training_set={"train_uri": _train_rows(tmp_path, False)},
    )
    assert ok.run_stage(cfg, tmp_path, get_settings(), {})["leaks"] == []
    bad = example.LeakageCheckOperator(
        task_id="check_bad",
        pipeline="demo",
        training_set={"train_uri": _train_rows(tmp_path, True)},
    )
    with pytest.raises(ValidationFailed, match=r"monthly_charges \(r=(0\.9\d+|1\.0)\).*'churned'"):
        bad.run_stage(cfg, tmp_path, get_settings(), {})


def test_example_builds_nothing_without_its_pipeline(mlp_home, tmp_path):
    example = _example()
    assert example.custom_step_dag is not None and example.custom_step_dag.dag_id == DAG_ID
    assert example.example_pipeline("no_such_pipeline") is None
    assert example.example_dag("no_such_pipeline") is None


@pytest.mark.slow
def test_custom_step_dag_trains_and_promotes_a_small_batch(mlp_home, tmp_path):
    from mlplatform import datagen

    batch = datagen.write(datagen.generate(1200, seed=3), tmp_path / "batch.csv")
    result = tmp_path / "result.json"
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.airflow_runner", DAG_ID, str(result),
         "--conf", json.dumps({"data_uri": str(batch)})],
        capture_output=True, text=True, cwd=REPO, env={**os.environ}, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(result.read_text())
    assert run["state"] == "success", run
    assert all(run["tasks"][t] == "success" for t in CHAIN), run["tasks"]
    summaries = list((mlp_home / "storage" / "demo").glob("*/leakage_check/summary.json"))
    assert len(summaries) == 1
    outputs = json.loads(summaries[0].read_text())["outputs"]
    assert outputs["leaks"] == [] and outputs["rows"] > 0

"""End to end through Airflow: demo run -> served answer; bad batch and refused gate lose nothing.

Slow (real Airflow ``dag.test`` runs with real TensorFlow/Horovod training): ``-m "not slow"``
skips it locally; CI runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.contracts import TRAIN_STAGES, WORK_STAGES, validate_output
from tests.conftest import REPO
from tests.run_checks import assert_run_explains_itself, own_lines, task_log

pytestmark = pytest.mark.slow


def _cli(
    *args: str, home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLP_HOME": str(home), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )


def _registry(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_demo_then_bad_batch_then_refused_gate(mlp_home, pipelines_dir, tmp_path):
    from mlplatform import datagen
    from serving import layout

    # 1. the demo: a real DAG run through Airflow ending with a prediction from the promoted model
    demo = _cli("demo", "--rows", "1500", home=mlp_home)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for stage in WORK_STAGES:
        assert re.search(rf"^  {stage}\s+ok\s+\d+\.\d+s", demo.stdout, re.M), (
            f"no summary line for {stage}:\n{demo.stdout}"
        )
    assert "answered by model demo version 1" in demo.stdout
    predictions = [float(m) for m in re.findall(r"-> \[?([0-9.eE-]+)\]?$", demo.stdout, re.M)]
    assert len(predictions) == 3 and all(0.0 <= p <= 1.0 for p in predictions)

    client = _registry(mlp_home)
    v1 = client.get_model_version_by_alias("demo", "champion")
    assert int(v1.version) == 1
    ingest_path = next((mlp_home / "storage" / "demo").glob("*/ingest/summary.json"))
    ingest_summary = json.loads(ingest_path.read_text())
    for stage in TRAIN_STAGES:  # every task's real XCom matches its declared contract
        summary = json.loads((ingest_path.parent.parent / stage / "summary.json").read_text())
        validate_output(stage, summary["outputs"])
    assert v1.tags["data_version"] == ingest_summary["outputs"]["data_version"]
    for tag in (
        "data_commit",
        "feature_service",
        "training_set_uri",
        "git_commit",
        "pipeline_config_hash",
        "trainer_code_hash",
        "validation",
    ):
        assert v1.tags.get(tag), f"model version lacks lineage tag {tag}"
    run = client.get_run(v1.run_id)
    assert run.data.tags["data_version"] == v1.tags["data_version"]
    assert "holdout_auc" in run.data.metrics
    models = mlp_home / "serving" / "models"
    assert layout.served_version(models, "demo") == 1
    # the run explains itself in the UI: task logs, the validate table, the gate's decision, note
    demo_run = re.search(r"^run (\S+): success", demo.stdout, re.M).group(1)
    assert_run_explains_itself(mlp_home, demo_run, list(TRAIN_STAGES))
    # the audit trail names who promoted and why; MLflow links back into the UI over http
    from mlplatform import audit
    from mlplatform.settings import get_settings

    trail = audit.read(get_settings(), "demo")
    assert [e.action for e in trail] == ["retrain_decision", "promote"], trail
    assert trail[1].version == 1 and trail[1].actor.startswith("command line (")
    assert (
        trail[1].reason.startswith("passed the gate (auc 0.")
        and "vs champion None" in trail[1].reason
    )
    assert (
        v1.tags["airflow_run_url"].startswith("http")
        and "/dags/mlp_demo_train/runs/" in v1.tags["airflow_run_url"]
    )
    assert v1.tags["platform_url"].endswith("/mlplatform/models/demo/versions/1")
    assert (
        v1.tags["data_docs_url"].startswith("http")
        and "/mlplatform/reports/demo/" in v1.tags["data_docs_url"]
    )

    # 1b. the same batch again: every stage is reused from run 1 (step caching), nothing trains
    (batch,) = (mlp_home / "demo-data").glob("batch-*.csv")
    again = _cli("run", "demo", "--data", str(batch), home=mlp_home)
    assert again.returncode == 0, again.stdout + again.stderr
    first_run = re.search(r"^run (\S+): success", demo.stdout, re.M).group(1)
    for stage in ("ingest", "validate", "features", "training_set", "train", "register", "gate"):
        assert re.search(
            rf"^  {stage}\s+ok\s.*\(cached from run {re.escape(first_run)}\)$", again.stdout, re.M
        ), f"{stage} not cached:\n{again.stdout}"
    assert "cache: 9 stage(s) reused earlier outputs" in again.stdout
    experiment = client.get_experiment_by_name("demo").experiment_id
    assert len(client.search_runs([experiment])) == 1, "the cached run trained again"
    assert len(client.search_model_versions("name='demo'")) == 1

    # 2. a corrupt batch: one-line error naming expectations and columns; nothing downstream changes
    bad = datagen.write(datagen.generate(1500, seed=7, bad_fraction=0.05), tmp_path / "bad.csv")
    res = _cli("run", "demo", "--data", str(bad), home=mlp_home)
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip()
    assert err.startswith("mlplatform: validation failed:") and "\n" not in err
    assert "expect_column_values_to_be_in_set(contract_type)" in err
    assert len(client.search_model_versions("name='demo'")) == 1
    assert layout.served_version(models, "demo") == 1

    # 3. a gate that no model can pass: the run ends skipped with the reason, champion stays
    cfg = pipelines_dir / "demo.yaml"
    cfg.write_text(cfg.read_text().replace("min: 0.70", "min: 0.999"))
    good = datagen.write(datagen.generate(1500, seed=8), tmp_path / "good.csv")
    res = _cli(
        "run",
        "demo",
        "--data",
        str(good),
        home=mlp_home,
        extra_env={"MLP_PIPELINES_PATH": str(pipelines_dir)},
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"gate\s+SKIPPED", res.stdout)
    refused_run = re.search(r"^run (\S+): ", res.stdout, re.M).group(1)
    gate_log = own_lines(task_log(mlp_home, "mlp_demo_train", refused_run, "gate"))
    assert gate_log[-1].startswith("gate decision: refused: gate refused demo v2: auc="), gate_log[
        -3:
    ]
    assert "not promoted: gate refused demo v2: auc=" in res.stderr
    assert int(client.get_model_version_by_alias("demo", "challenger").version) == 2
    assert int(client.get_model_version_by_alias("demo", "champion").version) == 1
    assert layout.served_version(models, "demo") == 1
    assert layout.list_versions(models, "demo") == [1]
    # the platform view shows the refusal on v2 and v1's passed gate
    from mlplatform.config import load_pipeline
    from mlplatform.platform_view import model_view

    view = model_view(get_settings(), load_pipeline(cfg))
    gates = {v["version"]: v["gate"] for v in view["versions"]}
    assert gates[2]["decision"] == "refused" and gates[2]["refused"].startswith(
        "gate refused demo v2"
    )
    assert gates[1]["decision"] == "promote" and gates[1]["champion"] is None
    assert (
        view["served_version"] == 1 and [e["action"] for e in view["audit"]].count("promote") == 1
    )

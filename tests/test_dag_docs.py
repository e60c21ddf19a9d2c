"""A pipeline's training DAG documents itself for its users, from its config (issue 14, item 4)."""

from __future__ import annotations

import yaml

from mlplatform.config import PipelineConfig
from tests.conftest import REPO


def _demo(**changes: object) -> PipelineConfig:
    data = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            data[section][key] = value
        else:
            data[section] = value
    return PipelineConfig.model_validate(data)


def test_train_dag_docs_say_what_users_need(mlp_home):
    from mlplatform.dag_factory import build_train_dag

    dag = build_train_dag(_demo())
    doc = " ".join(dag.doc_md.split())  # Markdown: a line break is a space
    assert doc.startswith("### demo: Predict whether a customer churns within 30 days")
    assert "a probability (`score`, 0..1) that **churned** is true" in doc
    assert "`customer_id`, `event_time`, `tenure_months`" in doc and "suite `demo_raw`" in doc
    assert "`data_uri` = one batch to ingest: a CSV file" in doc
    assert "`auc` on the hold-out is at least 0.7 and does not drop by more than 0.02" in doc
    assert "when `mlp_demo_monitor` finds drift" in doc and "`@weekly`" in doc
    assert f"{mlp_home / 'storage'}/demo/<run>/<stage>/" in doc
    assert "/mlplatform/models/demo" in doc and "owner `mlplatform`" in doc
    assert "start_run" not in doc  # the factory's internals are not the users' business
    assert {task.owner for task in dag.tasks} == {"mlplatform"}


def test_the_docs_and_owner_follow_the_config(mlp_home):
    from mlplatform.dag_factory import build_train_dag

    cfg = _demo(owner="team-churn", gate={"metric": "rmse", "max": 3.5, "max_regression": 0.1},
                model={"kind": "tabular_regressor"}, retrain={"schedule": None, "on_drift": False, "on_new_data": False})  # fmt: skip
    dag = build_train_dag(cfg)
    doc = " ".join(dag.doc_md.split())
    assert "the value of **churned** (`prediction`)" in doc
    assert "`rmse` on the hold-out is at most 3.5 and does not rise by more than 0.1" in doc
    assert "**When it retrains**: Only when triggered by hand." in doc
    assert "owner `team-churn`" in doc
    assert {task.owner for task in dag.tasks} == {"team-churn"}

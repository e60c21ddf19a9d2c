"""Stage contracts (:mod:`mlplatform.contracts`): the declared outputs match what the stages return.

The data stages run in-process through their operators' ``run_stage`` (the XCom a task returns)
on a small demo batch; the train XCom is built by :func:`operators.training.train_xcom`. The
registry stages need a trained model: ``tests/test_end_to_end.py`` validates every summary of a
real run against the contracts.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.contracts import (
    OUTPUTS,
    TRAIN_DAG,
    TRAIN_STAGES,
    WORK_STAGES,
    ContractError,
    validate_output,
)
from mlplatform.settings import get_settings
from mlplatform.storage import stage_dir
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()


class _TaskInstance:
    """What ``run_stage`` of the data stages uses of Airflow's task instance."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_every_stage_declares_its_output_and_shown_key():
    assert len(set(TRAIN_STAGES)) == len(TRAIN_STAGES)
    assert TRAIN_STAGES[0] == "start_run" and TRAIN_STAGES[-1] == "end_run"
    assert WORK_STAGES[0] == "ingest" and WORK_STAGES[-1] == "promote"
    for stage in TRAIN_DAG:
        assert stage.key in stage.output.__annotations__, f"{stage.name}: no key {stage.key!r}"


def test_the_cli_stage_table_is_the_contract():
    from mlplatform.cli.run import KEY_OUTPUT, STAGES

    assert STAGES == list(TRAIN_STAGES)
    assert set(KEY_OUTPUT) == set(OUTPUTS)


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ({"lease": "released", "surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({}, "lease: Field required"),
        ({"lease": ["a"]}, "lease: Input should be a valid string"),
    ],
)
def test_an_output_that_drifts_is_named_in_one_line(output, problem):
    with pytest.raises(ContractError) as err:
        validate_output("end_run", output)
    message = str(err.value)
    assert message.startswith("end_run: output breaks its contract") and problem in message
    assert "\n" not in message


def test_a_cached_output_carries_its_origin():
    cached = {"lease": "released", "cached_from": "manual__1", "cache_key": "abc"}
    assert validate_output("end_run", cached) == cached
    with pytest.raises(KeyError, match="no contract for stage 'rollback'"):
        validate_output("rollback", {})


def test_the_data_stages_return_their_declared_outputs(mlp_home, tmp_path):
    from operators import (
        FeaturesOperator,
        IngestOperator,
        TrainingSetOperator,
        ValidateOperator,
    )

    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    settings = get_settings()
    batch = datagen.write(datagen.generate(300, seed=5, end=END), tmp_path / "batch.csv")
    context = {"ti": _TaskInstance(), "run_id": "r1"}

    def run(op: Any, run: str = "r1") -> dict[str, Any]:
        out = stage_dir(settings.storage, cfg.name, run, op.stage)
        result = op.run_stage(cfg, out, settings, context)
        validate_output(op.stage, result)
        return result

    ingested = run(IngestOperator(pipeline=cfg.name, source_uri=str(batch)))
    assert ingested["new"] is True and "reused" not in ingested
    run(ValidateOperator(pipeline=cfg.name, data=ingested))
    run(FeaturesOperator(pipeline=cfg.name, data=ingested))
    training_set = run(TrainingSetOperator(pipeline=cfg.name, data=ingested))
    assert training_set["rows"] == training_set["train_rows"] + training_set["holdout_rows"]
    # a run without a batch hands on the newest validated one: the optional keys
    reused = run(IngestOperator(pipeline=cfg.name, source_uri=""), run="r2")
    assert reused["reused"] is True and reused["data_version"] == ingested["data_version"]


def test_the_train_xcom_is_the_train_contract():
    from operators.training import train_xcom

    raw = {
        "mlflow_run_id": "0123",
        "mlflow_model_id": "m-1",
        "metrics": {"holdout_auc": 0.81, "holdout_loss": None},
        "world_size": 2,
        "samples_per_sec": 1500.0,
    }
    xcom = train_xcom(raw, {"data_version": "abc"})
    assert validate_output("train", xcom)["model_uri"] == "models:/m-1"

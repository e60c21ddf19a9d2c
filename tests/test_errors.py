"""Errors carry their cause; only transient failures retry (issue 13, item 3).

Fast: a real :class:`~operators.base.PlatformOperator` driven through ``execute`` with a minimal
task context, raising each kind of error; and the root cause that ``mlplatform run`` prints from
a runner log. The end-to-end proof (a validation failure through Airflow: failed at try 1) is in
``tests/faults/test_self_service_runs.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from mlplatform.config import ConfigError
from mlplatform.errors import is_transient
from mlplatform.settings import get_settings
from mlplatform.sources import SourceError, SourceUnavailable, remote_problem
from mlplatform.stages import GateRefused, StageError, StageUnavailable, ValidationFailed
from mlplatform.storage import run_key, to_path
from operators.base import PlatformOperator
from tests.test_cache import context

RUN = "manual__2026-11-28T01:00:00+00:00"


class Raising(PlatformOperator):
    """A stage that raises what it is given."""

    stage = "toy"

    def __init__(self, *, error: BaseException, **kw) -> None:
        super().__init__(**kw)
        self.error = error

    def run_stage(self, cfg, out_dir, settings, context):
        raise self.error


def summary() -> dict:
    path = to_path(get_settings().storage) / "demo" / run_key(RUN) / "toy" / "summary.json"
    return json.loads(path.read_text())["outputs"]


@pytest.mark.parametrize(
    ("error", "raised", "recorded"),
    [
        # permanent: never retried (AirflowFailException), the message is the cause
        (ValidationFailed("validation failed: 1 of 9 expectations"), AirflowFailException,
         {"failed": "validation failed: 1 of 9 expectations"}),
        (SourceError("ingest: /x.csv: the file is empty (0 bytes)"), AirflowFailException,
         {"failed": "ingest: /x.csv: the file is empty (0 bytes)"}),
        (StageError("train: trainer exited with code 1: ValueError: label 'y' must be 0/1"),
         AirflowFailException,
         {"failed": "train: trainer exited with code 1: ValueError: label 'y' must be 0/1"}),
        (ConfigError("pipelines/demo.yaml:3: source.entity: Field required"), AirflowFailException,
         {"failed": "toy: ConfigError: pipelines/demo.yaml:3: source.entity: Field required"}),
        # a decision: skipped with its reason
        (GateRefused("gate refused demo v2: auc=0.61 is past the floor 0.7"), AirflowSkipException,
         {"skipped": "gate refused demo v2: auc=0.61 is past the floor 0.7"}),
        # transient: retried as the DAG allows
        (SourceUnavailable("ingest: s3://b/k: cannot reach the S3 endpoint http://s3:9000"),
         AirflowException, {"failed": "ingest: s3://b/k: cannot reach the S3 endpoint http://s3:9000"}),
        (StageUnavailable("train: pod lost"), AirflowException, {"failed": "train: pod lost"}),
    ],
)  # fmt: skip
def test_each_error_kind_maps_to_its_airflow_outcome(
    mlp_home, pipelines_dir, error, raised, recorded
):
    with pytest.raises(raised) as caught:
        Raising(pipeline="demo", error=error).execute(context(RUN))
    assert type(caught.value) is raised
    assert str(caught.value) == next(iter(recorded.values()))
    assert summary() == recorded


def test_an_unknown_error_keeps_airflows_retry_and_records_its_cause(mlp_home, pipelines_dir):
    with pytest.raises(KeyError):  # re-raised as it is: the task log keeps the trace
        Raising(pipeline="demo", error=KeyError("tenure_months")).execute(context(RUN))
    assert summary() == {"failed": "toy: KeyError: 'tenure_months'"}
    assert is_transient(KeyError("x")) and not is_transient(StageError("x"))


def test_an_unreachable_s3_endpoint_is_transient_a_missing_object_is_not():
    from botocore.exceptions import ClientError, EndpointConnectionError

    down = remote_problem(EndpointConnectionError(endpoint_url="http://s3:9000"), "s3://b/k", None)
    assert isinstance(down, SourceUnavailable) and is_transient(down)
    assert str(down).startswith("ingest: s3://b/k: cannot reach the S3 endpoint http://s3:9000")
    missing = remote_problem(
        ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject"), "s3://b/k", None
    )
    assert str(missing) == "ingest: s3://b/k: no such object" and not is_transient(missing)


def test_the_run_command_prints_the_root_cause_not_an_exit_code(tmp_path):
    from mlplatform.cli.run import log_cause

    log = tmp_path / "run.log"
    log.write_text(
        "\n".join(
            [
                "2026-11-28 INFO ingest done",
                "[2026-11-28] {taskinstance.py} INFO - Running <TaskInstance: mlp_demo_train.train>",
                "Traceback (most recent call last):",
                '  File "x.py", line 3, in run',
                "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked",
                "2026-11-28 INFO Marking task as FAILED. dag_id=mlp_demo_train, task_id=train",
            ]
        )
    )
    assert log_cause(log) == (
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked"
    )
    assert log_cause(log, task="train") == log_cause(log)
    assert log_cause(Path(tmp_path / "absent.log")) is None

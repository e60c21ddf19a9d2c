"""The one task of a placeholder DAG that stands for a pipeline file that is not valid."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException


class InvalidPipelineOperator(BaseOperator):
    """Fails, without retries, with ``error``: the line ``mlplatform check`` prints for the file.

    Triggering the placeholder DAG ``mlp_<file stem>_invalid`` shows the error in the task log
    too; fixing the file replaces the placeholder with the pipeline's DAGs on the next parse.
    """

    ui_color = "#f8d7da"

    def __init__(self, *, error: str, **kwargs: Any) -> None:
        kwargs.setdefault("task_id", "config_error")
        kwargs["retries"] = 0
        super().__init__(**kwargs)
        self.error = error

    def execute(self, context: Any) -> None:
        raise AirflowFailException(self.error)

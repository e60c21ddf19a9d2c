"""Airflow notifiers of the platform: task failures become ``failure`` alerts.

:class:`FailureAlertNotifier` is an Airflow notifier (``airflow.sdk.bases.notifier.BaseNotifier``)
that every platform DAG sets as ``on_failure_callback`` through
:func:`mlplatform.dag_factory.dag_default_args`. Airflow calls it once a task has failed for good
(not on a try that is retried); it sends :func:`mlplatform.alerts.send` ``failure`` with the DAG,
task, run, try and the error's first line, plus a link to the task's log in the Airflow UI when a
base URL is known (``[api] base_url``, ``AIRFLOW__API__BASE_URL``). With no webhook configured it
makes no network call; it never raises (an alert must not change the task's outcome).

The pipeline's config is the one the run froze (:func:`mlplatform.runs.load_run_config`), else
the live YAML; if neither can be read, the alert still goes to ``MLP_ALERT_WEBHOOK_URL``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

log = logging.getLogger(__name__)


def ui_base_url() -> str | None:
    """The Airflow UI's base URL when the deployment sets one (``[api] base_url``), else None."""
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="").rstrip("/") or None


def run_facts(context: Any) -> dict[str, Any]:
    """``dag``, ``task``, ``run``, ``try`` and ``log`` (the task log's URL in the UI, when a base
    URL is known) of the task instance in an Airflow ``context``."""
    ti = context.get("ti") or context.get("task_instance")
    facts: dict[str, Any] = {
        "dag": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
        "task": getattr(ti, "task_id", None),
        "run": context.get("run_id") or getattr(ti, "run_id", None),
        "try": getattr(ti, "try_number", None),
    }
    if ui_base_url() and ti is not None and hasattr(ti, "log_url"):
        facts["log"] = ti.log_url
    return facts


def pipeline_config(pipeline: str, run_id: str | None) -> Any:
    """The run's frozen config, else the live one; a bare stand-in (name only) if neither loads."""
    from mlplatform import runs
    from mlplatform.settings import get_settings
    from mlplatform.storage import run_key

    try:
        return runs.load_run_config(get_settings(), pipeline, run_key(run_id or ""))
    except Exception as exc:  # noqa: BLE001 - a broken config must not swallow the alert
        log.warning(
            "alert for %s: config not readable (%s); using MLP_ALERT_WEBHOOK_URL", pipeline, exc
        )
        return SimpleNamespace(name=pipeline, alerts=None)


def error_line(exception: object) -> str:
    """The error as one line (type name when it has no message)."""
    from mlplatform.config import one_line

    if exception is None:
        return "unknown error (no exception in the context)"
    text = str(exception).strip()
    return one_line(text.splitlines()[0] if text else type(exception).__name__, 300)


class FailureAlertNotifier(BaseNotifier):
    """``on_failure_callback`` of platform tasks: a ``failure`` alert for pipeline ``pipeline``."""

    def __init__(self, pipeline: str) -> None:
        super().__init__()
        self.pipeline = pipeline

    def notify(self, context: Any) -> None:
        from mlplatform import alerts

        try:
            facts = run_facts(context)
            error = error_line(context.get("exception"))
            cfg = pipeline_config(self.pipeline, facts["run"])
            summary = f"task {facts['dag']}.{facts['task']} failed: {error}"
            alerts.send(cfg, "failure", summary, **facts, error=error)
        except Exception:  # noqa: BLE001 - never change the task's outcome
            log.exception("failure alert for %s not sent", self.pipeline)

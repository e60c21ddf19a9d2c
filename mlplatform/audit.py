"""The audit trail of a pipeline: who or what changed its model, when and why.

One append-only JSON-lines file per pipeline, ``<home>/runs/<pipeline>/audit.jsonl``, written only
through :func:`record`. Each line is an :class:`AuditEntry`: ``time`` (ISO 8601 UTC), ``action``
(one of :data:`ACTIONS`: ``promote``, ``canary``, ``rollback``, ``retrain_decision``), ``actor``
(who or what did it: ``user admin``, ``schedule``, ``asset event mlp_demo_drift``, ``command line
(root)``), ``reason`` (one line), the ``model`` and ``version`` concerned (when there is one), the
Airflow ``run_id`` it happened in and ``details`` (small figures). Lines are appended under an
exclusive lock, flushed and synced; a torn last line (a writer killed mid-line) is ended
before the next entry and skipped on reading. Nothing rewrites or
deletes lines.

:func:`actor_from_context` names the actor of an Airflow task's run: the user who triggered it
(Airflow 3 records ``triggering_user_name`` on runs triggered from the UI or the REST API), the
schedule, the asset events that triggered it, or the command line (``mlplatform run`` runs a DAG
in-process with ``dag.test``, which records the user ``dag_test``).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform import jsonl_log
from mlplatform.settings import Settings

LOG_NAME = "audit.jsonl"
ACTIONS = ("promote", "canary", "rollback", "retrain_decision")
#: the triggering user Airflow's ``dag.test`` records (airflow.sdk.definitions.dag), i.e. the
#: runs of ``mlplatform run``/``demo``: a command typed by a person, not a UI user
DAG_TEST_USER = "dag_test"


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail (see the module doc)."""

    time: str
    pipeline: str
    action: str
    actor: str
    reason: str
    model: str | None = None
    version: int | None = None
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def log_path(settings: Settings, pipeline: str) -> Path:
    """``<home>/runs/<pipeline>/audit.jsonl``."""
    return settings.home_dir / "runs" / pipeline / LOG_NAME


def record(
    settings: Settings,
    pipeline: str,
    action: str,
    *,
    actor: str,
    reason: str,
    model: str | None = None,
    version: int | None = None,
    run_id: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Append one entry to ``pipeline``'s audit trail and return it. ValueError for an unknown
    ``action`` or an empty ``actor`` (an entry that cannot say who did it is no audit)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r} (known: {', '.join(ACTIONS)})")
    if not actor.strip():
        raise ValueError("an audit entry needs an actor")
    entry = AuditEntry(
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        pipeline=pipeline,
        action=action,
        actor=actor,
        reason=" ".join(reason.split()),
        model=model,
        version=None if version is None else int(version),
        run_id=run_id,
        details={k: v for k, v in details.items() if v is not None},
    )
    jsonl_log.append(log_path(settings, pipeline), entry)
    return entry


def read(settings: Settings, pipeline: str) -> list[AuditEntry]:
    """The pipeline's audit trail, oldest first (unreadable lines skipped)."""
    return jsonl_log.read(log_path(settings, pipeline), AuditEntry)


def command_line_actor() -> str:
    """The actor of a command typed by a person: ``command line (<os user>)``."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        who = str(os.getuid())
    return f"command line ({who})"


def actor_from_context(context: Mapping[str, Any]) -> str:
    """Who or what started the Airflow run of a task's ``context`` (see the module doc)."""
    dag_run = context.get("dag_run")
    run_type = str(getattr(getattr(dag_run, "run_type", None), "value", "") or "")
    if not run_type:
        run_type = str(getattr(dag_run, "run_type", "") or "")
    user = getattr(dag_run, "triggering_user_name", None)
    if user == DAG_TEST_USER:
        return command_line_actor()
    if user:
        return f"user {user}"
    if run_type == "scheduled":
        return "schedule"
    if run_type == "asset_triggered":
        names = sorted(
            {getattr(a, "name", str(a)) for a in context.get("triggering_asset_events") or {}}
        )
        return f"asset event {', '.join(names)}" if names else "asset event"
    if run_type == "backfill":
        return "backfill"
    return command_line_actor()


def pipeline_of_model(settings: Settings, model: str) -> str:
    """The pipeline whose ``serving.model_name`` is ``model`` (valid pipeline files only); the
    model's own name when none is (a model registered by hand)."""
    from mlplatform.config import load_pipelines, pipeline_files

    for item in load_pipelines(pipeline_files(settings.pipelines_dir)):
        if item.config is not None and item.config.serving.model_name == model:
            return item.config.name
    return model

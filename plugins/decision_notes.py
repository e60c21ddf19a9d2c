"""Airflow plugin: a train run's note in the Airflow UI: its retrain decision, and for a run that
retrained its data version, rows, metric, gate decision and served version
(:func:`mlplatform.run_notes.run_note`).

The ``decide`` task (:mod:`operators.decide`) records each decision in the pipeline's decisions
log (:mod:`mlplatform.decisions`). A task cannot set its own run's note in Airflow 3: the task
SDK's execution API can read a run's note but not write it, and tasks have no database access.
This listener runs where the run's state is decided (the scheduler, or ``dag.test``'s process),
which holds the run's database row: when a ``mlp_<pipeline>_train`` run ends (success, which a
skip decision is, or failure), it sets the run's note, unless someone wrote a note already.
It never raises: a listener error must not disturb the scheduler.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

TRAIN_DAG = re.compile(r"^mlp_(?P<pipeline>[a-z][a-z0-9_]*)_train$")


def decision_note(dag_id: str, run_id: str) -> str | None:
    """The note for a run of ``dag_id``: its decision's summary line and the run's facts, or
    None."""
    from mlplatform import decisions
    from mlplatform.run_notes import run_note
    from mlplatform.settings import get_settings

    match = TRAIN_DAG.match(dag_id)
    if match is None:
        return None
    settings = get_settings()
    decision = decisions.find(settings, match["pipeline"], run_id)
    return run_note(settings, match["pipeline"], run_id, decision.summary() if decision else None)


def _set_note(dag_run: Any) -> None:
    """Set the note on the run's row: through the session that holds ``dag_run`` (the
    scheduler's, committed with the run's new state), else through a session of its own (the
    object is detached where the state change was made by another session and committed)."""
    from sqlalchemy import inspect

    try:
        note = decision_note(dag_run.dag_id, dag_run.run_id)
        if not note:
            return
        if inspect(dag_run).session is not None:
            if not dag_run.note:
                dag_run.note = note
            return
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.scalar(
                select(DagRun).where(
                    DagRun.dag_id == dag_run.dag_id, DagRun.run_id == dag_run.run_id
                )
            )
            if row is not None and not row.note:
                row.note = note
    except Exception as exc:  # noqa: BLE001 - never disturb the scheduler
        log.warning("could not set the decision note of %s: %s", dag_run.run_id, exc)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _set_note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _set_note(dag_run)


class DecisionNotesPlugin(AirflowPlugin):
    name = "mlplatform_decision_notes"
    listeners = [sys.modules[__name__]]

"""What the embedded Airflow's metadata DB says: DAG runs, task states, asset events; and how to
trigger a run the way the UI's "Trigger" button does.

For the commands that watch the real scheduler (``mlplatform demo --drift``) and for the tests
that assert what it did. Call :func:`mlplatform.airflow_runner.prepare_airflow` (or run under
:class:`mlplatform.airflow_services.AirflowServices`' environment) before the first call: Airflow
reads its home from the environment when first imported. Airflow is imported inside the
functions; the results are plain dicts, detached from any DB session.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _value(enum: Any) -> str | None:
    return None if enum is None else str(getattr(enum, "value", enum))


def dag_parsed(dag_id: str) -> bool:
    """True once the dag-processor has serialized ``dag_id`` (the scheduler can run it)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return SerializedDagModel.get(dag_id, session=session) is not None


def trigger(
    dag_id: str,
    conf: dict[str, Any] | None = None,
    note: str | None = None,
    logical_date: datetime | None = None,
) -> str:
    """Queue a manual run of ``dag_id`` (as the UI's Trigger button does); the scheduler starts
    it. ``logical_date`` None: a run without one (Airflow 3's default for manual runs). Returns
    its run id."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    run = trigger_dag(
        dag_id,
        triggered_by=DagRunTriggeredByType.CLI,
        conf=conf or {},
        note=note,
        logical_date=logical_date,
        replace_microseconds=False,
    )
    if run is None:  # pragma: no cover - trigger_dag returns None only for a missing DAG
        raise LookupError(f"DAG {dag_id} is not known to Airflow yet")
    return str(run.run_id)


def _run_dict(run: Any) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "state": str(run.state),
        "run_type": _value(run.run_type),
        "triggered_by": _value(run.triggered_by),
        "queued_at": _iso(run.queued_at),
        "start_date": _iso(run.start_date),
        "end_date": _iso(run.end_date),
        "note": run.note,
        "conf": dict(run.conf or {}),
    }


def dag_runs(dag_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """The runs of ``dag_id`` queued at or after ``since``, oldest first."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        query = session.query(DagRun).filter(DagRun.dag_id == dag_id)
        if since is not None:
            query = query.filter(DagRun.queued_at >= since)
        return [_run_dict(run) for run in query.order_by(DagRun.queued_at, DagRun.id)]


def dag_run(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """One run, with ``tasks`` (task id -> state) and ``consumed`` (the asset events that
    started it: asset name, source DAG and run, extra)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one_or_none()
        if run is None:
            return None
        out = _run_dict(run)
        out["tasks"] = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
        out["consumed"] = [
            {
                "asset": event.asset.name if event.asset else None,
                "source_dag_id": event.source_dag_id,
                "source_run_id": event.source_run_id,
                "timestamp": _iso(event.timestamp),
                "extra": dict(event.extra or {}),
            }
            for event in run.consumed_asset_events
        ]
        return out


def asset_events(asset_name: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """The events of the asset named ``asset_name`` at or after ``since``, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == asset_name)
        )
        if since is not None:
            query = query.filter(AssetEvent.timestamp >= since)
        return [
            {
                "asset": asset_name,
                "source_dag_id": event.source_dag_id,
                "source_run_id": event.source_run_id,
                "timestamp": _iso(event.timestamp),
                "extra": dict(event.extra or {}),
            }
            for event in query.order_by(AssetEvent.timestamp, AssetEvent.id)
        ]

"""Run one DAG run in this process as the scheduler would start it, and report it as JSON.

``dag.test`` always starts a *manual* run. The scheduler starts ``scheduled`` runs (cron) and
``asset_triggered`` runs (with the asset events they consume); this harness stands in for the
scheduler's run creation only (``get_or_create_dagrun``, which ``dag.test`` calls), then lets
``dag.test`` run every task for real. Usage (in a subprocess, the platform env set)::

    python -m tests.dag_runs DAG_ID [--run-type manual|scheduled|asset_triggered]
        [--logical-date ISO] [--consume ASSET_NAME ...] [--then DAG_ID [options] ...]

``--consume``: the run consumes every event of those assets (by asset name) recorded so far, as an
asset-triggered run does. ``--then`` starts the next run's arguments: the runs go one after the
other in this one process, which pays the interpreter, Airflow's start-up, the DagBag and the
stages' library imports (GX, Feast, DVC: seconds each) once instead of once per run. Prints one
JSON line per run, in order: ``run_id``, ``run_type``, ``state``, ``tasks`` (task id -> state),
``note`` and ``events`` (asset events the run emitted: asset name, extra; events recorded after
the run started, since ``dag.test`` reuses a run id for the same date).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime


def _fake_creation(run_type: str, consume: list[str]):
    """A ``get_or_create_dagrun`` that creates the run with ``run_type``, consuming events."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    def create(*, dag, logical_date, data_interval, run_after, conf, start_date, session, **_):
        kind = DagRunType(run_type)
        if kind == DagRunType.ASSET_TRIGGERED:
            logical_date, data_interval = None, None
        else:
            old = session.scalar(
                select(DagRun).where(
                    DagRun.dag_id == dag.dag_id, DagRun.logical_date == logical_date
                )
            )
            if old is not None:
                session.delete(old)
                session.commit()
        run = dag.create_dagrun(
            run_id=DagRun.generate_run_id(
                run_type=kind, logical_date=logical_date, run_after=run_after
            ),
            logical_date=logical_date,
            data_interval=data_interval,
            run_after=run_after,
            conf=conf,
            run_type=kind,
            state=DagRunState.RUNNING,
            triggered_by=DagRunTriggeredByType.TIMETABLE
            if kind == DagRunType.SCHEDULED
            else DagRunTriggeredByType.ASSET,
            triggering_user_name=None,
            start_date=start_date,
            session=session,
        )
        if consume:
            events = session.scalars(
                select(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.name.in_(consume))
                .order_by(AssetEvent.id)
            ).all()
            run.consumed_asset_events.extend(events)
            session.flush()
        return run

    return create


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("--run-type", default="manual")
    parser.add_argument("--logical-date", default=None)
    parser.add_argument("--consume", nargs="*", default=[])
    return parser


def split_runs(argv: list[str]) -> list[argparse.Namespace]:
    """Each run's arguments: ``argv`` cut at every ``--then``; a bad run is argparse's exit 2."""
    runs: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--then":
            runs.append([])
        else:
            runs[-1].append(arg)
    return [_parser().parse_args(run) for run in runs]


def run_one(bag, args: argparse.Namespace, create_dagrun) -> dict:
    """One DAG run by ``dag.test`` as ``args`` says; ``create_dagrun`` is Airflow's own
    ``get_or_create_dagrun``, put back for a manual run. Returns the run's report."""
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    dag = bag.dags[args.dag_id]
    dagrun_module.get_or_create_dagrun = (
        create_dagrun if args.run_type == "manual" else _fake_creation(args.run_type, args.consume)
    )
    when = datetime.fromisoformat(args.logical_date) if args.logical_date else datetime.now(UTC)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    with create_session() as session:
        before = session.scalar(select(func.max(AssetEvent.id))) or 0
    run = dag.test(logical_date=when, run_after=when)
    with create_session() as session:
        emitted = session.execute(
            select(AssetModel.name, AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_dag_id == dag.dag_id, AssetEvent.id > before)
        ).all()
        note = session.scalar(
            select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run.run_id)
        ).note
    return {
        "run_id": run.run_id,
        "run_type": str(getattr(run.run_type, "value", run.run_type)),
        "state": str(run.state),
        "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
        "note": note,
        "events": [{"asset": name, "extra": extra} for name, extra in emitted],
    }


def main(argv: list[str] | None = None) -> int:
    import sys

    runs = split_runs(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO)

    from mlplatform.airflow_runner import prepare_airflow

    prepare_airflow()
    import airflow.models.dagrun as dagrun_module
    from airflow.dag_processing.dagbag import DagBag

    from mlplatform.settings import get_settings

    bag = DagBag(dag_folder=str(get_settings().dags_dir))
    create_dagrun = dagrun_module.get_or_create_dagrun
    for args in runs:
        result = run_one(bag, args, create_dagrun)
        print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

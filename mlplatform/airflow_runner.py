"""Run one DAG run of a pipeline through Airflow itself (``dag.test``) in this process.

Used by ``mlplatform run`` in a child process whose output goes to a log file, so the parent can
print a clean per-stage summary. Usage::

    python -m mlplatform.airflow_runner DAG_ID RESULT_JSON [--conf JSON] [--logical-date ISO]

Sets up the embedded Airflow home (SQLite, ``airflow db migrate`` on first use) from settings,
writes ``{"run_id"}`` to ``RESULT_JSON.started`` as soon as the run id is known, and at the end
``{"run_id", "state", "tasks": {task_id: state}}`` to RESULT_JSON.

No orphans, no zombies:

* This process drives the whole run (``MLP_RUNNER_PID``: the pipeline lease names it, so a run
  whose driver died is recognised at once, see :mod:`mlplatform.runs`).
* A watchdog thread stops the run when ``mlplatform run`` goes away (killed, even by ``kill -9``:
  this process is re-parented) or asks it to stop (``RESULT_JSON.stop`` appears: Ctrl-C or SIGTERM
  of the command): the trainer and every other child process are terminated, the Airflow run is
  marked failed, its MLflow runs are ended FAILED and the lease is given back. (A thread, not a
  signal handler: Airflow's task runner takes SIGTERM over for ``on_kill`` while a task runs.)
* Before starting, a run of the same pipeline left behind by a driver that was killed outright
  (``kill -9``, a crash) is reaped the same way.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from mlplatform import runs
from mlplatform.settings import Settings, get_settings

log = logging.getLogger("mlplatform.runner")


def prepare_airflow() -> dict[str, str]:
    """Export the embedded Airflow environment; migrate the SQLite DB the first time."""
    settings = get_settings()
    env = settings.airflow_env()
    os.environ.update(env)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    if not env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        return env
    # Two first runs at once must not both migrate one SQLite file, nor may one of them use it
    # half-migrated: migrate under a lock, and trust only the marker written after success.
    done = settings.airflow_home / ".db-migrated"
    with open(settings.airflow_home / ".db-migrate.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not done.exists():
            airflow_bin = Path(sys.executable).parent / "airflow"
            subprocess.run(
                [str(airflow_bin), "db", "migrate"],
                check=True,
                env=os.environ.copy(),
                stdout=subprocess.DEVNULL,
            )
            done.touch()
    return env


def terminate_children(grace_s: float = 15.0) -> int:
    """SIGTERM every descendant of this process, SIGKILL what is left after ``grace_s``."""
    from mlplatform import processes

    return processes.terminate(processes.tree(os.getpid())[1:], grace_s)


def fail_dag_run(dag_id: str, run_id: str, reason: str) -> bool:
    """Mark an unfinished Airflow run and its unfinished task instances failed; returns whether it did."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if dr is None or dr.state not in (DagRunState.RUNNING, DagRunState.QUEUED):
            return False
        for ti in dr.get_task_instances(session=session):
            if ti.state not in (TaskInstanceState.SUCCESS, TaskInstanceState.FAILED, TaskInstanceState.SKIPPED, TaskInstanceState.UPSTREAM_FAILED, TaskInstanceState.REMOVED):  # fmt: skip
                ti.state = TaskInstanceState.FAILED
                ti.end_date = datetime.now(UTC)
        dr.set_state(DagRunState.FAILED)
        dr.end_date = datetime.now(UTC)
        session.merge(dr)
    log.warning("marked Airflow run %s of %s failed: %s", run_id, dag_id, reason)
    return True


def reap(settings: Settings, dag_id: str, pipeline: str, run_id: str, reason: str) -> None:
    """End a dead or stopped run everywhere: Airflow run failed, MLflow runs FAILED, lease freed."""
    try:
        fail_dag_run(dag_id, run_id, reason)
    except Exception as exc:  # the DB may be busy; the next run reaps again
        log.error("could not mark Airflow run %s failed: %s", run_id, exc)
    try:
        ended = runs.end_mlflow_runs(settings, pipeline, run_id)
        if ended:
            log.warning("ended MLflow run(s) %s of %s as FAILED", ", ".join(ended), run_id)
    except Exception as exc:
        log.error("could not end the MLflow runs of %s: %s", run_id, exc)
    runs.release(settings, pipeline, run_id)


def reap_dead_predecessor(settings: Settings, dag_id: str, pipeline: str) -> str | None:
    """If the pipeline's lease belongs to a run whose driver is gone, reap that run; return its id."""
    lease = runs.current(settings, pipeline)
    if lease is None:
        return None
    reason = runs.staleness(lease, settings.run_stale_s)
    if reason is None:
        return None
    print(f"mlplatform: {lease.describe()} died ({reason}): marking it failed", flush=True)
    reap(settings, dag_id, pipeline, lease.run_id, f"its driver died ({reason})")
    return lease.run_id


def start_watchdog(
    settings: Settings, dag_id: str, pipeline: str | None, run_id: str, result_path: Path
) -> None:
    """Stop the run (see the module docstring) once the parent is gone or a stop file appears."""
    parent = os.getppid()
    stop_file = Path(f"{result_path}.stop")

    def stop(reason: str) -> None:
        killed = terminate_children(grace_s=10)
        print(
            f"mlplatform: {reason}: stopping run {run_id}; terminated {killed} child process(es)",
            flush=True,
        )
        if pipeline:
            reap(settings, dag_id, pipeline, run_id, reason)
        terminate_children(grace_s=2)  # whatever a task started while we reaped
        result_path.write_text(
            json.dumps({"run_id": run_id, "state": "failed", "tasks": {}, "stopped": reason})
        )
        os._exit(143)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                stop("mlplatform run was killed")
            if stop_file.exists():
                stop("stopped by the user")

    threading.Thread(target=watch, name="run-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dag_id")
    parser.add_argument("result")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--logical-date", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ[runs.RUNNER_PID_ENV] = str(os.getpid())
    prepare_airflow()

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    settings = get_settings()
    result_path = Path(args.result)
    bag = DagBag(dag_folder=str(settings.repo_root / "dags"))
    dag = bag.dags.get(args.dag_id)
    if dag is None:
        errors = "; ".join(
            f"{k}: {v.strip().splitlines()[-1]}" for k, v in bag.import_errors.items()
        )
        result_path.write_text(
            json.dumps({"error": f"no DAG {args.dag_id}" + (f" ({errors})" if errors else "")})
        )
        return 2
    pipeline = (dag.default_args or {}).get("pipeline")
    if pipeline:
        reap_dead_predecessor(settings, dag.dag_id, pipeline)
    logical = datetime.fromisoformat(args.logical_date) if args.logical_date else datetime.now(UTC)
    if logical.tzinfo is None:
        logical = logical.replace(tzinfo=UTC)
    run_id = DagRun.generate_run_id(
        run_type=DagRunType.MANUAL, logical_date=logical, run_after=logical
    )
    Path(f"{result_path}.started").write_text(json.dumps({"run_id": run_id, "pid": os.getpid()}))
    start_watchdog(settings, dag.dag_id, pipeline, run_id, result_path)
    run = dag.test(logical_date=logical, run_after=logical, run_conf=json.loads(args.conf))
    tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    result_path.write_text(
        json.dumps({"run_id": run.run_id, "state": str(run.state), "tasks": tasks})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

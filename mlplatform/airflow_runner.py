"""Run one DAG run of a pipeline through Airflow itself (``dag.test``) in this process.

Used by ``mlplatform run`` in a child process whose output goes to a log file, so the parent can
print a clean per-stage summary. Usage::

    python -m mlplatform.airflow_runner DAG_ID RESULT_JSON [--conf JSON] [--logical-date ISO]

Sets up the embedded Airflow home (SQLite, ``airflow db migrate`` on first use) from settings and
writes ``{"run_id", "state", "tasks": {task_id: state}}`` to RESULT_JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from mlplatform.settings import get_settings


def prepare_airflow() -> dict[str, str]:
    """Export the embedded Airflow environment; migrate the SQLite DB the first time."""
    settings = get_settings()
    env = settings.airflow_env()
    os.environ.update(env)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    db = settings.airflow_home / "airflow.db"
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite") and not db.exists():
        airflow_bin = Path(sys.executable).parent / "airflow"
        subprocess.run(
            [str(airflow_bin), "db", "migrate"],
            check=True,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
        )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dag_id")
    parser.add_argument("result")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--logical-date", default=None)
    args = parser.parse_args(argv)
    prepare_airflow()

    from airflow.dag_processing.dagbag import DagBag

    settings = get_settings()
    bag = DagBag(dag_folder=str(settings.repo_root / "dags"))
    dag = bag.dags.get(args.dag_id)
    if dag is None:
        errors = "; ".join(
            f"{k}: {v.strip().splitlines()[-1]}" for k, v in bag.import_errors.items()
        )
        Path(args.result).write_text(
            json.dumps({"error": f"no DAG {args.dag_id}" + (f" ({errors})" if errors else "")})
        )
        return 2
    logical = datetime.fromisoformat(args.logical_date) if args.logical_date else datetime.now(UTC)
    run = dag.test(logical_date=logical, run_conf=json.loads(args.conf))
    tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    Path(args.result).write_text(
        json.dumps({"run_id": run.run_id, "state": str(run.state), "tasks": tasks})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Task logs of runs started from the command line (``mlplatform.airflow_runner``, ``dag.test``)
are where Airflow's UI reads them: a real runner run of a small DAG, read back through Airflow's
own log reader (what the API server's log endpoint calls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mlplatform.task_logs import log_record
from tests.conftest import REPO

DAG = textwrap.dedent(
    '''
    """A DAG whose task writes the kinds of output a platform task writes."""
    import logging
    import os
    import subprocess
    import sys
    from datetime import datetime

    from airflow.sdk import DAG, task

    with DAG("logs_probe", schedule=None, start_date=datetime(2026, 1, 1)):

        @task
        def talk():
            logging.getLogger("probe").warning("a warning from logging")
            print("printed to stdout", flush=True)
            os.write(2, b"I0000 00:00:1.0 1 raw.cc:1] raw C++ line on fd 2\\n")
            subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
            return 1

        talk()
    '''
)


def test_log_record_keeps_time_level_and_logger():
    rec = log_record(
        "2026-11-28T13:30:56.126747Z [warning  ] disk almost full [mlplatform.x] loc=a.py:1"
    )
    assert rec == {
        "timestamp": "2026-11-28T13:30:56.126747+00:00",
        "level": "warning",
        "event": "disk almost full loc=a.py:1",
        "logger": "mlplatform.x",
    }
    basic = log_record("2026-11-28 13:30:52,333 INFO airflow.configuration: Reading the config")
    assert basic["level"] == "info" and basic["logger"] == "airflow.configuration"
    assert basic["timestamp"] == "2026-11-28T13:30:52.333+00:00"
    raw = log_record("E0000 00:00:1795872715.894818 29156 cuda_platform.cc:52] failed")
    assert "level" not in raw and raw["event"].startswith("E0000")


@pytest.mark.slow  # ~40 s: a runner run (DB migration, DAG sync) and a read-back process
def test_runner_task_log_is_read_by_airflow(mlp_home, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "logs_probe.py").write_text(DAG)
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mlplatform.airflow_runner", "logs_probe", str(result)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    outcome = json.loads(result.read_text())
    assert proc.returncode == 0 and outcome["state"] == "success", proc.stdout + proc.stderr
    # the runner's own output still has the task's lines
    assert "printed to stdout" in proc.stdout + proc.stderr

    files = list((mlp_home / "airflow" / "logs").rglob("attempt=1.log"))
    assert [f.relative_to(mlp_home / "airflow" / "logs").parts[:3] for f in files] == [
        ("dag_id=logs_probe", f"run_id={outcome['run_id']}", "task_id=talk")
    ]
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    events = {rec["event"].split(" loc=")[0]: rec for rec in lines}
    assert events["a warning from logging"]["level"] == "warning"
    assert events["a warning from logging"]["logger"] == "probe"
    assert "printed to stdout" in events
    assert "from a child process" in events
    raw = events["I0000 00:00:1.0 1 raw.cc:1] raw C++ line on fd 2"]
    assert "level" not in raw  # library output: plain text in the UI, not a red error

    # what the API server's log endpoint returns for this task instance
    probe = subprocess.run(
        [sys.executable, "-c", READ_BACK, outcome["run_id"]],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, **_airflow_env()},
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    shown = json.loads(probe.stdout.strip().splitlines()[-1])
    assert "printed to stdout" in shown
    assert any(event.startswith("a warning from logging") for event in shown)
    assert not any("Log file not found" in event for event in shown)


def _airflow_env() -> dict[str, str]:
    from mlplatform.settings import get_settings

    return get_settings().airflow_env()


READ_BACK = textwrap.dedent(
    """
    import json, sys
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.log.log_reader import TaskLogReader
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.run_id == sys.argv[1]))
        reader = TaskLogReader()
        chunks, _ = reader.read_log_chunks(ti, ti.try_number, {})
        print(json.dumps([getattr(m, "event", str(m)) for m in chunks]))
    """
)

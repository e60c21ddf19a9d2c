"""The runner started before ``mlplatform run``'s checks (``--standby``): stopped when a check
fails, ended without a run when nobody asks for one. (Its successful path, arguments on stdin
then a real DAG run, is what every ``mlplatform run``/``demo`` in the end-to-end tests takes.)"""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from mlplatform.cli.common import UsageError
from mlplatform.cli.run import RunnerStandby, run_pipeline
from mlplatform.settings import get_settings
from tests.conftest import REPO


def _standby_runners() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "--standby" in p.cmdline()
    ]


def test_a_failed_check_stops_the_runner_and_leaves_no_log(mlp_home):
    settings = get_settings()
    with pytest.raises(UsageError, match="no such file"):
        run_pipeline(settings, "demo", str(mlp_home / "missing.csv"), None)
    assert _standby_runners() == []
    assert list((mlp_home / "logs").glob("*.log")) == []


def test_a_cancelled_standby_is_gone_with_its_process_group(mlp_home):
    standby = RunnerStandby(get_settings())
    assert standby.log_path.exists()
    standby.cancel()
    assert standby.proc.returncode is not None
    assert not standby.log_path.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(standby.proc.pid, 0)


def test_a_standby_nobody_asks_ends_after_warming_up_without_a_run(mlp_home):
    """What happens when ``mlplatform run`` dies before handing over its arguments: stdin
    closes, the runner finishes warming up and leaves; no DAG run is created."""
    env = {**os.environ, "MLP_HOME": str(mlp_home)}
    done = subprocess.run(
        [sys.executable, "-m", "mlplatform.airflow_runner", "--standby"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO, env=env,
        timeout=600,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "runner: DagBag parsed" in out and "runner: no run requested" in out
    assert "Created dag run" not in out
    assert (mlp_home / "airflow" / ".db-migrated").exists()  # warmed up: the home is ready

"""The continuous-training loop on Airflow's real scheduler (``mlplatform demo-drift``).

Not ``dags test``: the command starts Airflow's scheduler, dag-processor, triggerer and API server
on a fresh embedded home; every run below is started by the scheduler, from a trigger or from an
asset event. The test asserts the chain the command prints (monitor run -> drift asset -> train
run started by the scheduler for that event -> ``decide`` retrains for drift -> gate -> new served
version, answered by the server), that a second drift inside the cool-down starts no second
retrain (its train run is skipped by ``decide`` with the cool-down reason), what the records say
(decisions log, Airflow's runs and notes, asset events, MLflow aliases), and that nothing it
started is left running.

The pipeline is the demo's without the retrain check's cron: on a fresh home the scheduler would
start that cron's latest interval at once (a scheduled train run that finds no champion), and
the train DAG's one active run at a time held the first champion's run back behind it (≈30 s
of a 6 min test). The loop under test retrains from the drift asset, so every train run and
decision of this home is the loop's own, and the test says so. (The monitor keeps its cron:
without one there is no monitor DAG; the ingest DAG keeps its daily data intervals.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO
from tests.pipeline_configs import drop_crons

pytestmark = pytest.mark.slow


def _leftovers(home: str) -> list[str]:
    """Processes whose command line or environment names this test's home."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            if home in " ".join(proc.info["cmdline"] or []) or (
                proc.environ().get("MLP_HOME") == home
            ):
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_drift_retrains_through_the_scheduler_once_per_cooldown(mlp_home, pipelines_dir):
    drop_crons(pipelines_dir, "retrain")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "demo-drift", "--rows", "2000", "--traffic", "600",
         "--timeout", "400"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=1500,
    )  # fmt: skip
    log = out.stdout
    assert out.returncode == 0, log[-3000:] + out.stderr[-3000:]
    lines = [line for line in log.splitlines() if line.startswith("[+")]
    text = "\n".join(lines)

    # the chain, in order, each step stamped with its time
    steps = [
        r"no champion yet: mlp_demo_train run manual__\S+ \(manual\)",
        r"mlp_demo_train success: champion v1",
        r"server up on http://127\.0\.0\.1:\d+, serving v1",
        r"a drifted labelled batch landed .*; mlp_demo_ingest run",
        r"mlp_demo_ingest success \(.*publish=success",
        r"mlp_demo_monitor run manual__",
        r"mlp_demo_monitor success: drift asset mlp_demo_drift updated: drift: \d of 6 features",
        r"the scheduler started mlp_demo_train run asset_triggered__\S+ \(asset_triggered\)",
        r"decide: retrain: drift: \d of 6 features drifted",
        r"gate: auc challenger=[\d.]+ champion=[\d.]+: passed",
        r"mlp_demo_train success: served version 2, champion v2",
        r"the server answers with v2 \(was v1\)",
        r"mlp_demo_monitor success: drift asset mlp_demo_drift updated",
        r"decide: skip: cooldown: last retrain [\d.]+ h ago \(run asset_triggered__",
        r"mlp_demo_train success: no retrain",
    ]
    position = 0
    for step in steps:
        match = re.compile(step).search(text, position)
        assert match, f"missing, or out of order: {step!r}\n{text}"
        position = match.end()
    assert all(re.match(r"\[\+\d\d:\d\d\] ", line) for line in lines)
    assert "nothing left running" in log

    # the records agree: two decisions after the manual first one, one retrain for two drifts
    # (no cron: every decision is the loop's own)
    decisions = [
        json.loads(line)
        for line in (mlp_home / "runs" / "demo" / "decisions.jsonl").read_text().splitlines()
    ]
    assert [(d["decision"], d["triggers"][0]) for d in decisions] == [
        ("retrain", "manual"),
        ("retrain", "drift"),
        ("skip", "drift"),
    ]
    from mlplatform.settings import get_settings
    from mlplatform.stages.registry import alias_version

    # Airflow's DB as the loop left it, read in a fresh interpreter: this one may have imported
    # Airflow for another test's home already, and Airflow binds its DB once per process
    script = (
        "import json; from mlplatform.airflow_runner import prepare_airflow; prepare_airflow(); "
        "from mlplatform import airflow_db as db; runs = db.dag_runs('mlp_demo_train'); "
        "print(json.dumps({'drift_events': len(db.asset_events('mlp_demo_drift')), 'runs': runs, "
        "'last': db.dag_run('mlp_demo_train', runs[-1]['run_id'])}, default=str))"
    )
    facts = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
        timeout=300,
    )  # fmt: skip
    assert facts.returncode == 0, facts.stderr[-2000:]
    airflow = json.loads(facts.stdout.strip().splitlines()[-1])
    assert airflow["drift_events"] == 2
    train_runs = airflow["runs"]  # no scheduled run among them
    assert [r["run_type"] for r in train_runs] == ["manual", "asset_triggered", "asset_triggered"]
    skipped = airflow["last"]
    assert skipped["tasks"]["decide"] == "skipped" and skipped["tasks"]["train"] == "skipped"
    assert skipped["consumed"] and skipped["consumed"][0]["asset"] == "mlp_demo_drift"
    assert skipped["note"] and skipped["note"].startswith("skip: cooldown")
    assert alias_version(get_settings(), "demo", "champion") == 2

    # stopping left nothing behind: no scheduler, worker, server or trainer of this home (a
    # process that was already told to stop gets a moment to exit on a loaded machine)
    deadline = time.monotonic() + 30
    while (left := _leftovers(str(mlp_home))) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == []

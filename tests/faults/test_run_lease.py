"""The pipeline lease: runs of one pipeline never interleave, and a dead run is recognised.

Each test is a fault that used to let two runs write the same shared state, or left a dead run
holding the pipeline forever.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from mlplatform import runs
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings


@pytest.fixture
def settings(mlp_home, monkeypatch):
    monkeypatch.delenv(runs.RUNNER_PID_ENV, raising=False)
    return get_settings()


def test_a_second_run_waits_for_the_first_then_proceeds(settings):
    assert runs.acquire(settings, "demo", "run-a", wait_s=0, stale_after_s=60) is None
    waits: list[runs.Lease] = []
    got: list[float] = []

    def second() -> None:
        runs.acquire(
            settings,
            "demo",
            "run-b",
            wait_s=30,
            stale_after_s=60,
            on_wait=waits.append,
            poll_s=0.05,
        )
        got.append(time.monotonic())

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert not got, "run-b got the lease while run-a held it"
    assert [w.run_id for w in waits] == ["run-a"], "the waiting run must say whom it waits for"
    released_at = time.monotonic()
    assert runs.release(settings, "demo", "run-a")
    thread.join(10)
    assert got and got[0] >= released_at
    assert runs.current(settings, "demo").run_id == "run-b"
    # another pipeline is not held up by demo's lease
    assert runs.acquire(settings, "other", "run-c", wait_s=0, stale_after_s=60) is None


def test_a_live_holder_past_the_wait_is_a_clear_error(settings):
    runs.acquire(settings, "demo", "run-a", wait_s=0, stale_after_s=60)
    with pytest.raises(runs.LeaseTimeout, match=r"run run-a of demo \(started .*\) still holds"):
        runs.acquire(settings, "demo", "run-b", wait_s=0.2, stale_after_s=60, poll_s=0.05)
    assert runs.current(settings, "demo").run_id == "run-a"


def test_a_run_whose_driver_died_is_taken_over(settings, monkeypatch):
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    monkeypatch.setenv(runs.RUNNER_PID_ENV, str(driver.pid))
    runs.acquire(settings, "demo", "run-a", wait_s=0, stale_after_s=3600)
    monkeypatch.delenv(runs.RUNNER_PID_ENV)
    assert runs.staleness(runs.current(settings, "demo"), 3600) is None  # alive: not stale
    driver.kill()
    driver.wait()
    reason = runs.staleness(runs.current(settings, "demo"), 3600)
    assert reason == f"its process {driver.pid} is gone"
    taken = runs.acquire(settings, "demo", "run-b", wait_s=0, stale_after_s=3600)
    assert taken is not None and taken.run_id == "run-a"
    assert runs.current(settings, "demo").run_id == "run-b"


def test_staleness_by_airflow_state_and_by_heartbeat(settings):
    runs.acquire(settings, "demo", "run-a", wait_s=0, stale_after_s=60)
    lease = runs.current(settings, "demo")
    assert runs.staleness(lease, 60, run_state=lambda _: "running") is None
    assert runs.staleness(lease, 60, run_state=lambda _: "failed") == "Airflow reports it failed"
    assert runs.staleness(lease, 60, now=lease.heartbeat + 61) == "no heartbeat for 61s"
    runs.heartbeat(settings, "demo", "run-a")
    assert runs.current(settings, "demo").heartbeat >= lease.heartbeat


def test_a_run_that_lost_its_lease_cannot_go_on(settings):
    runs.acquire(settings, "demo", "run-a", wait_s=0, stale_after_s=60)
    runs.release(settings, "demo", "run-a")
    runs.acquire(settings, "demo", "run-b", wait_s=0, stale_after_s=60)
    with pytest.raises(
        runs.LeaseLost, match="run run-a of demo no longer holds the pipeline lease"
    ):
        runs.heartbeat(settings, "demo", "run-a")
    assert not runs.release(settings, "demo", "run-a"), (
        "a dead run must not free the live run's lease"
    )
    assert runs.current(settings, "demo").run_id == "run-b"


def test_the_config_is_frozen_at_the_start_of_a_run(pipelines_dir, settings):
    cfg = load_pipeline(pipelines_dir / "demo.yaml")
    runs.freeze_config(cfg, settings, "run1", pipelines_dir / "demo.yaml")
    live = pipelines_dir / "demo.yaml"
    live.write_text(live.read_text().replace("epochs: 4", "epochs: 9"))
    frozen = runs.load_run_config(settings, "demo", "run1")
    assert frozen.model.epochs == 4 and frozen.config_hash() == cfg.config_hash()
    assert (
        runs.load_run_config(settings, "demo", "run2").model.epochs == 9
    )  # no snapshot: live YAML


def test_every_task_reads_the_snapshot_and_checks_the_lease(pipelines_dir, settings):
    """A stage run by the operators' base sees the frozen config, and fails once its run lost the lease."""
    from airflow.sdk.exceptions import AirflowFailException

    from operators.base import PlatformOperator

    class Probe(PlatformOperator):
        stage = "probe"

        def run_stage(self, cfg, out_dir, settings, context):
            return {"epochs": cfg.model.epochs}

    cfg = load_pipeline(pipelines_dir / "demo.yaml")
    runs.acquire(settings, "demo", "run1", wait_s=0, stale_after_s=60)
    runs.freeze_config(cfg, settings, "run1", pipelines_dir / "demo.yaml")
    live = pipelines_dir / "demo.yaml"
    live.write_text(live.read_text().replace("epochs: 4", "epochs: 9"))
    probe = Probe(pipeline="demo")
    assert probe.execute({"run_id": "run1"}) == {"epochs": 4}
    runs.release(settings, "demo", "run1")
    runs.acquire(settings, "demo", "run2", wait_s=0, stale_after_s=60)
    with pytest.raises(
        AirflowFailException, match="run run1 of demo no longer holds the pipeline lease"
    ):
        probe.execute({"run_id": "run1"})

"""Runs under fault, end to end through Airflow: concurrent runs, a killed CLI, a killed driver.

Slow (real ``dag.test`` runs with real Horovod training). Each test is a fault that once left state
diverged: two concurrent runs recorded one data version and trained on a mix; a killed
``mlplatform run`` carried on detached and promoted two minutes later; a crashed run stayed
``running`` in Airflow and ``RUNNING`` in MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlplatform import datagen
from tests.conftest import REPO

pytestmark = pytest.mark.slow

#: seconds the trainer sleeps after each epoch's checkpoint in a run the test kills mid-training
PAUSE_S = "3"


def _registry(home: Path):
    """The home's MLflow tracking store and registry (both named: a default registry URI is a
    process global that another test may have set)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _cli(
    home: Path, pipelines: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "MLP_HOME": str(home),
        "MLP_PIPELINES_PATH": str(pipelines),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mlplatform.cli", *args], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _set(pipelines: Path, **model: object) -> None:
    cfg = pipelines / "demo.yaml"
    text = (
        cfg.read_text()
        .replace("min: 0.70", "min: 0.5")
        .replace("max_regression: 0.02", "max_regression: 1.0")
    )
    for key, value in model.items():
        text = "\n".join(
            f"  {key}: {value}" if line.startswith(f"  {key}:") else line
            for line in text.splitlines()
        )
    cfg.write_text(text + "\n")


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _runner(home: Path) -> dict:
    started = _wait_for(
        lambda: sorted((home / "logs").glob("demo-*.json.started")), 120, "the runner to start"
    )
    return json.loads(started[-1].read_text())


def _dag_run_state(home: Path, run_id: str) -> str:
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        return db.execute("select state from dag_run where run_id = ?", (run_id,)).fetchone()[0]


def _mlflow_runs(home: Path, run_id: str) -> list:

    client = _registry(home)
    exp = client.get_experiment_by_name("demo")
    return (
        []
        if exp is None
        else client.search_runs([exp.experiment_id], f"tags.airflow_run_id = '{run_id}'")
    )


def _trainers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _status(home: Path, pipelines: Path, name: str) -> str:
    proc = _cli(home, pipelines, "status", name)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return out


def _span(run_dir: Path) -> tuple[float, float]:
    """(start_run finished, end_run finished) of one run directory: its hold of the lease."""
    return (
        (run_dir / "start_run" / "summary.json").stat().st_mtime,
        (run_dir / "end_run" / "summary.json").stat().st_mtime,
    )


def test_concurrent_runs_serialize_per_pipeline_and_never_touch_another_pipeline(
    mlp_home, pipelines_dir, tmp_path
):
    """Three ``mlplatform run`` at once: batches A and B of ``demo`` (one pipeline: the lease
    serializes them, each versions and trains on its own batch) and batch C of ``twin`` (another
    pipeline: it runs alongside and shares none of demo's data, features, registry entries,
    served model or monitoring reference). One test for both guarantees: each full run costs
    minutes of the suite."""

    from serving.layout import read_models_config

    _set(pipelines_dir, epochs=2)
    demo = (pipelines_dir / "demo.yaml").read_text()
    twin = demo.replace("name: demo\n", "name: twin\n", 1).replace(
        "model_name: demo", "model_name: twin"
    )
    (pipelines_dir / "twin.yaml").write_text(twin)
    a = datagen.write(datagen.generate(1200, seed=21), tmp_path / "a.csv")
    b = datagen.write(datagen.generate(1200, seed=22), tmp_path / "b.csv")
    c = datagen.write(datagen.generate(1200, seed=23), tmp_path / "c.csv")
    check = _cli(mlp_home, pipelines_dir, "check", "twin", "--data", str(c))
    assert check.wait(timeout=300) == 0, check.communicate()
    procs = {
        batch: _cli(mlp_home, pipelines_dir, "run", name, "--data", str(batch))
        for name, batch in (("demo", a), ("twin", c), ("demo", b))
    }
    outs = {}
    for batch, proc in procs.items():
        out, err = proc.communicate(timeout=1500)
        assert proc.returncode == 0, out + err
        outs[batch] = out
    # each command reports its own run and its own batch's DVC version, never another's
    for batch, out in outs.items():
        assert f"data_version={_md5(batch)}" in out, out
        assert not any(_md5(other) in out for other in outs if other != batch), out

    client = _registry(mlp_home)
    demo_versions = client.search_model_versions("name='demo'")
    assert sorted(v.tags["data_version"] for v in demo_versions) == sorted([_md5(a), _md5(b)])
    (twin_version,) = client.search_model_versions("name='twin'")
    assert twin_version.tags["data_version"] == _md5(c)
    for model, versions in (("demo", demo_versions), ("twin", [twin_version])):
        for v in versions:  # the monitor's reference: the pipeline's own training set
            assert f"/storage/{model}/" in v.tags["training_set_uri"]

    # one pipeline's runs did not interleave: one ended (lease released) before the other ingested
    runs = sorted(
        (json.loads((d / "ingest" / "summary.json").read_text())["outputs"]["data_version"], d)
        for d in (mlp_home / "storage" / "demo").glob("manual__*")
    )
    spans = sorted(
        (
            (d / "ingest" / "summary.json").stat().st_mtime,
            (d / "end_run" / "summary.json").stat().st_mtime,
        )
        for _, d in runs
    )
    assert spans[0][1] <= spans[1][0], f"runs interleaved: {spans}"
    # two pipelines' runs do not serialize: twin's run overlapped one of demo's
    (twin_run,) = (mlp_home / "storage" / "twin").glob("manual__*")
    start_c, end_c = _span(twin_run)
    assert any(start < end_c and start_c < end for start, end in (_span(d) for _, d in runs)), (
        "twin's run overlapped none of demo's runs"
    )
    # each model trained on its own batch: its training set holds exactly that batch's rows
    for v in demo_versions:
        rows = json.loads(
            next(d for md5, d in runs if md5 == v.tags["data_version"])
            .joinpath("ingest", "summary.json")
            .read_text()
        )["outputs"]["rows"]
        assert rows == 1200
    # served models: each pipeline's champion, in its own model directory
    served = read_models_config(mlp_home / "serving" / "models")
    for model in ("demo", "twin"):
        champion = int(client.get_model_version_by_alias(model, "champion").version)
        assert served[model]["labels"].get("stable") == champion, served
    # features: each pipeline's offline store holds only its own batches
    for pipeline, batches in (("demo", [a, b]), ("twin", [c])):
        stored = sorted(
            p.stem for p in (mlp_home / "feast" / pipeline / "offline").glob("*.parquet")
        )
        assert stored == sorted(_md5(x) for x in batches), (pipeline, stored)
    # data versions: each batch versioned under its own pipeline
    for pipeline, mine, theirs in (("demo", [a, b], [c]), ("twin", [c], [a, b])):
        listing, _ = _cli(mlp_home, pipelines_dir, "data", "versions", pipeline).communicate(
            timeout=300
        )
        assert all(_md5(x) in listing for x in mine), listing
        assert not any(_md5(x) in listing for x in theirs), listing
    log = subprocess.run(
        ["git", "-C", str(mlp_home / "data-repo"), "log", "--format=%s"],
        capture_output=True,
        text=True,
    ).stdout
    assert all(f"batch {_md5(x)}" in log for x in (a, b, c)), log
    # status names twin's own run as promoted
    assert "promoted: served version 1" in _status(mlp_home, pipelines_dir, "twin")


def test_killing_the_cli_stops_its_run_and_leaves_nothing_behind(mlp_home, pipelines_dir, tmp_path):
    _set(pipelines_dir, epochs=200)
    batch = datagen.write(datagen.generate(1200, seed=31), tmp_path / "c.csv")
    cli = _cli(mlp_home, pipelines_dir, "run", "demo", "--data", str(batch))
    runner = _runner(mlp_home)
    spec = _wait_for(
        lambda: next((mlp_home / "storage" / "demo").glob("*/train/spec.json"), None),
        300,
        "training to start",
    )
    _wait_for(lambda: _trainers(str(spec)), 120, "the trainer processes")
    os.kill(cli.pid, signal.SIGKILL)  # no chance to clean up: the runner must notice by itself
    cli.communicate(timeout=30)
    _wait_for(
        lambda: (
            not psutil.pid_exists(runner["pid"])
            or psutil.Process(runner["pid"]).status() == "zombie"
        ),
        120,
        "the runner to stop",
    )
    _wait_for(lambda: not _trainers(str(spec)), 60, "the trainer processes to end")
    assert _dag_run_state(mlp_home, runner["run_id"]) == "failed"
    assert all(r.info.status == "FAILED" for r in _mlflow_runs(mlp_home, runner["run_id"]))
    assert not (mlp_home / "runs" / "demo" / "lease.json").exists(), (
        "the stopped run kept the pipeline lease"
    )
    assert not (mlp_home / "serving" / "models" / "demo").exists(), "a stopped run promoted a model"


def test_a_run_whose_driver_was_killed_is_reaped_and_its_checkpoints_reused(
    mlp_home, pipelines_dir, tmp_path
):
    # the trainer's test hook pauses PAUSE_S after each epoch's checkpoint in the first run only:
    # the kill lands mid-training whatever the machine's load, and the rerun trains the few
    # epochs left at full speed (300 unpaused epochs of ≈0.1 s once made that window)
    _set(pipelines_dir, epochs=8)
    batch = datagen.write(datagen.generate(1200, seed=41), tmp_path / "d.csv")
    cli = _cli(
        mlp_home, pipelines_dir, "run", "demo", "--data", str(batch),
        extra_env={"MLP_TRAINER_EPOCH_PAUSE_S": PAUSE_S},
    )  # fmt: skip
    runner = _runner(mlp_home)

    def checkpoint_after_two_epochs() -> Path | None:
        # the trainer keeps only its two newest checkpoints: any ckpt-N with N >= 2 will do
        found = (mlp_home / "storage" / "demo" / "checkpoints").glob("*/ckpt-*.index")
        return next((p for p in found if int(p.name.split("-")[1].split(".")[0]) >= 2), None)

    ckpt = _wait_for(checkpoint_after_two_epochs, 400, "two epochs' checkpoints")
    tree = psutil.Process(runner["pid"])
    for proc in [*tree.children(recursive=True), tree]:  # the driver dies outright, as in a crash
        proc.kill()
    cli.communicate(timeout=60)
    kept = [int(p.name.split("-")[1].split(".")[0]) for p in ckpt.parent.glob("ckpt-*.index")]
    assert max(kept) < 8, f"killed after the last epoch, not mid-training: {kept}"
    assert _dag_run_state(mlp_home, runner["run_id"]) == "running"  # the crash left it so
    (crashed,) = _mlflow_runs(mlp_home, runner["run_id"])
    assert crashed.info.status == "RUNNING"

    again = _cli(mlp_home, pipelines_dir, "run", "demo", "--data", str(batch))
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, out + err
    assert f"run {runner['run_id']} of demo" in out and "died (its process" in out
    assert _dag_run_state(mlp_home, runner["run_id"]) == "failed"
    log = sorted((mlp_home / "logs").glob("demo-*.log"))[-1].read_text()
    assert f"ended MLflow run(s) {crashed.info.run_id} of {runner['run_id']} as FAILED" in log
    assert "resuming from checkpoint at epoch" in log, "the rerun on the same batch started over"
    # the resumed training continued the crashed MLflow run: one loss series, marked as resumed

    resumed = _registry(mlp_home).get_run(crashed.info.run_id)
    assert (
        resumed.info.status == "FINISHED"
        and resumed.data.tags["ended_by"] == "mlplatform: its Airflow run died"
    )
    assert int(resumed.data.tags["resumed_from_epoch"]) >= 2
    assert not ckpt.parent.exists(), "the checkpoints of a finished training were left behind"

"""Run integrity: one active run per pipeline (a lease), crashed runs detected, the config frozen.

Runs of one pipeline share state (the DVC data repository, the Feast files, the serving layout),
so they never interleave. The first task of every training run (``start_run``) takes the
pipeline's **lease**, ``<home>/runs/<pipeline>/lease.json``, written under an ``fcntl`` lock; the
teardown task (``end_run``) gives it back, whatever the outcome. A second run waits for the lease
with a clear log line ("waiting for run R of demo, started T") and then proceeds: runs are
serialized, each on its own batch.

A lease names its run, the host, the process that holds it for the whole run when the run is
driven by ``mlplatform run`` (``MLP_RUNNER_PID``), and a heartbeat that every platform task
refreshes while it works. A lease is **stale** when its run is over (Airflow says the run is no
longer running), when its holding process is gone (same host), or when its heartbeat is older
than ``stale_after_s``. Taking over a stale lease *reaps* the dead run: its MLflow runs still
``RUNNING`` are ended ``FAILED`` and the event is logged; ``mlplatform run`` also marks its Airflow
run failed (see :mod:`mlplatform.airflow_runner`).

The run's validated pipeline config is frozen at its start: ``start_run`` writes
``<storage>/<pipeline>/<run>/config.json`` (the validated config and its hash) and every task of
the run reads that snapshot, never the live YAML (:func:`load_run_config`).

The lease lives on the platform home's local disk: in a deployment with several Airflow workers,
``MLP_HOME`` must be a shared volume (or the train DAG's ``max_active_runs=1`` is the only guard).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlplatform.config import PipelineConfig, find_pipeline, load_pipeline
from mlplatform.settings import Settings

log = logging.getLogger(__name__)

RUNNER_PID_ENV = "MLP_RUNNER_PID"
CONFIG_SNAPSHOT = "config.json"
#: Airflow run states in which a run still owns its lease.
LIVE_STATES = {"queued", "running"}


class LeaseTimeout(RuntimeError):
    """Another live run held the pipeline's lease for longer than the caller would wait."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it was judged dead); the run must stop."""


@dataclass
class Lease:
    """Who runs a pipeline now: written to ``<home>/runs/<pipeline>/lease.json``."""

    pipeline: str
    run_id: str
    host: str
    pid: int | None  # the process that drives the whole run (``mlplatform run``), if any
    pid_started: float | None  # its start time, so a reused pid is not taken for it
    started: float
    heartbeat: float

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        who = f", pid {self.pid}" if self.pid else ""
        return f"run {self.run_id} of {self.pipeline} (started {when}{who})"


def _lease_dir(settings: Settings, pipeline: str) -> Path:
    path = settings.home_dir / "runs" / pipeline
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(settings: Settings, pipeline: str) -> Iterator[Path]:
    """Hold the pipeline's lease lock for a short read-modify-write; yields the lease path."""
    directory = _lease_dir(settings, pipeline)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield directory / "lease.json"
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read(path: Path) -> Lease | None:
    try:
        return Lease(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:  # a torn or foreign file: treat as no lease, say so
        log.warning("ignoring unreadable lease %s: %s", path, exc)
        return None


def _write(path: Path, lease: Lease) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(lease)))
    os.replace(tmp, path)


def current(settings: Settings, pipeline: str) -> Lease | None:
    """The pipeline's lease as it is now (live or stale), or None."""
    with _locked(settings, pipeline) as path:
        return _read(path)


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def staleness(
    lease: Lease,
    stale_after_s: float,
    run_state: Callable[[str], str | None] | None = None,
    now: float | None = None,
) -> str | None:
    """Why ``lease`` is stale (one phrase), or None while its run is alive.

    ``run_state(run_id)`` asks Airflow for the run's state where that is possible (inside a task);
    it may return None when it cannot tell.
    """
    now = time.time() if now is None else now
    if lease.pid and lease.host == socket.gethostname():
        started = _process_started(lease.pid)
        if started is None or (lease.pid_started and abs(started - lease.pid_started) > 1):
            return f"its process {lease.pid} is gone"
        return None  # the driving process is alive: the run is alive
    if run_state is not None:
        with contextlib.suppress(Exception):
            state = run_state(lease.run_id)
            if state is not None and str(state).lower() not in LIVE_STATES:
                return f"Airflow reports it {str(state).lower()}"
            if state is not None:
                return None
    age = now - lease.heartbeat
    if age > stale_after_s:
        return f"no heartbeat for {age:.0f}s"
    return None


def acquire(
    settings: Settings,
    pipeline: str,
    run_id: str,
    *,
    wait_s: float,
    stale_after_s: float,
    run_state: Callable[[str], str | None] | None = None,
    on_wait: Callable[[Lease], None] | None = None,
    poll_s: float = 2.0,
) -> Lease | None:
    """Take the pipeline's lease for ``run_id``, waiting up to ``wait_s`` for a live holder.

    Returns the stale lease that was taken over (the caller reaps that run), or None. Re-acquiring
    a lease this run already holds is a no-op (a retried ``start_run``). Raises
    :class:`LeaseTimeout` naming the holder when it is still alive after ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    pid = os.environ.get(RUNNER_PID_ENV)
    told = False
    while True:
        with _locked(settings, pipeline) as path:
            held = _read(path)
            reason = None
            if held is not None and held.run_id != run_id:
                reason = staleness(held, stale_after_s, run_state)
            if held is None or held.run_id == run_id or reason is not None:
                now = time.time()
                mine = Lease(
                    pipeline=pipeline,
                    run_id=run_id,
                    host=socket.gethostname(),
                    pid=int(pid) if pid else None,
                    pid_started=_process_started(int(pid)) if pid else None,
                    started=held.started if held is not None and held.run_id == run_id else now,
                    heartbeat=now,
                )
                _write(path, mine)
                if reason is not None:
                    log.warning("took over the lease of %s: %s", held.describe(), reason)
                    return held
                return None
        if time.monotonic() >= deadline:
            raise LeaseTimeout(
                f"{held.describe()} still holds the pipeline's lease after {wait_s:.0f}s of waiting"
            )
        if on_wait is not None and not told:
            on_wait(held)
            told = True
        time.sleep(poll_s)


def heartbeat(settings: Settings, pipeline: str, run_id: str) -> None:
    """Refresh the lease of ``run_id``; raise :class:`LeaseLost` if another run holds it now."""
    with _locked(settings, pipeline) as path:
        held = _read(path)
        if held is None or held.run_id != run_id:
            other = held.describe() if held else "nobody"
            raise LeaseLost(
                f"run {run_id} of {pipeline} no longer holds the pipeline lease ({other} does)"
            )
        held.heartbeat = time.time()
        _write(path, held)


def release(settings: Settings, pipeline: str, run_id: str) -> bool:
    """Give the lease back if ``run_id`` holds it; returns whether it did."""
    with _locked(settings, pipeline) as path:
        held = _read(path)
        if held is None or held.run_id != run_id:
            return False
        path.unlink()
        return True


@contextlib.contextmanager
def heartbeating(
    settings: Settings, pipeline: str, run_id: str, every_s: float = 15.0
) -> Iterator[None]:
    """Refresh the lease in a background thread while the block runs (a long task stays live).

    Does nothing when ``run_id`` does not hold the lease (runs without a ``start_run`` task)."""
    lease = current(settings, pipeline)
    if lease is None or lease.run_id != run_id:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                heartbeat(settings, pipeline, run_id)
            except LeaseLost as exc:
                log.error("%s", exc)
                return
            except OSError as exc:  # a full disk must not kill the task; the next beat retries
                log.warning("lease heartbeat failed: %s", exc)

    thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def end_mlflow_runs(settings: Settings, pipeline: str, run_id: str) -> list[str]:
    """End the MLflow runs of a dead Airflow run that are still ``RUNNING``, as ``FAILED``.

    Finds them by the lineage tag ``airflow_run_id`` in the pipeline's experiment; returns their ids.
    """
    from mlplatform.stages.registry import client

    c = client(settings)
    experiment = c.get_experiment_by_name(pipeline)
    if experiment is None:
        return []
    escaped = run_id.replace("'", "\\'")
    runs = c.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.airflow_run_id = '{escaped}' and attributes.status = 'RUNNING'",
    )
    for r in runs:
        c.set_terminated(r.info.run_id, status="FAILED")
        c.set_tag(r.info.run_id, "ended_by", "mlplatform: its Airflow run died")
    return [r.info.run_id for r in runs]


# ----------------------------------------------------------------------------- config snapshot


def snapshot_path(settings: Settings, pipeline: str, run: str) -> Path:
    from mlplatform.storage import to_path

    return to_path(settings.storage) / pipeline / run / CONFIG_SNAPSHOT


def freeze_config(cfg: PipelineConfig, settings: Settings, run: str, source: Path) -> Path:
    """Write the run's config snapshot (validated config, hash, source file); idempotent."""
    path = snapshot_path(settings, cfg.name, run)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"hash": cfg.config_hash(), "source": str(source), "config": cfg.model_dump(mode="json")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)
    return path


def load_run_config(settings: Settings, pipeline: str, run: str) -> PipelineConfig:
    """The config frozen at the run's start, or the live YAML for a run that froze none."""
    path = snapshot_path(settings, pipeline, run)
    if path.exists():
        # validated when it was frozen: a snapshot is never edited by hand
        return PipelineConfig.model_validate(json.loads(path.read_text())["config"])
    return load_pipeline(find_pipeline(pipeline, settings.pipelines_dir))

"""Run one DAG run of a pipeline through Airflow itself (``dag.test``) in this process.

Used by ``mlplatform run`` in a child process whose output goes to a log file, so the parent can
print a clean per-stage summary. Usage::

    python -m mlplatform.airflow_runner DAG_ID RESULT_JSON [--conf JSON] [--logical-date ISO]
    python -m mlplatform.airflow_runner --standby    # the same arguments later, on stdin (JSON)

``--standby`` (what ``mlplatform run`` starts, before its own checks) warms up first (the
home's databases, Airflow's imports, the DagBag, the in-process Execution API: see
:func:`warm_up`) and then reads ``{"argv": [...]}`` from stdin.

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

``dag.test`` runs the tasks in this process: no API server, so no login is involved; each task's
output is also written to its log file where the UI reads it (:mod:`mlplatform.task_logs`).
The embedded UI (``mlplatform ui``) logs in with :func:`ensure_ui_login`'s user and password.
The platform home and the Airflow home are ``0700``, the SQLite DB and the password file ``0600``
(:mod:`mlplatform.permissions`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform import runs
from mlplatform.permissions import PRIVATE_FILE, private_dir, private_file
from mlplatform.settings import UI_USER, Settings, get_settings

# the alphabet of the Simple auth manager's own generated passwords
_PASSWORD_ALPHABET = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"

log = logging.getLogger("mlplatform.runner")


def prepare_airflow() -> dict[str, str]:
    """Export the embedded Airflow environment, make the homes private and, the first time,
    give the home its SQLite databases (created ``0600``; an existing one is tightened to it):
    Airflow's metadata DB and, with the default tracking URI, MLflow's, both copied from
    migrated-schema templates (:mod:`mlplatform.embedded_dbs`), else migrated here
    (``airflow db migrate``; MLflow then creates its tables on first use)."""
    from mlplatform import embedded_dbs

    settings = get_settings()
    env = settings.airflow_env()
    os.environ.update(env)
    private_dir(settings.home_dir)
    private_dir(settings.airflow_home)
    if not env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        return env
    # Two first runs at once must not both migrate one SQLite file, nor may one of them use it
    # half-migrated: migrate under a lock, and trust only the marker written after success.
    done = settings.airflow_home / ".db-migrated"
    with open(settings.airflow_home / ".db-migrate.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not done.exists():
            started = time.monotonic()
            how = "copied its schema template"
            if not embedded_dbs.seed_airflow_db(settings):
                how = "migrated it"
                airflow_bin = Path(sys.executable).parent / "airflow"
                subprocess.run(
                    [str(airflow_bin), "db", "migrate"],
                    check=True,
                    env=os.environ.copy(),
                    stdout=subprocess.DEVNULL,
                    umask=0o077,
                )
            done.touch()
            log.info("Airflow metadata DB: %s in %.1fs", how, time.monotonic() - started)
            if embedded_dbs.seed_mlflow_db(settings):
                log.info("MLflow tracking DB: copied its schema template")
        if not (settings.airflow_home / "airflow.cfg").exists():
            # Every `airflow` command writes a missing airflow.cfg with freshly generated
            # secrets (fernet key, the API's JWT secret): the four services started at once
            # would each write their own, and a task's token signed by the scheduler is then
            # "Invalid auth token" to the API server. One process writes it, here, first (a
            # migrate used to do that before the schema templates).
            _write_airflow_cfg(settings.airflow_home)
            private_file(settings.airflow_home / "airflow.cfg")
    private_file(settings.airflow_home / "airflow.db")
    return env


def _write_airflow_cfg(airflow_home: Path) -> None:
    """Have Airflow write ``airflow_home``'s default ``airflow.cfg`` (its own generated secrets):
    in this process when Airflow's configuration is not loaded yet or is this home's (the runner
    imports Airflow next anyway), else in a child process (Airflow reads its home once)."""
    loaded = sys.modules.get("airflow.configuration")
    if loaded is None or Path(loaded.AIRFLOW_HOME) == airflow_home:
        from airflow.configuration import write_default_airflow_configuration_if_needed

        write_default_airflow_configuration_if_needed()
        return
    code = (
        "from airflow.configuration import write_default_airflow_configuration_if_needed as w; w()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy(), umask=0o077)


@dataclass(frozen=True)
class UiLogin:
    """How to log in to the embedded Airflow UI."""

    user: str
    password: str
    password_file: Path


def ensure_ui_login(settings: Settings) -> UiLogin:
    """The UI user's password, generated into the Simple auth manager's password file
    (``settings.ui_password_file``, JSON ``{user: password}``, mode ``0600``) if the file lacks
    it; an existing password is kept. Airflow's API server reads that file and, finding the
    user there, generates nothing. Raises ``ValueError`` (one line) if the file is not JSON."""
    path = settings.ui_password_file
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    with os.fdopen(fd, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # the API server's workers lock this file too
        os.fchmod(fd, PRIVATE_FILE)
        try:
            passwords = json.loads(fh.read().strip() or "{}")
        except json.JSONDecodeError:
            raise ValueError(
                f"{path} is not JSON: delete it and a new UI password is generated"
            ) from None
        if not isinstance(passwords, dict):
            raise ValueError(f"{path} is not a JSON object: delete it to generate a new one")
        if not passwords.get(UI_USER):
            passwords[UI_USER] = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(16))
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(passwords) + "\n")
    return UiLogin(UI_USER, passwords[UI_USER], path)


def ui_url() -> str:
    """The API server's URL as Airflow's configuration has it (``[api] base_url``, else
    ``http://<host>:<port>``, a wildcard host shown as localhost). Imports Airflow."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="")
    if base:
        return base.rstrip("/")
    host = conf.get("api", "host", fallback="localhost")
    port = conf.get("api", "port", fallback="8080")
    return f"http://{'localhost' if host in ('', '0.0.0.0', '::') else host}:{port}"


def ui_banner(settings: Settings, env: dict[str, str], url: str) -> list[str]:
    """Lines that say where the embedded UI is and how to log in, as ``env`` (the Airflow
    environment of :func:`prepare_airflow`) configures it; generates the password if needed."""
    if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
        return [f"Airflow UI: {url}  (no login: every visitor is admin; MLP_UI_ALL_ADMINS=true)"]
    login = ensure_ui_login(settings)
    return [
        f"Airflow UI: {url}",
        f"  log in as {login.user!r} with password {login.password}",
        f"  (kept in {login.password_file}, mode 0600; MLP_UI_ALL_ADMINS=true turns the login off)",
    ]


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


def test_dag_run(dag, run_id: str, logical: datetime, conf: dict, attempts: int = 4):
    """``dag.test`` one run. Before its run starts, ``dag.test`` writes the DAG's rows to the
    metadata DB; two first runs of a DAG at once can collide there (a UNIQUE constraint on
    ``dag.dag_id``). Such a collision is retried while the run does not exist yet."""
    from sqlalchemy.exc import IntegrityError, PendingRollbackError

    for attempt in range(1, attempts + 1):
        try:
            return dag.test(logical_date=logical, run_after=logical, run_conf=conf)
        except (IntegrityError, PendingRollbackError) as exc:
            _discard_failed_session()
            if attempt == attempts or _dag_run_exists(dag.dag_id, run_id):
                raise
            log.warning(
                "registering %s collided with another run (%s); retrying",
                dag.dag_id,
                type(exc).__name__,
            )
            time.sleep(attempt + secrets.randbelow(1000) / 1000)
    raise AssertionError("unreachable")


def _discard_failed_session() -> None:
    """Roll back and drop this thread's Airflow ORM session: after a failed flush (the
    collision above) it refuses every further query (``PendingRollbackError``) until then."""
    from airflow import settings as airflow_settings

    if airflow_settings.Session is not None:
        airflow_settings.Session.rollback()
        airflow_settings.Session.remove()


def _dag_run_exists(dag_id: str, run_id: str) -> bool:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return (
            session.scalar(
                select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            )
            is not None
        )


@dataclass
class WarmRunner:
    """What :func:`warm_up` prepared: the Airflow environment and the parsed DagBag."""

    env: dict[str, str]
    bag: Any


def warm_up() -> WarmRunner:
    """Everything a run needs before it knows its DAG: the home's databases, Airflow's imports,
    the DagBag, the in-process Execution API. Logs one line per phase (the landmarks that
    ``benchmarks/bench_orchestration.py`` reads)."""
    os.environ[runs.RUNNER_PID_ENV] = str(os.getpid())
    log.info("runner started")
    env = prepare_airflow()

    from airflow.dag_processing.dagbag import DagBag

    from mlplatform import task_logs
    from mlplatform.inprocess_api import serve_client_version_only

    task_logs.install()  # each task's log where the UI reads it (dag.test runs tasks in here)
    log.info("runner: Airflow imported")
    bag = DagBag(dag_folder=env["AIRFLOW__CORE__DAGS_FOLDER"])
    log.info("runner: DagBag parsed (%d DAGs)", len(bag.dags))
    serve_client_version_only()  # the first task no longer builds every API version
    return WarmRunner(env, bag)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dag_id")
    parser.add_argument("result")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--logical-date", default=None)
    return parser.parse_args(argv)


def _log_setup() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def main(argv: list[str] | None = None) -> int:
    """Warm up, then run the DAG run ``argv`` asks for (see the module doc)."""
    args = _parse(argv)
    _log_setup()
    return run(args, warm_up())


def standby() -> int:
    """``python -m mlplatform.airflow_runner --standby``: warm up at once, then read the run's
    arguments as one JSON line ``{"argv": [...]}`` from stdin and run it; an empty stdin (the
    command that started this process found nothing to run, or died) ends it without a run.
    ``mlplatform run`` starts its runner this way before its own checks, so that Airflow's
    imports overlap them. SIGTERM while warming up (the checks failed) ends it at once: nothing
    is half-done then (the databases appear by rename or link, the migration marker only after
    a migration, file locks die with the process)."""
    _log_setup()

    def stop(_signum: int, _frame: object) -> None:
        os._exit(143)

    previous = signal.signal(signal.SIGTERM, stop)
    warm = warm_up()
    signal.signal(signal.SIGTERM, previous)
    line = sys.stdin.readline()
    if not line.strip():
        log.info("runner: no run requested")
        return 0
    return run(_parse(json.loads(line)["argv"]), warm)


def run(args: argparse.Namespace, warm: WarmRunner) -> int:
    """The DAG run ``args`` asks for, on a warmed-up runner."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    settings = get_settings()
    result_path = Path(args.result)
    bag = warm.bag
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
    log.info("runner: running %s", args.dag_id)
    dag_run = test_dag_run(dag, run_id, logical, json.loads(args.conf))
    tasks = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    result_path.write_text(
        json.dumps({"run_id": dag_run.run_id, "state": str(dag_run.state), "tasks": tasks})
    )
    log.info("runner: result written")
    return 0


def exit_now(code: int) -> None:
    """End the runner process at once once its result is written: flush the log and the standard
    streams, then ``os._exit``. The run is over and committed by then (tasks, MLflow runs, the
    lease); a normal interpreter exit spends 5 s or more in the atexit and finalizer work of what
    the tasks imported (TensorFlow, MLflow, Airflow's ORM), time ``mlplatform run`` waited for."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(standby() if sys.argv[1:] == ["--standby"] else main())

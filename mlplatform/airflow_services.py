"""Airflow's own services on the embedded home: scheduler, dag-processor, triggerer, API server.

``mlplatform run`` drives one DAG run in-process (``dag.test``); continuous training needs the
real thing: the scheduler that starts runs on cron schedules and asset events, the dag-processor
that parses ``dags/``, the triggerer for deferred tasks and the API server that tasks talk to
(Airflow 3's execution API) and that serves the UI. :class:`AirflowServices` starts the four as
children of this process, each in its own session and with its log under
``<airflow_home>/logs/services/<name>.log``, waits until they answer, and stops them all (the
whole process tree of each: the LocalExecutor's workers and task runners included) on
:meth:`AirflowServices.stop`, on leaving the ``with`` block, on SIGTERM/SIGINT and at exit.

Use: ``with AirflowServices(settings) as services: services.wait_ready(); ...``. ``start`` starts
the API server and the dag-processor; ``wait_ready`` starts the scheduler and the triggerer once
the API server answers: a task the scheduler queued before that (a cron's first interval on a
fresh home) failed at once, its task runner refused by the execution API ("Connection refused").
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from mlplatform import processes
from mlplatform.settings import Settings

#: the services, in start order (the API server first: tasks call its execution API)
SERVICES = ("api-server", "dag-processor", "scheduler", "triggerer")
#: started only once the API server answers (they start task runners, which call it)
NEED_THE_API = ("scheduler", "triggerer")


class ServicesError(RuntimeError):
    """A service did not start or died; the message names it and the tail of its log."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


class AirflowServices:
    """The embedded Airflow's scheduler, dag-processor, triggerer and API server as children.

    ``port`` is the API server's (0: a free one). ``extra_env`` is added to every service's
    environment (e.g. ``MLP_*`` settings a test needs the tasks to see).
    """

    def __init__(
        self,
        settings: Settings,
        port: int = 0,
        extra_env: dict[str, str] | None = None,
        services: tuple[str, ...] = SERVICES,
    ) -> None:
        self.settings = settings
        self.port = port or _free_port()
        self.extra_env = dict(extra_env or {})
        self.services = services
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pending: list[str] = []
        self._env: dict[str, str] = {}
        self.log_dir = settings.airflow_home / "logs" / "services"
        self._previous: dict[int, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The services' environment: the embedded Airflow's, with this API server's port as the
        execution API every task runner calls."""
        from mlplatform.airflow_runner import prepare_airflow

        env = {**os.environ, **prepare_airflow(), **self.extra_env}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["AIRFLOW__API__PORT"] = str(self.port)
        env["AIRFLOW__API__HOST"] = "127.0.0.1"
        env["AIRFLOW__API__BASE_URL"] = self.url
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{self.url}/execution/"
        env.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
        env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
        # the dag-processor re-reads dags/ every 10 s, not every 5 min, so a new or changed
        # pipeline file (and its schedule) is picked up while people watch
        env.setdefault("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "10")
        env.setdefault("AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC", "2")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    # ------------------------------------------------------------------ start / stop

    def start(self) -> AirflowServices:
        """Start the API server and the dag-processor (each logs to ``<log_dir>/<name>.log``);
        :meth:`wait_ready` starts the rest. Returns ``self``. The registry's tables are created
        first: the API server's platform view and the scheduler's first tasks would otherwise
        both migrate a fresh MLflow SQLite file at once."""
        from mlplatform.stages.registry import ensure_registry

        ensure_registry(self.settings)
        self._env = self.env()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._install_signal_handlers()
        atexit.register(self.stop)
        api_first = "api-server" in self.services
        self._pending = [n for n in self.services if api_first and n in NEED_THE_API]
        for name in self.services:
            if name not in self._pending:
                self._spawn(name)
        return self

    def _spawn(self, name: str) -> None:
        args = [str(Path(sys.executable).parent / "airflow"), name]
        if name == "api-server":
            args += ["--port", str(self.port), "--host", "127.0.0.1"]
        with open(self.log_dir / f"{name}.log", "ab") as log_file:
            self.procs[name] = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.settings.repo_root,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        """Raise :class:`ServicesError` naming any service that has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.log_dir / f"{name}.log"
                raise ServicesError(
                    f"airflow {name} exited with {proc.returncode}; {log}: {_tail(log)}"
                )

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Wait until the API server answers its health check, then start the services that
        need it (scheduler, triggerer); ServicesError on a dead service or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as r:
                    if r.status == 200:
                        while self._pending:
                            self._spawn(self._pending.pop(0))
                        return
            if time.monotonic() > deadline:
                log = self.log_dir / "api-server.log"
                raise ServicesError(
                    f"the Airflow API server did not answer on {self.url} within "
                    f"{timeout_s:.0f}s; {log}: {_tail(log)}"
                )
            time.sleep(1.0)

    def stop(self, grace_s: float = 20.0) -> int:
        """Stop every service and everything it started; returns how many processes were
        ended. Safe to call twice."""
        trees = [p for proc in self.procs.values() for p in processes.tree(proc.pid)]
        ended = processes.terminate(trees, grace_s=grace_s) if trees else 0
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        self._pending.clear()
        self._restore_signal_handlers()
        return ended

    def pids(self) -> list[int]:
        """Every live process of the services (trees), for checks that nothing is left."""
        return [p.pid for proc in self.procs.values() for p in processes.tree(proc.pid)]

    def __enter__(self) -> AirflowServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt

        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave them be
                self._previous[signum] = signal.signal(signum, handler)

    def _restore_signal_handlers(self) -> None:
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, previous)
        self._previous.clear()


def wait_for(
    condition: Callable[[], Any],
    timeout_s: float,
    what: str,
    services: AirflowServices | None = None,
    poll_s: float = 2.0,
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); TimeoutError naming
    ``what`` after ``timeout_s``; a dead service raises ServicesError first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if services is not None:
            services.check_alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(poll_s)

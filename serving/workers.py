"""Several server processes on one port (``python -m serving.server --workers N``).

TF Serving is one multi-threaded C++ process; this server is Python, where one process runs one
request's Python at a time (the GIL), so the honest equivalent on N cores is N processes.
:func:`supervise` starts ``workers`` processes (``spawn``: nothing of the parent's state, no
TensorFlow, gRPC or thread inherited), restarts one that dies, and on SIGTERM/SIGINT stops them
all (SIGTERM: each finishes its requests in flight, as a single server does). Each worker binds
its own listening socket with ``SO_REUSEPORT`` (:func:`reuse_port_socket`; the gRPC server sets
the same option), so the kernel spreads new connections over the workers by their address hash.

Hand-written rather than uvicorn's ``--workers`` supervisor because that one hands every worker
one shared socket (whichever worker wakes first accepts: on an idle start most connections land
on one worker) and pickles its config into each worker, which cannot carry this server's app or
its guarded connection protocol, both built from the command line.

Each worker is a whole server with its own :class:`~serving.runtime.ModelRegistry` polling the
same model base and ``models.config``: a promotion or rollback is seen by every worker within
``--poll-seconds`` of the config being written (``GET /v1/mlplatform/status`` names the worker
that answered; ``tests/test_serving_workers.py`` checks every worker follows). The request log
is shared safely: appends are whole lines on ``O_APPEND`` descriptors and rotation takes a file
lock (:mod:`serving.request_log`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["STARTUP_FAILURE", "reuse_port_socket", "supervise", "watch_parent"]

log = logging.getLogger(__name__)

#: exit code of a worker that failed before it served (uvicorn's own code for a failed startup)
STARTUP_FAILURE = 3
#: a worker that exits sooner than this after its start is not restarted: the server stops
MIN_UPTIME_S = 30.0


def reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` with ``SO_REUSEPORT`` (one per worker)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def watch_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """In a worker: SIGTERM this process when ``parent_pid`` is no longer its parent (the
    supervisor was killed without stopping it), so that no orphan keeps the port."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def supervise(target: Callable[[int], Any], workers: int, *, grace_s: float = 20.0) -> int:
    """Run ``target(index)`` in ``workers`` spawned processes until SIGTERM/SIGINT.

    ``target`` must be picklable (a module-level function or a ``functools.partial`` of one).
    A worker that exits is started again, unless it ran less than :data:`MIN_UPTIME_S` (a
    broken start would only loop): then every worker is stopped and 1 is returned. On a signal
    each worker gets SIGTERM, and SIGKILL after ``grace_s``; returns 0.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }

    def start(index: int) -> tuple[Any, float]:
        process = context.Process(target=target, args=(index,), name=f"serving-worker-{index}")
        process.start()
        log.info("worker %d started (pid %s)", index, process.pid)
        return process, time.monotonic()

    failed = False
    procs = [start(i) for i in range(workers)]
    try:
        while not stop.wait(0.5):
            for index, (process, started) in enumerate(procs):
                if process.is_alive():
                    continue
                uptime = time.monotonic() - started
                if process.exitcode == STARTUP_FAILURE or uptime < MIN_UPTIME_S:
                    log.error(
                        "worker %d (pid %s) exited with code %s after %.1f s; stopping the server",
                        index, process.pid, process.exitcode, uptime,
                    )  # fmt: skip
                    failed = True
                    stop.set()
                    break
                log.warning(
                    "worker %d (pid %s) exited with code %s; starting a new one",
                    index, process.pid, process.exitcode,
                )  # fmt: skip
                procs[index] = start(index)
    finally:
        for process, _ in procs:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process, _ in procs:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0

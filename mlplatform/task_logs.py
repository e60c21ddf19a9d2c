"""Task logs of in-process runs (``dag.test``) where Airflow's UI reads them.

A run started by ``mlplatform run``/``demo`` (:mod:`mlplatform.airflow_runner`) runs each task in
the runner's own process (``dag.test``): no task supervisor writes a log file, and the UI says
"Log file not found". :class:`TaskLogFiles` is an Airflow listener, registered only in that
process (:func:`install`): from a task's ``on_task_instance_running`` to its success, failure or
skip it tees the process's stdout and stderr (file descriptors 1 and 2: Python logging, prints,
and what C++ libraries and child processes write) into the file the API server's log reader
opens, ``[logging] base_log_folder`` / ``log_filename_template`` rendered for the task instance
(Airflow's own renderer, as executors do), and still to the runner's own output.

Each line becomes one JSON log record as the task supervisor writes them (``timestamp``,
``level``, ``event``, ``logger``): a line in Airflow's console format (``<ISO time> [level]
event [logger] k=v``) or the standard library's ``basicConfig`` format keeps its time, level and
logger; any other line (a library's raw output) is a plain record without a level, so the UI shows
it as text, not as a red error. Hand-written because Airflow offers no log sink for in-process
task runs (its supervisor's file writer is bound to the child-process protocol).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from airflow.listeners import hookimpl

# 2026-11-28T13:30:56.126747Z [info     ] event text [logger.name] k=v
_CONSOLE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?) \[(?P<level>[a-z]+)\s*\] "
    r"(?P<event>.*?)(?: +\[(?P<logger>[\w.]+)\])?(?P<extra> [\w.]+=.*)?$"
)
# 2026-11-28 13:30:52,333 INFO airflow.configuration: message
_BASIC = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) (?P<level>[A-Z]+) "
    r"(?P<logger>[\w.]+): (?P<event>.*)$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_record(line: str, now: datetime | None = None) -> dict[str, Any]:
    """One output line as the JSON record the UI's log reader parses (see the module doc)."""
    line = _ANSI.sub("", line.rstrip("\r\n"))
    match = _CONSOLE.match(line)
    if match:
        ts = match["ts"] if match["ts"].endswith("Z") else match["ts"] + "Z"
        record: dict[str, Any] = {
            "timestamp": ts.replace("Z", "+00:00"),
            "level": match["level"],
            "event": match["event"].rstrip() + (match["extra"] or ""),
        }
        if match["logger"]:
            record["logger"] = match["logger"]
        return record
    match = _BASIC.match(line)
    if match:
        return {
            "timestamp": f"{match['ts'].replace(' ', 'T')}.{match['ms']}+00:00",
            "level": match["level"].lower(),
            "event": match["event"],
            "logger": match["logger"],
        }
    return {"timestamp": (now or datetime.now(UTC)).isoformat(), "event": line}


class _Tee:
    """Fds 1 and 2 replaced by pipes whose lines go to the log file and the original fds."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._saved: dict[int, int] = {}
        self._threads: list[threading.Thread] = []
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd in (1, 2):
            read_end, write_end = os.pipe()
            self._saved[fd] = os.dup(fd)
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(
                target=self._pump, args=(read_end, self._saved[fd]), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _pump(self, read_end: int, original: int) -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                try:
                    os.write(original, raw)
                except OSError:
                    pass  # the runner's own output is gone: keep the task log
                record = log_record(raw.decode("utf-8", "replace"))
                with self._lock:
                    self._file.write(json.dumps(record, default=str) + "\n")
                    self._file.flush()

    def close(self, wait_s: float = 2.0) -> None:
        """Restore fds 1 and 2; wait (briefly: a child may still hold a pipe) for the pumps."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
        for thread in self._threads:
            thread.join(wait_s)
        for saved in self._saved.values():
            if not any(t.is_alive() for t in self._threads):
                os.close(saved)
        with self._lock:
            self._file.close()


def log_path(task_instance: Any) -> Path:
    """The task instance's log file as the API server's reader looks for it (created, with the
    permissions Airflow gives task log files)."""
    from airflow.sdk.log import init_log_file
    from airflow.utils.helpers import log_filename_template_renderer

    return init_log_file(log_filename_template_renderer()(ti=task_instance))


class TaskLogFiles:
    """The listener (see the module doc); at most one task is captured at a time."""

    def __init__(self) -> None:
        self._tee: _Tee | None = None

    def _stop(self) -> None:
        if self._tee is not None:
            tee, self._tee = self._tee, None
            tee.close()

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        self._stop()  # a task that ended without a hook (deferred) must not stay captured
        self._tee = _Tee(log_path(task_instance))

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._stop()

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self._stop()

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._stop()


def install() -> TaskLogFiles:
    """Register :class:`TaskLogFiles` with the task SDK's listener manager of this process."""
    from airflow.sdk.listener import get_listener_manager

    listener = TaskLogFiles()
    get_listener_manager().add_listener(listener)
    return listener

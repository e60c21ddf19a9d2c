"""The request log: one JSON line per prediction request, what the drift monitor reads.

Layout: ``<log_dir>/<model>/<YYYY-MM-DD>.jsonl`` (the UTC date of the record's ``time``). Every
line is one JSON object with at least ``time`` (ISO 8601 UTC), ``model``, ``version``,
``protocol``, ``method``, ``format``, ``inputs``, ``outputs`` and ``latency_ms``; the server's
lines are described in :mod:`serving.server` (protocol ``rest`` or ``grpc``), batch scoring's in
:mod:`mlplatform.stages.score` (protocol and method ``batch``, format ``instances``).

This module imports only the standard library, so batch scoring writes the same lines as the
server without loading the server's web stack. Appends from several processes to one day file
are safe: each line (or block of whole lines) is one ``write`` on an ``O_APPEND`` descriptor.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: bytes of whole lines :meth:`RequestLogger.append_lines` hands to one ``write``
BLOCK_BYTES = 1 << 20


def encode(record: Mapping[str, Any]) -> str:
    """One log line (with its newline) for ``record``; values JSON cannot hold become strings."""
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


class RequestLogger:
    """Appends one JSON line per predict request to ``<log_dir>/<model>/<UTC date>.jsonl``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self._lock = threading.Lock()

    def path(self, model: str, time_iso: str) -> Path:
        """The day file of a record of ``model`` at ``time_iso`` (ISO 8601, UTC)."""
        return self.log_dir / str(model) / f"{str(time_iso)[:10]}.jsonl"

    def log(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (must contain ``time`` ISO string and ``model``); never raises."""
        try:
            line = encode(record)
            path = self.path(record["model"], record["time"])
            with self._lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._append(path, line.encode("utf-8"))
        except Exception:  # logging must not fail a prediction
            log.exception("could not write request log for model %s", record.get("model"))

    def append_lines(self, model: str, time_iso: str, lines_file: Path) -> int:
        """Append the JSON lines of ``lines_file`` (written with :func:`encode`) to the day file
        of ``model`` at ``time_iso``, in blocks of whole lines; returns the lines appended.
        Raises ``OSError`` (a caller that spooled lines decides what a lost log means)."""
        path = self.path(model, time_iso)
        count = 0
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(lines_file, "rb") as src:
                block: list[bytes] = []
                size = 0
                for line in src:
                    block.append(line)
                    size += len(line)
                    count += 1
                    if size >= BLOCK_BYTES:
                        self._append(path, b"".join(block))
                        block, size = [], 0
                if block:
                    self._append(path, b"".join(block))
        return count

    @staticmethod
    def _append(path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

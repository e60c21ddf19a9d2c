"""Append-only JSON-lines logs of dataclass records (the retrain decisions, the audit trail).

One record per line, appended under an exclusive ``fcntl`` lock on ``<log>.lock``, flushed and
fsynced. A writer that died mid-line leaves a torn line: the next append starts on a new line,
and readers skip lines that do not parse. (The standard library's ``logging`` handlers neither
lock across processes nor read back; a database would be one more server for two small files.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of log ``path`` (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append(path: Path, record: Any) -> None:
    """Append dataclass ``record`` to ``path`` as one JSON line, under the lock, synced."""
    line = json.dumps(asdict(record), sort_keys=True, default=str) + "\n"
    with locked(path), open(path, "a+b") as fh:
        if fh.tell() and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n":
            line = "\n" + line  # after a writer died mid-line: keep that torn line apart
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read(path: Path, make: Callable[..., T]) -> list[T]:
    """The records of ``path``, oldest first, each built by ``make(**fields)``; lines that do
    not parse (a torn last line) are skipped. No file: no records."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            if isinstance(data, Mapping):
                records.append(make(**data))
        except (ValueError, TypeError):
            continue
    return records

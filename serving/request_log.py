"""The request log: one JSON line per prediction request, what the drift monitor reads.

Layout: ``<log_dir>/<model>/<YYYY-MM-DD>.jsonl`` (the UTC date of the record's ``time``). Every
line is one JSON object with at least ``time`` (ISO 8601 UTC), ``model``, ``version``,
``protocol``, ``method``, ``format``, ``inputs``, ``outputs`` and ``latency_ms``; the server's
lines are described in :mod:`serving.server` (protocol ``rest`` or ``grpc``), batch scoring's in
:mod:`mlplatform.stages.score` (protocol and method ``batch``, format ``instances``).

This module imports only the standard library, so batch scoring writes the same lines as the
server without loading the server's web stack. Appends from several processes to one day file
are safe: each line (or block of whole lines) is one ``write`` on an ``O_APPEND`` descriptor.

:class:`RequestLogger` writes synchronously (batch scoring). The server writes through
:class:`QueuedRequestLog`, which keeps the log off the request path: a request only decides
whether it is sampled and puts its record on a bounded queue; one background thread encodes
(orjson when installed, see :func:`encode_line`), redacts and appends, pausing
:data:`WRITER_PAUSE_S` whenever it has emptied the queue. When the queue is full the record is
dropped and counted (``dropped``), never waited for. With ``max_file_bytes`` a day file that would grow past the cap is rotated
first: ``<date>.jsonl`` becomes ``<date>.1.jsonl`` (older ones shift up to ``<date>.<keep>.jsonl``,
the oldest is deleted), so the drift monitor's ``*.jsonl`` glob still reads every kept line.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

try:  # optional, only to encode faster (see encode_line)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_ORJSON_OPTIONS = (
    _orjson.OPT_SERIALIZE_NUMPY | _orjson.OPT_APPEND_NEWLINE if _orjson is not None else 0
)
#: the writer's pause after it has emptied the queue: a busy server wakes it at most this often
#: (not once a request, which costs the request threads GIL hand-offs)
WRITER_PAUSE_S = 0.01

#: bytes of whole lines :meth:`RequestLogger.append_lines` hands to one ``write``
BLOCK_BYTES = 1 << 20


#: what a redacted field's value becomes
REDACTED = "[redacted]"


def _default(value: Any) -> Any:
    """JSON for what ``json`` cannot write: arrays (numpy: ``tolist``) as lists, bytes as text
    or ``{"b64": ...}`` (the codec's rule), anything else as its string."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        from serving.codec.b64 import bytes_to_json

        return bytes_to_json(value)
    return str(value)


def encode(record: Mapping[str, Any]) -> str:
    """One log line (with its newline) for ``record``; numpy arrays and bytes are converted (so
    the server can queue raw arrays and leave the conversion to the writer thread), other
    values JSON cannot hold become strings."""
    return json.dumps(record, ensure_ascii=False, default=_default) + "\n"


def encode_line(record: Mapping[str, Any]) -> bytes:
    """:func:`encode` as UTF-8 bytes, through orjson when it is installed (≈5x faster on a
    64-row record; the same JSON values, written compactly, float32 arrays at float32
    precision). orjson writes NaN and Infinity as ``null``, so a line holding a ``null`` is
    encoded again by :func:`encode` (a missing value then stays ``null``, a NaN ``NaN``); so is a
    record orjson cannot write (a key that is not a string, an integer beyond 64 bits)."""
    if _orjson is not None:
        try:
            data: bytes = _orjson.dumps(record, default=_default, option=_ORJSON_OPTIONS)
        except (TypeError, _orjson.JSONEncodeError):
            pass
        else:
            if b"null" not in data:
                return data
    return encode(record).encode("utf-8")


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


def redact(record: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """``record`` with the value of every key named in ``fields`` replaced by ``REDACTED``, at
    any depth of ``inputs``/``outputs``/``entities`` (rows, columns, examples)."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: REDACTED if k in fields else walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    out = dict(record)
    for key in ("inputs", "outputs", "entities"):
        if key in fields and key in out:
            out[key] = REDACTED
        elif key in out:
            out[key] = walk(out[key])
    return out


class QueuedRequestLog:
    """The server's request log: records go through a bounded queue to one writer thread.

    ``sample_rate`` (0..1): the share of requests logged (:meth:`sampled` decides, before the
    record is built). ``queue_size``: records waiting at most; more are dropped (counted in
    ``dropped``, a warning logged once per 1000). ``max_file_bytes`` (None: no cap) and
    ``keep_files``: rotation of a day file (see the module doc). ``redact_fields``: keys whose
    values are written as ``REDACTED``. :meth:`flush` waits until every queued record is
    written; :meth:`close` flushes and stops the thread.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        sample_rate: float = 1.0,
        queue_size: int = 10_000,
        max_file_bytes: int | None = None,
        keep_files: int = 5,
        redact_fields: Iterable[str] = (),
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
        if queue_size < 1 or keep_files < 1:
            raise ValueError("queue_size and keep_files must be at least 1")
        if max_file_bytes is not None and max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be positive, got {max_file_bytes}")
        self.writer = RequestLogger(log_dir)
        self.log_dir = self.writer.log_dir
        self.sample_rate = sample_rate
        self.max_file_bytes = max_file_bytes
        self.keep_files = keep_files
        self.redact_fields = frozenset(redact_fields)
        self.dropped = 0
        self.written = 0
        self._made: set[Path] = set()  # model directories known to exist
        self._queue: queue.Queue[Mapping[str, Any] | None] = queue.Queue(queue_size)
        self._random = random.Random()
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def sampled(self) -> bool:
        """Whether this request is to be logged (``sample_rate``)."""
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def log(self, record: Mapping[str, Any]) -> None:
        """Queue ``record`` (``time`` ISO string and ``model`` required); never blocks, never
        raises: a full queue drops the record."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("request log queue full: %d record(s) dropped so far", self.dropped)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queued records are written; False if ``timeout`` passed first."""
        done = threading.Event()
        deadline = threading.Timer(timeout, done.set)
        deadline.daemon = True
        waiter = threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True)
        deadline.start()
        waiter.start()
        done.wait()
        deadline.cancel()
        return self._queue.unfinished_tasks == 0

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        self.flush(timeout)
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is None:
                    return
                self._write(record)
            finally:
                self._queue.task_done()
            if self._queue.empty():
                time.sleep(WRITER_PAUSE_S)

    def _write(self, record: Mapping[str, Any]) -> None:
        try:
            if self.redact_fields:
                record = redact(record, self.redact_fields)
            data = encode_line(record)
            path = self.writer.path(record["model"], record["time"])
            if path.parent not in self._made:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(path.parent)
            if self.max_file_bytes is not None:
                self._rotate_if_full(path, len(data))
            try:
                RequestLogger._append(path, data)
            except FileNotFoundError:  # the directory went away since: make it again
                path.parent.mkdir(parents=True, exist_ok=True)
                RequestLogger._append(path, data)
            self.written += 1
        except Exception:  # the log must not stop the writer
            log.exception("could not write request log for model %s", record.get("model"))

    def _rotate_if_full(self, path: Path, incoming: int) -> None:
        if not self._full(path, incoming):
            return
        # several server processes (--workers) may write one day file: the rotation runs under
        # an exclusive lock on that file and checks again once it holds it (a process that
        # waited finds the file renamed and a new one, or none, under its name)
        try:
            lock_fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if self._full(path, incoming):
                self._rotate(path)
        finally:
            os.close(lock_fd)  # releases the lock

    def _full(self, path: Path, incoming: int) -> bool:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return False
        return size > 0 and size + incoming > (self.max_file_bytes or 0)

    def _rotate(self, path: Path) -> None:
        stem = path.name[: -len(".jsonl")]
        rotated = [path.with_name(f"{stem}.{i}.jsonl") for i in range(1, self.keep_files + 1)]
        rotated[-1].unlink(missing_ok=True)
        for older, newer in zip(reversed(rotated[1:]), reversed(rotated[:-1]), strict=True):
            if newer.exists():
                newer.rename(older)
        path.rename(rotated[0])

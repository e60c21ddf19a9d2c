"""Server-side batching, off by default like TF Serving's ``--enable_batching``.

Configured as TF Serving is, by a batching parameters file in its text-proto format (the
production image reads the same file)::

    max_batch_size { value: 64 }
    batch_timeout_micros { value: 1000 }
    num_batch_threads { value: 2 }
    max_enqueued_batches { value: 100 }

Requests to one signature of one loaded version wait at most ``batch_timeout_micros`` for
others; their rows (the first dimension of every input) are concatenated up to
``max_batch_size`` rows, the signature runs once on ``num_batch_threads`` threads, and each
request gets its own rows of every output back. A request larger than ``max_batch_size`` runs
alone. More than ``max_enqueued_batches`` batches waiting: UNAVAILABLE at once (as TF Serving).
Signatures whose inputs do not all have a leading batch dimension, and batches whose outputs do
not keep it, run request by request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.api.errors import ApiError

__all__ = ["Batcher", "BatchingParameters", "read_batching_parameters"]

log = logging.getLogger(__name__)

#: fields of TF Serving's BatchingParameters this server reads; the others it accepts (so that
#: one file serves both) and ignores with a warning
_READ = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
_ACCEPTED = (
    "thread_pool_name",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "max_execution_batch_size",
    "enable_large_batch_splitting",
)


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's batching parameters (defaults: TF Serving's, threads: the CPU count)."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 100

    def __post_init__(self) -> None:
        for name in _READ:
            low = 0 if name == "batch_timeout_micros" else 1
            if getattr(self, name) < low:
                raise ValueError(f"batching parameter {name} must be >= {low}")


def _message_class() -> Any:
    """TF Serving's ``BatchingParameters`` message (tensorflow-serving-api does not ship
    ``session_bundle_config.proto``), declared field by field so that protobuf's own text
    format parser reads the file."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="mlplatform_batching.proto",
        package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    message = proto.message_type.add(name="BatchingParameters")
    fields = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, None),
        ("pad_variable_length_inputs", 7, None),
        ("max_execution_batch_size", 8, ".google.protobuf.Int64Value"),
        ("enable_large_batch_splitting", 9, ".google.protobuf.BoolValue"),
    ]
    f = descriptor_pb2.FieldDescriptorProto
    for name, number, type_name in fields:
        if type_name is not None:
            message.field.add(
                name=name,
                number=number,
                type=f.TYPE_MESSAGE,
                type_name=type_name,
                label=f.LABEL_OPTIONAL,
            )
        elif name == "allowed_batch_sizes":
            message.field.add(name=name, number=number, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
        else:
            message.field.add(name=name, number=number, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def read_batching_parameters(path: Path) -> BatchingParameters:
    """Parse a TF Serving batching parameters file; ValueError (one line) if it is invalid."""
    from google.protobuf import text_format

    message = _message_class()()
    try:
        text_format.Parse(Path(path).read_text(), message)
    except (OSError, text_format.ParseError) as exc:
        raise ValueError(f"batching parameters file {path}: {exc}") from None
    values = {name: getattr(message, name).value for name in _READ if message.HasField(name)}
    ignored = [name for name in _ACCEPTED if _is_set(message, name)]
    if ignored:
        log.warning("batching parameters %s are accepted but not used here", ", ".join(ignored))
    try:
        return BatchingParameters(**values)
    except ValueError as exc:
        raise ValueError(f"batching parameters file {path}: {exc}") from None


def _is_set(message: Any, name: str) -> bool:
    value = getattr(message, name)
    if name == "allowed_batch_sizes":
        return bool(len(value))
    if name == "pad_variable_length_inputs":
        return bool(value)
    return message.HasField(name)


class _Task:
    __slots__ = ("arrays", "done", "error", "on_done", "outputs", "rows")

    def __init__(
        self,
        arrays: Mapping[str, Any],
        rows: int,
        on_done: Callable[[_Task], None] | None = None,
    ) -> None:
        self.arrays, self.rows, self.on_done = arrays, rows, on_done
        self.done = threading.Event()
        self.outputs: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def complete(
        self, outputs: dict[str, Any] | None = None, error: BaseException | None = None
    ) -> None:
        self.outputs, self.error = outputs, error
        self.done.set()
        if self.on_done is not None:
            self.on_done(self)


class _Queue:
    """The waiting requests of one signature and the threads that run their batches."""

    def __init__(self, params: BatchingParameters, run: Callable[[dict[str, Any]], Any]) -> None:
        self.params, self.run = params, run
        self.cond = threading.Condition()
        self.tasks: deque[_Task] = deque()
        self.rows = 0
        for i in range(params.num_batch_threads):
            threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True).start()

    def submit(self, task: _Task) -> None:
        limit = self.params.max_enqueued_batches * self.params.max_batch_size
        with self.cond:
            if self.rows + task.rows > limit:
                raise ApiError.of(
                    "UNAVAILABLE",
                    f"The batch scheduling queue is full ({self.params.max_enqueued_batches} "
                    "batches waiting); retry later",
                )
            self.tasks.append(task)
            self.rows += task.rows
            self.cond.notify()

    def _take(self) -> list[_Task]:
        timeout = self.params.batch_timeout_micros / 1e6
        with self.cond:
            while not self.tasks:
                self.cond.wait()
            deadline = time.monotonic() + timeout
            while self.rows < self.params.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            batch, rows = [self.tasks.popleft()], 0
            rows = batch[0].rows
            while self.tasks and rows + self.tasks[0].rows <= self.params.max_batch_size:
                rows += self.tasks[0].rows
                batch.append(self.tasks.popleft())
            self.rows -= rows
            if self.tasks:
                self.cond.notify()
            return batch

    def _loop(self) -> None:
        import numpy as np

        while True:
            batch = self._take()
            try:
                if len(batch) == 1:
                    self._finish(batch[0], self.run(dict(batch[0].arrays)))
                    continue
                names = list(batch[0].arrays)
                joined = {n: np.concatenate([t.arrays[n] for t in batch]) for n in names}
                outputs = self.run(joined)
                total = sum(t.rows for t in batch)
                if any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
                    for task in batch:  # outputs without the batch dimension: one by one
                        self._finish(task, self.run(dict(task.arrays)))
                    continue
                start = 0
                for task in batch:
                    end = start + task.rows
                    self._finish(task, {k: a[start:end] for k, a in outputs.items()})
                    start = end
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for task in batch:
                    if not task.done.is_set():
                        task.complete(error=exc)

    @staticmethod
    def _finish(task: _Task, outputs: dict[str, Any]) -> None:
        task.complete(outputs)


class Batcher:
    """Batches signature calls across requests (see the module doc)."""

    def __init__(self, params: BatchingParameters) -> None:
        self.params = params
        # by function, weakly: the queue of an unloaded version goes with it
        self._queues: weakref.WeakKeyDictionary[Any, _Queue] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _submit(
        self,
        fn: Any,
        specs: Mapping[str, Any],
        arrays: Mapping[str, Any],
        run: Callable[[dict[str, Any]], dict[str, Any]],
        on_done: Callable[[_Task], None] | None = None,
    ) -> _Task | None:
        """Queue the call as a task (None: it cannot be batched, the caller runs it alone)."""
        batchable = all(
            s.shape.rank is not None and s.shape.rank >= 1 and s.shape[0] is None
            for s in specs.values()
        )
        rows = {int(a.shape[0]) for a in arrays.values() if getattr(a, "ndim", 0) >= 1}
        if not batchable or len(rows) != 1:
            return None
        (n,) = rows
        if n > self.params.max_batch_size or n == 0:
            return None
        with self._lock:
            queue = self._queues.get(fn)
            if queue is None:
                queue = self._queues[fn] = _Queue(self.params, run)
        task = _Task(arrays, n, on_done)
        queue.submit(task)
        return task

    def run(
        self,
        fn: Any,
        specs: Mapping[str, Any],
        arrays: Mapping[str, Any],
        run: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        """``run(arrays)``, batched with other requests to ``fn`` when its inputs allow."""
        task = self._submit(fn, specs, arrays, run)
        if task is None:
            return run(dict(arrays))
        task.done.wait()
        return _result(task)

    async def run_async(
        self,
        fn: Any,
        specs: Mapping[str, Any],
        arrays: Mapping[str, Any],
        run: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        """:meth:`run` for an event loop: the request waits for its batch without a thread of
        its own (the batch thread hands the result back to the loop); a call that cannot be
        batched runs alone on a worker thread, never on the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done(_task: _Task) -> None:
            loop.call_soon_threadsafe(_settle, future)

        task = self._submit(fn, specs, arrays, run, done)
        if task is None:
            return await asyncio.to_thread(run, dict(arrays))
        await future
        return _result(task)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # a request cancelled meanwhile (client gone) has no one to tell
        future.set_result(None)


def _result(task: _Task) -> dict[str, Any]:
    if task.error is not None:
        raise task.error
    assert task.outputs is not None
    return task.outputs

"""The composition of the server: one runtime (registry, request log, online features,
batching) behind the REST app and, in its lifespan, the gRPC server (:func:`create_app`).
The contract of what it serves is in :mod:`serving.server`, the entry point."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from serving.api.constants import DEFAULT_MAX_BODY_BYTES
from serving.api.limits import Limits
from serving.request_log import QueuedRequestLog
from serving.rest.app import build_rest_app
from serving.runtime.batching import Batcher, BatchingParameters
from serving.runtime.registry import ModelRegistry

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    model_base: Path,
    log_dir: Path | None = None,
    poll_seconds: float = 1.0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_elements: int = Limits.max_elements,
    max_depth: int = Limits.max_depth,
    max_concurrent: int = Limits.max_concurrent,
    max_extra_versions: int = 2,
    retry_seconds: float = 30.0,
    grpc_port: int | None = None,
    grpc_host: str = "127.0.0.1",
    grpc_idle_timeout_s: float = 30.0,
    grpc_reuse_port: bool = False,
    pipelines_dir: Path | None = None,
    log_sample_rate: float = 1.0,
    log_queue_size: int = 10_000,
    log_max_file_bytes: int | None = None,
    log_redact: Sequence[str] = (),
    batching: BatchingParameters | None = None,
    worker: tuple[int, int] | None = None,
) -> FastAPI:
    """Build the TF-Serving-compatible FastAPI app serving ``model_base``.

    Models are loaded, and the poller is started, in the app's lifespan; an empty or
    missing ``model_base`` is fine (requests 404 until models appear). ``log_dir=None``
    disables request logging; otherwise ``app.state.request_logger`` is the
    :class:`~serving.request_log.QueuedRequestLog` (``log_*`` arguments), flushed and stopped
    when the app shuts down. The registry is ``app.state.registry``.

    ``max_*``: the request limits (:class:`serving.api.Limits`), for REST and gRPC alike.
    ``grpc_port`` (None: no gRPC; 0: a free port) also starts TF Serving's gRPC API on
    ``grpc_host`` in the lifespan, sharing the registry and the request log; connections idle
    for ``grpc_idle_timeout_s`` are closed; the bound port is ``app.state.grpc_port`` once
    started (else None). A port that cannot be bound fails the startup; ``grpc_reuse_port``
    binds it with ``SO_REUSEPORT``, shared with the other workers of ``--workers N``.

    ``worker``: ``(index, workers)`` when this app is one worker of several
    (:mod:`serving.workers`); ``GET /v1/mlplatform/status`` then names it (``"worker": {"index",
    "workers", "pid"}``).

    ``batching`` (None: off, TF Serving's default) batches predict calls across requests, REST
    and gRPC together (:mod:`serving.runtime.batching`).

    ``pipelines_dir`` (None: none) holds the pipeline configs that decide which models take
    entity keys and which accept non-finite values (``app.state.online_features``).
    """
    limits = Limits(max_body_bytes, max_elements, max_depth, max_concurrent)
    batcher = Batcher(batching) if batching is not None else None
    registry = ModelRegistry(
        Path(model_base),
        poll_seconds,
        max_extra_versions=max_extra_versions,
        retry_seconds=retry_seconds,
    )
    online = None
    if pipelines_dir is not None:
        from serving.runtime.online_features import OnlineFeatureSources

        online = OnlineFeatureSources(Path(pipelines_dir), rescan_seconds=poll_seconds)
    request_log = (
        QueuedRequestLog(
            Path(log_dir),
            sample_rate=log_sample_rate,
            queue_size=log_queue_size,
            max_file_bytes=log_max_file_bytes,
            redact_fields=log_redact,
        )
        if log_dir is not None
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(registry.refresh)
        registry.start()
        grpc_handle = None
        try:
            if grpc_port is not None:
                from serving.grpc.server import start_grpc_server

                grpc_handle = await start_grpc_server(
                    registry,
                    grpc_host,
                    grpc_port,
                    request_logger=request_log,
                    limits=limits,
                    idle_timeout_s=grpc_idle_timeout_s,
                    online=online,
                    batcher=batcher,
                    reuse_port=grpc_reuse_port,
                )
                app_.state.grpc_port = grpc_handle.port
            yield
        finally:
            if grpc_handle is not None:
                await grpc_handle.stop(grace=2.0)
                app_.state.grpc_port = None
            registry.stop()
            if request_log is not None:
                request_log.flush()

    app = build_rest_app(
        registry,
        limits=limits,
        request_log=request_log,
        online=online,
        batcher=batcher,
        lifespan=lifespan,
        worker=worker,
    )
    app.state.registry = registry
    app.state.request_logger = request_log
    app.state.limits = limits
    app.state.max_body_bytes = max_body_bytes
    app.state.grpc_port = None
    app.state.online_features = online
    return app

"""Serve TF Serving's gRPC API (:mod:`serving.grpc.servicer`) on a ``grpc.aio`` server.

The server runs on the caller's event loop (the REST app's: one loop for both protocols). A
request to the served version whose message is at most :data:`INLINE_MESSAGE_BYTES`, with
batching off, runs on the loop itself (as small REST requests do: the model call is shorter
than a hop to a worker thread and back, which grpcio's synchronous server made for every RPC);
any other runs on a worker thread (``asyncio.to_thread``), so that a large request, a version
that loads lazily or a wait for a batch never holds the loop.

Limits (:class:`serving.api.Limits`): messages larger than ``max_body_bytes`` are refused by
gRPC itself (RESOURCE_EXHAUSTED); at most ``max_concurrent`` RPCs run or wait at once, one more
is answered RESOURCE_EXHAUSTED at once (``maximum_concurrent_rpcs``); a connection idle for
``idle_timeout_s`` is closed by the server (``grpc.max_connection_idle_ms``), so idle clients
cannot pile up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.api.errors import ApiError
from serving.api.limits import Limits
from serving.grpc.servicer import CallContext, ModelServicer, PredictionServicer
from serving.runtime.registry import ModelRegistry

__all__ = ["INLINE_MESSAGE_BYTES", "GrpcServer", "start_grpc_server"]

log = logging.getLogger(__name__)

#: Predict/Classify/Regress messages up to this size, to the served version, run on the loop
INLINE_MESSAGE_BYTES = 2048


@dataclass
class GrpcServer:
    """A started gRPC server: ``port`` is the bound port; ``stop`` shuts it down."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float | None = 2.0) -> None:
        """Stop accepting RPCs, let running ones finish for ``grace`` seconds, then end."""
        await self.server.stop(grace)


async def _serve(
    method: Callable[[Any, CallContext], Any],
    request: Any,
    context: grpc.aio.ServicerContext,
    inline: bool,
    with_metadata: bool,
) -> Any:
    """Run a servicer method, turning ApiError into its gRPC status and anything else into
    INTERNAL (logged), so that no request can take the server down."""
    call = CallContext(context.invocation_metadata() or () if with_metadata else ())
    try:
        if inline:
            response = method(request, call)
        else:
            response = await asyncio.to_thread(method, request, call)
    except ApiError as exc:
        await context.abort(exc.grpc_code(), exc.message)
    except Exception as exc:  # noqa: BLE001 - the server must answer, not die
        log.exception("gRPC %s failed", getattr(method, "__name__", method))
        message = " ".join(f"Internal error: {type(exc).__name__}: {exc}".split())
        await context.abort(grpc.StatusCode.INTERNAL, message)
    if call.trailing:
        context.set_trailing_metadata(call.trailing)
    return response


def _served_and_small(request: Any, batching: bool) -> bool:
    spec = request.model_spec
    return (
        not batching
        and spec.WhichOneof("version_choice") is None
        and request.ByteSize() <= INLINE_MESSAGE_BYTES
    )


class _AsyncPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, inner: PredictionServicer) -> None:
        self.inner = inner
        self.batching = inner.batcher is not None
        self.logs = inner.request_logger is not None

    async def _run(self, method: Callable[..., Any], request: Any, context: Any) -> Any:
        inline = _served_and_small(request, self.batching)
        return await _serve(method, request, context, inline, self.logs)

    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._run(self.inner.Predict, request, context)

    async def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._run(self.inner.Classify, request, context)

    async def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._run(self.inner.Regress, request, context)

    async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _serve(self.inner.GetModelMetadata, request, context, False, False)

    async def MultiInference(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _serve(self.inner.MultiInference, request, context, True, False)


class _AsyncModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, inner: ModelServicer) -> None:
        self.inner = inner

    async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _serve(self.inner.GetModelStatus, request, context, True, False)

    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await _serve(self.inner.HandleReloadConfigRequest, request, context, True, False)


async def start_grpc_server(
    registry: ModelRegistry,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    request_logger: Any | None = None,
    limits: Limits | None = None,
    idle_timeout_s: float = 30.0,
    online: Any | None = None,
    batcher: Any | None = None,
    reuse_port: bool = False,
) -> GrpcServer:
    """Serve ``PredictionService`` and ``ModelService`` on ``host:port`` (0: a free port), on
    the running event loop. Raises RuntimeError if the address cannot be bound.
    ``reuse_port``: bind with ``SO_REUSEPORT`` (the workers of ``--workers N`` share the port;
    off, a port another process holds is refused)."""
    limits = limits or Limits()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_connection_idle_ms", int(idle_timeout_s * 1000)),
        ],
        maximum_concurrent_rpcs=limits.max_concurrent,
    )
    prediction = PredictionServicer(
        registry, request_logger, limits=limits, online=online, batcher=batcher
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _AsyncPredictionService(prediction), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        _AsyncModelService(ModelServicer(registry)), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot bind the gRPC server to {address}: {exc}") from exc
    if not bound:
        raise RuntimeError(f"cannot bind the gRPC server to {address}") from None
    await server.start()
    log.info("gRPC server listening on %s:%s", host, bound)
    return GrpcServer(server, bound)

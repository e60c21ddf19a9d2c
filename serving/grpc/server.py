"""Start TF Serving's gRPC API (:mod:`serving.grpc.servicer`) on a port.

Limits (:class:`serving.api.Limits`): messages larger than ``max_body_bytes`` are refused by
gRPC itself (RESOURCE_EXHAUSTED); at most ``max_concurrent`` RPCs run or wait at once, one more
is answered RESOURCE_EXHAUSTED at once (``maximum_concurrent_rpcs``); a connection idle for
``idle_timeout_s`` is closed by the server (``grpc.max_connection_idle_ms``), so idle clients
cannot pile up.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.api.limits import Limits
from serving.grpc.servicer import ModelServicer, PredictionServicer
from serving.runtime.registry import ModelRegistry

__all__ = ["GrpcServer", "start_grpc_server"]

log = logging.getLogger(__name__)


@dataclass
class GrpcServer:
    """A started gRPC server: ``port`` is the bound port; ``stop`` shuts it down."""

    server: grpc.Server
    port: int
    _stopped: threading.Event

    def stop(self, grace: float | None = 2.0) -> None:
        """Stop accepting RPCs, let running ones finish for ``grace`` seconds, then end."""
        if not self._stopped.is_set():
            self._stopped.set()
            self.server.stop(grace).wait()


def start_grpc_server(
    registry: ModelRegistry,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    request_logger: Any | None = None,
    limits: Limits | None = None,
    max_workers: int = 16,
    idle_timeout_s: float = 30.0,
    online: Any | None = None,
    batcher: Any | None = None,
    reuse_port: bool = False,
) -> GrpcServer:
    """Serve ``PredictionService`` and ``ModelService`` on ``host:port`` (0: a free port).

    Requests run on a pool of ``max_workers`` threads. Raises RuntimeError if the address
    cannot be bound. ``reuse_port``: bind with ``SO_REUSEPORT`` (the workers of ``--workers N``
    share the port; off, a port another process holds is refused).
    """
    limits = limits or Limits()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_connection_idle_ms", int(idle_timeout_s * 1000)),
        ],
        maximum_concurrent_rpcs=limits.max_concurrent,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry, request_logger, limits=limits, online=online, batcher=batcher),
        server,
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot bind the gRPC server to {address}: {exc}") from exc
    if not bound:
        raise RuntimeError(f"cannot bind the gRPC server to {address}") from None
    server.start()
    log.info("gRPC server listening on %s:%s", host, bound)
    return GrpcServer(server, bound, threading.Event())

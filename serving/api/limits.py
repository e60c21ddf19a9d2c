"""Request limits shared by the REST and gRPC front ends (see :mod:`serving.server`)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.api.constants import DEFAULT_MAX_BODY_BYTES

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server.

    ``max_body_bytes``: largest REST body / gRPC message. ``max_elements``: most tensor
    elements one request may declare, over all its inputs (checked against a TensorProto's
    declared shape before anything is allocated, and against a JSON body's values).
    ``max_depth``: deepest JSON nesting (objects and arrays). ``max_concurrent``: requests
    running at once per protocol; one more is answered at once with 503 (REST) /
    RESOURCE_EXHAUSTED (gRPC).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_elements: int = 1_000_000
    max_depth: int = 32
    max_concurrent: int = 64

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_elements", "max_depth", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

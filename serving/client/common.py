"""What the REST and gRPC clients share: the error, the result type and the wait loop."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from serving.api.errors import CODE_FOR_HTTP_STATUS

__all__ = ["PredictResult", "ServingError", "wait_until_available"]


class ServingError(RuntimeError):
    """A failed serving request.

    ``status_code``: the HTTP status (REST; None for transport errors and for gRPC).
    ``code``: the canonical status code name (gRPC's, or derived from the HTTP status).
    """

    def __init__(
        self, message: str, status_code: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(" ".join(str(message).split()))
        self.status_code = status_code
        self.code = code or (
            CODE_FOR_HTTP_STATUS.get(status_code, "UNKNOWN") if status_code else None
        )


@dataclass(frozen=True)
class PredictResult:
    """Answers and the model version that produced them, if known.

    ``predictions``: predict -> one value per instance (one dict per instance when the
    signature has several outputs), as REST's ``predictions``; classify -> one
    ``[[label, score], ...]`` list per example; regress -> one float per example.
    ``outputs``: gRPC predict only, the raw output arrays by name (numpy).
    """

    predictions: Any
    model_version: int | None
    outputs: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


def wait_until_available(
    client: Any, where: str, model_name: str, timeout_s: float, poll_s: float
) -> int:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while True:
        try:
            available = [
                int(s["version"])
                for s in client.model_status(model_name)
                if s.get("state") == "AVAILABLE"
            ]
            if available:
                try:
                    spec = client.model_metadata(model_name).get("model_spec", {})
                    return int(spec["version"])
                except (ServingError, KeyError, TypeError, ValueError):
                    return max(available)
            last_error = "no AVAILABLE version"
        except ServingError as exc:
            if exc.code not in (None, "NOT_FOUND", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            last_error = str(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"model {model_name!r} not available at {where} after {timeout_s:g}s: {last_error}"
            )
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

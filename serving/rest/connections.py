"""Connection guards for uvicorn, which has a keep-alive timeout but neither a header timeout
nor a connection cap (its ``limit_concurrency`` answers 503 only once a request has arrived, so
idle connections still pile up and exhaust file descriptors).

:func:`guarded_protocol` subclasses uvicorn's httptools protocol (uvicorn's own default) so that:

* a connection beyond ``max_connections`` is closed as soon as it is accepted;
* a connection that has not sent a complete request head within ``header_timeout_s`` of being
  accepted, or of its previous response, is closed (slow or idle clients hold nothing).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["guarded_protocol"]


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[HttpToolsProtocol]:
    """An uvicorn ``http`` protocol class enforcing the two limits (see the module doc)."""
    if max_connections < 1 or header_timeout_s <= 0:
        raise ValueError("max_connections must be >= 1 and header_timeout_s > 0")

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Any) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol

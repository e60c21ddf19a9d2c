"""Connection guards for uvicorn, which has a keep-alive timeout but neither a header timeout
nor a connection cap (its ``limit_concurrency`` answers 503 only once a request has arrived, so
idle connections still pile up and exhaust file descriptors).

:func:`guarded_protocol` subclasses uvicorn's httptools protocol (uvicorn's own default) so that:

* a connection beyond ``max_connections`` is closed as soon as it is accepted;
* a connection that has not sent a complete request head within ``header_timeout_s`` of being
  accepted, or of its previous response, is closed (slow or idle clients hold nothing);
* with ``max_requests``, a request arriving while that many are in progress (running, or
  queued on the event loop behind requests that run there) is answered 503 with TF Serving's
  error JSON at once, before the app sees it (the app's own limit counts only the requests
  that reached it).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["guarded_protocol"]


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """ASGI app answering 503 with TF Serving's error JSON."""
    body = json.dumps({"error": "Server busy: too many requests in progress; retry later"})
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"keep-alive")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def guarded_protocol(
    max_connections: int, header_timeout_s: float, max_requests: int | None = None
) -> type[HttpToolsProtocol]:
    """An uvicorn ``http`` protocol class enforcing the limits (see the module doc)."""
    if max_connections < 1 or header_timeout_s <= 0 or (max_requests or 1) < 1:
        raise ValueError("max_connections, max_requests >= 1 and header_timeout_s > 0 needed")

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
            if max_requests is None or len(self.tasks) < max_requests:
                super().on_headers_complete()
                return
            app, self.app = self.app, _busy  # uvicorn reads self.app for this request only
            try:
                super().on_headers_complete()
            finally:
                self.app = app

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Any) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol

"""Errors answered with TF Serving's status codes.

:class:`ApiError` carries a canonical status code name (``NOT_FOUND``, ``INVALID_ARGUMENT``,
``FAILED_PRECONDITION``, ...; the names of ``grpc.StatusCode``) and the HTTP status TF Serving's
REST handler maps it to. Messages are one line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CODE_FOR_HTTP_STATUS", "HTTP_STATUS_FOR_CODE", "ApiError", "code_name"]

# TF Serving's REST mapping of canonical codes to HTTP (ToHTTPStatusCode in
# tensorflow_serving/model_servers/http_server.cc); no library ships it, hence the table.
HTTP_STATUS_FOR_CODE: dict[str, int] = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
#: the reverse, for statuses the REST layer produces itself (and the client reads)
CODE_FOR_HTTP_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def code_name(number: int) -> str:
    """The canonical name of a status code number (``tf.errors`` codes are gRPC's),
    ``"INTERNAL"`` for an unknown one. Imports gRPC."""
    import grpc

    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return "INTERNAL"


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with HTTP ``status_code`` (REST) or as
    the gRPC status ``code`` (a ``grpc.StatusCode`` name) with ``message`` as details.

    ``ApiError(404, msg)`` derives ``code`` from the HTTP status (400 -> INVALID_ARGUMENT,
    404 -> NOT_FOUND, 5xx -> INTERNAL, ...); :meth:`of` goes the other way, using TF
    Serving's REST mapping.
    """

    def __init__(self, status_code: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = " ".join(str(message).split())  # always one line
        self.code = code or CODE_FOR_HTTP_STATUS.get(
            status_code, "INTERNAL" if status_code >= 500 else "INVALID_ARGUMENT"
        )

    @classmethod
    def of(cls, code: str, message: str) -> ApiError:
        """An error with canonical ``code`` and the HTTP status TF Serving maps it to."""
        return cls(HTTP_STATUS_FOR_CODE.get(code, 500), message, code)

    def grpc_code(self) -> Any:
        """``code`` as a ``grpc.StatusCode`` (imports gRPC)."""
        import grpc

        return grpc.StatusCode[self.code]

    def __str__(self) -> str:
        return self.message

"""The bottom layer of the server: errors with TF Serving's status codes and shared constants.

Imports only the standard library (gRPC's ``StatusCode`` is imported on first use), so the
client, the codecs and every server layer can depend on it.
"""

from serving.api.constants import (
    CLASSIFY_METHOD,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    REQUEST_ID_HEADER,
    STATUS_ROUTE,
    VERSION_HEADER,
)
from serving.api.errors import CODE_FOR_HTTP_STATUS, HTTP_STATUS_FOR_CODE, ApiError, code_name
from serving.api.limits import Limits

__all__ = [
    "CLASSIFY_METHOD",
    "CODE_FOR_HTTP_STATUS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SIGNATURE",
    "HTTP_STATUS_FOR_CODE",
    "PREDICT_METHOD",
    "REGRESS_METHOD",
    "REQUEST_ID_HEADER",
    "STATUS_ROUTE",
    "VERSION_HEADER",
    "ApiError",
    "Limits",
    "code_name",
]

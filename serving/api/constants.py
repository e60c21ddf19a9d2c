"""Names shared by the server, the client and the codecs (TF Serving's and this platform's)."""

from __future__ import annotations

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

#: response header naming the version that answered (not sent by a real TF Serving)
VERSION_HEADER = "X-Model-Version"
#: request/response header carrying the request id
REQUEST_ID_HEADER = "X-Request-Id"
#: this platform's integrity route (not a TF Serving route)
STATUS_ROUTE = "/v1/mlplatform/status"
#: largest REST body / gRPC message accepted by default
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

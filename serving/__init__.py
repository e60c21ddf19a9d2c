"""Model serving: TF Serving layout (:mod:`serving.layout`), a TF-Serving-compatible server
(entry point :mod:`serving.server`) in layers: :mod:`serving.api` (errors, constants, limits)
<- :mod:`serving.codec` (JSON, tf.Example, TensorProto) <- :mod:`serving.runtime` (servables,
version manager, protocol-neutral predict/classify/regress) <- :mod:`serving.rest` (FastAPI;
TensorFlow only when loading a model) | :mod:`serving.grpc` | :mod:`serving.request_log`; and
REST and gRPC clients (:mod:`serving.client`, on api and codec only).

Importing this package does not import TensorFlow, gRPC or FastAPI.
"""

from serving.client import GrpcPredictionClient, PredictionClient, PredictResult, ServingError
from serving.layout import (
    list_models,
    list_versions,
    publish_version,
    read_models_config,
    remove_label,
    remove_version,
    served_version,
    set_label,
    write_models_config,
)

__all__ = [
    "GrpcPredictionClient",
    "PredictResult",
    "PredictionClient",
    "ServingError",
    "list_models",
    "list_versions",
    "publish_version",
    "read_models_config",
    "remove_label",
    "remove_version",
    "served_version",
    "set_label",
    "write_models_config",
]

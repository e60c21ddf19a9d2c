"""Model serving: TF Serving layout (:mod:`serving.layout`), a TF-Serving-compatible server
speaking TF Serving's REST API (:mod:`serving.server`, imports FastAPI; TensorFlow only when
loading a model) and its gRPC API (:mod:`serving.grpc_server`), the classify/regress and
signature logic they share (:mod:`serving.inference`), and REST and gRPC clients
(:mod:`serving.client`).

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

"""Model serving: TF Serving layout (:mod:`serving.layout`), a TF-Serving-compatible REST
server (:mod:`serving.server`, imports FastAPI; TensorFlow only when loading a model) and a
REST client (:mod:`serving.client`).

Importing this package does not import TensorFlow or FastAPI.
"""

from serving.client import PredictionClient, PredictResult, ServingError
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

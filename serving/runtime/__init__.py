"""The serving runtime, protocol-neutral: servable loading (:mod:`~serving.runtime.servable`),
the version manager reconciling ``models.config`` (:mod:`~serving.runtime.registry`),
signatures (:mod:`~serving.runtime.signatures`), predict (:mod:`~serving.runtime.predict`),
classify/regress (:mod:`~serving.runtime.examples`), entity keys from the online store
(:mod:`~serving.runtime.online_features`) and warm-up (:mod:`~serving.runtime.warmup`).

Depends on :mod:`serving.api`, :mod:`serving.codec` and :mod:`serving.layout`; never on the
REST or gRPC front ends. Importing it does not import TensorFlow.
"""

from serving.runtime.examples import classify, regress
from serving.runtime.predict import ModelPolicy, entity_to_strip, predict_json, run_predict_request
from serving.runtime.registry import ModelRegistry
from serving.runtime.servable import Servable, load_servable
from serving.runtime.signatures import get_signature, run_signature

__all__ = [
    "ModelPolicy",
    "ModelRegistry",
    "Servable",
    "classify",
    "entity_to_strip",
    "get_signature",
    "load_servable",
    "predict_json",
    "regress",
    "run_predict_request",
    "run_signature",
]

"""One loaded model version: :func:`load_servable` loads a SavedModel with
``tf.saved_model.load`` and indexes its signatures (input specs, signature defs as JSON for the
REST metadata route and as protos for gRPC ``GetModelMetadata``).

TensorFlow is imported inside :func:`load_servable` (the first model load), not by this import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving import layout
from serving.api.constants import PREDICT_METHOD

__all__ = ["Servable", "load_servable"]


@dataclass
class Servable:
    """One loaded model version.

    ``signature_defs`` is the JSON form of the SavedModel's signature defs (what TF
    Serving's metadata API returns), ``signature_def_protos`` the same as
    ``tensorflow.SignatureDef`` protos (for the gRPC ``GetModelMetadata``).
    """

    name: str
    version: int
    path: Path
    model: Any
    signatures: dict[str, Any]
    input_specs: dict[str, dict[str, Any]]  # signature -> input name -> tf.TensorSpec
    signature_defs: dict[str, Any]  # JSON form, as TF Serving's metadata API returns it
    signature_def_protos: dict[str, Any] = field(default_factory=dict)


def _signature_def_protos_from_pb(path: Path) -> dict[str, Any] | None:
    """Signature defs exactly as stored in saved_model.pb (TF Serving's metadata source)."""
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / layout.SAVED_MODEL_PB).read_bytes())
    except Exception:  # metadata is best effort
        return None
    graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags] or list(
        proto.meta_graphs
    )
    if not graphs:
        return None
    return dict(sorted(graphs[0].signature_def.items()))


def _signature_def_json(proto: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(
        proto, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _tensor_info(spec: Any, name: str) -> dict[str, Any]:
    from tensorflow.core.framework import types_pb2

    shape = spec.shape
    if shape.rank is None:
        tensor_shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        tensor_shape = {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape.as_list()],
            "unknown_rank": False,
        }
    return {
        "dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
        "tensor_shape": tensor_shape,
        "name": name,
    }


def _derived_signature_def(fn: Any) -> dict[str, Any]:
    """Fallback metadata built from a concrete function's structured signature."""
    inputs = {k: _tensor_info(s, f"{k}:0") for k, s in fn.structured_input_signature[1].items()}
    outs = fn.structured_outputs
    outputs = (
        {k: _tensor_info(s, f"{k}:0") for k, s in outs.items()} if isinstance(outs, dict) else {}
    )
    return {"inputs": inputs, "outputs": outputs, "method_name": PREDICT_METHOD}


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load ``path`` with ``tf.saved_model.load`` and index its signatures."""
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.protobuf import meta_graph_pb2

    from serving.runtime.signatures import SignatureFunction

    model = tf.saved_model.load(str(path))
    signatures = {key: SignatureFunction(fn) for key, fn in model.signatures.items()}
    input_specs = {key: dict(fn.structured_input_signature[1]) for key, fn in signatures.items()}
    protos = _signature_def_protos_from_pb(path) or {}
    for key, fn in signatures.items():
        if key not in protos:
            protos[key] = json_format.ParseDict(
                _derived_signature_def(fn), meta_graph_pb2.SignatureDef()
            )
    protos = dict(sorted(protos.items()))
    signature_defs = {key: _signature_def_json(p) for key, p in protos.items()}
    return Servable(name, version, path, model, signatures, input_specs, signature_defs, protos)

"""JSON objects <-> ``tf.train.Example``: the one conversion, as TF Serving's REST API does it.

Values: JSON floats -> ``float_list`` (refused when beyond float32's range: TF Serving's "loss of
precision"), integers and booleans -> ``int64_list`` (refused outside int64), strings and
``{"b64": ...}`` -> ``bytes_list``; a list holds several values of one kind. The client may
also pass Python ``bytes`` and numpy scalars/arrays. Non-finite floats are refused unless
``allow_non_finite``. Errors are ApiError INVALID_ARGUMENT (400) with TF Serving's wording.

TensorFlow's ``example_pb2`` is imported inside the functions (it loads TensorFlow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.api.errors import ApiError
from serving.codec.b64 import bytes_to_json, decode_b64, is_b64

__all__ = ["example_from", "example_to_row", "examples_from_body", "merge_context"]

_FLOAT32_MAX = 3.4028234663852886e38


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _value(name: str, value: Any, allow_non_finite: bool) -> tuple[str, Any]:
    """(kind, converted) of one feature value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "int64", int(value)
    if isinstance(value, str):
        return "bytes", value.encode("utf-8")
    if isinstance(value, bytes):
        return "bytes", value
    if isinstance(value, dict) and set(value) == {"b64"}:
        if not is_b64(value):
            raise ApiError(400, f"Feature: {name}: Unable to base64 decode")
        try:
            return "bytes", decode_b64(value, f"Feature: {name}")
        except ApiError as exc:
            raise ApiError(400, f"Feature: {name}: Unable to base64 decode") from exc
    if isinstance(value, float):
        if not math.isfinite(value):
            if not allow_non_finite:
                raise ApiError(
                    400,
                    f"Feature: {name} has a non-finite value {value}; this model does not "
                    "accept non-finite values",
                )
        elif abs(value) > _FLOAT32_MAX:
            raise ApiError(
                400, f"Cannot convert JSON value: {value} to float without loss of precision."
            )
        return "float", value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ApiError(400, f"Feature: {name} has an integer out of the int64 range: {value}")
        return "int64", value
    raise ApiError(
        400, f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
    )


def example_from(obj: Any, what: str = "Example", *, allow_non_finite: bool = False) -> Any:
    """A ``tf.train.Example`` from a mapping feature -> value|list (an Example passes as is)."""
    from tensorflow.core.example import example_pb2

    if isinstance(obj, example_pb2.Example):
        return obj
    if not isinstance(obj, Mapping):
        raise ApiError(400, f"{what} must be JSON object but got JSON {_json_type(obj)}")
    example = example_pb2.Example()
    for name, content in obj.items():
        if isinstance(content, np.ndarray):
            content = content.tolist()
        kind: str | None = None
        values: list[Any] = []
        for item in content if isinstance(content, list | tuple) else [content]:
            this, converted = _value(name, item, allow_non_finite)
            if kind is None:
                kind = this
            elif kind != this:
                raise ApiError(
                    400, f"Unexpected element type in feature: {name} expecting type: {kind}"
                )
            values.append(converted)
        feature = example.features.feature[name]
        if kind is not None:
            getattr(feature, f"{kind}_list").value.extend(values)
    return example


def merge_context(context: Any | None, examples: Sequence[Any]) -> list[Any]:
    """Each example merged with ``context`` (both ``tf.train.Example``); example wins."""
    if context is None or not context.features.feature:
        return list(examples)
    merged = []
    for example in examples:
        out = type(context)()
        out.CopyFrom(context)
        for name, feature in example.features.feature.items():
            out.features.feature[name].CopyFrom(feature)
        merged.append(out)
    return merged


def examples_from_body(
    payload: Any, method: str, *, allow_non_finite: bool = False
) -> tuple[str | None, list[Any], list[dict[str, Any]]]:
    """Parse a REST classify/regress body ``{"signature_name"?, "context"?, "examples"}``.

    Returns ``(signature_name, examples, rows)``: the ``tf.train.Example`` protos already
    merged with the context, and the same examples as JSON objects (for the request log).
    Raises ApiError(400) for a malformed body.
    """
    if not isinstance(payload, dict):
        raise ApiError(400, "Request body must be a JSON object")
    signature_name = payload.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise ApiError(400, "'signature_name' key must be a string value.")
    if "examples" not in payload:
        raise ApiError(
            400, f"When method is {method}, key 'examples' is expected and was not found"
        )
    unknown = set(payload) - {"signature_name", "context", "examples"}
    if unknown:
        raise ApiError(400, f"Unknown request keys: {', '.join(sorted(unknown))}")
    raw_examples = payload["examples"]
    if not isinstance(raw_examples, list):
        raise ApiError(400, "Expecting 'examples' value to be an list/array")
    if not raw_examples:
        raise ApiError(400, "'examples' value is an empty array")
    raw_context = payload.get("context")
    context = (
        example_from(raw_context, "Context", allow_non_finite=allow_non_finite)
        if "context" in payload
        else None
    )
    examples = [
        example_from(e, f"Example {i}", allow_non_finite=allow_non_finite)
        for i, e in enumerate(raw_examples)
    ]
    rows = [{**(raw_context or {}), **e} for e in raw_examples]
    return signature_name, merge_context(context, examples), rows


def example_to_row(example: Any) -> dict[str, Any]:
    """A ``tf.train.Example`` as a JSON object (for the request log): one value per
    feature when it has one, else a list; bytes as text, or ``{"b64": ...}`` if not UTF-8."""
    row: dict[str, Any] = {}
    for name, feature in sorted(example.features.feature.items()):
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if kind == "bytes_list":
            values = [bytes_to_json(v) for v in values]
        row[name] = values[0] if len(values) == 1 else values
    return row

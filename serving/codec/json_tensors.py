"""TF Serving's REST predict format <-> arrays: the one JSON row/columnar decoder.

* :func:`decode_predict` splits a predict body ``{"signature_name"?, "instances"|"inputs"}``
  into named columns of JSON values (row format: one value per instance; a lone input may be
  sent without its name; ``{"b64": ...}`` is a value, not a name).
* :func:`to_array` converts one column to a numpy array of a signature input's dtype, checking
  type, range and shape. A JSON null is a missing value where the platform's models impute one:
  NaN for a floating input, ``b""`` for a string input; for integer and bool inputs it stays a
  400. Non-finite floats (``1e999``, or NaN/Infinity when the parser let them through) are
  refused unless ``allow_non_finite``.
* :func:`encode_predict` builds the ``{"predictions"}`` / ``{"outputs"}`` answer;
  :func:`to_json_value` turns an output array into JSON (bytes as text or ``{"b64"}``).
* :func:`strip_entity` moves a pipeline's entity column out of a predict body.

``spec`` arguments are duck-typed ``tf.TensorSpec`` (``dtype`` with ``name``, ``is_floating``,
``is_integer``, ``is_bool``, ``as_numpy_dtype``; ``shape.is_compatible_with``): no TensorFlow
import here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.api.errors import ApiError
from serving.codec.b64 import bytes_to_json, decode_b64

__all__ = [
    "PredictColumns",
    "decode_predict",
    "shape_fits",
    "encode_predict",
    "strip_entity",
    "to_array",
    "to_json_value",
]


@dataclass(frozen=True)
class PredictColumns:
    """A decoded predict body: ``fmt`` (``"instances"`` or ``"inputs"``), the request's
    instances/inputs as sent (for the request log), the columns by input name and, for the
    row format, the number of rows."""

    fmt: str
    signature_name: str | None
    request_inputs: Any
    columns: dict[str, Any]
    n_rows: int | None


def signature_name_of(payload: Any) -> str | None:
    """The body's ``signature_name`` (None when absent); ApiError(400) if not a string."""
    if not isinstance(payload, dict):
        raise ApiError(400, "Request body must be a JSON object")
    name = payload.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "'signature_name' key must be a string value.")
    return name


def _named(value: Any, names: list[str]) -> bool:
    """Whether a row/columns value is a dict of named inputs (vs. a lone b64 value)."""
    return isinstance(value, dict) and not (
        isinstance(value, dict) and set(value) == {"b64"} and len(names) == 1 and names[0] != "b64"
    )


def decode_predict(payload: Any, names: list[str]) -> PredictColumns:
    """Split a predict body into columns for the signature inputs ``names`` (sorted).

    Raises ApiError(400) for both or neither of instances/inputs, unknown keys, missing or
    unknown inputs, and instances that are not objects for a several-input signature.
    """
    signature_name = signature_name_of(payload)
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise ApiError(400, "Request must contain exactly one of 'instances' or 'inputs'")
    unknown_keys = set(payload) - {"signature_name", "instances", "inputs"}
    if unknown_keys:
        raise ApiError(400, f"Unknown request keys: {', '.join(sorted(unknown_keys))}")
    if has_instances:
        rows = payload["instances"]
        if not isinstance(rows, list) or not rows:
            raise ApiError(400, "'instances' must be a non-empty list")
        if _named(rows[0], names):
            wanted = set(names)
            for i, row in enumerate(rows):
                if type(row) is not dict:
                    raise ApiError(400, f"Instance {i} must be an object of named inputs")
                if row.keys() != wanted:
                    _row_keys_error(i, row, names)
            columns = {n: [row[n] for row in rows] for n in names}
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise ApiError(
                400,
                f"Instances must be objects of named inputs ({', '.join(names)}) "
                "for a signature with several inputs",
            )
        return PredictColumns("instances", signature_name, rows, columns, len(rows))
    inputs = payload["inputs"]
    if _named(inputs, names):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ApiError(400, f"Missing input(s): {', '.join(missing)}")
        extra = sorted(set(inputs) - set(names))
        if extra:
            raise ApiError(
                400, f"Unknown input(s): {', '.join(extra)} (signature inputs: {', '.join(names)})"
            )
        columns = dict(inputs)
    elif len(names) == 1:
        columns = {names[0]: inputs}
    else:
        raise ApiError(400, f"'inputs' must be an object with keys {', '.join(names)}")
    return PredictColumns("inputs", signature_name, inputs, columns, None)


def _row_keys_error(i: int, row: Mapping[str, Any], names: list[str]) -> None:
    missing = [n for n in names if n not in row]
    if missing:
        raise ApiError(400, f"Instance {i} is missing input(s): {', '.join(missing)}")
    extra = sorted(set(row) - set(names))
    raise ApiError(
        400,
        f"Instance {i} has unknown input(s): {', '.join(extra)} "
        f"(signature inputs: {', '.join(names)})",
    )


def strip_entity(payload: dict[str, Any], entity: str) -> tuple[Any, list[Any] | None]:
    """``payload`` without the column ``entity`` (rows of ``instances`` or a column of
    ``inputs``) and the keys it held (None for a row without it); unchanged and None when no
    row carries it."""
    rows, columns = payload.get("instances"), payload.get("inputs")
    if isinstance(rows, list) and any(isinstance(r, dict) and entity in r for r in rows):
        keys = [r.get(entity) if isinstance(r, dict) else None for r in rows]
        stripped = [
            {k: v for k, v in r.items() if k != entity} if isinstance(r, dict) else r for r in rows
        ]
        return {**payload, "instances": stripped}, keys
    if isinstance(columns, dict) and entity in columns and len(columns) > 1:
        keys = columns[entity]
        rest = {k: v for k, v in columns.items() if k != entity}
        return {**payload, "inputs": rest}, keys if isinstance(keys, list) else [keys]
    return payload, None


# --------------------------------------------------------------------------- values -> arrays


def _shape_and_leaves(value: Any, name: str) -> tuple[tuple[int, ...], list[Any]]:
    """Shape of a rectangular nested list and its leaves; ApiError(400) if ragged."""
    if not isinstance(value, list):
        return (), [value]
    if not value:
        return (0,), []
    shapes, leaves = [], []
    for item in value:
        shape, sub = _shape_and_leaves(item, name)
        shapes.append(shape)
        leaves.extend(sub)
    if any(s != shapes[0] for s in shapes):
        raise ApiError(400, f"Input '{name}': ragged lists are not supported")
    return (len(value), *shapes[0]), leaves


def _to_bytes(leaf: Any, name: str) -> bytes:
    if isinstance(leaf, str):
        return leaf.encode("utf-8")
    if isinstance(leaf, dict) and set(leaf) == {"b64"}:
        if not isinstance(leaf["b64"], str):
            raise ApiError(400, f"Input '{name}': invalid base64 value")
        return decode_b64(leaf, f"Input '{name}'")
    raise ApiError(400, f"Input '{name}': expected a string, got {type(leaf).__name__}")


def _nulls_to_nan(value: Any) -> Any:
    if isinstance(value, list):
        return [_nulls_to_nan(item) for item in value]
    return math.nan if value is None else value


def _has_null(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_null(item) for item in value)
    return value is None


def _kind(kind: str) -> str:
    return {"U": "strings", "O": "mixed, nested or null values", "b": "booleans"}.get(
        kind, "numbers"
    )


def to_array(value: Any, spec: Any, name: str, *, allow_non_finite: bool = False) -> np.ndarray:
    """A JSON value as a numpy array of ``spec.dtype``, checking type, range and shape."""
    dtype = spec.dtype
    if dtype.name == "string" and type(value) is list and all(type(v) is str for v in value):
        # the common case, a column of plain strings: no walk for shape and leaves
        array = np.array([v.encode("utf-8") for v in value], dtype=object)
    elif dtype.name == "string":
        shape, leaves = _shape_and_leaves(value, name)
        array = np.array(
            [b"" if leaf is None else _to_bytes(leaf, name) for leaf in leaves], dtype=object
        ).reshape(shape)
    elif dtype.is_bool or dtype.is_integer or dtype.is_floating:
        raw = _asarray(value, name)
        null_mask = None
        if dtype.is_floating and raw.dtype.kind == "O" and _has_null(value):
            null_mask = np.asarray(_null_flags(value), dtype=bool)
            raw = _asarray(_nulls_to_nan(value), name)
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            array = _typed(raw, dtype, name).astype(dtype.as_numpy_dtype)
        if dtype.is_floating and not allow_non_finite:
            bad = ~np.isfinite(array)
            if null_mask is not None and null_mask.shape == bad.shape:
                bad &= ~null_mask
            if bad.any():
                raise ApiError(
                    400,
                    f"Input '{name}': NaN, Infinity or a number out of the {dtype.name} range; "
                    "this model does not accept non-finite values",
                )
    else:
        raise ApiError(400, f"Input '{name}': unsupported input dtype {dtype.name}")
    if not shape_fits(spec, array.shape):
        raise ApiError(
            400, f"Input '{name}': shape {list(array.shape)} is incompatible with {spec.shape}"
        )
    return array


#: id(spec) -> (spec, its dimensions): by identity, as a spec's own hash costs a serialization
_DIMS: dict[int, tuple[Any, tuple[int | None, ...] | None]] = {}


def _spec_dims(spec: Any) -> tuple[int | None, ...] | None:
    """A spec's dimensions (None: unknown rank), read once per spec object."""
    hit = _DIMS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    shape = spec.shape
    dims = None if shape.rank is None else tuple(shape.as_list())
    if len(_DIMS) >= 4096:  # specs of unloaded versions: start again
        _DIMS.clear()
    _DIMS[id(spec)] = (spec, dims)
    return dims


def shape_fits(spec: Any, shape: tuple[int, ...]) -> bool:
    """``spec.shape.is_compatible_with(shape)`` for a concrete numpy shape, without building a
    TensorShape per call (≈8 % of a 64-row request's CPU when it did)."""
    dims = _spec_dims(spec)
    if dims is None:
        return True
    return len(dims) == len(shape) and all(
        d is None or d == n for d, n in zip(dims, shape, strict=True)
    )


def _null_flags(value: Any) -> Any:
    """``value`` with True where it holds a null, False elsewhere (same nesting)."""
    if isinstance(value, list):
        return [_null_flags(item) for item in value]
    return value is None


def _asarray(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"Input '{name}': ragged or invalid values") from exc


def _typed(raw: np.ndarray, dtype: Any, name: str) -> np.ndarray:
    kind = raw.dtype.kind
    if dtype.is_bool:
        ok = kind == "b"
    elif dtype.is_integer:
        ok = kind in "iu" or (kind == "f" and bool(np.all(np.mod(raw, 1) == 0)))
        if not ok and kind == "f":
            raise ApiError(400, f"Input '{name}': {dtype.name} input got non-integer numbers")
        if ok and raw.size:
            info = np.iinfo(dtype.as_numpy_dtype)
            if not (info.min <= raw.min() and raw.max() <= info.max):
                raise ApiError(400, f"Input '{name}': values out of range for {dtype.name}")
    else:
        ok = kind in "iuf"
    if not ok:
        raise ApiError(400, f"Input '{name}': {dtype.name} input got {_kind(kind)}")
    return raw


# --------------------------------------------------------------------------- arrays -> JSON


def to_json_value(array: Any) -> Any:
    """numpy output -> JSON value; bytes become text, or {"b64": ...} if not UTF-8."""
    if array.dtype.kind in "OSa":

        def conv(x: Any) -> Any:
            if isinstance(x, list):
                return [conv(i) for i in x]
            if isinstance(x, bytes):
                return bytes_to_json(x)
            return x

        return conv(array.tolist())
    return array.tolist()


def encode_predict(outputs: Mapping[str, Any], n_rows: int | None) -> dict[str, Any]:
    """The REST answer: ``{"predictions": ...}`` (row format, ``n_rows`` given) or
    ``{"outputs": ...}``; a single output's values directly, else per-output."""
    if n_rows is not None:
        for key, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != n_rows:
                raise ApiError(
                    400,
                    f"Output '{key}' has shape {list(array.shape)}, which does not have the "
                    f"batch size {n_rows} of the instances; use the 'inputs' format",
                )
        per_output = {k: to_json_value(v) for k, v in outputs.items()}
        if len(per_output) == 1:
            (values,) = per_output.values()
            return {"predictions": values}
        keys = list(per_output)
        return {"predictions": [{k: per_output[k][i] for k in keys} for i in range(n_rows)]}
    columns_out = {k: to_json_value(v) for k, v in outputs.items()}
    if len(columns_out) == 1:
        (values,) = columns_out.values()
        return {"outputs": values}
    return {"outputs": columns_out}

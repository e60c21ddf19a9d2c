"""numpy <-> ``tensorflow.TensorProto`` for the gRPC client and server.

Same results as ``tf.make_tensor_proto`` / ``tf.make_ndarray`` (which remain the fallback
for anything unusual), with fast paths for what prediction requests carry: numeric arrays
travel as ``tensor_content`` (raw little-endian bytes, as ``tf.make_tensor_proto`` writes
them) and strings as ``string_val``. ``to_ndarray`` also reads the repeated ``*_val``
fields, including TensorFlow's rule that fewer values than elements repeat the last one.

Importing this module imports numpy only; the functions import TensorFlow's protos (which
load TensorFlow) on first use.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = ["TensorProtoError", "to_ndarray", "to_tensor_proto"]

# DataType enum value -> (numpy dtype, repeated field holding the values).
_NUMERIC: dict[int, tuple[Any, str]] = {
    1: (np.float32, "float_val"),  # DT_FLOAT
    2: (np.float64, "double_val"),  # DT_DOUBLE
    3: (np.int32, "int_val"),  # DT_INT32
    4: (np.uint8, "int_val"),  # DT_UINT8
    5: (np.int16, "int_val"),  # DT_INT16
    6: (np.int8, "int_val"),  # DT_INT8
    9: (np.int64, "int64_val"),  # DT_INT64
    10: (np.bool_, "bool_val"),  # DT_BOOL
    17: (np.uint16, "int_val"),  # DT_UINT16
    22: (np.uint32, "uint32_val"),  # DT_UINT32
    23: (np.uint64, "uint64_val"),  # DT_UINT64
}
_DT_STRING = 7
_ENUM_FOR_NUMPY = {np.dtype(t): enum for enum, (t, _) in _NUMERIC.items()}
_LITTLE_ENDIAN = sys.byteorder == "little"


class TensorProtoError(ValueError):
    """A TensorProto that cannot be decoded (bad shape, size or content)."""


def _tf_protos() -> Any:
    from tensorflow.core.framework import tensor_pb2

    return tensor_pb2


def to_tensor_proto(values: Any, dtype: int | None = None) -> Any:
    """A TensorProto of ``values`` (array-like) as DataType ``dtype`` (enum; None: infer).

    Strings (``str`` are UTF-8 encoded) for DT_STRING; numeric values are converted with
    numpy to the dtype (raising ValueError/TypeError when they cannot be).
    """
    tensor_pb2 = _tf_protos()
    if isinstance(values, tensor_pb2.TensorProto):
        return values
    if dtype == _DT_STRING or (
        dtype is None and isinstance(values, np.ndarray) and values.dtype.kind in "OSU"
    ):
        array = np.asarray(values, dtype=object)
        proto = tensor_pb2.TensorProto(dtype=_DT_STRING)
        proto.tensor_shape.dim.extend(_dims(array.shape))
        proto.string_val.extend(_as_bytes(v) for v in array.reshape(-1))
        return proto
    if dtype in _NUMERIC or (
        dtype is None and isinstance(values, np.ndarray) and values.dtype in _ENUM_FOR_NUMPY
    ):
        np_dtype = _NUMERIC[dtype][0] if dtype is not None else values.dtype
        array = np.asarray(values, dtype=np_dtype)
        if array.dtype.kind != "b" and not _LITTLE_ENDIAN:  # pragma: no cover
            array = array.astype(array.dtype.newbyteorder("<"))
        proto = tensor_pb2.TensorProto(
            dtype=dtype if dtype is not None else _ENUM_FOR_NUMPY[array.dtype],
            tensor_content=np.ascontiguousarray(array).tobytes(),
        )
        proto.tensor_shape.dim.extend(_dims(array.shape))
        return proto
    import tensorflow as tf

    return tf.make_tensor_proto(values, dtype=tf.dtypes.as_dtype(dtype) if dtype else None)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")


def _dims(shape: tuple[int, ...]) -> list[Any]:
    from tensorflow.core.framework import tensor_shape_pb2

    return [tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]


def to_ndarray(proto: Any, max_elements: int | None = None) -> Any:
    """The numpy array of a TensorProto (strings as an object array of bytes).

    Raises TensorProtoError for an unknown rank, a negative dimension, more than
    ``max_elements`` elements, or content that does not match the shape.
    """
    if proto.tensor_shape.unknown_rank:
        raise TensorProtoError("tensor shape has unknown rank")
    dims = [int(d.size) for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise TensorProtoError(f"tensor shape {dims} has a negative dimension")
    n = math.prod(dims)
    if max_elements is not None and n > max_elements:
        raise TensorProtoError(f"{n} elements exceed the limit of {max_elements}")
    dtype = int(proto.dtype)
    if dtype == _DT_STRING and not proto.tensor_content:
        values = list(proto.string_val)
        if len(values) == n:
            array = np.empty(n, dtype=object)
            array[:] = values
            return array.reshape(dims)
    elif dtype in _NUMERIC:
        np_dtype, field = _NUMERIC[dtype]
        if proto.tensor_content:
            content = proto.tensor_content
            if len(content) != n * np.dtype(np_dtype).itemsize:
                raise TensorProtoError(
                    f"tensor_content has {len(content)} bytes, but shape {dims} of "
                    f"{np.dtype(np_dtype).name} needs {n * np.dtype(np_dtype).itemsize}"
                )
            return np.frombuffer(content, dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(dims)
        values = getattr(proto, field)
        if len(values) == n:
            return np.asarray(values, dtype=np_dtype).reshape(dims)
        if len(values) > n:
            raise TensorProtoError(f"{len(values)} values for shape {dims}")
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # noqa: BLE001 - anything undecodable is the caller's error
        raise TensorProtoError(f"invalid TensorProto: {exc}") from exc

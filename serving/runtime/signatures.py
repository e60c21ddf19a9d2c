"""Signature lookup and calls on a loaded :class:`~serving.runtime.servable.Servable`.

TensorFlow errors keep their canonical code (``tf.errors`` codes are gRPC's status codes): a bad
value is INVALID_ARGUMENT (400), as are the ValueError/TypeError a concrete function raises for
unusable arguments. TensorFlow is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.api.constants import DEFAULT_SIGNATURE
from serving.api.errors import ApiError, code_name
from serving.runtime.servable import Servable

__all__ = ["get_signature", "run_signature", "to_tensor"]


def get_signature(
    servable: Servable, signature_name: str | None
) -> tuple[str, Any, dict[str, Any], dict[str, Any]]:
    """``(key, concrete_function, input_specs, signature_def_json)`` of a signature.

    An empty/None name means ``serving_default``. Raises ApiError(400) if it is missing.
    """
    key = signature_name or DEFAULT_SIGNATURE
    fn = servable.signatures.get(key)
    if fn is None:
        raise ApiError(
            400,
            f"Serving signature name: '{key}' not found in signature def "
            f"(available: {', '.join(sorted(servable.signatures)) or 'none'})",
        )
    return key, fn, servable.input_specs[key], servable.signature_defs.get(key) or {}


def to_tensor(array: Any, spec: Any) -> Any:
    """A numpy array (already of the input's dtype and shape) as a tensor for ``spec``."""
    import tensorflow as tf

    return tf.constant(array, dtype=spec.dtype)


def run_signature(fn: Any, tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Call a signature function with named tensors; returns ``{output: numpy array}``."""
    import tensorflow as tf

    try:
        result = fn(**tensors)
    except tf.errors.OpError as exc:
        code = code_name(int(exc.error_code))
        raise ApiError.of(code, f"{type(exc).__name__}: {exc.message}") from exc
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Mapping):
        result = {"output_0": result}
    return {k: v.numpy() for k, v in result.items()}

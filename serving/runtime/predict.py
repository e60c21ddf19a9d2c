"""Protocol-neutral predict: REST bodies (:func:`predict_json`) and ``PredictRequest`` protos
(:func:`run_predict_request`, also what warm-up replays) end in the same signature call.

The entity rule (:func:`entity_to_strip`) is the same for both protocols: a request may carry
its pipeline's entity column (a column the model's signature does not take); it is removed
before the model runs and reported so that the request log can record the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.api.errors import ApiError
from serving.api.limits import Limits
from serving.codec.json_tensors import (
    decode_predict,
    encode_predict,
    shape_fits,
    signature_name_of,
    to_array,
)
from serving.codec.tensor_proto import TensorProtoError, to_ndarray
from serving.runtime.batching import Batcher
from serving.runtime.servable import Servable
from serving.runtime.signatures import get_signature, run_signature, to_tensor

__all__ = [
    "ModelPolicy",
    "PreparedPredict",
    "entity_to_strip",
    "predict_json",
    "prepare_predict",
    "run_predict_request",
]


@dataclass(frozen=True)
class ModelPolicy:
    """What a model's pipeline config allows its requests: ``entity`` (the pipeline's entity
    column, or None) and ``allow_non_finite`` (``serving.allow_non_finite``, default false:
    NaN/Infinity in float inputs are refused, not scored)."""

    entity: str | None = None
    allow_non_finite: bool = False


#: a model no pipeline config serves (a plain TF Serving model): TF Serving's documented JSON
#: conformance, NaN and Infinity accepted
DEFAULT_POLICY = ModelPolicy(entity=None, allow_non_finite=True)


def entity_to_strip(
    servable: Servable, signature_name: str | None, policy: ModelPolicy
) -> str | None:
    """The column to remove from a request before the model runs: the pipeline's entity
    column when the signature does not take it (None otherwise, or for an unknown
    signature, which predict itself refuses)."""
    if policy.entity is None:
        return None
    try:
        _key, _fn, specs, _sigdef = get_signature(servable, signature_name)
    except ApiError:
        return None
    return None if policy.entity in specs else policy.entity


def _runner(fn: Any, specs: Mapping[str, Any]) -> Any:
    def run(feed: dict[str, Any]) -> dict[str, Any]:
        return run_signature(fn, {n: to_tensor(a, specs[n]) for n, a in feed.items()})

    return run


def call(
    fn: Any, specs: Mapping[str, Any], arrays: Mapping[str, Any], batcher: Batcher | None
) -> dict[str, Any]:
    """Run a signature on numpy inputs, through ``batcher`` when batching is on."""
    run = _runner(fn, specs)
    return run(dict(arrays)) if batcher is None else batcher.run(fn, specs, arrays, run)


@dataclass(frozen=True)
class PreparedPredict:
    """A REST predict body decoded for its signature: ``fmt`` (``"instances"`` or
    ``"inputs"``), the instances/inputs as sent (for the request log), the signature function,
    its input specs, the input arrays, and the number of rows (row format) for the answer."""

    fmt: str
    request_inputs: Any
    fn: Any
    specs: Mapping[str, Any]
    arrays: dict[str, Any]
    n_rows: int | None

    def answer(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The REST answer for the signature's ``outputs``."""
        return encode_predict(outputs, self.n_rows)

    async def run_batched(self, batcher: Batcher) -> dict[str, Any]:
        """The signature's outputs, batched with other requests, awaited on an event loop."""
        return await batcher.run_async(
            self.fn, self.specs, self.arrays, _runner(self.fn, self.specs)
        )


def prepare_predict(
    servable: Servable, payload: Any, policy: ModelPolicy = DEFAULT_POLICY
) -> PreparedPredict:
    """Decode a REST predict body for ``servable``; ApiError(400) for anything wrong with it."""
    _key, fn, specs, _sigdef = get_signature(servable, signature_name_of(payload))
    names = sorted(specs)
    decoded = decode_predict(payload, names)
    arrays = {
        n: to_array(decoded.columns[n], specs[n], n, allow_non_finite=policy.allow_non_finite)
        for n in names
    }
    return PreparedPredict(decoded.fmt, decoded.request_inputs, fn, specs, arrays, decoded.n_rows)


def predict_json(
    servable: Servable,
    payload: Any,
    policy: ModelPolicy = DEFAULT_POLICY,
    batcher: Batcher | None = None,
) -> tuple[str, Any, dict[str, Any]]:
    """Run one TF-Serving REST predict body against ``servable`` (batched with other requests
    when a ``batcher`` is given).

    Returns ``(format, request_inputs, response_body)`` where format is ``"instances"`` or
    ``"inputs"``. Raises ApiError(400) for anything wrong with the request.
    """
    prepared = prepare_predict(servable, payload, policy)
    outputs = call(prepared.fn, prepared.specs, prepared.arrays, batcher)
    return prepared.fmt, prepared.request_inputs, prepared.answer(outputs)


def _dtype_name(enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"DataType({enum})"


def _array_from_proto(name: str, proto: Any, spec: Any, max_elements: int) -> Any:
    if proto.dtype != spec.dtype.as_datatype_enum:
        raise ApiError(
            400,
            f"Expects input '{name}' to be {_dtype_name(spec.dtype.as_datatype_enum)} "
            f"but {_dtype_name(proto.dtype)} is provided",
        )
    try:
        array = to_ndarray(proto, max_elements)
    except TensorProtoError as exc:
        raise ApiError(400, f"Input '{name}': {exc}") from exc
    if not shape_fits(spec, array.shape):
        raise ApiError(
            400, f"Input '{name}': shape {list(array.shape)} is incompatible with {spec.shape}"
        )
    return array


def _declared_elements(inputs: Mapping[str, Any]) -> int:
    total = 0
    for proto in inputs.values():
        n = 1
        for dim in proto.tensor_shape.dim:
            n *= max(int(dim.size), 0)
        total += n
    return total


def run_predict_request(
    servable: Servable,
    request: Any,
    max_elements: int = Limits.max_elements,
    *,
    allow_non_finite: bool = False,
    batcher: Batcher | None = None,
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Run a ``PredictRequest`` on ``servable`` as TF Serving's Predict does.

    The inputs must name exactly the signature's inputs, with its dtypes (no casting) and
    compatible shapes; ``output_filter`` selects outputs. The elements the inputs declare
    (over all of them) are checked against ``max_elements`` before any is decoded. A
    TensorProto has no null, so NaN is how a missing float value travels (as the platform's
    warm-up records and clients send it); an infinite value is refused unless
    ``allow_non_finite``. Returns ``(signature_key, {output:
    numpy array}, {input: numpy array})``; raises ApiError for a bad request.
    """
    import numpy as np

    key, fn, specs, sigdef = get_signature(servable, request.model_spec.signature_name)
    sent, expected = set(request.inputs), set(specs)
    if sent != expected:
        raise ApiError(
            400,
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
        )
    declared = _declared_elements(request.inputs)
    if declared > max_elements:
        raise ApiError(
            400, f"Request declares {declared} elements, over the limit of {max_elements}"
        )
    output_names = set((sigdef.get("outputs") or {}).keys())
    wanted = list(request.output_filter)
    seen: set[str] = set()
    for alias in wanted:
        if output_names and alias not in output_names:
            raise ApiError(
                400,
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{','.join(sorted(output_names))}}}.",
            )
        if alias in seen:
            raise ApiError(400, f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    arrays = {
        name: _array_from_proto(name, request.inputs[name], specs[name], max_elements)
        for name in specs
    }
    if not allow_non_finite:
        for name, array in arrays.items():
            if array.dtype.kind in "fc" and np.isinf(array).any():
                raise ApiError(
                    400,
                    f"Input '{name}': Infinity; this model does not accept non-finite values",
                )
    outputs = call(fn, specs, arrays, batcher)
    if wanted:
        missing = [a for a in wanted if a not in outputs]
        if missing:
            raise ApiError(400, f"output tensor alias not found: {', '.join(missing)}")
        outputs = {a: outputs[a] for a in wanted}
    return key, outputs, arrays

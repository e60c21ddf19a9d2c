"""``classify`` and ``regress`` on ``tf.Example`` inputs, for REST and gRPC alike.

Examples arrive already merged with their context (:mod:`serving.codec.examples`). Which
signatures may serve them:

* A signature whose ``method_name`` is ``tensorflow/serving/classify`` or
  ``tensorflow/serving/regress`` (TF Serving's own contract): its single input ``inputs``
  receives the serialized examples; classify reads outputs ``classes`` (string ``[N, K]``)
  and/or ``scores`` (float ``[N, K]``), regress reads ``outputs`` (float ``[N]`` or
  ``[N, 1]``). Using one for the other method is an INVALID_ARGUMENT, as in TF Serving.
* A ``tensorflow/serving/predict`` signature (what this platform exports: raw features by
  name), mapped as follows. Inputs: each signature input ``F`` is read from feature ``F`` of
  every example and converted to the input's dtype (float inputs accept float or int64
  features, integer inputs int64 features or integral floats, bool inputs 0/1 int64
  features, string inputs bytes features); an input of shape ``[None]`` takes exactly one
  value per example, ``[None, d1, ...]`` exactly ``d1*...`` values, ``[None, None]`` the same
  number of values in every example. Features the signature does not name are ignored (as
  ``tf.io.parse_example`` does). A signature whose only input is a string named ``inputs``
  or ``examples`` (the TFX convention) that no example names as a feature receives the
  serialized examples instead. Outputs:

  - classify: a float output ``score`` of shape ``[N]`` or ``[N, 1]`` (the probability of
    class "1" of a binary classifier) gives ``[["0", 1 - p], ["1", p]]`` per example;
    otherwise outputs ``scores`` and/or ``classes`` are read as for a classify signature;
  - regress: output ``prediction``, else ``outputs``, else the signature's only output if it
    is floating point, of shape ``[N]`` or ``[N, 1]``;
  - anything else is INVALID_ARGUMENT with TF Serving's text, e.g. ``Expected
    classification signature method_name to be tensorflow/serving/classify. Was:
    tensorflow/serving/predict`` followed by what this mapping needs.

Non-finite float features are refused unless the caller allows them (a model's
``serving.allow_non_finite``). TensorFlow is imported only by the functions that need it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.api.constants import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD
from serving.api.errors import ApiError
from serving.runtime.servable import Servable
from serving.runtime.signatures import get_signature, run_signature

__all__ = ["classify", "regress"]

_SERIALIZED_INPUT_NAMES = ("inputs", "examples")


def _tf() -> Any:
    import tensorflow as tf

    return tf


_KIND_NAMES = {"float_list": "float", "int64_list": "int64", "bytes_list": "bytes"}


def _column_from_examples(
    name: str, spec: Any, examples: Sequence[Any], allow_non_finite: bool
) -> Any:
    tf = _tf()
    dtype = spec.dtype
    shape = spec.shape
    if shape.rank is None or shape.rank == 0:
        raise ApiError(
            400,
            f"Input '{name}' has shape {shape}; classify/regress need a batch dimension",
        )
    inner = shape[1:]
    if inner.is_fully_defined():
        count: int | None = int(inner.num_elements())
    elif inner.rank == 1:
        count = None
    else:
        raise ApiError(400, f"Input '{name}' of shape {shape} cannot be read from tf.Examples")
    if dtype == tf.string:
        accepted = ("bytes_list",)
    elif dtype.is_floating:
        accepted = ("float_list", "int64_list")
    elif dtype.is_integer or dtype.is_bool:
        accepted = ("int64_list", "float_list")
    else:
        raise ApiError(400, f"Input '{name}': unsupported input dtype {dtype.name}")

    values: list[list[Any]] = []
    for i, example in enumerate(examples):
        feature = example.features.feature.get(name)
        kind = feature.WhichOneof("kind") if feature is not None else None
        if kind is None:
            raise ApiError(
                400,
                f"Feature: {name} (data type: {dtype.name}) is required but could not be "
                f"found in example {i}",
            )
        if kind not in accepted:
            raise ApiError(
                400,
                f"Feature: {name} in example {i}: data types don't match. Expected type: "
                f"{dtype.name}, actual type: {_KIND_NAMES[kind]}",
            )
        row = list(getattr(feature, kind).value)
        expected = count if count is not None else (len(values[0]) if values else len(row))
        if len(row) != expected:
            raise ApiError(
                400,
                f"Feature: {name} in example {i}: number of values {len(row)} does not "
                f"match the expected {expected} for input shape {shape}",
            )
        if kind == "float_list" and (dtype.is_integer or dtype.is_bool):
            if not all(float(v).is_integer() for v in row):
                raise ApiError(
                    400, f"Feature: {name} in example {i}: {dtype.name} input got non-integers"
                )
        if dtype.is_bool and not all(v in (0, 1) for v in row):
            raise ApiError(400, f"Feature: {name} in example {i}: bool input needs 0 or 1")
        values.append(row)
    dims = [len(examples), *(inner.as_list() if count is not None else [len(values[0])])]
    if dtype == tf.string:
        array = np.array([v for row in values for v in row], dtype=object).reshape(dims)
    else:
        array = np.asarray(values, dtype=np.float64 if dtype.is_floating else np.int64)
        if dtype.is_floating and not allow_non_finite and not np.isfinite(array).all():
            raise ApiError(
                400,
                f"Feature: {name} has a non-finite value; this model does not accept "
                "non-finite values",
            )
        if dtype.is_integer:
            info = np.iinfo(dtype.as_numpy_dtype)
            if array.size and not (info.min <= array.min() and array.max() <= info.max):
                raise ApiError(400, f"Feature: {name}: values out of range for {dtype.name}")
        array = array.reshape(dims).astype(dtype.as_numpy_dtype)
    return tf.constant(array, dtype=dtype)


def _serialized(examples: Sequence[Any]) -> Any:
    tf = _tf()
    return tf.constant([e.SerializeToString() for e in examples], dtype=tf.string)


def _tensors_for_examples(
    specs: Mapping[str, Any], examples: Sequence[Any], method_name: str, allow_non_finite: bool
) -> dict[str, Any]:
    """Feed for a signature from examples (see the module docstring for the rules)."""
    tf = _tf()
    if method_name in (CLASSIFY_METHOD, REGRESS_METHOD):
        if len(specs) != 1:
            raise ApiError(400, "Expected one input Tensor.")
        (name,) = specs
        if name != "inputs":
            raise ApiError(400, f"No {method_name.rsplit('/', 1)[-1]} inputs found in SignatureDef")
        return {name: _serialized(examples)}
    if len(specs) == 1:
        ((name, spec),) = specs.items()
        if (
            name in _SERIALIZED_INPUT_NAMES
            and spec.dtype == tf.string
            and not any(name in e.features.feature for e in examples)
        ):
            return {name: _serialized(examples)}
    return {
        name: _column_from_examples(name, spec, examples, allow_non_finite)
        for name, spec in specs.items()
    }


def _output_dtypes(sigdef: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v.get("dtype", "")) for k, v in (sigdef.get("outputs") or {}).items()}


def _vector(name: str, array: Any, n: int) -> list[float]:
    """A float output of shape [N] or [N, 1] as a list of N Python floats."""
    if array.dtype.kind != "f":
        raise ApiError(
            400, f"Expected output '{name}' of a floating point type. Got: {array.dtype}"
        )
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise ApiError(
            400,
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {list(array.shape)} for output '{name}'",
        )
    if array.shape[0] != n:
        raise ApiError(400, f"Expected output batch size of {n}. Got: {array.shape[0]}")
    return [float(v) for v in array.reshape(-1)]


def _class_lists(classes: Any | None, scores: Any | None, n: int) -> list[list[list[Any]]]:
    """TF Serving's PostProcessClassificationResult over numpy ``classes``/``scores``."""
    for what, array in (("classes", classes), ("scores", scores)):
        if array is None:
            continue
        if array.ndim != 2:
            raise ApiError(
                400,
                f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)} "
                f"for output '{what}'",
            )
        if array.shape[0] != n:
            raise ApiError(400, f"Expected {what} output batch size of {n}. Got: {array.shape[0]}")
    if classes is not None and classes.dtype.kind not in "OSU":
        raise ApiError(400, f"Expected classes Tensor of DT_STRING. Got: {classes.dtype}")
    if scores is not None and scores.dtype.kind != "f":
        raise ApiError(400, f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise ApiError(
            400,
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}",
        )
    k = (classes if classes is not None else scores).shape[1]
    results = []
    for i in range(n):
        row = []
        for c in range(k):
            label = classes[i, c] if classes is not None else b""
            label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            row.append([label, float(scores[i, c]) if scores is not None else 0.0])
        results.append(row)
    return results


def classify(
    servable: Servable,
    signature_name: str | None,
    examples: Sequence[Any],
    *,
    allow_non_finite: bool = False,
) -> tuple[str, list[list[list[Any]]]]:
    """Classify ``examples`` (``tf.train.Example``, context already merged).

    Returns ``(signature_key, results)`` with one ``[[label, score], ...]`` list per
    example. Raises ApiError (INVALID_ARGUMENT) when the signature cannot classify.
    """
    if not examples:
        raise ApiError(400, "Input is empty")
    key, fn, specs, sigdef = get_signature(servable, signature_name)
    method = str(sigdef.get("method_name") or PREDICT_METHOD)
    outputs = _output_dtypes(sigdef)
    if method == CLASSIFY_METHOD:
        plan = "classes/scores"
    elif method == PREDICT_METHOD and "score" in outputs:
        plan = "score"
    elif method == PREDICT_METHOD and ("scores" in outputs or "classes" in outputs):
        plan = "classes/scores"
    else:
        hint = (
            "; a predict signature can classify when it has a float output 'score' "
            "(binary, labels \"0\" and \"1\") or outputs 'scores'/'classes' "
            f"(signature '{key}' outputs: {', '.join(sorted(outputs)) or 'none'})"
            if method == PREDICT_METHOD
            else ""
        )
        raise ApiError(
            400,
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {method}{hint}",
        )
    result = run_signature(fn, _tensors_for_examples(specs, examples, method, allow_non_finite))
    n = len(examples)
    if plan == "score":
        probabilities = _vector("score", result["score"], n)
        return key, [[["0", 1.0 - p], ["1", p]] for p in probabilities]
    if "classes" not in result and "scores" not in result:
        raise ApiError(
            400,
            "Expected classification signature outputs to contain at least one of "
            f'"classes" or "scores". Outputs were: {", ".join(sorted(result))}',
        )
    return key, _class_lists(result.get("classes"), result.get("scores"), n)


def regress(
    servable: Servable,
    signature_name: str | None,
    examples: Sequence[Any],
    *,
    allow_non_finite: bool = False,
) -> tuple[str, list[float]]:
    """Regress ``examples`` (``tf.train.Example``, context already merged).

    Returns ``(signature_key, values)``, one float per example. Raises ApiError
    (INVALID_ARGUMENT) when the signature cannot regress.
    """
    if not examples:
        raise ApiError(400, "Input is empty")
    key, fn, specs, sigdef = get_signature(servable, signature_name)
    method = str(sigdef.get("method_name") or PREDICT_METHOD)
    outputs = _output_dtypes(sigdef)
    output: str | None = None
    if method == REGRESS_METHOD:
        output = "outputs"
    elif method == PREDICT_METHOD:
        if "prediction" in outputs:
            output = "prediction"
        elif "outputs" in outputs:
            output = "outputs"
        elif len(outputs) == 1 and next(iter(outputs.values())) in (
            "DT_FLOAT",
            "DT_DOUBLE",
            "DT_HALF",
            "DT_BFLOAT16",
        ):
            output = next(iter(outputs))
    if output is None:
        hint = (
            "; a predict signature can regress when it has an output 'prediction' or "
            "'outputs', or a single floating point output "
            f"(signature '{key}' outputs: {', '.join(sorted(outputs)) or 'none'})"
            if method == PREDICT_METHOD
            else ""
        )
        raise ApiError(
            400,
            f"Expected regression signature method_name to be {REGRESS_METHOD}. "
            f"Was: {method}{hint}",
        )
    result = run_signature(fn, _tensors_for_examples(specs, examples, method, allow_non_finite))
    if output not in result:
        raise ApiError(400, f"No regression outputs found in SignatureDef: expected '{output}'")
    return key, _vector(output, result[output], len(examples))

"""Protocol-neutral model execution shared by the REST (:mod:`serving.server`) and gRPC
(:mod:`serving.grpc_server`) front ends: errors with TF Serving's status codes, signature
lookup and calls, and the ``classify`` / ``regress`` APIs on ``tf.Example`` inputs.

Errors: :class:`ApiError` carries a canonical status code name (``NOT_FOUND``,
``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``, ...) and the HTTP status TF Serving's REST
handler maps it to (``ToHTTPStatusCode`` in tensorflow_serving/model_servers/http_server.cc:
INVALID_ARGUMENT, FAILED_PRECONDITION and OUT_OF_RANGE -> 400, NOT_FOUND -> 404,
UNIMPLEMENTED -> 501, UNAVAILABLE -> 503, INTERNAL/UNKNOWN -> 500). Messages are one line.

Classify and regress (``POST /v1/models/<m>:classify|:regress`` and the gRPC
``PredictionService.Classify|Regress``) take a list of ``tf.Example`` (REST: JSON objects
feature -> value|list, converted exactly as TF Serving does: JSON floats -> ``float_list``,
integers and booleans -> ``int64_list``, strings and ``{"b64": ...}`` -> ``bytes_list``),
each merged with the optional ``context`` example (an example's own feature wins over the
context's). Which signatures may serve them:

* A signature whose ``method_name`` is ``tensorflow/serving/classify`` or
  ``tensorflow/serving/regress`` (TF Serving's own contract): its single input ``inputs``
  receives the serialized examples; classify reads outputs ``classes`` (string
  ``[N, K]``) and/or ``scores`` (float ``[N, K]``), regress reads ``outputs`` (float
  ``[N]`` or ``[N, 1]``). Using one for the other method is an INVALID_ARGUMENT, as in TF
  Serving.
* A ``tensorflow/serving/predict`` signature (what this platform exports: raw features by
  name), mapped as follows. Inputs: each signature input ``F`` is read from feature ``F``
  of every example and converted to the input's dtype (float inputs accept float or int64
  features, integer inputs int64 features or integral floats, bool inputs 0/1 int64
  features, string inputs bytes features); an input of shape ``[None]`` takes exactly one
  value per example, ``[None, d1, ...]`` exactly ``d1*...`` values, ``[None, None]`` the
  same number of values in every example. Features the signature does not name are
  ignored (as ``tf.io.parse_example`` does). A signature whose only input is a string
  named ``inputs`` or ``examples`` (the TFX convention) that no example names as a feature
  receives the serialized examples instead. Outputs:

  - classify: a float output ``score`` of shape ``[N]`` or ``[N, 1]`` (the probability of
    class "1" of a binary classifier) gives ``[["0", 1 - p], ["1", p]]`` per example;
    otherwise outputs ``scores`` and/or ``classes`` are read as for a classify signature;
  - regress: output ``prediction``, else ``outputs``, else the signature's only output if
    it is floating point, of shape ``[N]`` or ``[N, 1]``;
  - anything else is INVALID_ARGUMENT with TF Serving's text, e.g. ``Expected
    classification signature method_name to be tensorflow/serving/classify. Was:
    tensorflow/serving/predict`` followed by what this mapping needs.

TensorFlow is imported only by the functions that need it (once a model is loaded).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from serving.server import Servable

__all__ = [
    "CLASSIFY_METHOD",
    "DEFAULT_SIGNATURE",
    "PREDICT_METHOD",
    "REGRESS_METHOD",
    "ApiError",
    "classify",
    "example_to_row",
    "examples_from_json",
    "get_signature",
    "regress",
    "run_signature",
]

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# TF Serving's REST mapping of canonical codes to HTTP (http_server.cc ToHTTPStatusCode).
HTTP_STATUS_FOR_CODE: dict[str, int] = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
CODE_FOR_HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# tensorflow.error.Code numbers (== grpc.StatusCode values) -> names.
_CODE_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_FLOAT32_MAX = 3.4028234663852886e38
_SERIALIZED_INPUT_NAMES = ("inputs", "examples")


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with HTTP ``status_code`` (REST) or as
    the gRPC status ``code`` (a ``grpc.StatusCode`` name) with ``message`` as details.

    ``ApiError(404, msg)`` derives ``code`` from the HTTP status (400 ->
    INVALID_ARGUMENT, 404 -> NOT_FOUND, 5xx -> INTERNAL, ...); :meth:`of` goes the
    other way, using TF Serving's REST mapping.
    """

    def __init__(self, status_code: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = " ".join(str(message).split())  # always one line
        self.code = code or CODE_FOR_HTTP_STATUS.get(
            status_code, "INTERNAL" if status_code >= 500 else "INVALID_ARGUMENT"
        )

    @classmethod
    def of(cls, code: str, message: str) -> ApiError:
        """An error with canonical ``code`` and the HTTP status TF Serving maps it to."""
        return cls(HTTP_STATUS_FOR_CODE.get(code, 500), message, code)

    def __str__(self) -> str:
        return self.message


def _tf() -> Any:
    import tensorflow as tf

    return tf


# --------------------------------------------------------------------------- signatures


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


def run_signature(fn: Any, tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Call a signature function with named tensors; returns ``{output: numpy array}``.

    TensorFlow errors keep their canonical code (a bad value is INVALID_ARGUMENT -> 400),
    as do the ValueError/TypeError a concrete function raises for unusable arguments.
    """
    tf = _tf()
    try:
        result = fn(**tensors)
    except tf.errors.OpError as exc:
        code = _CODE_NAMES.get(int(exc.error_code), "INTERNAL")
        raise ApiError.of(code, f"{type(exc).__name__}: {exc.message}") from exc
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Mapping):
        result = {"output_0": result}
    return {k: v.numpy() for k, v in result.items()}


# --------------------------------------------------------------------------- JSON -> Example


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


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _feature_from_json(name: str, content: Any, feature: Any) -> None:
    """Fill a ``tf.train.Feature`` from a JSON value or list, as TF Serving's REST does."""
    kind: str | None = None
    values: list[Any] = []
    for value in content if isinstance(content, list) else [content]:
        if isinstance(value, bool):
            this, converted = "int64", int(value)
        elif isinstance(value, str):
            this, converted = "bytes", value.encode("utf-8")
        elif _is_b64(value):
            try:
                converted = base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ApiError(400, f"Feature: {name}: Unable to base64 decode") from exc
            this = "bytes"
        elif isinstance(value, float):
            if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
                raise ApiError(
                    400, f"Cannot convert JSON value: {value} to float without loss of precision."
                )
            this, converted = "float", value
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise ApiError(
                    400, f"Feature: {name} has an integer out of the int64 range: {value}"
                )
            this, converted = "int64", value
        else:
            raise ApiError(
                400,
                f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}",
            )
        if kind is None:
            kind = this
        elif kind != this:
            raise ApiError(
                400, f"Unexpected element type in feature: {name} expecting type: {kind}"
            )
        values.append(converted)
    if kind is not None:
        getattr(feature, f"{kind}_list").value.extend(values)


def _example_from_json(obj: Any, what: str) -> Any:
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise ApiError(400, f"{what} must be JSON object but got JSON {_json_type(obj)}")
    example = example_pb2.Example()
    for name, content in obj.items():
        _feature_from_json(name, content, example.features.feature[name])
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


def examples_from_json(
    payload: Any, method: str
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
    context = _example_from_json(raw_context, "Context") if "context" in payload else None
    examples = [_example_from_json(e, f"Example {i}") for i, e in enumerate(raw_examples)]
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
            values = [_bytes_to_json(v) for v in values]
        row[name] = values[0] if len(values) == 1 else values
    return row


def _bytes_to_json(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


# --------------------------------------------------------------------------- Example -> tensors


_KIND_NAMES = {"float_list": "float", "int64_list": "int64", "bytes_list": "bytes"}


def _column_from_examples(name: str, spec: Any, examples: Sequence[Any]) -> Any:
    import numpy as np

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
    specs: Mapping[str, Any], examples: Sequence[Any], method_name: str
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
    return {name: _column_from_examples(name, spec, examples) for name, spec in specs.items()}


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
    servable: Servable, signature_name: str | None, examples: Sequence[Any]
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
    result = run_signature(fn, _tensors_for_examples(specs, examples, method))
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
    servable: Servable, signature_name: str | None, examples: Sequence[Any]
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
    result = run_signature(fn, _tensors_for_examples(specs, examples, method))
    if output not in result:
        raise ApiError(400, f"No regression outputs found in SignatureDef: expected '{output}'")
    return key, _vector(output, result[output], len(examples))

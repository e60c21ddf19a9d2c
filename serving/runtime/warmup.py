"""TF Serving warm-up records: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays up to 1000 ``PredictionLog`` records from that TFRecord file when it loads a
version, so the first real request does not pay for graph tracing. The records are
tensorflow-serving-api protos (``PredictionLog{predict_log{request: PredictRequest}}``) built from
hold-out rows of raw features.

:func:`check_servable` is that load-time check for a loaded version: it replays the records
through the gRPC Predict path (:func:`replay_warmup`) or, without a warm-up file, makes one call of
``serving_default`` (:func:`smoke_call`), and raises :class:`WarmupFailed` (one line) on an error
or a non-finite answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WARMUP_RELPATH = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's cap on replayed warm-up records


class WarmupFailed(ValueError):
    """A loaded version failed its warm-up: an error or a non-finite answer (one-line message)."""


def build_predict_request(
    model_name: str,
    columns: Mapping[str, Any],
    dtypes: Mapping[str, Any] | None = None,
    signature_name: str = "serving_default",
):
    """A ``PredictRequest`` with one TensorProto per named input column.

    ``dtypes`` (input name -> ``tf.DType``, from the signature) must be given for real TF Serving:
    it rejects a DT_DOUBLE tensor for a DT_FLOAT input, and a failed warm-up fails the load.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, values in columns.items():
        dtype = (dtypes or {}).get(name)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
    return request


def write_warmup_file(
    saved_model_dir: str | Path,
    model_name: str,
    batches: Sequence[Mapping[str, Any]],
    dtypes: Mapping[str, Any] | None = None,
) -> Path:
    """Write one warm-up record per batch (columns by input name, cast to ``dtypes``)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    if not batches:
        raise ValueError("no warm-up batches given")
    path = Path(saved_model_dir) / WARMUP_RELPATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for columns in list(batches)[:MAX_RECORDS]:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=build_predict_request(model_name, columns, dtypes)
                )
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(saved_model_dir: str | Path) -> list[Any]:
    """The ``PredictionLog`` records of a version's warm-up file (for checks and tests)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = []
    for raw in tf.data.TFRecordDataset(str(Path(saved_model_dir) / WARMUP_RELPATH)):
        records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return records


def _check_finite(outputs: Mapping[str, Any], what: str) -> None:
    import numpy as np

    for name, array in outputs.items():
        values = np.asarray(array)
        if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
            raise WarmupFailed(f"{what}: output {name!r} is NaN or infinite")


def replay_warmup(servable: Any, saved_model_dir: str | Path) -> int:
    """Replay the version's warm-up predict records on ``servable``; return how many ran.

    Each ``predict_log`` record goes through the server's gRPC Predict path
    (:func:`serving.runtime.predict.run_predict_request`: exact dtypes, shapes, signature), as TF
    Serving replays them at load time; other record kinds are skipped. Raises WarmupFailed.
    """
    from serving.api.errors import ApiError
    from serving.runtime.predict import run_predict_request

    replayed = 0
    for index, record in enumerate(read_warmup_file(saved_model_dir)[:MAX_RECORDS]):
        if record.WhichOneof("log_type") != "predict_log":
            continue
        what = f"warm-up record {index + 1}"
        try:
            _key, outputs, _tensors = run_predict_request(servable, record.predict_log.request)
        except ApiError as exc:
            raise WarmupFailed(f"{what} was refused: {exc.message}") from None
        _check_finite(outputs, what)
        replayed += 1
    return replayed


def smoke_call(servable: Any, signature_name: str = "serving_default") -> None:
    """Call ``signature_name`` once on a one-row batch of zeros / empty strings (WarmupFailed)."""
    import numpy as np
    import tensorflow as tf

    from serving.api.errors import ApiError
    from serving.runtime.signatures import get_signature, run_signature

    try:
        _key, fn, specs, _sigdef = get_signature(servable, signature_name)
        tensors = {}
        for name, spec in specs.items():
            dims = spec.shape.as_list() if spec.shape.rank is not None else [1]
            shape = [1 if d is None else d for d in dims]
            value = np.zeros(shape, dtype=object if spec.dtype == tf.string else None)
            if spec.dtype == tf.string:
                value.fill(b"")
            tensors[name] = tf.constant(value, dtype=spec.dtype)
        outputs = run_signature(fn, tensors)
    except ApiError as exc:
        raise WarmupFailed(f"a call of {signature_name} failed: {exc.message}") from None
    _check_finite(outputs, f"a call of {signature_name}")


def check_servable(servable: Any, saved_model_dir: str | Path) -> str:
    """Warm a loaded version up as TF Serving would; return what was checked (WarmupFailed).

    With a warm-up file, every predict record must be answered (:func:`replay_warmup`);
    without one (or with no predict record in it), one ``serving_default`` call must be.
    """
    if (Path(saved_model_dir) / WARMUP_RELPATH).is_file():
        try:
            replayed = replay_warmup(servable, saved_model_dir)
        except WarmupFailed:
            raise
        except Exception as exc:  # an unreadable warm-up file fails the load in TF Serving too
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WarmupFailed(f"unreadable warm-up file: {first}") from None
        if replayed:
            return f"answered {replayed} warm-up request(s)"
    smoke_call(servable)
    return "answered one serving_default call"

"""TF Serving warm-up records: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays up to 1000 ``PredictionLog`` records from that TFRecord file when it loads a
version, so the first real request does not pay for graph tracing. The records are
tensorflow-serving-api protos (``PredictionLog{predict_log{request: PredictRequest}}``) built from
hold-out rows of raw features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WARMUP_RELPATH = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's cap on replayed warm-up records


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
                predict_log=prediction_log_pb2.PredictLog(request=build_predict_request(model_name, columns, dtypes))
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

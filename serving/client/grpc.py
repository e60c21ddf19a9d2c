"""gRPC client for TF Serving's API, built only on tensorflow-serving-api's stubs and protos.

Importing this module does not import gRPC or TensorFlow; constructing a client does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from serving.api.constants import DEFAULT_SIGNATURE
from serving.api.errors import ApiError
from serving.client.common import PredictResult, ServingError, wait_until_available

__all__ = ["GrpcPredictionClient"]


class GrpcPredictionClient:
    """gRPC client for ``target`` (e.g. ``"127.0.0.1:8500"``); usable as a context manager.

    Uses only tensorflow-serving-api's ``PredictionServiceStub`` / ``ModelServiceStub``
    and protos, so it talks to a real TF Serving as well as to :mod:`serving.server`.
    Thread-safe (one channel; calls may run concurrently). ``timeout`` is each RPC's
    deadline in seconds.

    ``predict`` builds one TensorProto per signature input with that input's dtype,
    read once from ``GetModelMetadata`` and cached per (model, version/label, signature)
    — TF Serving does not cast, so a Python float must become DT_FLOAT for a float32
    input. When a cached dtype may be stale (the served version changed) and the server
    answers INVALID_ARGUMENT, the metadata is re-read and the request sent once more.
    """

    def __init__(
        self,
        target: str,
        timeout: float = 10,
        *,
        max_message_bytes: int = 64 * 1024 * 1024,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.target = target
        self.timeout = timeout
        self._grpc = grpc
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                *options,
            ],
        )
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._input_dtypes: dict[tuple[Any, ...], dict[str, int]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> GrpcPredictionClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _fill_spec(
        spec: Any,
        model_name: str,
        version: int | None,
        label: str | None,
        signature_name: str | None = None,
    ) -> None:
        if version is not None and label is not None:
            raise ValueError("pass either version or label, not both")
        spec.name = model_name
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ValueError(f"invalid version {version!r}: must be a non-negative int")
            spec.version.value = version
        elif label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, rpc: Any, request: Any, what: str) -> Any:
        try:
            return rpc(request, timeout=self.timeout)
        except self._grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            raise ServingError(
                f"{what} at {self.target} failed: {name}: {details}", code=name
            ) from exc

    @staticmethod
    def _version(response: Any, requested: int | None) -> int | None:
        spec = response.model_spec
        return int(spec.version.value) if spec.HasField("version") else requested

    def _metadata_proto(self, model_name: str, version: int | None, label: str | None) -> Any:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec, model_name, version, label)
        return self._call(
            self._prediction.GetModelMetadata, request, f"GetModelMetadata {model_name}"
        )

    @staticmethod
    def _signature_defs(response: Any) -> Any:
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" in response.metadata:
            response.metadata["signature_def"].Unpack(signature_defs)
        return signature_defs

    def _dtypes(
        self,
        model_name: str,
        version: int | None,
        label: str | None,
        signature_name: str,
        refresh: bool,
    ) -> tuple[dict[str, int], bool]:
        """Input name -> DataType enum of a signature, and whether it came from the cache."""
        key = (model_name, version, label, signature_name)
        with self._lock:
            cached = self._input_dtypes.get(key)
        if cached is not None and not refresh:
            return cached, True
        signature_defs = self._signature_defs(self._metadata_proto(model_name, version, label))
        if signature_name not in signature_defs.signature_def:
            available = ", ".join(sorted(signature_defs.signature_def)) or "none"
            raise ServingError(
                f"Predict {model_name} at {self.target}: serving signature name: "
                f"'{signature_name}' not found in signature def (available: {available})",
                code="INVALID_ARGUMENT",
            )
        signature = signature_defs.signature_def[signature_name]
        dtypes = {k: int(v.dtype) for k, v in signature.inputs.items()}
        with self._lock:
            self._input_dtypes[key] = dtypes
        return dtypes, False

    @staticmethod
    def _columns(inputs: Any, dtypes: Mapping[str, int]) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        rows = list(inputs)
        if not rows:
            raise ValueError("predict needs at least one instance")
        if all(isinstance(r, Mapping) for r in rows):
            names = list(rows[0])
            for i, row in enumerate(rows):
                if set(row) != set(names):
                    raise ValueError(
                        f"instance {i} has inputs {sorted(row)}, instance 0 has {sorted(names)}"
                    )
            return {n: [row[n] for row in rows] for n in names}
        if len(dtypes) != 1:
            raise ValueError(
                "instances must be dicts of named inputs unless the signature has exactly "
                f"one input (it has: {', '.join(sorted(dtypes)) or 'unknown'})"
            )
        return {next(iter(dtypes)): rows}

    @staticmethod
    def _rows(outputs: Mapping[str, Any]) -> Any:
        """REST-like ``predictions`` from output arrays (row format when possible)."""
        converted = {k: _to_python(v) for k, v in outputs.items()}
        if len(converted) == 1:
            return next(iter(converted.values()))
        sizes = {len(v) if isinstance(v, list) else -1 for v in converted.values()}
        if len(sizes) != 1 or -1 in sizes:
            return converted  # no common batch dimension: columns, as REST "outputs"
        (n,) = sizes
        return [{k: v[i] for k, v in converted.items()} for i in range(n)]

    # ------------------------------------------------------------------ API

    def predict(
        self,
        model_name: str,
        inputs: Sequence[Any] | Mapping[str, Any],
        version: int | None = None,
        label: str | None = None,
        *,
        signature_name: str | None = None,
        output_filter: Sequence[str] | None = None,
    ) -> PredictResult:
        """Predict with the default, a specific, or a labelled version.

        ``inputs``: rows (a list of ``{input: value}``, or of values for a one-input
        signature) or columns (``{input: list | numpy array | TensorProto}``).
        ``predictions`` are as REST's row format; ``outputs`` has the raw arrays.
        """
        from tensorflow_serving.apis import predict_pb2

        from serving.codec.tensor_proto import to_ndarray, to_tensor_proto

        signature = signature_name or DEFAULT_SIGNATURE
        for attempt in range(2):
            dtypes, cached = self._dtypes(model_name, version, label, signature, attempt == 1)
            request = predict_pb2.PredictRequest()
            self._fill_spec(request.model_spec, model_name, version, label, signature_name)
            for name, values in self._columns(inputs, dtypes).items():
                try:
                    proto = to_tensor_proto(values, dtypes.get(name))
                except (TypeError, ValueError) as exc:
                    raise ServingError(
                        f"Predict {model_name}: input '{name}' cannot be sent as the "
                        f"signature's dtype: {exc}",
                        code="INVALID_ARGUMENT",
                    ) from exc
                request.inputs[name].CopyFrom(proto)
            if output_filter:
                request.output_filter.extend(output_filter)
            try:
                response = self._call(self._prediction.Predict, request, f"Predict {model_name}")
            except ServingError as exc:
                if exc.code == "INVALID_ARGUMENT" and cached and attempt == 0:
                    continue  # the served version may have changed its signature: re-read
                raise
            outputs = {k: to_ndarray(v) for k, v in response.outputs.items()}
            return PredictResult(
                predictions=self._rows(outputs),
                model_version=self._version(response, version),
                outputs=outputs,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _input(self, examples: Sequence[Any], context: Any | None) -> Any:
        from tensorflow_serving.apis import input_pb2

        protos = [_example(e) for e in examples]
        if context is None:
            return input_pb2.Input(example_list=input_pb2.ExampleList(examples=protos))
        return input_pb2.Input(
            example_list_with_context=input_pb2.ExampleListWithContext(
                examples=protos, context=_example(context)
            )
        )

    def _examples_call(
        self,
        rpc: str,
        request: Any,
        model_name: str,
        examples: Sequence[Any],
        version: int | None,
        label: str | None,
        context: Any | None,
        signature_name: str | None,
    ) -> Any:
        """Fill a Classification/RegressionRequest and call ``rpc`` (``Classify``/``Regress``)."""
        request.input.CopyFrom(self._input(examples, context))
        self._fill_spec(request.model_spec, model_name, version, label, signature_name)
        return self._call(getattr(self._prediction, rpc), request, f"{rpc} {model_name}")

    def classify(
        self,
        model_name: str,
        examples: Sequence[Any],
        version: int | None = None,
        label: str | None = None,
        *,
        context: Any | None = None,
        signature_name: str | None = None,
    ) -> PredictResult:
        """Classify ``examples`` (dicts feature -> value|list, or ``tf.train.Example``);
        predictions are one ``[[label, score], ...]`` list per example."""
        from tensorflow_serving.apis import classification_pb2

        response = self._examples_call(
            "Classify",
            classification_pb2.ClassificationRequest(),
            model_name,
            examples,
            version,
            label,
            context,
            signature_name,
        )
        results = [
            [[c.label, float(c.score)] for c in classifications.classes]
            for classifications in response.result.classifications
        ]
        return PredictResult(predictions=results, model_version=self._version(response, version))

    def regress(
        self,
        model_name: str,
        examples: Sequence[Any],
        version: int | None = None,
        label: str | None = None,
        *,
        context: Any | None = None,
        signature_name: str | None = None,
    ) -> PredictResult:
        """Regress ``examples`` (dicts feature -> value|list, or ``tf.train.Example``);
        predictions are one float per example."""
        from tensorflow_serving.apis import regression_pb2

        response = self._examples_call(
            "Regress",
            regression_pb2.RegressionRequest(),
            model_name,
            examples,
            version,
            label,
            context,
            signature_name,
        )
        values = [float(r.value) for r in response.result.regressions]
        return PredictResult(predictions=values, model_version=self._version(response, version))

    def model_status(
        self, model_name: str, version: int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        """``GetModelStatus`` as the REST status route's ``model_version_status`` list."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec, model_name, version, label)
        response = self._call(self._models.GetModelStatus, request, f"GetModelStatus {model_name}")
        return json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )["model_version_status"]

    def model_metadata(
        self, model_name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """``GetModelMetadata`` (signature defs) as the REST metadata route's JSON."""
        from google.protobuf import json_format

        response = self._metadata_proto(model_name, version, label)

        def as_dict(message: Any) -> dict[str, Any]:
            return json_format.MessageToDict(
                message,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )

        return {
            "model_spec": as_dict(response.model_spec),
            "metadata": {"signature_def": as_dict(self._signature_defs(response))},
        }

    def wait_until_available(self, model_name: str, timeout_s: float, poll_s: float = 0.5) -> int:
        """Poll until ``model_name`` has an AVAILABLE version; return the default-served one
        (as :meth:`PredictionClient.wait_until_available`; NOT_FOUND, UNAVAILABLE and
        DEADLINE_EXCEEDED count as "not yet")."""
        return wait_until_available(self, self.target, model_name, timeout_s, poll_s)


def _to_python(array: Any) -> Any:
    """numpy -> Python lists/scalars; bytes become str when they are UTF-8."""

    def conv(x: Any) -> Any:
        if isinstance(x, list):
            return [conv(i) for i in x]
        if isinstance(x, bytes):
            try:
                return x.decode("utf-8")
            except UnicodeDecodeError:
                return x
        return x

    return conv(array.tolist())


def _example(value: Any) -> Any:
    """A ``tf.train.Example`` from a dict (feature -> value|list) or an Example, converted as
    TF Serving's REST API does (:func:`serving.codec.examples.example_from`). Raises
    TypeError (not a dict) / ValueError (a value that cannot be a feature)."""
    from serving.codec.examples import example_from

    if not isinstance(value, Mapping) and type(value).__name__ != "Example":
        raise TypeError(
            f"an example must be a dict or tf.train.Example, got {type(value).__name__}"
        )
    try:
        return example_from(value, allow_non_finite=True)
    except ApiError as exc:
        raise ValueError(exc.message) from None

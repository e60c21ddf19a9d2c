"""TF Serving's gRPC services over the runtime, built on tensorflow-serving-api's generated code.

Services (``tensorflow_serving/apis/prediction_service.proto``, ``model_service.proto``):

* ``PredictionService.Predict``: ``PredictRequest.inputs`` are TensorProtos that must name
  exactly the signature's inputs with its dtypes (no casting, as in TF Serving) and compatible
  shapes (:func:`serving.runtime.predict.run_predict_request`); ``output_filter`` selects
  outputs. Entity keys in place of features, and a pipeline's entity column beside them, are
  handled by the runtime's pre-step, the one REST uses
  (:meth:`serving.runtime.online_features.OnlineFeatureSources.apply_to_request`): the
  keys are logged as ``entities``. The response's ``model_spec`` echoes the name,
  the version that answered and the signature key.
* ``PredictionService.Classify`` / ``Regress``: ``input.example_list`` or
  ``input.example_list_with_context`` of ``tf.Example`` (:mod:`serving.runtime.examples`).
* ``PredictionService.GetModelMetadata``: ``metadata_field`` must be ``["signature_def"]``;
  answers a ``SignatureDefMap`` packed in ``metadata["signature_def"]``.
* ``PredictionService.MultiInference``: UNIMPLEMENTED.
* ``ModelService.GetModelStatus``: the REST status route's entries as protos.
* ``ModelService.HandleReloadConfigRequest``: UNIMPLEMENTED (the server re-reads
  ``models.config`` and the model directories every poll instead).

Routing: ``model_spec.version`` or ``model_spec.version_label`` pick a version; neither means
the served one. The methods here are plain functions of the request that raise ApiError;
:mod:`serving.grpc.server` serves them on a ``grpc.aio`` server, turning ApiError into its
status (TF Serving's codes) and anything unexpected into INTERNAL (logged): no request can take
the server down. Their ``context`` is a :class:`CallContext`.

Importing this module imports TensorFlow (tensorflow-serving-api's protos import it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)

from serving.api.errors import ApiError
from serving.api.limits import Limits
from serving.codec.examples import example_to_row, merge_context
from serving.codec.tensor_proto import to_tensor_proto
from serving.runtime.batching import Batcher
from serving.runtime.examples import classify, regress
from serving.runtime.predict import (
    DEFAULT_POLICY,
    ModelPolicy,
    run_predict_request,
)
from serving.runtime.registry import ModelRegistry
from serving.runtime.servable import Servable

__all__ = ["CallContext", "ModelServicer", "PredictionServicer", "request_id_of"]

log = logging.getLogger(__name__)

_SIGNATURE_DEF_FIELD = "signature_def"
_ERROR_CODE_ENUM = (
    get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name["status"]
    .message_type.fields_by_name["error_code"]
    .enum_type
)


def request_id_of(sent: str | None) -> str:
    """The ``x-request-id`` a client sent (1 to 128 letters, digits and ``._:-``), else a new
    uuid4 (the REST rule, :func:`serving.rest.app.request_id_of`, kept apart so that the two
    front ends do not import each other)."""
    import re
    import uuid

    if sent and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", sent):
        return sent
    return uuid.uuid4().hex


def _version_choice(spec: Any) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _examples(input_proto: Any) -> list[Any]:
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return list(input_proto.example_list.examples)
    if kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        return merge_context(with_context.context, with_context.examples)
    raise ApiError(400, "Input is empty")


def _set_model_spec(spec: Any, servable: Any, signature_name: str | None = None) -> None:
    """Echo the model, the version actually used and (if given) the signature."""
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name is not None:
        spec.signature_name = signature_name


def _fill_classifications(result: Any, rows: list[Any]) -> None:
    for row in rows:
        classifications = result.classifications.add()
        for label, score in row:
            classifications.classes.add(label=label, score=score)


def _fill_regressions(result: Any, values: list[Any]) -> None:
    for value in values:
        result.regressions.add(value=value)


class CallContext:
    """What a servicer method sees of its RPC: the invocation metadata and the trailing
    metadata it sets (the serving layer copies them from and to the real context)."""

    __slots__ = ("metadata", "trailing")

    def __init__(self, metadata: Any = ()) -> None:
        self.metadata = metadata
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> Any:
        return self.metadata

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata


class PredictionServicer:
    """``tensorflow.serving.PredictionService`` over a :class:`ModelRegistry`."""

    def __init__(
        self,
        registry: ModelRegistry,
        request_logger: Any | None = None,
        *,
        limits: Limits | None = None,
        online: Any | None = None,
        batcher: Batcher | None = None,
    ) -> None:
        self.registry = registry
        self.batcher = batcher
        self.request_logger = request_logger
        self.max_elements = (limits or Limits()).max_elements
        self.online = online

    def _policy(self, servable: Servable) -> ModelPolicy:
        return self.online.policy(servable.name) if self.online is not None else DEFAULT_POLICY

    # ---------------------------------------------------------------- helpers

    def _resolve(self, request: Any) -> Servable:
        if not request.HasField("model_spec"):
            raise ApiError(400, "Missing ModelSpec")
        version, label = _version_choice(request.model_spec)
        return self.registry.resolve(request.model_spec.name, version, label)

    def _log(
        self,
        servable: Servable,
        method: str,
        fmt: str,
        inputs: Any,
        outputs: Any,
        start: float,
        context: CallContext | None = None,
        entities: list[Any] | None = None,
    ) -> None:
        if self.request_logger is None:
            return  # no log, no request id to read or return (nothing would record it)
        sent = dict(context.invocation_metadata() or ()) if context is not None else {}
        request_id = request_id_of(sent.get("x-request-id"))
        if context is not None:
            context.set_trailing_metadata((("x-request-id", request_id),))
        if not self.request_logger.sampled():
            return
        extra = {} if entities is None else {"entities": entities}
        self.request_logger.log(
            {
                "request_id": request_id,
                "time": datetime.now(UTC).isoformat(),
                "model": servable.name,
                "version": servable.version,
                "protocol": "grpc",
                "method": method,
                "format": fmt,
                "inputs": inputs,
                "outputs": outputs,
                "latency_ms": round((time.perf_counter() - start) * 1000.0, 3),
                **extra,
            }
        )

    # ---------------------------------------------------------------- RPCs

    def Predict(self, request: Any, context: CallContext) -> Any:  # noqa: N802
        """Run a signature on named TensorProtos (TF Serving's Predict)."""
        start = time.perf_counter()
        servable = self._resolve(request)
        entities = (
            self.online.apply_to_request(servable, request, self.max_elements)
            if self.online is not None
            else None
        )
        key, outputs, arrays = run_predict_request(
            servable,
            request,
            self.max_elements,
            allow_non_finite=self._policy(servable).allow_non_finite,
            batcher=self.batcher,
        )
        response = predict_pb2.PredictResponse()
        _set_model_spec(response.model_spec, servable, key)
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_tensor_proto(array))
        # raw arrays: the request log's writer thread turns them into JSON, off this path
        logged_out = next(iter(outputs.values())) if len(outputs) == 1 else dict(outputs)
        self._log(servable, "predict", "inputs", arrays, logged_out, start, context, entities)
        return response

    def _run_examples(
        self,
        request: Any,
        context: CallContext,
        method: str,
        response: Any,
        fill: Callable[[Any, list[Any]], None],
    ) -> Any:
        """Classify or regress ``request.input``'s tf.Examples (:mod:`serving.runtime.examples`)
        into ``response`` (``fill(response.result, results)``), and log it."""
        start = time.perf_counter()
        servable = self._resolve(request)
        examples = _examples(request.input)
        run = classify if method == "classify" else regress
        key, results = run(
            servable,
            request.model_spec.signature_name,
            examples,
            allow_non_finite=self._policy(servable).allow_non_finite,
        )
        _set_model_spec(response.model_spec, servable, key)
        fill(response.result, results)
        logged = [example_to_row(e) for e in examples] if self.request_logger else None
        self._log(servable, method, "examples", logged, results, start, context)
        return response

    def Classify(self, request: Any, context: CallContext) -> Any:  # noqa: N802
        """Classify tf.Examples: per example, ``(label, score)`` classes."""
        return self._run_examples(
            request,
            context,
            "classify",
            classification_pb2.ClassificationResponse(),
            _fill_classifications,
        )

    def Regress(self, request: Any, context: CallContext) -> Any:  # noqa: N802
        """Regress tf.Examples: one value per example."""
        return self._run_examples(
            request, context, "regress", regression_pb2.RegressionResponse(), _fill_regressions
        )

    def GetModelMetadata(self, request: Any, context: CallContext) -> Any:  # noqa: N802
        """The version's signature defs (``metadata_field: "signature_def"``)."""
        if not request.metadata_field:
            raise ApiError(400, "Metadata field(s) must be specified")
        for field_name in request.metadata_field:
            if field_name != _SIGNATURE_DEF_FIELD:
                raise ApiError(400, f"Metadata field {field_name} is not supported")
        servable = self._resolve(request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for key, proto in servable.signature_def_protos.items():
            signature_defs.signature_def[key].CopyFrom(proto)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _set_model_spec(response.model_spec, servable)
        response.metadata[_SIGNATURE_DEF_FIELD].Pack(signature_defs)
        return response

    def MultiInference(self, request: Any, context: CallContext) -> Any:  # noqa: N802
        """Not supported by this server."""
        raise ApiError.of("UNIMPLEMENTED", "MultiInference is not implemented by this server")


class ModelServicer:
    """``tensorflow.serving.ModelService`` over a :class:`ModelRegistry`."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def GetModelStatus(self, request: Any, context: CallContext) -> Any:  # noqa: N802
        """Version states of a model (all, or the one picked by version/label)."""
        if not request.HasField("model_spec"):
            raise ApiError(400, "Missing ModelSpec")
        version, label = _version_choice(request.model_spec)
        entries = self.registry.status(request.model_spec.name, version, label)
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in entries:
            status = response.model_version_status.add()
            status.version = int(entry["version"])
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"])
            code = entry["status"]["error_code"]
            status.status.error_code = (
                _ERROR_CODE_ENUM.values_by_name[code].number
                if code in _ERROR_CODE_ENUM.values_by_name
                else _ERROR_CODE_ENUM.values_by_name["UNKNOWN"].number
            )
            status.status.error_message = entry["status"]["error_message"]
        return response

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: Any, context: CallContext
    ) -> Any:
        """Not supported: edit ``models.config`` instead (it is re-read every poll)."""
        raise ApiError.of(
            "UNIMPLEMENTED",
            "HandleReloadConfigRequest is not implemented: write <model_base>/models.config "
            "(serving.layout) instead; the server re-reads it every poll",
        )

"""TF Serving's gRPC API over the same :class:`serving.server.ModelRegistry` as the REST
server, built on tensorflow-serving-api's generated services.

Services (``tensorflow_serving/apis/prediction_service.proto``, ``model_service.proto``):

* ``PredictionService.Predict``: ``PredictRequest.inputs`` are TensorProtos (decoded as
  ``tf.make_ndarray`` does, :mod:`serving.tensor_proto`) that must name exactly the signature's inputs with its dtypes
  (no casting, as in TF Serving) and compatible shapes; ``output_filter`` selects
  outputs (an unknown or repeated alias is INVALID_ARGUMENT). The response's
  ``model_spec`` echoes the name, the version that answered and the signature key.
* ``PredictionService.Classify`` / ``Regress``: ``input.example_list`` or
  ``input.example_list_with_context`` of ``tf.Example``; which signatures can serve them
  (TF Serving's classify/regress signatures, and this platform's predict signatures by
  feature name) is defined in :mod:`serving.inference`.
* ``PredictionService.GetModelMetadata``: ``metadata_field`` must be ``["signature_def"]``;
  answers a ``SignatureDefMap`` packed in ``metadata["signature_def"]``.
* ``PredictionService.MultiInference``: UNIMPLEMENTED.
* ``ModelService.GetModelStatus``: the REST status route's entries as protos.
* ``ModelService.HandleReloadConfigRequest``: UNIMPLEMENTED (the server re-reads
  ``models.config`` and the model directories every poll instead).

Routing: ``model_spec.version`` or ``model_spec.version_label`` pick a version, as in the
REST routes; neither means the served (``stable`` or newest) version.

Status codes follow TF Serving: NOT_FOUND for an unknown model or version,
INVALID_ARGUMENT for a bad request (missing ModelSpec, unknown signature, wrong inputs,
dtypes or shapes, an unknown version label, a signature that cannot classify/regress),
FAILED_PRECONDITION for a version that exists but failed to load; a message larger than
``max_message_bytes`` is refused by gRPC itself with RESOURCE_EXHAUSTED, and a tensor
declaring more than ``max_elements`` elements is INVALID_ARGUMENT. Errors never kill the
server: anything unexpected is logged and answered INTERNAL.

Every successful Predict/Classify/Regress is written to the request log like a REST
request, with ``"protocol": "grpc"`` (predict inputs/outputs as columns: ``"format":
"inputs"``).

Importing this module imports TensorFlow (tensorflow-serving-api's protos import it).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import inference
from serving.inference import ApiError
from serving.server import (
    DEFAULT_MAX_BODY_BYTES,
    ModelRegistry,
    RequestLogger,
    Servable,
    request_id_of,
    to_json_value,
)
from serving.tensor_proto import TensorProtoError, to_ndarray, to_tensor_proto

__all__ = [
    "GrpcServer",
    "ModelServicer",
    "PredictionServicer",
    "run_predict_request",
    "start_grpc_server",
]

log = logging.getLogger(__name__)

_SIGNATURE_DEF_FIELD = "signature_def"
_ERROR_CODE_ENUM = (
    get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name["status"]
    .message_type.fields_by_name["error_code"]
    .enum_type
)


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a servicer method, turning ApiError into its gRPC status and anything else
    into INTERNAL (logged), so that no request can take the server down."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ApiError as exc:
            context.abort(grpc.StatusCode[exc.code], exc.message)
        except Exception as exc:  # noqa: BLE001 - the server must answer, not die
            log.exception("gRPC %s failed", method.__name__)
            context.abort(
                grpc.StatusCode.INTERNAL,
                " ".join(f"Internal error: {type(exc).__name__}: {exc}".split()),
            )

    return wrapper


def _dtype_name(enum: int) -> str:
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"DataType({enum})"


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
        return inference.merge_context(with_context.context, with_context.examples)
    raise ApiError(400, "Input is empty")


def _set_model_spec(spec: Any, servable: Any, signature_name: str | None = None) -> None:
    """Echo the model, the version actually used and (if given) the signature, as TF Serving does."""
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name is not None:
        spec.signature_name = signature_name


def _to_tensor(name: str, proto: Any, spec: Any, max_elements: int) -> Any:
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
    if not spec.shape.is_compatible_with(array.shape):
        raise ApiError(
            400, f"Input '{name}': shape {list(array.shape)} is incompatible with {spec.shape}"
        )
    return tf.convert_to_tensor(array, dtype=spec.dtype)


def run_predict_request(
    servable: Servable, request: Any, max_elements: int = DEFAULT_MAX_BODY_BYTES
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Run a ``PredictRequest`` on ``servable`` as TF Serving's Predict does.

    The inputs must name exactly the signature's inputs, with its dtypes (no casting) and
    compatible shapes; ``output_filter`` selects outputs. Returns ``(signature_key,
    {output: numpy array}, {input: tensor})``; raises ApiError for a bad request. Used by
    the Predict RPC and by warm-up replay (:func:`serving.warmup.replay_warmup`).
    """
    key, fn, specs, sigdef = inference.get_signature(servable, request.model_spec.signature_name)
    sent, expected = set(request.inputs), set(specs)
    if sent != expected:
        raise ApiError(
            400,
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
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
    tensors = {
        name: _to_tensor(name, request.inputs[name], specs[name], max_elements) for name in specs
    }
    outputs = inference.run_signature(fn, tensors)
    if wanted:
        missing = [a for a in wanted if a not in outputs]
        if missing:
            raise ApiError(400, f"output tensor alias not found: {', '.join(missing)}")
        outputs = {a: outputs[a] for a in wanted}
    return key, outputs, tensors


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` over a :class:`ModelRegistry`."""

    def __init__(
        self,
        registry: ModelRegistry,
        request_logger: RequestLogger | None = None,
        *,
        max_elements: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.registry = registry
        self.request_logger = request_logger
        self.max_elements = max_elements

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
        context: grpc.ServicerContext | None = None,
    ) -> None:
        sent = dict(context.invocation_metadata() or ()) if context is not None else {}
        request_id = request_id_of(sent.get("x-request-id"))
        if context is not None:
            context.set_trailing_metadata((("x-request-id", request_id),))
        if self.request_logger is None:
            return
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
            }
        )

    # ---------------------------------------------------------------- RPCs

    @_rpc
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Run a signature on named TensorProtos (TF Serving's Predict)."""
        start = time.perf_counter()
        servable = self._resolve(request)
        key, outputs, tensors = run_predict_request(servable, request, self.max_elements)
        response = predict_pb2.PredictResponse()
        _set_model_spec(response.model_spec, servable, key)
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_tensor_proto(array))
        if self.request_logger is not None:
            logged_out = {k: to_json_value(v) for k, v in outputs.items()}
            self._log(
                servable,
                "predict",
                "inputs",
                {k: to_json_value(v.numpy()) for k, v in tensors.items()},
                next(iter(logged_out.values())) if len(logged_out) == 1 else logged_out,
                start,
                context,
            )
        return response

    @_rpc
    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Classify tf.Examples (see :mod:`serving.inference` for the signature rules)."""
        start = time.perf_counter()
        servable = self._resolve(request)
        examples = _examples(request.input)
        key, results = inference.classify(servable, request.model_spec.signature_name, examples)
        response = classification_pb2.ClassificationResponse()
        _set_model_spec(response.model_spec, servable, key)
        for row in results:
            classifications = response.result.classifications.add()
            for label, score in row:
                classifications.classes.add(label=label, score=score)
        self._log(
            servable,
            "classify",
            "examples",
            [inference.example_to_row(e) for e in examples] if self.request_logger else None,
            results,
            start,
            context,
        )
        return response

    @_rpc
    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Regress tf.Examples (see :mod:`serving.inference` for the signature rules)."""
        start = time.perf_counter()
        servable = self._resolve(request)
        examples = _examples(request.input)
        key, values = inference.regress(servable, request.model_spec.signature_name, examples)
        response = regression_pb2.RegressionResponse()
        _set_model_spec(response.model_spec, servable, key)
        for value in values:
            response.result.regressions.add(value=value)
        self._log(
            servable,
            "regress",
            "examples",
            [inference.example_to_row(e) for e in examples] if self.request_logger else None,
            values,
            start,
            context,
        )
        return response

    @_rpc
    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
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

    @_rpc
    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Not supported by this server."""
        raise ApiError.of("UNIMPLEMENTED", "MultiInference is not implemented by this server")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService`` over a :class:`ModelRegistry`."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    @_rpc
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
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

    @_rpc
    def HandleReloadConfigRequest(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        """Not supported: edit ``models.config`` instead (it is re-read every poll)."""
        raise ApiError.of(
            "UNIMPLEMENTED",
            "HandleReloadConfigRequest is not implemented: write <model_base>/models.config "
            "(serving.layout) instead; the server re-reads it every poll",
        )


@dataclass
class GrpcServer:
    """A started gRPC server: ``port`` is the bound port; ``stop`` shuts it down."""

    server: grpc.Server
    port: int
    _stopped: threading.Event

    def stop(self, grace: float | None = 2.0) -> None:
        """Stop accepting RPCs, let running ones finish for ``grace`` seconds, then end."""
        if not self._stopped.is_set():
            self._stopped.set()
            self.server.stop(grace).wait()


def start_grpc_server(
    registry: ModelRegistry,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    request_logger: RequestLogger | None = None,
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_workers: int = 16,
) -> GrpcServer:
    """Serve ``PredictionService`` and ``ModelService`` on ``host:port`` (0: a free port).

    Requests run on a pool of ``max_workers`` threads; messages larger than
    ``max_message_bytes`` are refused (RESOURCE_EXHAUSTED). Raises RuntimeError if the
    address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry, request_logger, max_elements=max_message_bytes), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(registry), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot bind the gRPC server to {address}: {exc}") from exc
    if not bound:
        raise RuntimeError(f"cannot bind the gRPC server to {address}")
    server.start()
    log.info("gRPC server listening on %s:%s", host, bound)
    return GrpcServer(server, bound, threading.Event())

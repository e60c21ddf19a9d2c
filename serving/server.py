"""A local, TF-Serving-compatible model server for the layout in :mod:`serving.layout`:
TF Serving's REST API and, in the same process, its gRPC API (:mod:`serving.grpc_server`).

Run it with::

    python -m serving.server --model-base DIR [--port 8501] [--grpc-port 8500]
        [--host 127.0.0.1] [--log-dir DIR]

(``--grpc-port 0``, the default, serves REST only) or build the ASGI app with
:func:`create_app` (models load, and the gRPC server starts, in the app's lifespan, so use
``with TestClient(app)`` / uvicorn, which run it).

REST contract (https://www.tensorflow.org/tfx/serving/api_rest):

* ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]`` -> ``{"model_version_status": [...]}``
* ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata`` -> ``{"model_spec", "metadata"}``
* ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict`` with either
  ``{"signature_name"?, "instances": [...]}`` (row format -> ``{"predictions": [...]}``) or
  ``{"signature_name"?, "inputs": ...}`` (columnar format -> ``{"outputs": ...}``).
  With a single output, predictions/outputs hold that output's values directly, else one
  dict (output name -> value) per row / a dict of columns. String values may be sent as
  ``{"b64": "..."}``; string outputs that are not UTF-8 come back as ``{"b64": "..."}``.
  A ``null`` value is a missing value (unlike TF Serving, which refuses it): NaN for a
  floating input, ``""`` for a string input (the platform's models impute both); for
  integer and bool inputs it stays a 400.
* ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify`` and ``:regress`` with
  ``{"signature_name"?, "context"?, "examples": [{feature: value|list}, ...]}`` ->
  ``{"results": [[[label, score], ...], ...]}`` (classify) / ``{"results": [value, ...]}``
  (regress). Which signatures can serve them, including this platform's predict
  signatures (``score`` -> classes "0"/"1", ``prediction`` -> value), is defined in
  :mod:`serving.inference`.
* Errors are ``{"error": "<one line>"}`` with TF Serving's status mapping: 400 for bad
  requests (malformed JSON, missing or unknown inputs, wrong types/shapes, both or
  neither of instances/inputs, a signature that cannot classify/regress, an unknown
  version label, a body larger than ``max_body_bytes``) and for a version that exists
  but failed to load (FAILED_PRECONDITION); 404 for unknown models, versions or URLs.
  Bad input never produces a 500.
* Responses to predict/classify/regress carry ``X-Model-Version: <version>`` and
  ``X-Request-Id`` (real TF Serving sends neither): the id the request sent in its own
  ``X-Request-Id`` header (1 to 128 letters, digits and ``._:-``), else a new uuid4.

Versions: the default (unversioned) route serves exactly what ``models.config`` says
(:func:`serving.layout.configured_version`: the ``stable`` label; for an entry without
one, its version policy). A background thread re-scans ``model_base`` every
``poll_seconds``; a new served version is loaded completely (after its files are checked
against the content hash recorded at publishing) and then swapped in under a lock, so
in-flight requests finish on the version they started with and none fail. The previously
served version and every labelled version stay loaded; other versions requested
explicitly are loaded lazily and kept in a small LRU. A version that fails to load is
reported with state ``END`` in the status route and retried after ``retry_seconds``.

Integrity: once a ``models.config`` governs the model base (it exists, or was written by
:mod:`serving.layout`, or this server saw one), the server never picks a version of its
own. If the config is unreadable or gone, lacks a model, or names a version that is not
published or does not load, the model keeps its last good served version and labels (or
serves nothing, after a fresh start) and is *degraded* with the reason, logged at ERROR
once per change. Only when no config ever governed the base does it serve the newest
version (TF Serving's ``--model_base_path`` mode, with a warning), falling back at
startup to the newest older version that loads. ``GET /v1/mlplatform/status`` (not a TF
Serving route) answers :meth:`ModelRegistry.integrity_status`.

Entity keys (not a TF Serving feature): with ``pipelines_dir`` (``--pipelines``), a model
whose pipeline config says ``serving.features_from: online_store`` may be sent
``{"instances": [{"<entity>": key}, ...]}``; :mod:`serving.online_features` (imported only then)
fetches the signature's inputs from the Feast online store before the model runs, and answers
400 naming the entities the store lacks. Other models and raw-feature requests are unchanged.

Request log: each successful predict, classify or regress (REST or gRPC) appends one JSON
line to ``<log_dir>/<model>/<YYYY-MM-DD>.jsonl`` (UTC date) with keys ``time`` (ISO 8601
UTC), ``model``, ``version``, ``protocol`` (``"rest"`` or ``"grpc"``), ``method``
(``"predict"``, ``"classify"`` or ``"regress"``), ``format`` (``"instances"``,
``"inputs"`` — gRPC predicts are columnar — or ``"examples"``), ``inputs`` (the request's
instances/inputs as sent; for examples, one object per example with the context merged
in), ``outputs`` (the predictions/outputs/results returned), ``latency_ms`` and
``request_id`` (the response's ``X-Request-Id``; gRPC: the ``x-request-id`` metadata sent, else
a new one, returned as trailing metadata when the request log is on); for an entity-key request
``inputs`` holds the features the model was given and ``entities`` the keys as sent. A
raw-feature row of a REST predict may carry its pipeline's entity column (with
``pipelines_dir``; a column the model's signature does not take): it is removed before the model
runs and logged as ``entities`` (one key per row, null for a row without it), so that delayed
labels can be joined to the prediction (:mod:`mlplatform.monitoring.labels`). Rejected requests
are not logged. :mod:`serving.request_log` writes the lines.

TensorFlow is imported lazily, on the first model load.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import inference, layout
from serving.inference import DEFAULT_SIGNATURE, ApiError
from serving.request_log import RequestLogger

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SIGNATURE",
    "REQUEST_ID_HEADER",
    "STATUS_ROUTE",
    "VERSION_HEADER",
    "ApiError",
    "ModelRegistry",
    "RequestLogger",
    "Servable",
    "build_arg_parser",
    "create_app",
    "load_servable",
    "main",
    "predict",
    "request_id_of",
    "to_json_value",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
VERSION_HEADER = "X-Model-Version"
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
STATUS_ROUTE = "/v1/mlplatform/status"
_DIGITS = re.compile(r"[0-9]{1,18}")


def _tf() -> Any:
    import tensorflow as tf

    return tf


class _NanJSONResponse(JSONResponse):
    """JSON response that, like TF Serving, writes NaN/Infinity instead of failing."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error_response(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status_code)


# --------------------------------------------------------------------------- loaded models


@dataclass
class Servable:
    """One loaded model version.

    ``signature_defs`` is the JSON form of the SavedModel's signature defs (what TF
    Serving's metadata API returns), ``signature_def_protos`` the same as
    ``tensorflow.SignatureDef`` protos (for the gRPC ``GetModelMetadata``).
    """

    name: str
    version: int
    path: Path
    model: Any
    signatures: dict[str, Any]
    input_specs: dict[str, dict[str, Any]]  # signature -> input name -> tf.TensorSpec
    signature_defs: dict[str, Any]  # JSON form, as TF Serving's metadata API returns it
    signature_def_protos: dict[str, Any] = field(default_factory=dict)


def _signature_def_protos_from_pb(path: Path) -> dict[str, Any] | None:
    """Signature defs exactly as stored in saved_model.pb (TF Serving's metadata source)."""
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / layout.SAVED_MODEL_PB).read_bytes())
    except Exception:  # metadata is best effort
        return None
    graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags] or list(
        proto.meta_graphs
    )
    if not graphs:
        return None
    return dict(sorted(graphs[0].signature_def.items()))


def _signature_def_json(proto: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(
        proto, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _tensor_info(spec: Any, name: str) -> dict[str, Any]:
    from tensorflow.core.framework import types_pb2

    shape = spec.shape
    if shape.rank is None:
        tensor_shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        tensor_shape = {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape.as_list()],
            "unknown_rank": False,
        }
    return {
        "dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
        "tensor_shape": tensor_shape,
        "name": name,
    }


def _derived_signature_def(fn: Any) -> dict[str, Any]:
    """Fallback metadata built from a concrete function's structured signature."""
    inputs = {k: _tensor_info(s, f"{k}:0") for k, s in fn.structured_input_signature[1].items()}
    outs = fn.structured_outputs
    outputs = (
        {k: _tensor_info(s, f"{k}:0") for k, s in outs.items()} if isinstance(outs, dict) else {}
    )
    return {"inputs": inputs, "outputs": outputs, "method_name": inference.PREDICT_METHOD}


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load ``path`` with ``tf.saved_model.load`` and index its signatures."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import meta_graph_pb2

    tf = _tf()
    model = tf.saved_model.load(str(path))
    signatures = dict(model.signatures)
    input_specs = {key: dict(fn.structured_input_signature[1]) for key, fn in signatures.items()}
    protos = _signature_def_protos_from_pb(path) or {}
    for key, fn in signatures.items():
        if key not in protos:
            protos[key] = json_format.ParseDict(
                _derived_signature_def(fn), meta_graph_pb2.SignatureDef()
            )
    protos = dict(sorted(protos.items()))
    signature_defs = {key: _signature_def_json(p) for key, p in protos.items()}
    return Servable(name, version, path, model, signatures, input_specs, signature_defs, protos)


@dataclass
class _ModelState:
    name: str
    served: int | None = None
    previous: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    loaded: dict[int, Servable] = field(default_factory=dict)
    extra: OrderedDict[int, None] = field(default_factory=OrderedDict)  # lazily loaded, LRU
    failed: dict[int, tuple[str, float]] = field(default_factory=dict)  # version -> (error, t)
    degraded: str | None = None  # why the served version is not what the config says


class ModelRegistry:
    """Loaded models of one model base, kept in sync with the directory by polling.

    Thread-safe: ``resolve`` may be called from any request thread while ``refresh``
    runs in the poller. Loading happens outside the registry lock; only the swap of
    references happens under it.
    """

    def __init__(
        self,
        model_base: Path,
        poll_seconds: float = 1.0,
        *,
        max_extra_versions: int = 2,
        retry_seconds: float = 30.0,
    ) -> None:
        self.model_base = Path(model_base)
        self.poll_seconds = poll_seconds
        self.max_extra_versions = max_extra_versions
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._models: dict[str, _ModelState] = {}
        self._load_locks: dict[tuple[str, int], threading.Lock] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config: dict[str, dict[str, Any]] | None = None  # last readable models.config
        self._config_seen = False  # a models.config governed this base once: never fall back
        self._config_error: str | None = None
        self._warned_no_config = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background poller (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the poller and wait for it (a load in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the poller must never die
                log.exception("model poll of %s failed", self.model_base)

    # ---------------------------------------------------------------- loading

    def _load(self, name: str, version: int) -> Servable:
        """Return the loaded servable, loading it (once, even if raced) when needed."""
        with self._lock:
            state = self._models.setdefault(name, _ModelState(name))
            if version in state.loaded:
                return state.loaded[version]
            load_lock = self._load_locks.setdefault((name, version), threading.Lock())
        with load_lock:
            with self._lock:
                state = self._models.setdefault(name, _ModelState(name))
                if version in state.loaded:
                    return state.loaded[version]
            path = self.model_base / name / str(version)
            start = time.monotonic()
            try:
                layout.verify_version_digest(self.model_base, name, version)
                servable = load_servable(name, version, path)
            except Exception as exc:
                message = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
                log.error("failed to load model %s version %s: %s", name, version, message)
                with self._lock:
                    self._models.setdefault(name, _ModelState(name)).failed[version] = (
                        message,
                        time.monotonic(),
                    )
                raise
            log.info("loaded model %s version %s in %.2fs", name, version, time.monotonic() - start)
            with self._lock:
                state = self._models.setdefault(name, _ModelState(name))
                state.loaded[version] = servable
                state.failed.pop(version, None)
            return servable

    def _should_try(self, state: _ModelState | None, version: int) -> bool:
        if state is None or version not in state.failed:
            return True
        return time.monotonic() - state.failed[version][1] >= self.retry_seconds

    def refresh(self) -> None:
        """Scan ``model_base`` once: read ``models.config``, load what it makes served or
        labelled, keep the last good served set where it names nothing valid, unload what
        is no longer needed. Never raises for a single broken model."""
        config = self._read_config()
        names = set(layout.list_models(self.model_base)) | set(config or {})
        for name in sorted(names):
            try:
                self._refresh_model(name, config)
            except Exception:
                log.exception("refreshing model %s failed", name)
        with self._lock:
            for gone in set(self._models) - names:
                log.info("model %s disappeared from %s; unloading", gone, self.model_base)
                del self._models[gone]

    def _read_config(self) -> dict[str, dict[str, Any]] | None:
        """The config to apply this poll: the file's, else the last readable one (with
        ``_config_error`` set), or None in TF Serving's ``--model_base_path`` mode."""
        try:
            config = layout.read_config_in_effect(self.model_base)
            error = None
            if config is None and self._config_seen:
                error = f"{self.model_base / layout.MODELS_CONFIG} disappeared"
        except ValueError as exc:
            config, error = None, str(exc)
        if config is not None:
            self._config, self._config_seen = config, True
        elif error is not None:
            self._config_seen = True
        elif not self._warned_no_config:
            self._warned_no_config = True
            log.warning(
                "no models.config in %s: serving the newest version of each model "
                "(TF Serving's --model_base_path mode)",
                self.model_base,
            )
        if error != self._config_error:
            if error is not None:
                log.error("models.config unusable, keeping the served versions: %s", error)
            else:
                log.info("models.config readable again")
            self._config_error = error
        return self._config if self._config_seen else None

    def _target(
        self, name: str, config: dict[str, dict[str, Any]] | None, versions: list[int]
    ) -> tuple[int | None, str | None, dict[str, int] | None]:
        """(version to serve, why none, labels to apply or None to keep the current ones)."""
        if self._config_error is not None:
            return None, f"models.config unusable: {self._config_error}", None
        target, reason = layout.configured_version(config, name, versions)
        entry = (config or {}).get(name)
        labels = dict(entry["labels"]) if entry is not None and reason is None else None
        return target, reason, labels if config is not None else {}

    def _refresh_model(self, name: str, config: dict[str, dict[str, Any]] | None) -> None:
        versions = layout.list_versions(self.model_base, name)
        on_disk = set(versions)
        target, reason, new_labels = self._target(name, config, versions)
        with self._lock:
            state = self._models.get(name)
            current = state.served if state is not None and state.served in state.loaded else None
            old_labels = dict(state.labels) if state is not None else {}
        labels = {
            k: v
            for k, v in (old_labels if new_labels is None else new_labels).items()
            if v in on_disk
        }

        def ensure_loaded(version: int) -> bool:
            nonlocal state
            with self._lock:
                if state is not None and version in state.loaded:
                    return True
            if not self._should_try(state, version):
                return False
            try:
                self._load(name, version)
                return True
            except Exception:  # recorded in state.failed
                return False
            finally:
                with self._lock:
                    state = self._models.get(name)

        effective = None
        if target is not None:
            if ensure_loaded(target):
                effective = target
            else:
                with self._lock:
                    error = state.failed.get(target, ("unknown error", 0.0))[0] if state else ""
                reason = f"version {target} failed to load: {error}"
        for version in sorted(set(labels.values()) - {target}, reverse=True):
            ensure_loaded(version)
        if effective is None and current is None and target is not None and not self._config_seen:
            # --model_base_path mode with nothing served yet: the newest older version that loads.
            for version in [v for v in reversed(versions) if v < target][:3]:
                if ensure_loaded(version):
                    effective = version
                    break
        self._apply(name, effective, reason, labels, on_disk)

    def _apply(
        self,
        name: str,
        effective: int | None,
        reason: str | None,
        labels: dict[str, int],
        on_disk: set[int],
    ) -> None:
        """Swap in the served version and labels; keep the last good ones where ``effective``
        is None; record and log (once per change) why the model is degraded."""
        with self._lock:
            state = self._models.setdefault(name, _ModelState(name))
            if effective is not None and state.served != effective:
                log.info("model %s now serves version %s (was %s)", name, effective, state.served)
                if state.served is not None:
                    state.previous = state.served
                state.served = effective
            if reason != state.degraded:
                if reason is not None:
                    served = state.served if state.served in state.loaded else None
                    log.error(
                        "model %s degraded: %s; serving %s",
                        name,
                        reason,
                        f"version {served} (the last good one)"
                        if served is not None
                        else "nothing",
                    )
                else:
                    log.info("model %s serves what models.config says again", name)
                state.degraded = reason
            state.labels = labels
            if state.previous is not None and (
                state.previous not in on_disk or state.previous == state.served
            ):
                state.previous = None
            for version in [v for v in state.extra if v not in on_disk]:
                del state.extra[version]
            keep = {state.served, state.previous, *labels.values(), *state.extra}
            for version in [v for v in state.loaded if v not in keep]:
                log.info("unloading model %s version %s", name, version)
                del state.loaded[version]
            for version in [v for v in state.failed if v not in on_disk]:
                del state.failed[version]

    # ---------------------------------------------------------------- lookups

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request; lazily loads an explicitly requested version.

        Raises ApiError: NOT_FOUND (404) for an unknown model or version, INVALID_ARGUMENT
        (400) for an unknown label (as TF Serving), FAILED_PRECONDITION (400) for a version
        that is published but failed to load, or a model none of whose versions loaded.
        """
        with self._lock:
            state = self._models.get(name)
            if state is None:
                raise ApiError(404, f"Servable not found for request: Latest({name})")
            if label is not None:
                if label not in state.labels:
                    raise ApiError(
                        400, f"Unrecognized servable version label: {label} for model {name}"
                    )
                version = state.labels[label]
            if version is None:
                if state.served is None or state.served not in state.loaded:
                    if state.failed:
                        failed, (message, _) = max(state.failed.items())
                        raise ApiError.of(
                            "FAILED_PRECONDITION",
                            f"Model {name} has no available version: version {failed} "
                            f"failed to load: {message}",
                        )
                    why = f": {state.degraded}" if state.degraded else ""
                    raise ApiError(404, f"Servable not found for request: Latest({name}){why}")
                return state.loaded[state.served]
            servable = state.loaded.get(version)
            if servable is not None:
                if version in state.extra:
                    state.extra.move_to_end(version)
                return servable
        if version not in layout.list_versions(self.model_base, name):
            raise ApiError(404, f"Servable not found for request: Specific({name}, {version})")
        with self._lock:
            state = self._models.get(name)
            if state is not None and not self._should_try(state, version):
                raise ApiError.of(
                    "FAILED_PRECONDITION",
                    f"Servable {name} version {version} is not available: "
                    f"failed to load: {state.failed[version][0]}",
                )
        try:
            servable = self._load(name, version)
        except Exception as exc:
            raise ApiError.of(
                "FAILED_PRECONDITION",
                f"Servable {name} version {version} is not available: failed to load: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        with self._lock:
            state = self._models.get(name)
            if state is not None and version not in {state.served, state.previous} | set(
                state.labels.values()
            ):
                state.extra[version] = None
                state.extra.move_to_end(version)
                while len(state.extra) > self.max_extra_versions:
                    evicted, _ = state.extra.popitem(last=False)
                    if evicted not in {state.served, state.previous} | set(state.labels.values()):
                        state.loaded.pop(evicted, None)
        return servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        """``model_version_status`` entries (newest first).

        Raises ApiError: NOT_FOUND (404) for an unknown model or version, INVALID_ARGUMENT
        (400) for an unknown label.
        """
        with self._lock:
            state = self._models.get(name)
            if state is None:
                raise ApiError(404, f"Could not find any versions of model {name}")
            if label is not None:
                if label not in state.labels:
                    raise ApiError(
                        400, f"Unrecognized servable version label: {label} for model {name}"
                    )
                version = state.labels[label]
            entries: dict[int, dict[str, Any]] = {}
            for v, (message, _) in state.failed.items():
                entries[v] = _status_entry(v, "END", "UNKNOWN", message)
            for v in state.loaded:
                entries[v] = _status_entry(v, "AVAILABLE", "OK", "")
        if version is not None:
            if version not in entries:
                if version in layout.list_versions(self.model_base, name):
                    return [_status_entry(version, "END", "OK", "")]  # published, not loaded
                raise ApiError(404, f"Could not find version {version} of model {name}")
            return [entries[version]]
        if not entries:
            raise ApiError(404, f"Could not find any versions of model {name}")
        return [entries[v] for v in sorted(entries, reverse=True)]

    def integrity_status(self) -> dict[str, Any]:
        """What this server serves and whether that is what ``models.config`` says.

        ``{"status": "ok" | "degraded", "reason": <config problem or None>, "mode":
        "models.config" | "model_base_path", "models": {name: {"served_version": int |
        None, "labels": {label: version}, "degraded": <reason or None>}}}``; ``status`` is
        degraded when the config is unusable or any model is degraded.
        """
        with self._lock:
            models = {
                name: {
                    "served_version": state.served if state.served in state.loaded else None,
                    "labels": dict(sorted(state.labels.items())),
                    "degraded": state.degraded,
                }
                for name, state in sorted(self._models.items())
            }
            reason = self._config_error
        degraded = reason is not None or any(m["degraded"] for m in models.values())
        return {
            "status": "degraded" if degraded else "ok",
            "reason": reason,
            "mode": "models.config" if self._config_seen else "model_base_path",
            "models": models,
        }

    def model_names(self) -> list[str]:
        """Names of the models currently known to the registry."""
        with self._lock:
            return sorted(self._models)


def _status_entry(version: int, state: str, code: str, message: str) -> dict[str, Any]:
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


# --------------------------------------------------------------------------- tensor conversion


def _shape_and_leaves(value: Any, name: str) -> tuple[tuple[int, ...], list[Any]]:
    """Shape of a rectangular nested list and its leaves; ApiError(400) if ragged."""
    if not isinstance(value, list):
        return (), [value]
    if not value:
        return (0,), []
    shapes, leaves = [], []
    for item in value:
        shape, sub = _shape_and_leaves(item, name)
        shapes.append(shape)
        leaves.extend(sub)
    if any(s != shapes[0] for s in shapes):
        raise ApiError(400, f"Input '{name}': ragged lists are not supported")
    return (len(value), *shapes[0]), leaves


def _to_bytes(leaf: Any, name: str) -> bytes:
    if isinstance(leaf, str):
        return leaf.encode("utf-8")
    if isinstance(leaf, dict) and set(leaf) == {"b64"} and isinstance(leaf["b64"], str):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(400, f"Input '{name}': invalid base64 value") from exc
    raise ApiError(400, f"Input '{name}': expected a string, got {type(leaf).__name__}")


def _nulls_to_nan(value: Any) -> Any:
    """``value`` with every JSON null (``None``) of a nested list replaced by NaN."""
    if isinstance(value, list):
        return [_nulls_to_nan(item) for item in value]
    return math.nan if value is None else value


def _to_tensor(value: Any, spec: Any, name: str) -> Any:
    """Convert a JSON value to a tensor of ``spec.dtype``, checking type and shape.

    A JSON null is a missing value where the platform's models impute one: NaN for a floating
    input, ``b""`` (the models' out-of-vocabulary "missing" category) for a string input. For
    integer and bool inputs a null stays an error.
    """
    import numpy as np

    tf = _tf()
    dtype = spec.dtype
    if dtype == tf.string:
        shape, leaves = _shape_and_leaves(value, name)
        array = np.array(
            [b"" if leaf is None else _to_bytes(leaf, name) for leaf in leaves], dtype=object
        ).reshape(shape)
    elif dtype.is_bool or dtype.is_integer or dtype.is_floating:
        if dtype.is_floating:
            value = _nulls_to_nan(value)
        try:
            raw = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"Input '{name}': ragged or invalid values") from exc
        kind = raw.dtype.kind
        np_dtype = dtype.as_numpy_dtype
        if dtype.is_bool:
            ok = kind == "b"
        elif dtype.is_integer:
            ok = kind in "iu" or (kind == "f" and bool(np.all(np.mod(raw, 1) == 0)))
            if not ok and kind == "f":
                raise ApiError(400, f"Input '{name}': {dtype.name} input got non-integer numbers")
            if ok and raw.size:
                info = np.iinfo(np_dtype)
                if not (info.min <= raw.min() and raw.max() <= info.max):
                    raise ApiError(400, f"Input '{name}': values out of range for {dtype.name}")
        else:
            ok = kind in "iuf"
        if not ok:
            raise ApiError(400, f"Input '{name}': {dtype.name} input got {_kind(kind)}")
        array = raw.astype(np_dtype)
    else:
        raise ApiError(400, f"Input '{name}': unsupported input dtype {dtype.name}")
    if not spec.shape.is_compatible_with(array.shape):
        raise ApiError(
            400, f"Input '{name}': shape {list(array.shape)} is incompatible with {spec.shape}"
        )
    return tf.constant(array, dtype=dtype)


def _kind(kind: str) -> str:
    return {"U": "strings", "O": "mixed, nested or null values", "b": "booleans"}.get(
        kind, "numbers"
    )


def to_json_value(array: Any) -> Any:
    """numpy output -> JSON value; bytes become text, or {"b64": ...} if not UTF-8."""
    if array.dtype.kind in "OSa":

        def conv(x: Any) -> Any:
            if isinstance(x, list):
                return [conv(i) for i in x]
            if isinstance(x, bytes):
                try:
                    return x.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(x).decode("ascii")}
            return x

        return conv(array.tolist())
    return array.tolist()


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _named(value: Any, names: list[str]) -> bool:
    """Whether a row/columns value is a dict of named inputs (vs. a lone b64 value)."""
    return isinstance(value, dict) and not (
        _is_b64(value) and len(names) == 1 and names[0] != "b64"
    )


def predict(servable: Servable, payload: Any) -> tuple[str, Any, dict[str, Any]]:
    """Run one TF-Serving REST predict request body against ``servable``.

    Returns ``(format, request_inputs, response_body)`` where format is ``"instances"``
    or ``"inputs"``. Raises ApiError(400) for anything wrong with the request.
    """
    if not isinstance(payload, dict):
        raise ApiError(400, "Request body must be a JSON object")
    signature_name = payload.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise ApiError(400, "'signature_name' key must be a string value.")
    _key, fn, specs, _sigdef = inference.get_signature(servable, signature_name)
    names = sorted(specs)
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise ApiError(400, "Request must contain exactly one of 'instances' or 'inputs'")
    unknown_keys = set(payload) - {"signature_name", "instances", "inputs"}
    if unknown_keys:
        raise ApiError(400, f"Unknown request keys: {', '.join(sorted(unknown_keys))}")

    if has_instances:
        fmt, request_inputs = "instances", payload["instances"]
        rows = request_inputs
        if not isinstance(rows, list) or not rows:
            raise ApiError(400, "'instances' must be a non-empty list")
        if _named(rows[0], names):
            columns: dict[str, list[Any]] = {n: [] for n in names}
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise ApiError(400, f"Instance {i} must be an object of named inputs")
                missing = [n for n in names if n not in row]
                if missing:
                    raise ApiError(400, f"Instance {i} is missing input(s): {', '.join(missing)}")
                extra = sorted(set(row) - set(names))
                if extra:
                    raise ApiError(
                        400,
                        f"Instance {i} has unknown input(s): {', '.join(extra)} "
                        f"(signature inputs: {', '.join(names)})",
                    )
                for n in names:
                    columns[n].append(row[n])
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise ApiError(
                400,
                f"Instances must be objects of named inputs ({', '.join(names)}) "
                "for a signature with several inputs",
            )
        n_rows = len(rows)
    else:
        fmt, request_inputs = "inputs", payload["inputs"]
        if _named(request_inputs, names):
            missing = [n for n in names if n not in request_inputs]
            if missing:
                raise ApiError(400, f"Missing input(s): {', '.join(missing)}")
            extra = sorted(set(request_inputs) - set(names))
            if extra:
                raise ApiError(
                    400,
                    f"Unknown input(s): {', '.join(extra)} (signature inputs: {', '.join(names)})",
                )
            columns = dict(request_inputs)
        elif len(names) == 1:
            columns = {names[0]: request_inputs}
        else:
            raise ApiError(400, f"'inputs' must be an object with keys {', '.join(names)}")
        n_rows = None

    tensors = {n: _to_tensor(columns[n], specs[n], n) for n in names}
    outputs = inference.run_signature(fn, tensors)

    if n_rows is not None:
        for key, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != n_rows:
                raise ApiError(
                    400,
                    f"Output '{key}' has shape {list(array.shape)}, which does not have the "
                    f"batch size {n_rows} of the instances; use the 'inputs' format",
                )
        per_output = {k: to_json_value(v) for k, v in outputs.items()}
        if len(per_output) == 1:
            (values,) = per_output.values()
            return fmt, request_inputs, {"predictions": values}
        keys = list(per_output)
        return (
            fmt,
            request_inputs,
            {"predictions": [{k: per_output[k][i] for k in keys} for i in range(n_rows)]},
        )
    columns_out = {k: to_json_value(v) for k, v in outputs.items()}
    if len(columns_out) == 1:
        (values,) = columns_out.values()
        return fmt, request_inputs, {"outputs": values}
    return fmt, request_inputs, {"outputs": columns_out}


# --------------------------------------------------------------------------- app


def _parse_version(version: str | None) -> int | None:
    if version is None:
        return None
    if not _DIGITS.fullmatch(version):
        raise ApiError(404, f"Malformed request: version '{version}' is not an integer")
    return int(version)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(400, f"Request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(400, f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON (NaN/Infinity allowed, as TF Serving); ApiError(400)."""
    body = await _read_body(request, limit)
    if not body.strip():
        raise ApiError(400, "JSON Parse error: The document is empty")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"JSON Parse error: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "JSON Parse error: document is nested too deeply") from exc


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def request_id_of(sent: str | None) -> str:
    """The request id a client sent (``X-Request-Id``: 1 to 128 letters, digits and ``._:-``),
    else a new uuid4 (hex)."""
    if sent and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def create_app(
    model_base: Path,
    log_dir: Path | None = None,
    poll_seconds: float = 1.0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_extra_versions: int = 2,
    retry_seconds: float = 30.0,
    grpc_port: int | None = None,
    grpc_host: str = "127.0.0.1",
    grpc_max_workers: int = 16,
    pipelines_dir: Path | None = None,
) -> FastAPI:
    """Build the TF-Serving-compatible FastAPI app serving ``model_base``.

    Models are loaded, and the poller is started, in the app's lifespan; an empty or
    missing ``model_base`` is fine (requests 404 until models appear). ``log_dir=None``
    disables request logging. The registry is exposed as ``app.state.registry``.

    ``grpc_port`` (None: no gRPC; 0: a free port) also starts TF Serving's gRPC API
    (:func:`serving.grpc_server.start_grpc_server`) on ``grpc_host`` in the lifespan,
    sharing the registry and the request log, with ``max_body_bytes`` as its largest
    message; the bound port is ``app.state.grpc_port`` once started (else None). A port
    that cannot be bound fails the startup.

    ``pipelines_dir`` (None: none) holds the pipeline configs that decide which models take
    entity keys (:mod:`serving.online_features`; ``app.state.online_features``).
    """
    registry = ModelRegistry(
        Path(model_base),
        poll_seconds,
        max_extra_versions=max_extra_versions,
        retry_seconds=retry_seconds,
    )
    request_logger = RequestLogger(Path(log_dir)) if log_dir is not None else None
    online = None
    if pipelines_dir is not None:
        from serving.online_features import OnlineFeatureSources

        online = OnlineFeatureSources(Path(pipelines_dir), rescan_seconds=poll_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(registry.refresh)
        registry.start()
        grpc_handle = None
        try:
            if grpc_port is not None:
                from serving.grpc_server import start_grpc_server

                grpc_handle = await run_in_threadpool(
                    lambda: start_grpc_server(
                        registry,
                        grpc_host,
                        grpc_port,
                        request_logger=request_logger,
                        max_message_bytes=max_body_bytes,
                        max_workers=grpc_max_workers,
                    )
                )
                app_.state.grpc_port = grpc_handle.port
            yield
        finally:
            if grpc_handle is not None:
                grpc_handle.stop(grace=2.0)
                app_.state.grpc_port = None
            registry.stop()

    app = FastAPI(
        title="mlplatform model server (TF Serving REST compatible)",
        lifespan=lifespan,
        default_response_class=_NanJSONResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.registry = registry
    app.state.request_logger = request_logger
    app.state.max_body_bytes = max_body_bytes
    app.state.grpc_port = None
    app.state.online_features = online

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status_code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = 404 if exc.status_code == 405 else exc.status_code
        return _error_response(status, f"Malformed request: {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, f"Malformed request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error_response(500, f"Internal error: {type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- status

    async def _status(name: str, version: str | None, label: str | None) -> dict[str, Any]:
        entries = registry.status(name, _parse_version(version), label)
        return {"model_version_status": entries}

    @app.get("/v1/models/{name}")
    async def model_status(name: str) -> dict[str, Any]:
        return await _status(name, None, None)

    @app.get("/v1/models/{name}/versions/{version}")
    async def model_version_status(name: str, version: str) -> dict[str, Any]:
        return await _status(name, version, None)

    @app.get("/v1/models/{name}/labels/{label}")
    async def model_label_status(name: str, label: str) -> dict[str, Any]:
        return await _status(name, None, label)

    @app.get(STATUS_ROUTE)
    async def platform_status() -> dict[str, Any]:
        return registry.integrity_status()

    # ---------------------------------------------------------------- metadata

    async def _metadata(name: str, version: str | None, label: str | None) -> dict[str, Any]:
        servable = await run_in_threadpool(registry.resolve, name, _parse_version(version), label)
        return {
            "model_spec": {
                "name": name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": {"signature_def": {"signature_def": servable.signature_defs}},
        }

    @app.get("/v1/models/{name}/metadata")
    async def model_metadata(name: str) -> dict[str, Any]:
        return await _metadata(name, None, None)

    @app.get("/v1/models/{name}/versions/{version}/metadata")
    async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
        return await _metadata(name, version, None)

    @app.get("/v1/models/{name}/labels/{label}/metadata")
    async def model_label_metadata(name: str, label: str) -> dict[str, Any]:
        return await _metadata(name, None, label)

    # ---------------------------------------------------------------- predict / classify / regress

    def _log(
        servable: Servable,
        method: str,
        fmt: str,
        inputs: Any,
        outputs: Any,
        start: float,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if request_logger is None:
            return
        request_logger.log(
            {
                "time": _utc_now(),
                "model": servable.name,
                "version": servable.version,
                "protocol": "rest",
                "method": method,
                "format": fmt,
                "inputs": inputs,
                "outputs": outputs,
                "latency_ms": round((time.perf_counter() - start) * 1000.0, 3),
                **(extra or {}),
            }
        )

    async def _infer(
        request: Request, name: str, version: str | None, label: str | None, method: str
    ) -> Response:
        start = time.perf_counter()
        request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        servable = await run_in_threadpool(registry.resolve, name, _parse_version(version), label)
        payload = await _read_json(request, app.state.max_body_bytes)

        def run() -> dict[str, Any]:
            if method == "predict":
                body, extra = (payload, None) if online is None else online.apply(servable, payload)
                fmt, request_inputs, response = predict(servable, body)
                outputs = next(iter(response.values()))
                extra = {"request_id": request_id, **(extra or {})}
                _log(servable, method, fmt, request_inputs, outputs, start, extra)
                return response
            signature_name, examples, rows = inference.examples_from_json(payload, method)
            if method == "classify":
                _key, results = inference.classify(servable, signature_name, examples)
            else:
                _key, results = inference.regress(servable, signature_name, examples)
            _log(servable, method, "examples", rows, results, start, {"request_id": request_id})
            return {"results": results}

        response = await run_in_threadpool(run)
        headers = {VERSION_HEADER: str(servable.version), REQUEST_ID_HEADER: request_id}
        return _NanJSONResponse(response, headers=headers)

    def _add_inference_routes(method: str) -> None:
        async def unversioned(request: Request, name: str) -> Response:
            return await _infer(request, name, None, None, method)

        async def versioned(request: Request, name: str, version: str) -> Response:
            return await _infer(request, name, version, None, method)

        async def labelled(request: Request, name: str, label: str) -> Response:
            return await _infer(request, name, None, label, method)

        app.add_api_route(f"/v1/models/{{name}}:{method}", unversioned, methods=["POST"])
        app.add_api_route(
            f"/v1/models/{{name}}/versions/{{version}}:{method}", versioned, methods=["POST"]
        )
        app.add_api_route(
            f"/v1/models/{{name}}/labels/{{label}}:{method}", labelled, methods=["POST"]
        )

    for verb in ("predict", "classify", "regress"):
        _add_inference_routes(verb)

    return app


# --------------------------------------------------------------------------- CLI


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_arg_parser() -> argparse.ArgumentParser:
    """The ``python -m serving.server`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description=(
            "Serve the TF Serving model layout under --model-base "
            "(<model>/<version>/saved_model.pb + models.config) with TF Serving's REST API "
            "(GET /v1/models/<m>[/versions/<v>|/labels/<l>][/metadata], "
            "POST /v1/models/<m>[/versions/<v>|/labels/<l>]:predict|classify|regress) and, "
            "with --grpc-port, its gRPC API (tensorflow.serving.PredictionService and "
            "ModelService) from the same process. "
            "New versions and label changes are picked up without a restart."
        ),
    )
    parser.add_argument(
        "--model-base", required=True, type=Path, help="directory holding <model>/<version>/"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501, help="REST port (default: 8501)")
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help="gRPC port (TF Serving's default is 8500); 0 disables gRPC (default: 0)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="write one JSON line per predict/classify/regress (REST and gRPC) to "
        "<log-dir>/<model>/<YYYY-MM-DD>.jsonl "
        "(default: no request log)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=_positive_float,
        default=1.0,
        help="how often to re-scan --model-base for new versions/labels (default: 1)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="reject larger REST bodies with 400 and larger gRPC messages with "
        f"RESOURCE_EXHAUSTED (default: {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--pipelines",
        type=Path,
        default=None,
        help="pipeline configs deciding which models take entity keys "
        "(serving.features_from: online_store) (default: the platform's pipelines directory, "
        "MLP_PIPELINES_PATH or <repo>/pipelines)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: parse ``argv`` and run the server with uvicorn until interrupted."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.grpc_port <= 65535:
        parser.error(f"--grpc-port must be 0..65535, got {args.grpc_port}")
    import uvicorn

    from serving.online_features import platform_pipelines_dir

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(
        args.model_base,
        args.log_dir,
        args.poll_seconds,
        max_body_bytes=args.max_body_bytes,
        grpc_port=args.grpc_port or None,
        grpc_host=args.host,
        pipelines_dir=args.pipelines or platform_pipelines_dir(),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()

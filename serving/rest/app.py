"""TF Serving's REST API as a Starlette/FastAPI app over a :class:`~serving.runtime.ModelRegistry`.

Routes and error contract: see :mod:`serving.server`. What this module adds to the runtime:

* one exception handler (:func:`error_response`) answers every error, TF Serving style:
  ``{"error": "<one line>"}`` with the ApiError's HTTP status (unknown routes and methods 404,
  anything unexpected 500, logged);
* bodies are read with a size cap, parsed under :class:`~serving.api.Limits` and validated as
  pydantic envelopes (:mod:`serving.rest.bodies`);
* at most ``limits.max_concurrent`` predict/classify/regress requests run at once; one more is
  answered 503 at once, before its body is read;
* predict/classify/regress POSTs take a fast path (:class:`InferenceFastPath`) past FastAPI's
  middleware and router; a small body to the served version runs on the event loop (no thread
  hop, the model call is shorter than the hop); with batching on, a predict body up to
  ``INLINE_BATCHED_BYTES`` to the served version is decoded on the loop and awaits its batch
  there (:meth:`~serving.runtime.batching.Batcher.run_async`); any other costs one hop to the
  thread pool (resolve, parse, run and log-queue together).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from serving.api.constants import REQUEST_ID_HEADER, STATUS_ROUTE, VERSION_HEADER
from serving.api.errors import ApiError
from serving.api.limits import Limits
from serving.codec.examples import examples_from_body
from serving.codec.json_body import parse_json
from serving.rest.bodies import examples_body, predict_body
from serving.runtime.batching import Batcher
from serving.runtime.examples import classify, regress
from serving.runtime.predict import (
    DEFAULT_POLICY,
    ModelPolicy,
    PreparedPredict,
    call,
    prepare_predict,
)
from serving.runtime.registry import ModelRegistry
from serving.runtime.servable import Servable

try:  # optional, only to write answers faster (NanJSONResponse)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

__all__ = ["InferenceFastPath", "build_rest_app", "error_response", "request_id_of"]

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DIGITS = re.compile(r"[0-9]{1,18}")
#: predict/classify/regress bodies up to this size, to the served version, run on the event loop
INLINE_BODY_BYTES = 2048
#: with batching on, predict bodies up to this size to the served version are decoded on the event
#: loop (≈1 ms of CPU at most) and wait for their batch there, without a thread hop
INLINE_BATCHED_BYTES = 256 * 1024


class NanJSONResponse(JSONResponse):
    """JSON response that, like TF Serving, writes NaN/Infinity instead of failing.

    orjson (when installed) writes it, ≈4x faster than the standard library on a 64-row answer;
    as it writes NaN and Infinity as ``null``, an answer holding a ``null`` is written again by
    the standard library (a NaN stays ``NaN``), as is one orjson cannot write."""

    def render(self, content: Any) -> bytes:
        if _orjson is not None:
            try:
                data: bytes = _orjson.dumps(content)
            except (TypeError, _orjson.JSONEncodeError):
                pass
            else:
                if b"null" not in data:
                    return data
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def request_id_of(sent: str | None) -> str:
    """The request id a client sent (1 to 128 letters, digits and ``._:-``), else a new uuid4."""
    if sent and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


async def error_response(_request: Request, exc: Exception) -> JSONResponse:
    """The one error handler: TF Serving's ``{"error": "<one line>"}`` with its status."""
    if isinstance(exc, ApiError):
        status, message = exc.status_code, exc.message
    elif isinstance(exc, StarletteHTTPException):
        status = 404 if exc.status_code == 405 else exc.status_code
        message = f"Malformed request: {exc.detail}"
    elif isinstance(exc, RequestValidationError):
        status, message = 400, f"Malformed request: {exc.errors()}"
    else:
        log.error("unhandled error", exc_info=exc)
        status, message = 500, f"Internal error: {type(exc).__name__}: {exc}"
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(400, f"Request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError.of("CANCELLED", "The client went away before sending its body") from None
    return b"".join(chunks)


#: ``/v1/models/<name>[/versions/<v>|/labels/<l>]:<verb>``, as Starlette's routes would match it
_INFER_PATH = re.compile(
    r"/v1/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+)|/labels/(?P<label>[^/]+))?"
    r":(?P<verb>predict|classify|regress)"
)


class InferenceFastPath:
    """Pure ASGI middleware: a POST to a predict/classify/regress path goes straight to the
    inference handler, skipping FastAPI's exception and exit-stack middleware and the router's
    scan of every route (≈0.1 ms a request on this project's 2-core machine); its errors get
    the one exception handler (:func:`error_response`). Everything else, and every other
    method on those paths, goes on to the app unchanged."""

    def __init__(self, app: Any, infer: Callable[..., Awaitable[Response]]) -> None:
        self.app = app
        self.infer = infer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _INFER_PATH.fullmatch(scope["path"])
            if match is not None:
                request = Request(scope, receive)
                try:
                    response = await self.infer(
                        request,
                        match["name"],
                        match["version"],
                        match["label"],
                        match["verb"],
                    )
                except Exception as exc:  # noqa: BLE001 - the one handler answers
                    response = await error_response(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_rest_app(
    registry: ModelRegistry,
    *,
    limits: Limits,
    request_log: Any | None = None,
    online: Any | None = None,
    batcher: Batcher | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    worker: tuple[int, int] | None = None,
) -> FastAPI:
    """The REST app over ``registry``.

    ``request_log``: a :class:`serving.request_log.QueuedRequestLog` (None: no log).
    ``online``: a :class:`serving.runtime.online_features.OnlineFeatureSources` (entity keys,
    per-model policy; None: every model takes raw features and, as in TF Serving, NaN/Infinity).
    ``batcher``: server-side batching of predict calls (None: off).
    ``lifespan``: the app's lifespan (the entry point loads models and starts gRPC there).
    ``worker``: ``(index, workers)`` of this process among ``--workers N``, named in the status
    route's answer (None: a single process, not named).
    """
    app = FastAPI(
        title="mlplatform model server (TF Serving REST compatible)",
        lifespan=lifespan,
        default_response_class=NanJSONResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    for kind in (ApiError, StarletteHTTPException, RequestValidationError, Exception):
        app.add_exception_handler(kind, error_response)
    in_flight = 0  # touched only on the event loop: no lock needed

    def policy(servable: Servable) -> ModelPolicy:
        return online.policy(servable.name) if online is not None else DEFAULT_POLICY

    @app.get("/v1/models/{name}")
    async def model_status(name: str) -> dict[str, Any]:
        return {"model_version_status": registry.status(name)}

    @app.get("/v1/models/{name}/versions/{version}")
    async def model_version_status(name: str, version: str) -> dict[str, Any]:
        return {"model_version_status": registry.status(name, _parse_version(version))}

    @app.get("/v1/models/{name}/labels/{label}")
    async def model_label_status(name: str, label: str) -> dict[str, Any]:
        return {"model_version_status": registry.status(name, None, label)}

    @app.get(STATUS_ROUTE)
    async def platform_status() -> dict[str, Any]:
        status = registry.integrity_status()
        if worker is not None:
            status["worker"] = {"index": worker[0], "workers": worker[1], "pid": os.getpid()}
        return status

    async def _metadata(name: str, version: str | None, label: str | None) -> dict[str, Any]:
        servable = await run_in_threadpool(registry.resolve, name, _parse_version(version), label)
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
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

    def parse(servable: Servable, raw: bytes) -> tuple[Any, Any]:
        """The body's JSON within the server's limits and the model's rules, and the rules."""
        rules = policy(servable)
        doc = parse_json(
            raw,
            max_depth=limits.max_depth,
            max_elements=limits.max_elements,
            allow_non_finite=rules.allow_non_finite,
        )
        return doc, rules

    def prepare(servable: Servable, raw: bytes) -> tuple[PreparedPredict, dict[str, Any] | None]:
        doc, rules = parse(servable, raw)
        body, extra = predict_body(doc), None
        if online is not None:
            body, extra = online.apply(servable, body)
        return prepare_predict(servable, body, rules), extra

    def record(
        servable: Servable,
        method: str,
        fmt: str,
        logged: tuple[Any, Any],
        request_id: str,
        start: float,
        extra: dict[str, Any] | None,
    ) -> None:
        if request_log is not None and request_log.sampled():
            request_log.log(
                {
                    "time": datetime.now(UTC).isoformat(),
                    "model": servable.name,
                    "version": servable.version,
                    "protocol": "rest",
                    "method": method,
                    "format": fmt,
                    "inputs": logged[0],
                    "outputs": logged[1],
                    "latency_ms": round((time.perf_counter() - start) * 1000.0, 3),
                    "request_id": request_id,
                    **(extra or {}),
                }
            )

    def work(
        name: str,
        version: int | None,
        label: str | None,
        method: str,
        raw: bytes,
        request_id: str,
        start: float,
    ) -> tuple[Servable, dict[str, Any]]:
        servable = registry.resolve(name, version, label)
        extra: dict[str, Any] | None = None
        if method == "predict":
            prepared, extra = prepare(servable, raw)
            response = prepared.answer(call(prepared.fn, prepared.specs, prepared.arrays, batcher))
            fmt, logged = prepared.fmt, (prepared.request_inputs, next(iter(response.values())))
        else:
            doc, rules = parse(servable, raw)
            signature_name, examples, logged_inputs = examples_from_body(
                examples_body(doc, method), method, allow_non_finite=rules.allow_non_finite
            )
            run = classify if method == "classify" else regress
            _key, results = run(
                servable, signature_name, examples, allow_non_finite=rules.allow_non_finite
            )
            fmt, logged, response = "examples", (logged_inputs, results), {"results": results}
        record(servable, method, fmt, logged, request_id, start, extra)
        return servable, response

    async def batched_predict(
        name: str, raw: bytes, request_id: str, start: float, batcher: Batcher
    ) -> tuple[Servable, dict[str, Any]]:
        # on the event loop: decode, then wait for the batch without holding a thread
        servable = registry.resolve(name, None, None)
        prepared, extra = prepare(servable, raw)
        response = prepared.answer(await prepared.run_batched(batcher))
        logged = (prepared.request_inputs, next(iter(response.values())))
        record(servable, "predict", prepared.fmt, logged, request_id, start, extra)
        return servable, response

    async def infer(
        request: Request, name: str, version: str | None, label: str | None, method: str
    ) -> Response:
        nonlocal in_flight
        if in_flight >= limits.max_concurrent:
            raise ApiError.of(
                "UNAVAILABLE",
                f"Server busy: {limits.max_concurrent} requests already running; retry later",
            )
        in_flight += 1
        try:
            start = time.perf_counter()
            request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
            parsed_version = _parse_version(version)
            raw = await _read_body(request, limits.max_body_bytes)
            args = (name, parsed_version, label, method, raw, request_id, start)
            served = parsed_version is None and label is None
            if batcher is None and served and len(raw) <= INLINE_BODY_BYTES:
                # a small request to the served version (always loaded: nothing to wait for)
                # costs less on the event loop than the hop to a worker thread and back
                servable, response = work(*args)
            elif (
                batcher is not None
                and served
                and method == "predict"
                and len(raw) <= INLINE_BATCHED_BYTES
                and (online is None or online.for_model(name) is None)
            ):
                servable, response = await batched_predict(name, raw, request_id, start, batcher)
            else:
                servable, response = await run_in_threadpool(work, *args)
        finally:
            in_flight -= 1
        headers = {VERSION_HEADER: str(servable.version), REQUEST_ID_HEADER: request_id}
        return NanJSONResponse(response, headers=headers)

    async def endpoint(request: Request) -> Response:
        params = request.path_params
        return await infer(
            request,
            params["name"],
            params.get("version"),
            params.get("label"),
            request.url.path.rsplit(":", 1)[1],
        )

    for verb in ("predict", "classify", "regress"):
        for path in (
            f"/v1/models/{{name}}:{verb}",
            f"/v1/models/{{name}}/versions/{{version}}:{verb}",
            f"/v1/models/{{name}}/labels/{{label}}:{verb}",
        ):
            # what the fast path below does not take (other methods: 405, answered 404)
            app.router.routes.append(Route(path, endpoint, methods=["POST"]))
    app.add_middleware(InferenceFastPath, infer=infer)
    return app

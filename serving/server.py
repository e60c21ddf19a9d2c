"""The entry point of the local, TF-Serving-compatible model server for the layout in
:mod:`serving.layout`: TF Serving's REST API (:mod:`serving.rest`) and, in the same process, its
gRPC API (:mod:`serving.grpc`), over one runtime (:mod:`serving.runtime`).

Layers, each importing only those below it (``.importlinter`` checks it)::

    serving.server (this entry point: the command line)
    serving.app    (create_app: the composition)
    serving.rest | serving.grpc | serving.request_log
    serving.runtime   (servables, version manager, signatures, protocol-neutral predict)
    serving.codec     (JSON, tf.Example, TensorProto, base64: one of each)
    serving.api       (errors with TF Serving's codes, constants, limits)

The client (:mod:`serving.client`) uses only ``api`` and ``codec``.

Run it with::

    python -m serving.server --model-base DIR [--port 8501] [--grpc-port 8500]
        [--host 127.0.0.1] [--log-dir DIR]

(``--grpc-port 0``, the default, serves REST only; ``--help`` lists the limits and the request
log's options) or build the ASGI app with
:func:`create_app` (models load, and the gRPC server starts, in the app's lifespan, so use
``with TestClient(app)`` / uvicorn, which run it). ``--workers N`` runs N such servers in
spawned processes on the same ports, each following ``models.config`` (:mod:`serving.workers`).

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
  integer and bool inputs it stays a 400. For a model served by a pipeline config
  (``pipelines_dir``), ``NaN``/``Infinity`` literals and numbers beyond the input's float
  range are refused (400) unless the config sets ``serving.allow_non_finite: true``; over
  gRPC, where a TensorProto has no null, NaN is a missing value and only infinities are
  refused. A model no pipeline config serves keeps TF Serving's JSON conformance (NaN and
  Infinity accepted).
* ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify`` and ``:regress`` with
  ``{"signature_name"?, "context"?, "examples": [{feature: value|list}, ...]}`` ->
  ``{"results": [[[label, score], ...], ...]}`` (classify) / ``{"results": [value, ...]}``
  (regress). Which signatures can serve them, including this platform's predict
  signatures (``score`` -> classes "0"/"1", ``prediction`` -> value), is defined in
  :mod:`serving.runtime.examples`.
* Errors are ``{"error": "<one line>"}`` with TF Serving's status mapping: 400 for bad
  requests (malformed JSON, missing or unknown inputs, wrong types/shapes, both or
  neither of instances/inputs, a signature that cannot classify/regress, an unknown
  version label, a body larger than ``max_body_bytes``, JSON nested deeper than
  ``max_depth``, more than ``max_elements`` values, a lone UTF-16 surrogate) and for a
  version that exists but failed to load (FAILED_PRECONDITION); 404 for unknown models,
  versions or URLs; 503 at once when ``max_concurrent`` requests are already running.
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

Request log: each successful predict, classify or regress (REST or gRPC; a ``log_sample_rate``
share of them) appends, through a bounded queue and a background writer
(:class:`serving.request_log.QueuedRequestLog`: size cap with rotation, redaction), one JSON
line to ``<log_dir>/<model>/<YYYY-MM-DD>.jsonl`` (UTC date) with keys ``time`` (ISO 8601
UTC), ``model``, ``version``, ``protocol`` (``"rest"`` or ``"grpc"``), ``method``
(``"predict"``, ``"classify"`` or ``"regress"``), ``format`` (``"instances"``,
``"inputs"`` — gRPC predicts are columnar — or ``"examples"``), ``inputs`` (the request's
instances/inputs as sent; for examples, one object per example with the context merged
in), ``outputs`` (the predictions/outputs/results returned), ``latency_ms`` and
``request_id`` (the response's ``X-Request-Id``; gRPC: the ``x-request-id`` metadata sent, else
a new one, returned as trailing metadata when the request log is on); for an entity-key request
``inputs`` holds the features the model was given and ``entities`` the keys as sent. A
raw-feature row of a predict (REST, or gRPC as an extra input) may carry its pipeline's entity column (with
``pipelines_dir``; a column the model's signature does not take): it is removed before the model
runs and logged as ``entities`` (one key per row, null for a row without it), so that delayed
labels can be joined to the prediction (:mod:`mlplatform.monitoring.labels`). Rejected requests
are not logged. :mod:`serving.request_log` writes the lines.

TensorFlow is imported lazily, on the first model load.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Any

from serving.api.constants import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SIGNATURE,
    REQUEST_ID_HEADER,
    STATUS_ROUTE,
    VERSION_HEADER,
)
from serving.api.errors import ApiError
from serving.api.limits import Limits
from serving.app import create_app
from serving.codec.json_tensors import to_json_value
from serving.options import batching_of, build_arg_parser, uvicorn_options
from serving.request_log import RequestLogger
from serving.rest.app import request_id_of
from serving.runtime.predict import predict_json as predict
from serving.runtime.registry import ModelRegistry
from serving.runtime.servable import Servable, load_servable

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SIGNATURE",
    "REQUEST_ID_HEADER",
    "STATUS_ROUTE",
    "VERSION_HEADER",
    "ApiError",
    "Limits",
    "ModelRegistry",
    "RequestLogger",
    "Servable",
    "build_arg_parser",
    "create_app",
    "load_servable",
    "main",
    "serve_worker",
    "predict",
    "request_id_of",
    "to_json_value",
]

log = logging.getLogger(__name__)


def _build_app(args: argparse.Namespace, worker: tuple[int, int] | None = None) -> Any:
    from serving.runtime.online_features import platform_pipelines_dir

    max_file = args.log_max_file_mib
    return create_app(
        args.model_base,
        args.log_dir,
        args.poll_seconds,
        max_body_bytes=args.max_body_bytes,
        max_elements=args.max_elements,
        max_depth=args.max_depth,
        max_concurrent=args.max_concurrent,
        grpc_port=args.grpc_port or None,
        grpc_host=args.host,
        grpc_idle_timeout_s=6 * args.keep_alive_timeout,
        grpc_reuse_port=worker is not None,
        pipelines_dir=args.pipelines or platform_pipelines_dir(),
        log_sample_rate=args.log_sample_rate,
        log_queue_size=args.log_queue_size,
        log_max_file_bytes=None if max_file is None else int(max_file * 1024 * 1024),
        log_redact=args.log_redact,
        batching=batching_of(args),
        worker=worker,
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def serve_worker(argv: list[str], parent_pid: int, index: int) -> None:
    """One worker of ``--workers N`` (in a spawned process): the whole server, on its own
    ``SO_REUSEPORT`` socket (:mod:`serving.workers`); exits with
    :data:`~serving.workers.STARTUP_FAILURE` if it could not start."""
    import uvicorn

    from serving.workers import STARTUP_FAILURE, reuse_port_socket, watch_parent

    args = build_arg_parser().parse_args(argv)
    _configure_logging(args.log_level)
    watch_parent(parent_pid)
    options = uvicorn_options(args)
    try:
        sock = reuse_port_socket(args.host, args.port, options["backlog"])
    except OSError as exc:
        log.error("worker %d cannot bind %s:%s: %s", index, args.host, args.port, exc)
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(uvicorn.Config(_build_app(args, (index, args.workers)), **options))
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: parse ``argv`` and run the server with uvicorn until interrupted
    (``--workers N`` > 1: N worker processes under :func:`serving.workers.supervise`)."""
    parser = build_arg_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not 0 <= args.grpc_port <= 65535:
        parser.error(f"--grpc-port must be 0..65535, got {args.grpc_port}")
    if args.workers > 1 and args.port == 0:
        parser.error("--workers above 1 needs a fixed --port (each worker binds it)")
    try:
        batching_of(args)
    except ValueError as exc:
        parser.error(str(exc))
    _configure_logging(args.log_level)
    if args.workers > 1:
        from serving.workers import supervise

        code = supervise(functools.partial(serve_worker, argv, os.getpid()), args.workers)
        if code:
            raise SystemExit(code)
        return
    import uvicorn

    uvicorn.run(_build_app(args), **uvicorn_options(args))


if __name__ == "__main__":
    main()

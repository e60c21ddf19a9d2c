"""The command line of :mod:`serving.server`: its argument parser and what the arguments
configure outside the app (batching parameters, uvicorn's options)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from serving.api.constants import DEFAULT_MAX_BODY_BYTES
from serving.api.limits import Limits
from serving.runtime.batching import BatchingParameters, read_batching_parameters

__all__ = ["batching_of", "build_arg_parser", "uvicorn_options"]


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
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
    add = parser.add_argument
    add("--model-base", required=True, type=Path, help="directory holding <model>/<version>/")
    add("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    add("--port", type=int, default=8501, help="REST port (default: 8501)")
    add(
        "--grpc-port",
        type=int,
        default=0,
        help="gRPC port (TF Serving's default is 8500); 0 disables gRPC (default: 0)",
    )
    add(
        "--log-dir",
        type=Path,
        default=None,
        help="write one JSON line per predict/classify/regress (REST and gRPC) to "
        "<log-dir>/<model>/<YYYY-MM-DD>.jsonl (default: no request log)",
    )
    add(
        "--log-sample-rate",
        type=_share,
        default=1.0,
        help="share of requests written to the request log (default: 1)",
    )
    add(
        "--log-queue-size",
        type=_positive_int,
        default=10_000,
        help="records waiting for the log writer at most; more are dropped (default: 10000)",
    )
    add(
        "--log-max-file-mib",
        type=_positive_float,
        default=None,
        help="rotate a day file of the request log at this size (default: no cap)",
    )
    add(
        "--log-redact",
        action="append",
        default=[],
        metavar="FIELD",
        help="write this input/output field as [redacted] in the request log (repeatable)",
    )
    add(
        "--poll-seconds",
        type=_positive_float,
        default=1.0,
        help="how often to re-scan --model-base for new versions/labels (default: 1)",
    )
    add(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="reject larger REST bodies with 400 and larger gRPC messages with "
        f"RESOURCE_EXHAUSTED (default: {DEFAULT_MAX_BODY_BYTES})",
    )
    add(
        "--max-elements",
        type=_positive_int,
        default=Limits.max_elements,
        help="most values (tensor elements) one request may hold or declare "
        f"(default: {Limits.max_elements})",
    )
    add(
        "--max-depth",
        type=_positive_int,
        default=Limits.max_depth,
        help=f"deepest JSON nesting accepted (default: {Limits.max_depth})",
    )
    add(
        "--max-concurrent",
        type=_positive_int,
        default=Limits.max_concurrent,
        help="requests in progress at once per protocol (REST: running or queued); one more "
        f"is answered 503 / RESOURCE_EXHAUSTED at once (default: {Limits.max_concurrent})",
    )
    add(
        "--max-connections",
        type=_positive_int,
        default=1000,
        help="open REST connections at most; more are closed when accepted (default: 1000)",
    )
    add(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds a REST connection may take to send a request head (default: 10)",
    )
    add(
        "--keep-alive-timeout",
        type=_positive_float,
        default=5.0,
        help="seconds an idle keep-alive REST connection stays open; gRPC: 6x this for an idle "
        "connection (default: 5)",
    )
    add(
        "--pipelines",
        type=Path,
        default=None,
        help="pipeline configs deciding which models take entity keys "
        "(serving.features_from: online_store) and accept NaN/Infinity "
        "(serving.allow_non_finite) (default: the platform's pipelines directory, "
        "MLP_PIPELINES_PATH or <repo>/pipelines)",
    )
    add(
        "--enable-batching",
        action="store_true",
        help="batch predict calls across requests (TF Serving's --enable_batching; default off)",
    )
    add(
        "--batching-parameters-file",
        type=Path,
        default=None,
        help="TF Serving's batching parameters file (text proto: max_batch_size, "
        "batch_timeout_micros, num_batch_threads, max_enqueued_batches); implies "
        "--enable-batching (default: TF Serving's defaults)",
    )
    add(
        "--workers",
        type=_positive_int,
        default=1,
        help="server processes sharing --port and --grpc-port (SO_REUSEPORT), each with its "
        "own model copy; set it to the cores the server may use (default: 1, one process as "
        "TF Serving)",
    )
    add("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def batching_of(args: argparse.Namespace) -> BatchingParameters | None:
    """The batching parameters the arguments ask for (None: off); ValueError if unreadable."""
    if args.batching_parameters_file is not None:
        return read_batching_parameters(args.batching_parameters_file)
    return BatchingParameters() if args.enable_batching else None


def uvicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    from serving.rest.connections import guarded_protocol

    return {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "http": guarded_protocol(args.max_connections, args.header_timeout, args.max_concurrent),
        "timeout_keep_alive": max(1, round(args.keep_alive_timeout)),
        "backlog": min(2048, args.max_connections),
        "h11_max_incomplete_event_size": 64 * 1024,
    }

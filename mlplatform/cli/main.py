"""The argument parser and the entry point: exit 0 success, 1 an outcome to act on, 2 bad usage
or config; one line per error, ``--verbose`` for the trace."""

from __future__ import annotations

import argparse
import os
import sys

from mlplatform.cli.alerts import cmd_alerts_test
from mlplatform.cli.common import OutcomeError, UsageError
from mlplatform.cli.loop import cmd_demo_drift
from mlplatform.cli.models import (
    cmd_doctor,
    cmd_predict,
    cmd_promote,
    cmd_rollback,
    cmd_serve,
    cmd_status,
)
from mlplatform.cli.monitoring import cmd_labels
from mlplatform.cli.pipelines import (
    cmd_airflow,
    cmd_check,
    cmd_data_checkout,
    cmd_data_versions,
    cmd_reset,
    cmd_skew,
)
from mlplatform.cli.run import cmd_demo, cmd_run
from mlplatform.cli.scaffold import cmd_init
from mlplatform.cli.score import cmd_score
from mlplatform.cli.ui import add_parser as add_ui_parser
from mlplatform.config import (
    ConfigError,
)
from mlplatform.permissions import private_dir
from mlplatform.settings import get_settings
from mlplatform.storage import configure_clients


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlplatform",
        description="Airflow-native ML platform: run pipelines, serve and inspect models.",
        epilog="Settings come from MLP_* environment variables (see README); state lives under MLP_HOME (default .mlplatform).",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="generate a demo batch, run the demo pipeline end to end, query the served model",
    )
    p.add_argument(
        "--rows", type=int, default=4000, help="rows in the generated batch (default 4000)"
    )
    p.add_argument("--drift", type=float, default=0.0, help="0..1 distribution shift of the batch")
    p.add_argument(
        "--bad-fraction",
        type=float,
        default=0.0,
        help="0..1 share of corrupt rows (validation demo)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "demo-drift",
        help="the continuous-training loop on Airflow's real scheduler: drift -> monitor -> "
        "drift asset -> retrain -> new served version, then a second drift inside the cool-down",
        description="Starts Airflow's scheduler, dag-processor, triggerer and API server on the "
        "embedded home, lands a drifted batch, sends drifted traffic through the served demo "
        "model and prints the chain as it happens (monitor run -> drift asset -> train run and "
        "its reason -> gate -> new served version), then shows that a second drift inside "
        "monitoring.cooldown_hours starts no second retrain. Stops everything it started.",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=2000,
        help="rows of the first batch (2000); the drifted batch has twice as many",
    )
    p.add_argument("--traffic", type=int, default=600, help="drifted requests per wave (600)")
    p.add_argument("--drift", type=float, default=0.5, help="0..1 shift of the world (0.5)")
    p.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for each DAG run (600)"
    )
    p.set_defaults(func=cmd_demo_drift)

    p = sub.add_parser(
        "run", help="one run of a pipeline's training DAG through Airflow, with a per-stage summary"
    )
    p.add_argument("pipeline", help="pipeline name (pipelines/NAME.yaml) or path to a YAML")
    p.add_argument(
        "--data",
        help="batch to ingest: path, glob, directory, file://, s3://bucket/key-or-prefix/, "
        "sql+<SQLAlchemy URL>?query=...; default source.uri",
    )
    p.add_argument("--logical-date", help="ISO-8601 logical date of the run (default now)")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="run every stage afresh, even where an earlier output with the same cache key "
        "exists (the fresh outputs are recorded for later runs)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "score",
        help="one run of a pipeline's batch scoring DAG through Airflow: the champion's "
        "predictions for a table or the latest offline features, as Parquet",
    )
    p.add_argument("pipeline", help="pipeline name (pipelines/NAME.yaml) or path to a YAML")
    p.add_argument(
        "--data",
        help="table to score: path, glob, directory, file://, s3://..., sql+<SQLAlchemy URL>?"
        "query=...; default scoring.input_uri, else every entity's latest offline features",
    )
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("alerts", help="a pipeline's alert webhook: send a test alert")
    alerts_sub = p.add_subparsers(dest="alerts_command", required=True, metavar="ALERTS_COMMAND")
    q = alerts_sub.add_parser(
        "test", help="send one test alert to the pipeline's webhook and say where it went"
    )
    q.add_argument("pipeline")
    q.set_defaults(func=cmd_alerts_test)

    p = sub.add_parser(
        "init",
        help="scaffold a pipeline from a table: config, drafted expectation suite, model defaults",
        description="Reads a sample of the table (CSV/Parquet, local, glob, s3://, sql+...), "
        "proposes the event-time, entity and label columns the flags leave open (and says why), "
        "picks a classifier (0/1 label) or regressor (numeric label) with a gate that fits it, "
        "drafts a Great Expectations suite (types, nulls with `mostly` where the sample has gaps, "
        "ranges, value sets, row count) and writes pipelines/NAME.yaml and the suite NAME_raw. "
        "Column names Feast/TensorFlow cannot take (spaces, dots) are mapped under "
        "source.rename. Its DAGs (mlp_NAME_train, ...) appear in Airflow with no code written.",
    )
    p.add_argument("name", help="pipeline name: lowercase letters, digits, _ (DAG mlp_NAME_train)")
    p.add_argument(
        "--data",
        required=True,
        metavar="URI",
        help="the table: path, glob, directory, file://, s3://..., sql+<SQLAlchemy URL>?query=...; "
        "becomes source.uri",
    )
    p.add_argument(
        "--label", metavar="COL", help="label column (default: guessed, e.g. a column named target)"
    )
    p.add_argument(
        "--entity", metavar="COL", help="entity key column (default: guessed, e.g. *_id)"
    )
    p.add_argument(
        "--timestamp", metavar="COL", help="event-time column (default: the column of timestamps)"
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing pipeline file and suite"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "check",
        help="check a pipeline before a run: config, suite, a sample of the data, the label",
    )
    p.add_argument(
        "--data",
        help="batch to sample (path, glob, s3://, sql+...); default source.uri unless a template",
    )
    p.add_argument("pipeline")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("data", help="data versions of a pipeline (DVC): list, restore")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    q = data_sub.add_parser("versions", help="list a pipeline's data versions, newest first")
    q.add_argument("pipeline")
    q.set_defaults(func=cmd_data_versions)
    q = data_sub.add_parser(
        "checkout",
        help="restore a past batch byte for byte from the DVC cache or remote",
    )
    q.add_argument("pipeline")
    q.add_argument(
        "--version",
        required=True,
        help="data version (md5, the data_version lineage tag), data commit, or latest",
    )
    q.add_argument("--out", help="file to write (default ./<pipeline>-<md5[:8]>.<format>)")
    q.set_defaults(func=cmd_data_checkout)

    p = sub.add_parser(
        "skew",
        help="compare online (serving) and offline (training) features; exit 1 on a difference",
    )
    p.add_argument("pipeline")
    p.add_argument("--sample", type=int, default=100, help="entities to compare (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the entity sample (default 0)")
    p.set_defaults(func=cmd_skew)

    p = sub.add_parser(
        "labels",
        help="store delayed ground truth (entity, time, label columns) that the monitor joins "
        "to the request log",
    )
    p.add_argument("pipeline")
    p.add_argument(
        "--data",
        required=True,
        help="CSV/Parquet file (or glob, s3://, sql+...) with the pipeline's entity, timestamp "
        "and label columns",
    )
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser(
        "serve", help="run the local TF-Serving-compatible server (REST + gRPC) on the model base"
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="REST port (default MLP_SERVING_PORT, 8501)")
    p.add_argument(
        "--grpc-port", type=int, help="gRPC port (default MLP_SERVING_GRPC_PORT, 8500; 0 disables)"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("predict", help="send raw feature rows to a served model")
    p.add_argument("model")
    p.add_argument("--json", required=True, help="JSON list of row objects, or @file.json")
    p.add_argument("--version", type=int, help="a specific served version")
    p.add_argument("--url", help="server URL (default http://MLP_SERVING_HOST:MLP_SERVING_PORT)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "airflow",
        help="run an airflow command on the embedded Airflow home (e.g. `mlplatform airflow standalone` for the UI)",
    )
    p.add_argument("airflow_args", nargs=argparse.REMAINDER, help="arguments for the airflow CLI")
    p.set_defaults(func=cmd_airflow)
    add_ui_parser(sub)

    p = sub.add_parser(
        "rollback", help="serve the previous version again and move alias champion back (seconds)"
    )
    p.add_argument("model")
    p.add_argument(
        "--to",
        type=int,
        help="the published version to serve (default: the one before the current)",
    )
    p.add_argument("--url", help="server to wait for (default http://MLP_SERVING_HOST:PORT)")
    p.add_argument("--reason", help="why (kept in the pipeline's audit trail)")
    p.add_argument(
        "--wait-s",
        type=float,
        default=60.0,
        help="how long to wait for that server to serve the version (default 60)",
    )
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "promote", help="make a published version (e.g. a canary) stable and champion"
    )
    p.add_argument("model")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--reason", help="why (kept in the pipeline's audit trail)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "reset",
        help="remove a pipeline's Feast offline files, registry and online store, and (without "
        "--features) its run markers such as last_validated.json; asks nothing",
    )
    p.add_argument("pipeline", help="pipeline name")
    p.add_argument(
        "--features",
        action="store_true",
        help="only the Feast state; keep last_validated.json and trainer checkpoints",
    )
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser(
        "status",
        help="models, versions, aliases, served version; `! ` lines where the records disagree",
    )
    p.add_argument("model", nargs="?")
    p.add_argument("--url", help="server to ask (default http://MLP_SERVING_HOST:PORT)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "doctor",
        help="check MLflow, models.config, the model base and the server agree (exit 1 if not)",
    )
    p.add_argument("model", nargs="?")
    p.add_argument(
        "--repair",
        action="store_true",
        help="fix what is safe: re-register lost versions, rewrite models.config, move aliases",
    )
    p.add_argument("--url", help="server to ask (default http://MLP_SERVING_HOST:PORT)")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        settings = get_settings()
        private_dir(settings.home_dir)
        configure_clients(settings)
        return args.func(args, settings)
    except (UsageError, ConfigError) as exc:
        print(f"mlplatform: error: {exc}", file=sys.stderr)
        return 2
    except OutcomeError as exc:
        print(f"mlplatform: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.verbose:
            raise
        print(
            f"mlplatform: error: {type(exc).__name__}: {exc} (rerun with --verbose for the trace)",
            file=sys.stderr,
        )
        return 1

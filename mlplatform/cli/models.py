"""Commands on served models: serve, predict, promote, rollback, status, doctor."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlplatform.cli.common import OutcomeError, UsageError, say
from mlplatform.settings import Settings


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform import audit
    from mlplatform.reconcile import wait_until_served
    from mlplatform.stages import StageError
    from mlplatform.stages.registry import rollback

    try:
        result = rollback(args.model, settings, args.to)
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    version, url = result["served_version"], args.url or settings.serving_url
    audit.record(
        settings,
        audit.pipeline_of_model(settings, args.model),
        "rollback",
        actor=audit.command_line_actor(),
        reason=args.reason or "no reason given",
        model=args.model,
        version=int(version),
        from_version=result["from_version"],
    )
    say(
        f"{args.model}: rolled back to v{version} (was v{result['from_version']}): stable label "
        f"and alias champion -> v{version}; v{version} {result['checked']}"
    )
    view = wait_until_served(url, args.model, version, args.wait_s)
    if not view.reachable:
        say(f"no server answering at {url}; the next start serves v{version}")
    elif view.served_version == version:
        say(f"the server at {url} serves v{version}")
    else:
        why = f" ({view.degraded or view.error})" if view.degraded or view.error else ""
        raise OutcomeError(
            f"the server at {url} still serves v{view.served_version}, not v{version}, "
            f"after {args.wait_s:g}s{why}"
        )
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform import audit
    from mlplatform.stages import StageError
    from mlplatform.stages.registry import set_stable

    try:
        set_stable(args.model, args.version, settings)
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    audit.record(
        settings,
        audit.pipeline_of_model(settings, args.model),
        "promote",
        actor=audit.command_line_actor(),
        reason=args.reason or "no reason given",
        model=args.model,
        version=args.version,
    )
    say(f"{args.model}: v{args.version} is now stable and champion")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from serving import server

    argv = ["--model-base", str(settings.models_dir), "--host", args.host or settings.serving_host,
            "--port", str(args.port or settings.serving_port), "--log-dir", str(settings.request_log_dir),
            "--grpc-port", str(settings.serving_grpc_port if args.grpc_port is None else args.grpc_port),
            "--log-sample-rate", str(settings.serving_log_sample_rate),
            "--workers", str(settings.serving_workers)]  # fmt: skip
    if settings.serving_log_max_file_mib is not None:
        argv += ["--log-max-file-mib", str(settings.serving_log_max_file_mib)]
    for field in filter(None, (f.strip() for f in settings.serving_log_redact.split(","))):
        argv += ["--log-redact", field]
    return server.main(argv) or 0


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from serving.client import PredictionClient, ServingError

    try:
        rows = json.loads(
            Path(args.json[1:]).read_text() if args.json.startswith("@") else args.json
        )
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--json: not valid JSON rows: {exc}") from None
    if isinstance(rows, dict):
        rows = [rows]
    client = PredictionClient(args.url or settings.serving_url)
    try:
        result = client.predict(args.model, rows, version=args.version)
    except ServingError as exc:
        raise OutcomeError(str(exc)) from None
    say(
        json.dumps(
            {
                "model": args.model,
                "model_version": result.model_version,
                "predictions": result.predictions,
            }
        )
    )
    return 0


def _pipelines_named(settings: Settings, name: str | None) -> list[str]:
    """The pipelines ``mlplatform status NAME`` covers: the one called NAME and those serving a
    model NAME (every valid pipeline without NAME); a pipeline whose YAML is gone but whose runs
    are still in storage is found by name."""
    from mlplatform.config import load_pipelines, pipeline_files
    from mlplatform.storage import to_path

    configs = [f.config for f in load_pipelines(pipeline_files(settings.pipelines_dir)) if f.config]
    if name is None:
        return [c.name for c in configs]
    found = [c.name for c in configs if name in (c.name, c.serving.model_name)]
    if not found and (to_path(settings.storage) / name).is_dir():
        found = [name]
    return found


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Models (versions, aliases, what is served, disagreements, retrain decisions), then the
    last runs of their pipelines and what became of each (:mod:`mlplatform.run_history`); for a
    pipeline without a model yet, what happened to its runs."""
    from mlplatform.reconcile import status_report
    from mlplatform.run_history import status_lines

    pipelines = _pipelines_named(settings, args.model)
    try:
        lines = status_report(settings, args.model, args.url or settings.serving_url)
    except LookupError as exc:
        if not pipelines:
            raise UsageError(f"{exc}, and no pipeline of that name") from None
        lines = [f"{args.model}: no model registered yet"]
    for pipeline in pipelines:
        lines += status_lines(settings, pipeline, limit=5 if args.model else 3)
    for line in lines:
        say(line)
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.reconcile import ReconcileError, doctor_report

    try:
        lines, healthy = doctor_report(
            settings, args.model, fix=args.repair, server_url=args.url or settings.serving_url
        )
    except LookupError as exc:
        raise UsageError(str(exc)) from None
    except ReconcileError as exc:
        raise OutcomeError(f"doctor: {exc}") from None
    for line in lines:
        say(line)
    return 0 if healthy else 1

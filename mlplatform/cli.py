"""``mlplatform``: the command line for what people do by hand (the Airflow UI does the rest).

Exit codes: 0 success; 1 a pipeline outcome the user must act on (validation failed, gate
refused, a stage failed); 2 bad usage or bad config. Errors are one line; ``--verbose`` for traces.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mlplatform.config import (
    ConfigError,
    find_pipeline,
    load_pipeline,
    load_pipelines,
    pipeline_files,
)
from mlplatform.permissions import private_dir
from mlplatform.settings import Settings, get_settings

STAGES = [
    "start_run",
    "ingest",
    "validate",
    "features",
    "training_set",
    "train",
    "register",
    "gate",
    "infra_validate",
    "promote",
    "end_run",
]
KEY_OUTPUT = {
    "start_run": "config_hash",
    "end_run": "lease",
    "ingest": "data_version",
    "validate": "data_docs",
    "features": "feature_service",
    "training_set": "training_set_uri",
    "train": "model_uri",
    "register": "model_uri",
    "gate": "challenger",
    "infra_validate": "p99_ms",
    "promote": "served_version",
}


class UsageError(Exception):
    """Bad usage or config: exit code 2."""


class OutcomeError(Exception):
    """A pipeline outcome the user must act on: exit code 1."""


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _stage_line(summary: dict) -> str:
    out = summary["outputs"]
    if "failed" in out:
        state, detail = "FAILED", out["failed"]
    elif "skipped" in out:
        state, detail = "SKIPPED", out["skipped"]
    else:
        key = KEY_OUTPUT.get(summary["stage"], "")
        state, detail = "ok", f"{key}={out.get(key)}" if key else ""
        if summary["stage"] == "train" and out.get("metrics"):
            detail += "  " + " ".join(
                f"{k}={v:.3f}" for k, v in out["metrics"].items() if isinstance(v, float)
            )
        if summary["stage"] == "gate":
            detail = f"{out.get('metric')}: challenger={out.get('challenger')} champion={out.get('champion')}"
        if summary["stage"] == "features" and out.get("superseded_rows"):
            detail += f"  superseded_rows={out['superseded_rows']}"
        if summary["stage"] == "training_set":
            detail += _training_set_detail(out)
    return f"  {summary['stage']:<15}{state:<9}{summary['seconds']:>7.1f}s  {detail}"


def _training_set_detail(out: dict) -> str:
    """``  rows=N window=Xd imputed: f=n ...`` (only what is there)."""
    text = f"  rows={out['rows']}" if "rows" in out else ""
    if out.get("window_days") is not None:
        text += f" window={out['window_days']:g}d"
    imputed = {k: v for k, v in (out.get("imputed") or {}).items() if v}
    if imputed:
        text += " imputed: " + " ".join(f"{k}={v}" for k, v in imputed.items())
    return text


def _stop_runner(proc: subprocess.Popen, stop_file: Path, timeout_s: float = 90.0) -> None:
    """Ask the runner to stop its run (it terminates the trainer and marks the run failed)."""
    stop_file.touch()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_pipeline(settings: Settings, name: str, data: str | None, logical_date: str | None) -> dict:
    """Run the pipeline's training DAG through Airflow in a child process, printing progress.

    The child is the run's driver: interrupting this command (Ctrl-C, SIGTERM, even ``kill -9``:
    the child watches for it) stops the run, its trainer included, and marks it failed. A run of
    the same pipeline that is already in progress is waited for (runs of one pipeline never
    interleave). A pipeline file the DAG factory refuses (a duplicated name included) fails here,
    first.
    """
    from mlplatform import runs
    from mlplatform.storage import run_key

    path = find_pipeline(name, settings.pipelines_dir)
    cfg = load_pipeline(path)
    for item in load_pipelines(pipeline_files(settings.pipelines_dir)):
        if item.error and item.path.resolve() == path.resolve():
            raise ConfigError(item.error)
    data_uri = data or cfg.source.uri
    if not data_uri:
        raise UsageError(f"pipeline {cfg.name!r} has no source.uri: pass --data FILE")
    if "://" not in data_uri:  # a local path or glob: absolute, and something must be there
        path = Path(data_uri).expanduser().absolute()
        pattern = any(c in str(path) for c in "*?[")
        if not (glob.glob(str(path), recursive=True) if pattern else path.exists()):
            raise UsageError(f"--data {data_uri}: no such file")
        data_uri = str(path.resolve()) if path.exists() else str(path)
    logs = settings.home_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    log_path, result_path = logs / f"{cfg.name}-{stamp}.log", logs / f"{cfg.name}-{stamp}.json"
    started_path = Path(f"{result_path}.started")
    cmd = [sys.executable, "-m", "mlplatform.airflow_runner", f"mlp_{cfg.name}_train", str(result_path),
           "--conf", json.dumps({"data_uri": data_uri})]  # fmt: skip
    if logical_date:
        cmd += ["--logical-date", logical_date]
    _say(f"running DAG mlp_{cfg.name}_train through Airflow on {data_uri}")
    _say(f"  (Airflow log: {log_path})")
    holder = runs.current(settings, cfg.name)
    if holder is not None:
        dead = runs.staleness(holder, settings.run_stale_s)
        if dead is None:
            _say(
                f"  another run is in progress: {holder.describe()}; this run waits for it to finish"
            )
        else:
            _say(f"  {holder.describe()} died ({dead}): it is marked failed before this run starts")
    started = time.time()
    seen: set[Path] = set()
    run_dir: Path | None = None
    root = Path(settings.storage) / cfg.name
    env = {**os.environ, "MLP_HOME": str(settings.home_dir), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=settings.repo_root,
                                start_new_session=True)  # fmt: skip
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while True:
                done = proc.poll() is not None
                if run_dir is None and started_path.exists():
                    run_dir = root / run_key(json.loads(started_path.read_text())["run_id"])
                if run_dir is not None:  # this run's stages only, never a concurrent run's
                    for summary_path in sorted(
                        run_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime
                    ):
                        if summary_path not in seen:
                            seen.add(summary_path)
                            _say(_stage_line(json.loads(summary_path.read_text())))
                if done:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            _say("interrupted: stopping the run (the trainer is terminated, the run marked failed)")
            _stop_runner(proc, Path(f"{result_path}.stop"))
            raise OutcomeError(f"run stopped and marked failed; see {log_path}") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
    if not result_path.exists():
        tail = log_path.read_text().strip().splitlines()[-5:]
        raise OutcomeError(
            f"the Airflow run crashed (exit {proc.returncode}); last log lines: {' | '.join(tail)}"
        )
    result = json.loads(result_path.read_text())
    if "error" in result:
        raise UsageError(result["error"])
    if "stopped" in result:
        raise OutcomeError(
            f"run {result['run_id']} was stopped ({result['stopped']}) and marked failed"
        )
    result["elapsed"] = time.time() - started
    result["log"] = str(log_path)
    result["pipeline"] = cfg.name
    return result


def _run_outcome(settings: Settings, result: dict) -> None:
    """Print the run's outcome and where to look; raise OutcomeError when the user must act."""
    from mlplatform.storage import read_summaries, run_key

    runs = read_summaries(settings.storage, result["pipeline"], run_key(result["run_id"]))
    summaries = {s["stage"]: s for s in runs}
    states = result["tasks"]
    _say(f"run {result['run_id']}: {result['state']} in {result['elapsed']:.0f}s")
    failed = [
        t for t in STAGES if states.get(t) in ("failed", "upstream_failed") and t in summaries
    ]
    if failed:
        raise OutcomeError(summaries[failed[0]]["outputs"].get("failed", f"{failed[0]} failed"))
    if any(states.get(t) == "failed" for t in STAGES):
        bad = [t for t in STAGES if states.get(t) == "failed"]
        raise OutcomeError(f"task(s) {', '.join(bad)} failed: see {result['log']}")
    if states.get("gate") == "skipped":
        reason = summaries.get("gate", {}).get("outputs", {}).get("skipped", "gate refused")
        raise OutcomeError(f"not promoted: {reason}")
    validate = summaries.get("validate", {}).get("outputs", {})
    promote = summaries.get("promote", {}).get("outputs", {})
    _say("where to look:")
    _say(
        f"  MLflow       mlflow ui --backend-store-uri {settings.tracking_uri}  ->  {settings.mlflow_ui_url}"
    )
    if validate.get("data_docs"):
        _say(f"  Data Docs    {validate['data_docs']}")
    if promote:
        _say(
            f"  served model {promote['model_base']}/{promote['model_name']}/{promote['served_version']}"
        )


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    result = run_pipeline(settings, args.pipeline, args.data, args.logical_date)
    _run_outcome(settings, result)
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.reconcile import wait_until_served
    from mlplatform.stages import StageError
    from mlplatform.stages.registry import rollback

    try:
        result = rollback(args.model, settings, args.to)
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    version, url = result["served_version"], args.url or settings.serving_url
    _say(
        f"{args.model}: rolled back to v{version} (was v{result['from_version']}): stable label "
        f"and alias champion -> v{version}; v{version} {result['checked']}"
    )
    view = wait_until_served(url, args.model, version, args.wait_s)
    if not view.reachable:
        _say(f"no server answering at {url}; the next start serves v{version}")
    elif view.served_version == version:
        _say(f"the server at {url} serves v{version}")
    else:
        why = f" ({view.degraded or view.error})" if view.degraded or view.error else ""
        raise OutcomeError(
            f"the server at {url} still serves v{view.served_version}, not v{version}, "
            f"after {args.wait_s:g}s{why}"
        )
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.stages import StageError
    from mlplatform.stages.registry import set_stable

    try:
        set_stable(args.model, args.version, settings)
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    _say(f"{args.model}: v{args.version} is now stable and champion")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a pipeline as the DAG factory does (YAML limits, schema, schedules, a name no
    other pipeline file declares), build its DAGs in-process, then check its expectation suite.
    A config error is the line that the placeholder DAG of the file shows in the Airflow UI."""
    from mlplatform.dag_factory import check_pipeline
    from mlplatform.stages import StageError
    from mlplatform.stages.validate import load_suite_definition

    cfg, dags_built = check_pipeline(
        find_pipeline(args.pipeline, settings.pipelines_dir), settings.pipelines_dir
    )
    try:
        suite = load_suite_definition(settings, cfg.validation.suite)
    except StageError as exc:
        raise UsageError(str(exc)) from None
    columns = {e["kwargs"].get("column") for e in suite.get("expectations", [])} - {None}
    unchecked = [
        c
        for c in [cfg.source.entity, cfg.source.timestamp, *cfg.features.all, cfg.features.label]
        if c not in columns
    ]
    _say(
        f"{cfg.name}: config ok (hash {cfg.config_hash()}), suite {cfg.validation.suite!r} has {len(suite['expectations'])} expectations"
    )
    if dags_built:
        _say(f"  DAGs mlp_{cfg.name}_train and mlp_{cfg.name}_rollback build")
    else:
        _say("  note: Airflow is not installed here: the DAGs were not built")
    if unchecked:
        _say(f"  note: no column expectation covers {', '.join(unchecked)}")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from serving import server

    argv = ["--model-base", str(settings.models_dir), "--host", args.host or settings.serving_host,
            "--port", str(args.port or settings.serving_port), "--log-dir", str(settings.request_log_dir),
            "--grpc-port", str(settings.serving_grpc_port if args.grpc_port is None else args.grpc_port)]  # fmt: skip
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
    _say(
        json.dumps(
            {
                "model": args.model,
                "model_version": result.model_version,
                "predictions": result.predictions,
            }
        )
    )
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.reconcile import status_report

    try:
        lines = status_report(settings, args.model, args.url or settings.serving_url)
    except LookupError as exc:
        raise UsageError(str(exc)) from None
    for line in lines:
        _say(line)
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
        _say(line)
    return 0 if healthy else 1


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    """Remove the pipeline's feature history (and, without --features, its run markers)."""
    from mlplatform.reset import ResetRefused, reset_pipeline

    try:
        lines = reset_pipeline(settings, args.pipeline, features_only=args.features)
    except ResetRefused as exc:
        raise OutcomeError(f"reset refused, nothing removed: {exc}") from None
    for line in lines:
        _say(f"reset {args.pipeline}: {line}")
    if not lines:
        _say(f"reset {args.pipeline}: nothing to remove")
    _say(
        f"reset {args.pipeline}: kept its run directories, DVC data versions, quarantine, MLflow "
        "models and served versions; the next run starts the feature history from its batch"
    )
    return 0


def _data_pipeline_name(name: str, settings: Settings) -> str:
    """The pipeline name of ``NAME`` (a file's ``name:``); a pipeline whose YAML is gone keeps
    its data versions, so a bare name is taken as it is."""
    try:
        return load_pipeline(find_pipeline(name, settings.pipelines_dir)).name
    except ConfigError:
        if Path(name).suffix in (".yaml", ".yml"):
            raise
        return name


def cmd_data_versions(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.data_versions import list_versions

    name = _data_pipeline_name(args.pipeline, settings)
    versions = list_versions(settings, name)
    if not versions:
        raise UsageError(f"no data versions of {name!r} in {settings.dvc_repo_dir}")
    _say(f"{name}: {len(versions)} data version(s), newest first (md5, commit, date, file)")
    for version in versions:
        _say(f"  {version.describe()}")
    return 0


def cmd_data_checkout(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.data_versions import checkout_version
    from mlplatform.stages import StageError

    name = _data_pipeline_name(args.pipeline, settings)
    try:
        version, path = checkout_version(
            settings, name, args.version, Path(args.out) if args.out else None
        )
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    _say(f"{name}: data version {version.md5} (commit {version.commit[:10]}) restored to {path}")
    return 0


def cmd_skew(args: argparse.Namespace, settings: Settings) -> int:
    """Compare online and offline features of a sample of entities; exit 1 on any difference."""
    from mlplatform.skew import SkewDetected, check_skew
    from mlplatform.stages import StageError

    cfg = load_pipeline(find_pipeline(args.pipeline, settings.pipelines_dir))
    try:
        report = check_skew(cfg, settings, sample=args.sample, seed=args.seed)
    except StageError as exc:
        raise OutcomeError(str(exc)) from None
    if report.ok:
        _say(report.summary())
        return 0
    for line in report.lines():
        _say(line)
    raise OutcomeError(str(SkewDetected(report)))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_predict(settings: Settings, model: str, rows: list[dict]) -> dict:
    """Start the local server on a free port, send ``rows`` with ``mlplatform predict``, stop it."""
    from serving.client import PredictionClient

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "serving.server", "--model-base", str(settings.models_dir), "--host", "127.0.0.1",
           "--port", str(port), "--log-dir", str(settings.request_log_dir)]  # fmt: skip
    log_path = settings.home_dir / "logs" / "serving.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=settings.repo_root
        )
        try:
            version = PredictionClient(url).wait_until_available(model, timeout_s=120)
            predict = ["mlplatform", "predict", model, "--url", url, "--json", json.dumps(rows)]
            _say(f"  $ mlplatform predict {model} --url {url} --json '[{{...}}, ...]'")
            out = subprocess.run(
                [sys.executable, "-m", "mlplatform.cli", *predict[1:]],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise OutcomeError(f"mlplatform predict failed: {out.stderr.strip()}")
            answer = json.loads(out.stdout.strip().splitlines()[-1])
            return {"port": port, "available_version": version, **answer}
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform import datagen

    data_dir = settings.home_dir / "demo-data"
    batch = len(list(data_dir.glob("batch-*.csv"))) + 1
    path = datagen.write(
        datagen.generate(args.rows, seed=batch, drift=args.drift, bad_fraction=args.bad_fraction),
        data_dir / f"batch-{batch}.csv",
    )
    _say(f"demo batch {batch}: {args.rows} synthetic rows -> {path}")
    result = run_pipeline(settings, "demo", str(path), None)
    try:
        _run_outcome(settings, result)
    except OutcomeError as exc:
        if "not promoted" not in str(exc):
            raise
        _say(f"gate: {exc} (the champion keeps serving)")
    rows = datagen.generate(3, seed=10_000 + batch).drop(
        columns=["churned", "event_time", "customer_id"]
    )
    rows_json = json.loads(rows.to_json(orient="records"))
    _say("serving: starting the local TF-Serving-compatible server and sending 3 raw rows")
    answer = serve_and_predict(settings, "demo", rows_json)
    for row, pred in zip(rows_json, answer["predictions"], strict=True):
        _say(f"  {json.dumps(row)} -> {pred}")
    _say(
        f"answered by model demo version {answer['model_version']} (server on port {answer['port']}, stopped)"
    )
    return 0


#: airflow commands that serve the UI: ``mlplatform airflow`` prints its URL and login first
UI_COMMANDS = ("standalone", "api-server")


def cmd_airflow(args: argparse.Namespace, settings: Settings) -> int:
    """Run an ``airflow`` command on the embedded home; for the UI commands, print where the UI
    is and how to log in (generating the password on first use) before starting it."""
    from mlplatform.airflow_runner import prepare_airflow, ui_banner, ui_url

    env = prepare_airflow()
    if args.airflow_args[:1] and args.airflow_args[0] in UI_COMMANDS:
        try:
            lines = ui_banner(settings, env, ui_url())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for line in lines:
            _say(line)
    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = (
        f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"  # standalone spawns `airflow`
    )
    airflow_bin = str(bin_dir / "airflow")
    os.execv(airflow_bin, [airflow_bin, *args.airflow_args])
    return 0  # pragma: no cover - exec does not return


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
        "run", help="one run of a pipeline's training DAG through Airflow, with a per-stage summary"
    )
    p.add_argument("pipeline", help="pipeline name (pipelines/NAME.yaml) or path to a YAML")
    p.add_argument(
        "--data",
        help="batch to ingest: path, glob, directory, file://, s3://bucket/key-or-prefix/, "
        "sql+<SQLAlchemy URL>?query=...; default source.uri",
    )
    p.add_argument("--logical-date", help="ISO-8601 logical date of the run (default now)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a pipeline config and its expectation suite")
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


if __name__ == "__main__":
    raise SystemExit(main())

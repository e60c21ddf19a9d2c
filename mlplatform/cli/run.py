"""``mlplatform run`` and ``mlplatform demo``: one pipeline run through Airflow, with a per-stage
summary; the demo also serves the promoted model and queries it."""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mlplatform import processes
from mlplatform.cli.common import OutcomeError, UsageError, say
from mlplatform.config import (
    ConfigError,
    PipelineConfig,
    find_pipeline,
    load_pipeline,
    load_pipelines,
    one_line,
    pipeline_files,
)
from mlplatform.contracts import TRAIN_DAG, TRAIN_STAGES
from mlplatform.settings import Settings

#: the train DAG's tasks in order, and the output shown on each one's line (:mod:`mlplatform.contracts`)
STAGES = list(TRAIN_STAGES)
KEY_OUTPUT = {stage.name: stage.key for stage in TRAIN_DAG}


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
        if summary["stage"] == "features":
            if out.get("superseded_rows"):
                detail += f"  superseded_rows={out['superseded_rows']}"
            if out.get("materialization"):  # e.g. "already materialized: v1 [..]"
                detail += f"  ({out['materialization']})"
        if summary["stage"] == "training_set":
            detail += _training_set_detail(out)
        if summary["stage"] == "decide":
            detail = str(out.get("summary", ""))
        if summary["stage"] == "ingest" and out.get("reused"):
            detail += "  (reused: nothing new to ingest; the newest validated batch)"
        if out.get("cached_from"):
            detail += f"  (cached from run {out['cached_from']})"
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


def absolute_data_uri(data_uri: str) -> str:
    """A local path or glob made absolute (the runner runs elsewhere); UsageError when nothing is
    there. URIs (``s3://``, ``sql+...``, ``file://``) are returned as they are."""
    if "://" in data_uri:
        return data_uri
    path = Path(data_uri).expanduser().absolute()
    pattern = any(c in str(path) for c in "*?[")
    if not (glob.glob(str(path), recursive=True) if pattern else path.exists()):
        raise UsageError(f"--data {data_uri}: no such file")
    return str(path.resolve()) if path.exists() else str(path)


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


def load_valid_pipeline(settings: Settings, name: str) -> PipelineConfig:
    """The pipeline ``name`` (or path), refused with the DAG factory's line when the factory
    refuses its file (a duplicated name included)."""
    path = find_pipeline(name, settings.pipelines_dir)
    cfg = load_pipeline(path)
    for item in load_pipelines(pipeline_files(settings.pipelines_dir)):
        if item.error and item.path.resolve() == path.resolve():
            raise ConfigError(item.error)
    return cfg


#: a log line that states an exception: ``KeyError: 'x'``, ``airflow.exceptions.AirflowX: ...``
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Failed)\b.*")


def log_cause(log_path: Path, task: str | None = None, tail_lines: int = 400) -> str | None:
    """The root cause a log states: the last exception line (``Type: message``) among its last
    ``tail_lines`` lines (with ``task``: from that task's first mention in them on); None when
    the log states none."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-tail_lines:]
    except OSError:
        return None
    if task is not None:
        mentions = [i for i, line in enumerate(lines) if task in line]
        lines = lines[mentions[0] :] if mentions else lines
    causes = [m.group(0) for line in lines if (m := _EXCEPTION_LINE.match(line.strip()))]
    return one_line(causes[-1], 300) if causes else None


def runner_result(proc: subprocess.Popen, result_path: Path, log_path: Path) -> dict:
    """What the runner child (:mod:`mlplatform.airflow_runner`) wrote to ``result_path``;
    OutcomeError with the root cause its log states (else its last lines) if it crashed,
    UsageError for a refused request."""
    if not result_path.exists():
        cause = log_cause(log_path)
        if cause is None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            cause = "last log lines: " + " | ".join(tail)
        raise OutcomeError(
            f"the Airflow run crashed: {cause} (runner exit {proc.returncode}; log {log_path})"
        )
    result = json.loads(result_path.read_text())
    if "error" in result:
        raise UsageError(result["error"])
    return result


def _runner_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "MLP_HOME": str(settings.home_dir), "PYTHONUNBUFFERED": "1"}


class RunnerStandby:
    """The runner child started before the command's own checks (``python -m
    mlplatform.airflow_runner --standby``): it warms up (the home's databases, Airflow's
    imports, the DagBag, the Execution API) while this process loads and checks the pipeline,
    then gets its arguments on stdin (:meth:`request`). Its log is ``<home>/logs/run-<stamp>.log``
    until :meth:`name_log` names it after the pipeline. :meth:`cancel` (the checks failed) stops
    it at once (SIGTERM: it ends cleanly) and removes its log; so does leaving the ``with``
    block by an exception before :meth:`request`."""

    def __init__(self, settings: Settings) -> None:
        logs = settings.home_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        self.log_path = logs / f"run-{self.stamp}.log"
        with open(self.log_path, "w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlplatform.airflow_runner", "--standby"],
                stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, text=True,
                env=_runner_env(settings), cwd=settings.repo_root, start_new_session=True,
            )  # fmt: skip
        self.requested = False

    def __enter__(self) -> RunnerStandby:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None and not self.requested:
            self.cancel()

    def name_log(self, prefix: str) -> Path:
        """Rename the log to ``<prefix>-<stamp>.log`` (the runner keeps writing to it)."""
        named = self.log_path.with_name(f"{prefix}-{self.stamp}.log")
        self.log_path = self.log_path.rename(named)
        return named

    def request(self, argv: list[str]) -> subprocess.Popen:
        """Hand the runner its arguments (those of ``python -m mlplatform.airflow_runner``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": argv}) + "\n")
        self.proc.stdin.close()
        self.requested = True
        return self.proc

    def cancel(self) -> None:
        """Stop the runner (its process group: a migration it started too) before it ran
        anything, and remove its log."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.log_path.unlink(missing_ok=True)


def drive_runner(
    settings: Settings,
    cmd: list[str],
    log_path: Path,
    result_path: Path,
    what: str,
    stopping: str = "",
    on_poll: Callable[[], None] | None = None,
    standby: RunnerStandby | None = None,
) -> dict:
    """Start the runner child (:mod:`mlplatform.airflow_runner`) ``cmd`` with its output in
    ``log_path`` (with ``standby``: hand the arguments of ``cmd`` to that warmed-up runner, whose
    log is ``log_path``), call ``on_poll`` every half second while it runs (and once after), and
    return :func:`runner_result`. Ctrl-C or SIGTERM asks the runner to stop its run
    (``stopping`` says what that also ends, e.g. "the trainer is terminated, "), which marks it
    failed, then raises OutcomeError naming ``what`` was stopped."""
    with contextlib.ExitStack() as stack:
        if standby is not None:
            proc = standby.request(cmd[3:])  # [python, -m, module, *arguments]
        else:
            log_file = stack.enter_context(open(log_path, "w"))
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                    env=_runner_env(settings), cwd=settings.repo_root,
                                    start_new_session=True)  # fmt: skip
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while True:
                done = proc.poll() is not None
                if on_poll is not None:
                    on_poll()
                if done:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.5)  # returns as soon as the runner ends
        except KeyboardInterrupt:
            say(f"interrupted: stopping the {what} ({stopping}the run is marked failed)")
            _stop_runner(proc, Path(f"{result_path}.stop"))
            raise OutcomeError(f"{what} stopped and marked failed; see {log_path}") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
    return runner_result(proc, result_path, log_path)


def run_pipeline(
    settings: Settings,
    name: str,
    data: str | None,
    logical_date: str | None,
    use_cache: bool = True,
    standby: RunnerStandby | None = None,
) -> dict:
    """Run the pipeline's training DAG through Airflow in a child process, printing progress.

    The child is the run's driver: interrupting this command (Ctrl-C, SIGTERM, even ``kill -9``:
    the child watches for it) stops the run, its trainer included, and marks it failed. A run of
    the same pipeline that is already in progress is waited for (runs of one pipeline never
    interleave). A pipeline file the DAG factory refuses (a duplicated name included) fails here,
    first. ``use_cache=False`` (``--no-cache``) sets the run's param ``cache`` false: every stage
    runs afresh. The runner is started before the checks (:class:`RunnerStandby`; ``standby``:
    one the caller started even earlier) and stopped if they fail.
    """
    # start the runner first: its warm-up overlaps the checks below, a failed check stops it
    standby = standby or RunnerStandby(settings)
    with standby:
        cfg = load_valid_pipeline(settings, name)
        # a landing source templated by the data interval is the ingest DAG's to read: without
        # --data such a run trains on the validated history (the newest validated batch)
        data_uri = data or ("" if cfg.source.templated else cfg.source.uri) or ""
        if data_uri:
            data_uri = absolute_data_uri(data_uri)
        log_path = standby.name_log(cfg.name)
    return _drive_run(settings, cfg, standby, log_path, data_uri, logical_date, use_cache)


def _drive_run(
    settings: Settings,
    cfg: PipelineConfig,
    standby: RunnerStandby,
    log_path: Path,
    data_uri: str,
    logical_date: str | None,
    use_cache: bool,
) -> dict:
    """The checked run of :func:`run_pipeline` on its warmed-up runner."""
    from mlplatform import runs
    from mlplatform.storage import local_root, run_key

    result_path = log_path.with_suffix(".json")
    started_path = Path(f"{result_path}.started")
    cmd = [sys.executable, "-m", "mlplatform.airflow_runner", f"mlp_{cfg.name}_train", str(result_path),
           "--conf", json.dumps({"data_uri": data_uri, "cache": use_cache})]  # fmt: skip
    if logical_date:
        cmd += ["--logical-date", logical_date]
    on = data_uri or "the validated history (newest validated batch)"
    say(f"running DAG mlp_{cfg.name}_train through Airflow on {on}")
    say(f"  (Airflow log: {log_path})")
    holder = runs.current(settings, cfg.name)
    if holder is not None:
        dead = runs.staleness(holder, settings.run_stale_s)
        if dead is None:
            say(
                f"  another run is in progress: {holder.describe()}; this run waits for it to finish"
            )
        else:
            say(f"  {holder.describe()} died ({dead}): it is marked failed before this run starts")
    started = time.time()
    seen: set[Path] = set()
    run_dir: Path | None = None
    root = local_root(settings) / cfg.name

    def show_new_stages() -> None:
        nonlocal run_dir
        if run_dir is None and started_path.exists():
            run_dir = root / run_key(json.loads(started_path.read_text())["run_id"])
        if run_dir is not None:  # this run's stages only, never a concurrent run's
            for summary_path in sorted(
                run_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime
            ):
                if summary_path not in seen:
                    seen.add(summary_path)
                    say(_stage_line(json.loads(summary_path.read_text())))

    result = drive_runner(settings, cmd, log_path, result_path, "run",
                          "the trainer is terminated, ", show_new_stages, standby)  # fmt: skip
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
    say(f"run {result['run_id']}: {result['state']} in {result['elapsed']:.0f}s")
    cached = [s["stage"] for s in runs if s["outputs"].get("cached_from")]
    if cached:
        say(
            f"cache: {len(cached)} stage(s) reused earlier outputs ({', '.join(cached)}); "
            "--no-cache runs them afresh"
        )
    failed = [
        t for t in STAGES if states.get(t) in ("failed", "upstream_failed") and t in summaries
    ]
    if failed:
        raise OutcomeError(summaries[failed[0]]["outputs"].get("failed", f"{failed[0]} failed"))
    if any(states.get(t) == "failed" for t in STAGES):
        bad = [t for t in STAGES if states.get(t) == "failed"]
        cause = log_cause(Path(result["log"]), task=bad[0])
        what = f"{bad[0]} failed: {cause}" if cause else f"task(s) {', '.join(bad)} failed"
        raise OutcomeError(f"{what} (log {result['log']})") from None
    if states.get("gate") == "skipped":
        reason = summaries.get("gate", {}).get("outputs", {}).get("skipped", "gate refused")
        raise OutcomeError(f"not promoted: {reason}")
    validate = summaries.get("validate", {}).get("outputs", {})
    promote = summaries.get("promote", {}).get("outputs", {})
    say("where to look:")
    say(
        f"  MLflow       mlflow ui --backend-store-uri {settings.tracking_uri}  ->  {settings.mlflow_ui_url}"
    )
    if validate.get("data_docs"):
        say(f"  Data Docs    {validate['data_docs']}")
    if promote:
        say(
            f"  served model {promote['model_base']}/{promote['model_name']}/{promote['served_version']}"
        )


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    result = run_pipeline(
        settings, args.pipeline, args.data, args.logical_date, use_cache=not args.no_cache
    )
    _run_outcome(settings, result)
    return 0


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
            say(f"  $ mlplatform predict {model} --url {url} --json '[{{...}}, ...]'")
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
            processes.stop(server)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform import datagen

    with RunnerStandby(settings) as standby:  # warms up while the batch is generated
        data_dir = settings.home_dir / "demo-data"
        batch = len(list(data_dir.glob("batch-*.csv"))) + 1
        path = datagen.write(
            datagen.generate(
                args.rows, seed=batch, drift=args.drift, bad_fraction=args.bad_fraction
            ),
            data_dir / f"batch-{batch}.csv",
        )
        say(f"demo batch {batch}: {args.rows} synthetic rows -> {path}")
        result = run_pipeline(settings, "demo", str(path), None, standby=standby)
    try:
        _run_outcome(settings, result)
    except OutcomeError as exc:
        if "not promoted" not in str(exc):
            raise
        say(f"gate: {exc} (the champion keeps serving)")
    rows = datagen.generate(3, seed=10_000 + batch).drop(
        columns=["churned", "event_time", "customer_id"]
    )
    rows_json = json.loads(rows.to_json(orient="records"))
    say("serving: starting the local TF-Serving-compatible server and sending 3 raw rows")
    answer = serve_and_predict(settings, "demo", rows_json)
    for row, pred in zip(rows_json, answer["predictions"], strict=True):
        say(f"  {json.dumps(row)} -> {pred}")
    say(
        f"answered by model demo version {answer['model_version']} (server on port {answer['port']}, stopped)"
    )
    return 0

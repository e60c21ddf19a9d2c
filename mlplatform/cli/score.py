"""``mlplatform score NAME [--data URI]``: one run of the pipeline's batch scoring DAG.

Through Airflow, like ``mlplatform run`` (a child process drives ``dag.test`` of
``mlp_<name>_score``): the run, its log and its failure alert are the ones a scheduled run has,
and the same operator code runs. Airflow's start costs seconds; the scoring itself dominates for
large inputs. ``--data`` overrides ``scoring.input_uri`` for this run; with neither, every
entity's latest offline features are scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from mlplatform.cli.common import OutcomeError, say
from mlplatform.cli.run import absolute_data_uri, drive_runner, load_valid_pipeline
from mlplatform.settings import Settings


def score_pipeline(settings: Settings, name: str, data: str | None) -> dict:
    """Run ``mlp_<name>_score`` through Airflow; returns the score stage's summary outputs.
    Raises OutcomeError with the stage's one line when the run failed."""
    from mlplatform.score_dag import score_dag_id
    from mlplatform.stages.score import shown_uri
    from mlplatform.storage import SCORE_RUN_PREFIX, local_root, run_key

    cfg = load_valid_pipeline(settings, name)
    data_uri = absolute_data_uri(data) if data else ""
    dag_id = score_dag_id(cfg.name)
    logs = settings.home_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    log_path, result_path = logs / f"{dag_id}-{stamp}.log", logs / f"{dag_id}-{stamp}.json"
    cmd = [sys.executable, "-m", "mlplatform.airflow_runner", dag_id, str(result_path),
           "--conf", json.dumps({"input_uri": data_uri})]  # fmt: skip
    what = data_uri or cfg.scoring.input_uri
    what = shown_uri(what) if what else "every entity's latest offline features"
    say(f"scoring {what} with the champion of {cfg.serving.model_name} (DAG {dag_id})")
    say(f"  (Airflow log: {log_path})")
    result = drive_runner(settings, cmd, log_path, result_path, "scoring run")
    run_dir = SCORE_RUN_PREFIX + run_key(result["run_id"])
    summary_path = local_root(settings) / cfg.name / run_dir / "score"
    summary_path = summary_path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if result.get("tasks", {}).get("score") != "success" or summary is None:
        failed = (summary or {}).get("outputs", {}).get("failed")
        raise OutcomeError(failed or f"scoring run {result['run_id']} failed: see {log_path}")
    return {**summary["outputs"], "run_id": result["run_id"], "stage_seconds": summary["seconds"]}


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    out = score_pipeline(settings, args.pipeline, args.data)
    say(
        f"  score          ok {out['stage_seconds']:>9.1f}s  rows={out['rows']} "
        f"chunks={out['chunks']} ({out['rows_per_s']:.0f} rows/s after "
        f"{out['setup_seconds']:.1f}s loading the model) with {out['model_name']} "
        f"v{out['model_version']} (trained on data {out['data_version']})"
    )
    say(f"predictions  {out['predictions_uri']}")
    if out.get("request_log_error"):
        say(f"request log  not written: {out['request_log_error']}")
    else:
        say(f"request log  {out['request_log_lines']} line(s) appended under {out['request_log']}")
    return 0

"""Step caching: a cached scheduled retrain on unchanged data against a full run.

Usage::

    .venv/bin/python benchmarks/bench_cache.py [--rows 1500]
        [--out benchmarks/results/cache.md]

In a fresh platform home (a temporary ``MLP_HOME``), the demo pipeline gets ``source.uri`` set
to one generated batch, as a scheduled retrain reads it, and runs twice through Airflow with
``mlplatform run demo`` (no ``--data``: the DAG's defaults, those of a scheduled run): first full
(every stage runs, one training), then again on the unchanged data (every stage cached). It
reports each run's wall time as the CLI sees it (Airflow start and DAG parsing included), the
sum of the stage times, the stages cached and the MLflow training runs, per stage and the ratio
full / cached. One run each (a retrain is one run, not a best-of). Prints a markdown table and
writes it to ``--out``. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlplatform import datagen  # noqa: E402
from mlplatform.contracts import WORK_STAGES  # noqa: E402
from mlplatform.storage import read_summaries, run_key  # noqa: E402

#: the stages that have a cache key, in pipeline order (run control and decide have none)
STAGES = list(WORK_STAGES)


def run_once(home: Path, env: dict[str, str]) -> dict:
    """One ``mlplatform run demo``: wall seconds, run id, stage summaries, training runs."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "run", "demo"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mlplatform run failed:\n{done.stdout}\n{done.stderr}")
    run_id = re.search(r"^run (\S+): success", done.stdout, re.M).group(1)
    summaries = {
        s["stage"]: s for s in read_summaries(str(home / "storage"), "demo", run_key(run_id))
    }
    return {
        "wall": wall,
        "run_id": run_id,
        "summaries": summaries,
        "training_runs": training_runs(home),
    }


def training_runs(home: Path) -> int:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("demo")
    return len(client.search_runs([experiment.experiment_id])) if experiment else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cache.md"))
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    pipelines = home / "pipelines"
    shutil.copytree(REPO / "pipelines", pipelines)
    batch = datagen.write(datagen.generate(args.rows, seed=1), home / "batch.csv")
    demo = pipelines / "demo.yaml"
    # the batch as the pipeline's own source.uri (in place of the demo's landing template)
    demo.write_text(
        re.sub(r"^  uri: .*$", f"  uri: {batch}", demo.read_text(), count=1, flags=re.M)
    )
    env = {
        **os.environ,
        "MLP_HOME": str(home / "home"),
        "MLP_PIPELINES_PATH": str(pipelines),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        full = run_once(home / "home", env)
        print(f"full run:   {full['wall']:.1f}s ({full['run_id']})", flush=True)
        cached = run_once(home / "home", env)
        print(f"cached run: {cached['wall']:.1f}s ({cached['run_id']})", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    hits = [s for s in STAGES if cached["summaries"][s]["outputs"].get("cached_from")]
    load = os.getloadavg()[0]
    lines = [
        "# Step caching: a scheduled retrain on unchanged data, cached vs full",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
        f"{load:.1f} at the end; {datetime.now(UTC):%Y-%m-%d}. The demo pipeline, {args.rows:,} "
        "rows, `mlplatform run demo` on its `source.uri` (the DAG defaults of a scheduled run), "
        "twice in one fresh home through Airflow (`dag.test`); one run each. Wall time is the "
        "CLI's, Airflow start and DAG parsing included.",
        "",
        "| run | wall s | stages s (sum) | stages cached | MLflow training runs after it |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, run in (("full", full), ("cached (unchanged data)", cached)):
        stage_sum = sum(run["summaries"][s]["seconds"] for s in STAGES)
        cached_n = sum(1 for s in STAGES if run["summaries"][s]["outputs"].get("cached_from"))
        lines.append(
            f"| {name} | {run['wall']:.1f} | {stage_sum:.1f} | {cached_n}/{len(STAGES)} | "
            f"{run['training_runs']} |"
        )
    lines += [
        "",
        f"Full / cached: **{full['wall'] / cached['wall']:.1f}×** wall time; stages alone "
        f"{sum(full['summaries'][s]['seconds'] for s in STAGES) / max(0.01, sum(cached['summaries'][s]['seconds'] for s in STAGES)):.0f}×.",
        "",
        "| stage | full s | cached s |",
        "| --- | ---: | ---: |",
    ]
    for stage in STAGES:
        mark = "" if stage in hits else " (ran)"
        lines.append(
            f"| {stage} | {full['summaries'][stage]['seconds']:.1f} | "
            f"{cached['summaries'][stage]['seconds']:.1f}{mark} |"
        )
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)
    print(json.dumps({"full_s": round(full["wall"], 1), "cached_s": round(cached["wall"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

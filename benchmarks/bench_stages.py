"""Every stage's throughput and peak memory at 4k, 40k and 400k rows: how cost grows.

Usage::

    .venv/bin/python benchmarks/bench_stages.py [--sizes 4000,40000,400000] [--epochs 1]
                                                [--out benchmarks/results/stages.md]

What it does (loopback only, a fresh platform home per size, stops by itself; about 15 minutes
on 2 cores at the default sizes):

1. Writes a demo batch (:mod:`mlplatform.datagen`) of each size as CSV.
2. Runs the train DAG's stages in order on it, each in a fresh process, by calling the stage
   functions the operators call (no Airflow, so its per-task start-up is not in the figures):
   ingest (DVC add + push), validate (Great Expectations, Data Docs), features (offline store,
   ``feast apply``, materialization into SQLite), training_set (point-in-time join, split),
   train (``horovodrun``, the demo's model with ``--epochs``), register, gate, infra_validate
   and promote. Each stage reads the previous stages' outputs, as in a run.
3. For each stage: its imports (the platform's modules and what the stage loads lazily:
   TensorFlow, Great Expectations, Feast, MLflow), timed apart since a task pays them once
   whatever the batch size; wall seconds, rows/s (the batch's rows; train: rows x epochs), and peak
   memory: the stage process's peak RSS above its RSS after the imports (Linux ``clear_refs``
   resets the high-water mark after the imports), plus for train the largest trainer rank's
   peak RSS (``RUSAGE_CHILDREN``).
4. The growth exponent ``log(t_max / t_min) / log(n_max / n_min)`` per stage: 1.0 is linear,
   below 1 means fixed costs still dominate; above 1 would be worse than linear.

Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlplatform.contracts import WORK_STAGES as STAGES  # noqa: E402


def _rss_kib(field: str) -> int:
    line = next(x for x in open("/proc/self/status") if x.startswith(f"{field}:"))
    return int(line.split()[1])


def _reset_peak() -> None:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0, ``clear_refs`` value 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def _config(epochs: int):
    from mlplatform.config import load_pipeline

    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"epochs": epochs})})


def _run_stage(stage: str, cfg: Any, state: dict[str, Any], out_dir: Path, settings: Any) -> dict:
    """Call the stage function the stage's operator calls, with the earlier stages' outputs."""
    if stage == "ingest":
        from mlplatform.stages.ingest import ingest

        return ingest(cfg, state["batch"], out_dir, settings)
    data = state["ingest"]
    if stage == "validate":
        from mlplatform.stages.validate import validate

        return validate(cfg, data["data_uri"], data["data_version"], out_dir, settings)
    if stage == "features":
        from mlplatform.stages.features import materialize_features

        return materialize_features(cfg, data["data_uri"], data["data_version"], out_dir, settings)
    if stage == "training_set":
        from mlplatform.stages.features import build_training_set

        return build_training_set(cfg, data["data_uri"], out_dir, settings)
    tset = state["training_set"]
    if stage == "train":
        from mlplatform.stages.train import run_local, write_spec

        spec = write_spec(cfg, tset, out_dir, settings, run_name="bench", tags={})
        return run_local(cfg, spec, settings, emit=lambda line: None)
    if stage == "register":
        from mlplatform.stages.registry import register

        trained = state["train"]
        model_id = trained.get("mlflow_model_id")
        model_uri = f"models:/{model_id}" if model_id else trained["model_uri"]
        return register(cfg, model_uri, trained["mlflow_run_id"], {}, settings)
    version = int(state["register"]["model_version"])
    if stage == "gate":
        from mlplatform.stages.registry import GateRefused, gate

        try:
            return gate(cfg, version, tset["holdout_uri"], settings)
        except GateRefused as exc:  # the bench measures cost: a refusal is an outcome too
            return {"decision": "refused", "reason": str(exc)}
    if stage == "infra_validate":
        from mlplatform.stages.infra_validate import infra_validate

        return infra_validate(cfg, version, tset["holdout_uri"], out_dir, settings)
    if stage == "promote":
        from mlplatform.stages.registry import promote

        return promote(cfg, version, settings, state["infra_validate"]["candidate_dir"])
    raise ValueError(f"unknown stage {stage!r}")


# What each stage imports lazily, loaded before the clock starts: a task pays it once whatever
# the batch size, and it is reported apart (the "imports s" column) so the growth is the work's.
PRELOAD = {
    "validate": ("great_expectations",),
    "features": ("feast", "dask.dataframe"),
    "training_set": ("feast", "dask.dataframe"),
    "register": ("mlflow",),
    "gate": ("mlflow", "tensorflow"),
    "infra_validate": ("mlflow", "tensorflow"),
    "promote": ("mlflow",),
}


def child(stage: str, state_path: Path, epochs: int) -> int:
    """One stage in this (fresh) process: append its output and figures to ``state_path``."""
    import importlib

    t = time.perf_counter()
    import mlplatform.stages.features  # noqa: F401
    import mlplatform.stages.ingest  # noqa: F401
    import mlplatform.stages.registry  # noqa: F401
    import mlplatform.stages.validate  # noqa: F401
    from mlplatform.settings import get_settings
    from mlplatform.storage import stage_dir

    for module in PRELOAD.get(stage, ()):
        importlib.import_module(module)
    imports_s = time.perf_counter() - t
    state = json.loads(state_path.read_text())
    cfg, settings = _config(epochs), get_settings()
    out_dir = stage_dir(settings.storage, cfg.name, "bench", stage)
    base_kib = _rss_kib("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    result = _run_stage(stage, cfg, state, out_dir, settings)
    seconds = time.perf_counter() - t
    state[stage] = json.loads(json.dumps(result, default=str))
    state.setdefault("figures", {})[stage] = {
        "seconds": seconds,
        "imports_s": imports_s,
        "peak_mib": (_rss_kib("VmHWM") - base_kib) / 1024,
        "children_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    state_path.write_text(json.dumps(state))
    return 0


def run_size(rows: int, epochs: int, tmp: Path) -> dict[str, dict[str, float]]:
    """All stages on a fresh home for a batch of ``rows``; returns the figures per stage."""
    from mlplatform import datagen

    home = tmp / f"home-{rows}"
    batch = datagen.write(datagen.generate(rows, seed=3), tmp / f"batch-{rows}.csv")
    state_path = tmp / f"state-{rows}.json"
    state_path.write_text(json.dumps({"batch": str(batch)}))
    env = {
        **os.environ,
        "MLP_HOME": str(home),
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    for stage in STAGES:
        cmd = [sys.executable, __file__, "--child", stage, str(state_path), "--epochs", str(epochs)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise SystemExit(f"bench_stages: {stage} failed at {rows:,} rows:\n{tail}")
        fig = json.loads(state_path.read_text())["figures"][stage]
        print(f"  {rows:>9,} rows  {stage:<15} {fig['seconds']:7.2f} s", flush=True)
    return json.loads(state_path.read_text())["figures"]


def table(figures: dict[int, dict[str, dict[str, float]]], epochs: int) -> list[str]:
    sizes = sorted(figures)
    head = " | ".join(
        f"{n // 1000}k s | {n // 1000}k rows/s | {n // 1000}k peak MiB" for n in sizes
    )
    lines = [
        f"| stage | imports s | {head} | growth exponent |",
        "| --- |" + " ---: |" * (3 * len(sizes) + 2),
    ]
    for stage in STAGES:
        cells = []
        for n in sizes:
            f = figures[n][stage]
            work = n * epochs if stage == "train" else n
            peak = f"{f['peak_mib']:.0f}"
            if stage == "train":
                peak += f" (+ rank {f['children_peak_mib']:.0f})"
            cells.append(f"{f['seconds']:.2f} | {work / f['seconds']:,.0f} | {peak}")
        lo, hi = figures[sizes[0]][stage]["seconds"], figures[sizes[-1]][stage]["seconds"]
        growth = math.log(hi / lo) / math.log(sizes[-1] / sizes[0])
        imports = figures[sizes[0]][stage]["imports_s"]
        lines.append(f"| {stage} | {imports:.1f} | {' | '.join(cells)} | {growth:.2f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="4000,40000,400000", help="batch sizes, comma-separated")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (the demo's model)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "stages.md"))
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "STATE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), args.epochs)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        figures = {n: run_size(n, args.epochs, Path(tmp)) for n in sizes}
    lines = [
        f"Every stage of the train DAG, called as its operator calls it, one fresh process per "
        f"stage; the demo pipeline with {args.epochs} epoch(s); {platform.machine()}, "
        f"{os.cpu_count()} cores; peak MiB = the stage process's peak RSS above its RSS after "
        "imports (train: + the largest trainer rank's peak RSS); imports s = the platform modules and "
        "what the stage loads lazily (TensorFlow, GX, Feast, MLflow), paid once per task and not "
        "in the stage's seconds.",
        "",
        *table(figures, args.epochs),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The train stage's time outside epochs at the demo size (issue 15, item 6).

Usage::

    MLP_HOME=/tmp/somewhere .venv/bin/python benchmarks/bench_train_startup.py [--rows 4000]
        [--repeat 2] [--workdir DIR] [--processes N]

Runs what the local train task runs, in this process: ``write_spec`` then ``run_local`` (the
``horovodrun`` launch with its ranks, MLflow logging and export) for ``pipelines/demo.yaml`` on
``--rows`` rows of ``mlplatform.datagen`` data split 80/20 (the demo's training set). For each
repeat it prints the stage's wall time, the epochs' time (the trainer's ``metrics.json``:
``seconds``, the training loop alone) and the rest: start-up, data loading, model building,
export and MLflow — what item 6 asks to halve. The number of processes is the stage's own choice
(``training.processes_per_worker`` / the data-size rule; ``--processes`` fixes it), reported as
``np``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: trainer log lines that mark a phase (seconds since the stage started are printed for each)
MARKS = {
    "launched": "launching:",
    "trainer started": "training tabular_",
    "epoch 1 done": "epoch 1/",
    "holdout done": "holdout ",
    "mlflow done": "mlflow run ",
}
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; prints one line per repeat and a median line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--processes", type=int, default=None, help="fix training.processes_per_worker"
    )
    args = parser.parse_args(argv)

    from mlplatform import datagen
    from mlplatform.config import load_pipeline
    from mlplatform.settings import get_settings
    from mlplatform.stages.train import run_local, write_spec
    from mlplatform.storage import to_path

    settings = get_settings()
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    if args.processes is not None:
        training = cfg.training.model_copy(update={"processes_per_worker": args.processes})
        cfg = cfg.model_copy(update={"training": training})
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_train_startup_"))
    work.mkdir(parents=True, exist_ok=True)
    df = datagen.generate(n_rows=args.rows, seed=0).sort_values("event_time")
    cut = int(len(df) * (1 - cfg.features.holdout_fraction))
    training_set = {
        "train_uri": str(work / "train.parquet"),
        "holdout_uri": str(work / "holdout.parquet"),
    }
    df.iloc[:cut].to_parquet(training_set["train_uri"], index=False)
    df.iloc[cut:].to_parquet(training_set["holdout_uri"], index=False)

    rows: list[tuple[float, float]] = []
    for i in range(args.repeat):
        out = work / f"run{i}"
        out.mkdir(parents=True, exist_ok=True)
        # an earlier run on the same data (same checkpoint key) would make this one resume
        shutil.rmtree(to_path(settings.storage) / cfg.name / "checkpoints", ignore_errors=True)
        t0 = time.perf_counter()
        marks: dict[str, float] = {}

        def emit(line: str, marks: dict[str, float] = marks, t0: float = t0) -> None:
            for key, text in MARKS.items():
                if text in line and key not in marks:
                    marks[key] = time.perf_counter() - t0

        spec = write_spec(cfg, training_set, out, settings, run_name=f"bench-{i}", tags={})
        marks["spec written"] = time.perf_counter() - t0
        result = run_local(cfg, spec, settings, emit=emit)
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text())
        epochs = float(metrics["seconds"])
        rows.append((wall, epochs))
        print(
            f"repeat {i + 1}: np={result['world_size']} wall={wall:.1f}s "
            f"epochs={epochs:.1f}s outside_epochs={wall - epochs:.1f}s",
            flush=True,
        )
        print("  at: " + ", ".join(f"{k} {v:.1f}s" for k, v in marks.items()), flush=True)
    wall = statistics.median(r[0] for r in rows)
    outside = statistics.median(r[0] - r[1] for r in rows)
    print(
        f"median of {len(rows)}: wall={wall:.1f}s outside_epochs={outside:.1f}s "
        f"(rows={args.rows}, load={os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

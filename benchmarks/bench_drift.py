"""The monitor's drift check (Evidently ``DataDriftPreset``) at 10k, 100k and 1M rows: how its
cost grows.

Usage::

    .venv/bin/python benchmarks/bench_drift.py [--rows 10000,100000,1000000]
        [--out benchmarks/results/drift.md]

For each size it generates a reference and a shifted current batch of that many rows each
(``mlplatform.datagen``, ``drift=0.5``; the demo's 4 numeric and 2 categorical features) and
times, in one process, :func:`mlplatform.monitoring.drift.compute_drift` as the monitor calls
it: the drift computation alone (no report) and the whole check with the self-contained HTML
report written. Each is run twice, interleaved, after a warm-up at 10k rows (Evidently's first
call pays its imports); the faster run counts. It reports seconds, rows/s (current rows), the report's size, the drift share found
and the tests Evidently chose (it switches from K-S/chi-square p-values to Wasserstein/
Jensen-Shannon distances above 1000 rows). Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.timing import timed  # noqa: E402
from mlplatform import datagen  # noqa: E402
from mlplatform.config import load_pipeline  # noqa: E402
from mlplatform.monitoring.drift import compute_drift  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "drift.md"))
    args = parser.parse_args(argv)
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    numeric, categorical = cfg.features.numeric, cfg.features.categorical
    share = cfg.monitoring.drift_share

    def check(reference, current, report: Path | None):
        return compute_drift(reference, current, numeric, categorical, share, report)

    warm = datagen.generate(10_000, seed=0)
    check(warm, warm, None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.rows.split(",")):
            reference = datagen.generate(n, seed=1)
            current = datagen.generate(n, seed=2, drift=0.5)
            report = Path(tmp) / f"drift-{n}.html"
            drift_times, total_times = [], []
            for _ in range(2):  # interleaved, best of 2: the machine is shared
                _, seconds = timed(lambda r=reference, c=current: check(r, c, None))
                drift_times.append(seconds)
                result, seconds = timed(lambda r=reference, c=current, p=report: check(r, c, p))
                total_times.append(seconds)
            drift_s, total_s = min(drift_times), min(total_times)
            methods = sorted(set(result.methods.values()))
            size_mb = report.stat().st_size / 1e6
            rows.append((n, drift_s, total_s, size_mb, result.share, methods, result.offline))
            print(
                f"{n:>9} rows: drift {drift_s:.2f}s, with report {total_s:.2f}s "
                f"({size_mb:.1f} MB), share {result.share:.2f}, {', '.join(methods)}",
                flush=True,
            )
    lines = [
        "# Drift check (Evidently DataDriftPreset) vs rows",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{len(numeric)} numeric + {len(categorical)} categorical features; reference and "
        "current of N rows each (current shifted, datagen drift=0.5); best of 2 interleaved runs "
        "after a warm-up.",
        "",
        "| rows (each side) | drift s | drift + HTML report s | current rows/s (with report) "
        "| report MB | drift share | Evidently tests | report offline |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for n, drift_s, total_s, size_mb, found, methods, offline in rows:
        lines.append(
            f"| {n:,} | {drift_s:.2f} | {total_s:.2f} | {n / total_s:,.0f} | {size_mb:.1f} "
            f"| {found:.2f} | {', '.join(methods)} | {'yes' if offline else 'NO'} |"
        )
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ingest throughput with and without chunking, and Feast online reads: Redis vs SQLite.

Usage::

    .venv/bin/python benchmarks/bench_data.py [--rows N] [--out benchmarks/results/data.md]

What it does (loopback only, bounded, stops by itself; about 2 minutes on 2 cores):

1. Writes a demo batch of ``--rows`` rows (default 2,000,000) as CSV and as Parquet.
2. For each format, runs the ingest stage's reading and writing
   (:func:`mlplatform.sources.read_chunks` + :func:`mlplatform.sources.write_parquet` with
   ingest's own chunk preparation, no DVC) in a fresh process, once with one chunk for the whole
   batch and once with chunks of 100,000 rows, and reports rows/s and the process's peak RSS (VmHWM; the imports alone are a row).
   The whole ingest stage (DVC add + push included) runs once per format with the default chunk.
3. Materializes 2,000 rows into Feast's SQLite online store and into a redis-server started on a
   free loopback port, then times ``get_online_features`` for one entity (200 calls after 20
   warm-up calls) and for 100 entities (50 calls), reporting p50/p99 in ms.

Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.timing import percentiles_ms  # noqa: E402

CHILD = r"""
import json, sys, time
from pathlib import Path
from mlplatform import sources
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages.ingest import _typed_chunk, ingest
from mlplatform.storage import stage_dir
mode, uri, chunk_rows, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
cfg = load_pipeline(Path(sys.argv[5]) / "pipelines" / "demo.yaml")
settings = get_settings()
t = time.perf_counter()
if mode == "imports":
    rows, chunks = 0, 0
elif mode == "read":
    source = sources.resolve(uri, cfg, settings, work / "dl")
    stats = sources.write_parquet(sources.read_chunks(source, chunk_rows), work / "out.parquet",
                                  work / "parts", prepare=lambda c: _typed_chunk(c, cfg))
    rows, chunks = stats.rows, stats.chunks
else:
    out = ingest(cfg, uri, stage_dir(settings.storage, "demo", "bench", "ingest"), settings)
    rows, chunks = out["rows"], out["chunks"]
seconds = time.perf_counter() - t
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
peak_mib = int(hwm.split()[1]) / 1024
print(json.dumps({"rows": rows, "chunks": chunks, "seconds": seconds, "peak_mib": peak_mib}))
"""


def _child(mode: str, uri: str, chunk_rows: int, work: Path, home: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLP_HOME": str(home), "MLP_INGEST_CHUNK_ROWS": str(chunk_rows),
           "PYTHONPATH": str(REPO)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", CHILD, mode, uri, str(chunk_rows), str(work), str(REPO)],
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_ingest(rows: int, tmp: Path) -> list[str]:
    from mlplatform import datagen

    frame = datagen.generate(rows, seed=1)
    csv_path, pq_path = tmp / "batch.csv", tmp / "batch.parquet"
    frame.to_csv(csv_path, index=False)
    frame.to_parquet(pq_path, index=False, row_group_size=50_000)
    del frame
    lines = [
        "| source | mode | chunk rows | chunks | seconds | rows/s | peak RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = _child("imports", str(csv_path), 1, tmp / "w-imports", tmp / "h-imports")
    lines.append(f"| (imports only) | - | - | - | - | - | {base['peak_mib']:.0f} |")
    for label, path in (("CSV", csv_path), ("Parquet", pq_path)):
        modes = (("read+write", rows * 2), ("read+write", 100_000), ("ingest (DVC)", 500_000))
        for mode, chunk in modes:
            kind = "read" if mode == "read+write" else "ingest"
            name = f"{label}-{chunk}-{kind}"
            r = _child(kind, str(path), chunk, tmp / f"w-{name}", tmp / f"h-{name}")
            size = path.stat().st_size / 2**20
            lines.append(
                f"| {label} ({size:.0f} MiB) | {mode} | {chunk:,} | {r['chunks']} | "
                f"{r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | {r['peak_mib']:.0f} |"
            )
            print(lines[-1], flush=True)
    return lines


def _online_read(store, refs: list[str], rows: list[dict]) -> dict:
    return store.get_online_features(features=refs, entity_rows=rows).to_dict()


def bench_online(tmp: Path) -> list[str]:
    import pandas as pd

    from mlplatform import datagen
    from mlplatform.config import load_pipeline
    from mlplatform.settings import get_settings
    from mlplatform.stages.features import feature_store, materialize_features
    from mlplatform.stages.ingest import ingest
    from mlplatform.storage import stage_dir
    from tests.services import redis_server

    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    batch = datagen.write(datagen.generate(2000, seed=2), tmp / "online.csv")
    lines = [
        "| online store | entities per call | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    with redis_server() as connection:
        for store_kind in ("sqlite", "redis"):
            os.environ.update({"MLP_HOME": str(tmp / f"home-{store_kind}"),
                               "MLP_FEAST_ONLINE_STORE": store_kind,
                               "MLP_FEAST_REDIS_CONNECTION": connection})  # fmt: skip
            settings = get_settings()
            result = ingest(
                cfg, str(batch), stage_dir(settings.storage, "demo", "b", "ingest"), settings
            )
            out = stage_dir(settings.storage, "demo", "b", "features")
            materialize_features(cfg, result["data_uri"], result["data_version"], out, settings)
            store = feature_store(cfg, settings)
            refs = [f"{cfg.features.view}:{f}" for f in cfg.features.all]
            ids = sorted(set(pd.read_csv(batch)["customer_id"].tolist()))
            for n, calls in ((1, 200), (100, 50)):
                rows = [{"customer_id": int(i)} for i in ids[:n]]
                p50, p99 = percentiles_ms(partial(_online_read, store, refs, rows), calls, 20)
                lines.append(f"| {store_kind} | {n} | {p50:.2f} | {p99:.2f} |")
                print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--skip-online", action="store_true", help="ingest only")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data.md"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="mlp-bench-data-") as tmp:
        ingest_lines = bench_ingest(args.rows, Path(tmp))
        online_lines = [] if args.skip_online else bench_online(Path(tmp))
    load = os.getloadavg()[0]
    text = "\n".join([
        "# Data benchmarks (benchmarks/bench_data.py)", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {load:.1f} at the end; python {platform.python_version()}.", "",
        f"## Ingest, {args.rows:,} demo rows", "", *ingest_lines, "",
        "## Feast online reads", "", *online_lines, "",
    ])  # fmt: skip
    Path(args.out).write_text(text)
    print(
        f"written to {args.out}; peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

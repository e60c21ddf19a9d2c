"""Feature materialization throughput and online lookups: Feast against raw reads of the same keys.

Usage::

    .venv/bin/python benchmarks/bench_features.py [--sizes 4000,40000,400000] [--stores sqlite,redis]
        [--out benchmarks/results/features.md]

What it does (loopback only, bounded, stops by itself; about 10 minutes on 2 cores):

1. Materialization: for each online store (SQLite; a redis-server started on a free loopback
   port) and each size, a fresh platform home gets one demo batch of that many rows through the
   features stage (:func:`mlplatform.stages.features.materialize_features`: landing in the
   offline store, ``feast apply``, materialization, ledger), after one warm-up run per store
   (imports, Feast's first apply). Reported: the stage's seconds and
   rows/s, Feast's ``materialize`` of the same window again alone (rows/s), and a re-run of the
   stage with the same data version (``already materialized``: no apply, no materialize).
2. Online lookups (a 40,000-row history, 13,333 entities): p50/p99 ms over 300 calls (after 30
   warm-up calls) for 1 and 100 entities per call, each entity set drawn at random per call, of

   * Feast ``get_online_features`` (the six demo features),
   * the server's pre-step (:meth:`serving.runtime.entity_features.PipelineFeatures.fetch`: Feast plus
     key checks and the missing-entity test),
   * a raw read of the same keys from the same store: SQLite ``SELECT entity_key, feature_name,
     value FROM <table> WHERE entity_key IN (...)`` on Feast's table, Redis ``HGETALL`` of Feast's
     keys in one pipeline; values stay serialized protobuf bytes (not decoded),
   * a Python dict lookup of the same rows held in memory (the floor),

   with the ratios Feast / raw store and Feast / dict.

Prints markdown tables and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.timing import percentiles_ms  # noqa: E402

ONLINE_ROWS = 40_000
CALLS, WARMUP = 300, 30


def _use_store(kind: str, home: Path, redis_connection: str) -> None:
    os.environ.update({"MLP_HOME": str(home), "MLP_FEAST_ONLINE_STORE": kind,
                       "MLP_FEAST_REDIS_CONNECTION": redis_connection})  # fmt: skip


def _land(cfg, batch, work: Path, version: str) -> tuple[dict, float]:
    from mlplatform.settings import get_settings
    from mlplatform.stages.features import materialize_features
    from mlplatform.storage import stage_dir

    settings = get_settings()
    path = work / f"{version}.parquet"
    batch.to_parquet(path, index=False)
    out = stage_dir(settings.storage, cfg.name, version, "features")
    start = time.perf_counter()
    result = materialize_features(cfg, path.as_uri(), version, out, settings)
    return result, time.perf_counter() - start


def _batch(rows: int, seed: int):
    import pandas as pd

    from mlplatform import datagen

    df = datagen.generate(rows, seed=seed, end=pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime())
    df["customer_id"] = df["customer_id"].astype("int64")
    return df


# ------------------------------------------------------------------------------ materialization


def bench_materialize(sizes: list[int], stores: list[str], tmp: Path, redis: str) -> list[str]:
    from mlplatform.config import load_pipeline
    from mlplatform.settings import get_settings
    from mlplatform.stages.features import feature_store

    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    lines = [
        "| online store | rows | entities | stage s | stage rows/s | Feast materialize s "
        "| Feast rows/s | re-run s (already materialized) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in stores:  # warm-up: imports, Feast's first apply, dask's thread pool
        _use_store(kind, tmp / f"warmup-{kind}", redis)
        _land(cfg, _batch(500, seed=0), tmp, "warmup")
    for kind in stores:
        for rows in sizes:
            home = tmp / f"mat-{kind}-{rows}"
            _use_store(kind, home, redis)
            if kind == "redis":
                _flush_redis(redis)
            batch = _batch(rows, seed=rows)
            result, stage_s = _land(cfg, batch, tmp, f"b{rows}")
            assert result["materialized_rows"] == rows, result["materialization"]
            store = feature_store(cfg, get_settings())
            start_ts, end_ts = result["materialized_from"], result["materialized_to"]
            t = time.perf_counter()
            store.materialize(
                start_date=_ts(start_ts), end_date=_ts(end_ts), feature_views=[cfg.features.view]
            )
            feast_s = time.perf_counter() - t
            again, rerun_s = _land(cfg, batch, tmp, f"b{rows}")
            assert again["materialization"].startswith("already materialized"), again
            entities = batch["customer_id"].nunique()
            lines.append(
                f"| {kind} | {rows:,} | {entities:,} | {stage_s:.2f} | {rows / stage_s:,.0f} "
                f"| {feast_s:.2f} | {rows / feast_s:,.0f} | {rerun_s:.2f} |"
            )
            print(lines[-1], flush=True)
    return lines


def _ts(text: str):
    import pandas as pd

    return pd.Timestamp(text).to_pydatetime()


def _flush_redis(connection: str) -> None:
    import redis

    host, port = connection.split(":")
    redis.Redis(host=host, port=int(port)).flushall()


# ------------------------------------------------------------------------------ online reads


def _entity_key(i: int):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=i)])


def _raw_sqlite(db: Path, table: str, ids: list[int]) -> Callable[[list[int]], list]:
    from feast.infra.key_encoding_utils import serialize_entity_key

    keys = {
        i: serialize_entity_key(_entity_key(i), entity_key_serialization_version=3) for i in ids
    }
    conn = sqlite3.connect(db, check_same_thread=False)

    def read(chosen: list[int]) -> list:
        marks = ",".join("?" * len(chosen))
        sql = f'SELECT entity_key, feature_name, value FROM "{table}" WHERE entity_key IN ({marks})'
        return conn.execute(sql, [keys[i] for i in chosen]).fetchall()

    return read


def _raw_redis(connection: str, project: str, ids: list[int]) -> Callable[[list[int]], list]:
    import redis
    from feast.infra.online_stores.helpers import _redis_key

    host, port = connection.split(":")
    client = redis.Redis(host=host, port=int(port))
    keys = {i: _redis_key(project, _entity_key(i), entity_key_serialization_version=3) for i in ids}

    def read(chosen: list[int]) -> list:
        with client.pipeline(transaction=False) as pipe:
            for i in chosen:
                pipe.hgetall(keys[i])
            return pipe.execute()

    return read


def _readers(kind: str, cfg, ids: list[int], table: dict, redis: str) -> dict[str, Callable]:
    """The four ways to read the latest features of a list of entity ids (see the module doc)."""
    from mlplatform.settings import get_settings
    from mlplatform.stages.features import feast_root, feature_store, feature_store_for
    from serving.runtime.online_features import PipelineFeatures

    settings = get_settings()
    store = feature_store(cfg, settings)
    names = cfg.features.all
    refs = [f"{cfg.features.view}:{n}" for n in names]
    if kind == "sqlite":
        db = feast_root(cfg.name, settings) / "online.db"
        raw = _raw_sqlite(db, f"{cfg.name}_{cfg.features.view}", ids)
    else:
        raw = _raw_redis(redis, cfg.name, ids)
    pre = PipelineFeatures(
        cfg.name, "customer_id", cfg.features.view, lambda: feature_store_for(cfg.name, settings)
    )

    def feast_read(chosen: list[int]) -> object:
        rows = [{"customer_id": i} for i in chosen]
        return store.get_online_features(features=refs, entity_rows=rows).to_dict()

    return {
        "feast": feast_read,
        "pre-step": lambda chosen: pre.fetch(chosen, names),
        "raw": raw,
        "dict": lambda chosen: [table[i] for i in chosen],
    }


def _online_row(kind: str, n: int, readers: dict[str, Callable], ids: list[int]) -> str:
    rng = random.Random(n)
    assert len(readers["raw"](rng.sample(ids, n))) > 0, "the raw read found nothing"
    timings = [
        percentiles_ms(lambda read=read: read(rng.sample(ids, n)), CALLS, WARMUP)
        for read in readers.values()
    ]
    cells = " | ".join(f"{p50:.3f} / {p99:.3f}" for p50, p99 in timings)
    feast, raw, floor = timings[0][0], timings[2][0], timings[3][0]
    return f"| {kind} | {n} | {cells} | {feast / raw:.1f}x | {feast / floor:,.0f}x |"


def bench_online(stores: list[str], tmp: Path, redis: str) -> list[str]:
    from mlplatform.config import load_pipeline

    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    batch = _batch(ONLINE_ROWS, seed=7)
    latest = batch.sort_values("event_time").groupby("customer_id").tail(1)
    table = {int(r.customer_id): r._asdict() for r in latest.itertuples(index=False)}
    ids = sorted(table)
    lines = [
        "| online store | entities | Feast p50 / p99 ms | platform pre-step p50 / p99 ms "
        "| raw store p50 / p99 ms | dict p50 / p99 ms | Feast / raw (p50) | Feast / dict (p50) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in stores:
        _use_store(kind, tmp / f"online-{kind}", redis)
        if kind == "redis":
            _flush_redis(redis)
        _land(cfg, batch, tmp, "online")
        readers = _readers(kind, cfg, ids, table, redis)
        for n in (1, 100):
            lines.append(_online_row(kind, n, readers, ids))
            print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4000,40000,400000")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "features.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stores = args.stores.split(",")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tests.services import redis_server

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mlp-bench-features-") as tmp, redis_server() as redis:
        materialize = bench_materialize(sizes, stores, Path(tmp), redis)
        online = bench_online(stores, Path(tmp), redis)
    load = os.getloadavg()[0]
    text = "\n".join([
        "# Feature benchmarks (benchmarks/bench_features.py)", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {load_before:.1f} at the start, {load:.1f} at the end; "
        f"python {platform.python_version()}.", "",
        "## Materialization (features stage, demo batches)", "", *materialize, "",
        f"## Online lookups ({ONLINE_ROWS:,}-row history, {CALLS} calls each)", "", *online, "",
    ])  # fmt: skip
    Path(args.out).write_text(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load test: 200 concurrent REST clients against the local server, below and above its
concurrency limit.

Usage::

    .venv/bin/python benchmarks/load_serving.py [--clients 200] [--requests 10]
        [--out benchmarks/results/serving_load.md]

Starts ``python -m serving.server`` (request log on) on a demo-like model (as
``bench_serving.py`` builds it) twice: with ``--max-concurrent`` above the client count (every
request must succeed: the run fails otherwise) and with it at a quarter of the clients (requests
over the limit must be answered 503 at once, the rest 200). Each client is a thread with its own
keep-alive connection sending batch-1 predicts back to back. Prints and writes p50/p99 of the
successful requests, of the 503s, and the failure counts. Under ~2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.bench_serving import (  # noqa: E402
    MODEL,
    _build_demo_like,
    _existing_demo_version,
    _rows,
    _start_server,
)
from mlplatform import processes  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _load(port: int, clients: int, requests: int) -> dict[str, list[float] | int]:
    body = json.dumps({"instances": _rows(1)}).encode()
    ok: list[float] = []
    busy: list[float] = []
    failed = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait()
        for _ in range(requests):
            began = time.perf_counter()
            try:
                conn.request("POST", f"/v1/models/{MODEL}:predict", body)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = -1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            took = (time.perf_counter() - began) * 1000.0
            with lock:
                if status == 200:
                    ok.append(took)
                elif status == 503:
                    busy.append(took)
                else:
                    failed[0] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"ok": ok, "busy": busy, "failed": failed[0], "wall": time.perf_counter() - began}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "serving_load.md"
    )
    args = parser.parse_args(argv)
    from serving import layout
    from serving.client import PredictionClient

    work = Path(tempfile.mkdtemp(prefix="load-serving-"))
    source = _existing_demo_version() or _build_demo_like(work / "export")
    base = work / "models"
    layout.publish_version(base, MODEL, 1, source)
    rows = []
    exit_code = 0
    with open(work / "server.log", "w") as log:
        for limit in (args.clients + 56, max(1, args.clients // 4)):
            extra = ["--log-dir", "{work}/requests", "--max-concurrent", str(limit),
                     "--max-connections", str(args.clients + 100)]  # fmt: skip
            server, rest_url, _grpc = _start_server(work, base, extra, log)
            try:
                with PredictionClient(rest_url) as probe:
                    probe.wait_until_available(MODEL, timeout_s=180)
                result = _load(int(rest_url.rsplit(":", 1)[1]), args.clients, args.requests)
            finally:
                processes.stop(server)
            ok, busy = result["ok"], result["busy"]
            assert isinstance(ok, list) and isinstance(busy, list)
            below = limit >= args.clients
            if below and (busy or result["failed"]):
                exit_code = 1
            rows.append(
                f"| {args.clients} | {limit} | {len(ok)} | {len(busy)} | {result['failed']} "
                f"| {statistics.median(ok) if ok else float('nan'):.1f} "
                f"| {_percentile(ok, 0.99):.1f} "
                f"| {statistics.median(busy) if busy else float('nan'):.1f} "
                f"| {len(ok) / float(result['wall']):.0f} |"  # type: ignore[arg-type]
            )
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| clients | --max-concurrent | 200 | 503 | failed | p50 ms (200) | p99 ms (200) "
            "| p50 ms (503) | answered req/s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    report = (
        f"# Serving load test\n\n`benchmarks/load_serving.py`, {datetime.now(UTC):%Y-%m-%d %H:%M}"
        f" UTC; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} after. "
        f"{args.clients} threads, {args.requests} batch-1 REST predicts each over one keep-alive "
        "connection, request log on.\n\n" + table + "\n"
    )
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

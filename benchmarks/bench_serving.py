"""Serving overhead: REST and gRPC through the local server vs. the SavedModel in-process.

Usage::

    .venv/bin/python benchmarks/bench_serving.py [--quick] [--out benchmarks/results/serving.md]

What it does (loopback only, bounded request counts, stops by itself):

1. Model: the served version of ``demo`` under the platform's model base
   (``.mlplatform/serving/models/demo/``, or ``MLP_MODEL_BASE`` / ``MLP_HOME``) if there is
   one, else a freshly built, untrained demo-like Keras model (``training.model``: numeric
   ``tenure_months, monthly_charges, support_calls, usage_minutes``, categorical
   ``contract_type, region``, hidden units 32/16, output ``score``). It is published as
   ``demo/1`` into a temporary model base.
2. Loads the same SavedModel in this process, then, for each server configuration
   (``--servers``: request log on, off, and on with server-side batching from a TF Serving
   batching parameters file), starts ``python -m serving.server`` (REST + gRPC) on free
   loopback ports in a subprocess.
3. For batch 1 with one client and batch 64 with 32 clients, runs the same rows through:
   in-process, the signature function as a user calls it (``fn(**tensors)``, tensors prebuilt:
   the model's own cost), the flat call the server makes
   (:class:`serving.runtime.signatures.SignatureFunction`), one caller at batch 64 (the other
   reading of "in-process throughput"), and 32 callers through the server's
   :class:`~serving.runtime.batching.Batcher` (the batching implementation's own cost, no
   protocol); served, **wrk** (a C load generator in its own process, one thread, keep-alive
   connections, the body pre-encoded: the lightest client there is, its CPU per request
   reported; skipped when ``wrk`` is not installed, ``apt-get install wrk``), a bare
   keep-alive ``http.client`` posting a pre-encoded body, :class:`serving.client.PredictionClient`,
   a bare gRPC stub sending a pre-serialized ``PredictRequest``, and
   :class:`serving.client.GrpcPredictionClient` (Python clients: one thread each, in this
   process). Each cell runs a fixed number of requests or until its time cap (wrk: the cap),
   after untimed warm-up requests; the server process's CPU time is read around each cell
   (psutil).
4. Prints a markdown table — p50/p99 latency, requests/s, rows/s, the ratios to the in-process
   call at the same batch and client count, the server's CPU per request, wrk's CPU per
   request — and writes it, with the machine's description and load, to ``--out``.

Client and server share the machine's cores, so on a 2-core box the served numbers include
the client's own CPU time (JSON encoding, TensorProto building) and contention at high
concurrency; the in-process rows have no client. Default run: ≈6–8 minutes on 2 cores;
``--quick``: ≈3–4 minutes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlplatform import processes  # noqa: E402

MODEL = "demo"
NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "usage_minutes"]
CATEGORICAL = {
    "contract_type": ["month", "one_year", "two_year"],
    "region": ["north", "south", "east", "west"],
}
#: (batch, concurrency) cells: one client at batch 1 (latency), 32 clients at batch 64 (load)
SHAPES = ((1, 1), (64, 32))
#: in-process only: one caller at batch 64, the other reading of "in-process throughput"
IN_PROCESS_ONLY = ((64, 1),)
#: server configurations: name -> extra arguments of ``python -m serving.server``
SERVERS = {
    "log-on": ["--log-dir", "{work}/requests"],
    "log-off": [],
    "log-on+batching": [
        "--log-dir", "{work}/requests-b", "--batching-parameters-file", "{work}/batching.config",
    ],
    "log-off 2-workers": ["--workers", "2"],
    "log-on+batching 2-workers": [
        "--log-dir", "{work}/requests-bw", "--batching-parameters-file", "{work}/batching.config",
        "--workers", "2",
    ],
}  # fmt: skip
#: TF Serving's batching parameters file format (what ``--batching-parameters-file`` reads)
BATCHING_FILE = """max_batch_size { value: 2048 }
batch_timeout_micros { value: 1000 }
num_batch_threads { value: 1 }
max_enqueued_batches { value: 64 }
"""


@dataclass(frozen=True)
class Profile:
    """How much to run: requests per cell by concurrency, time cap per cell, warm-up."""

    requests: dict[int, int]
    cap_s: float
    warmup: int


DEFAULT = Profile(requests={1: 1000, 8: 2400, 32: 4800}, cap_s=15.0, warmup=40)
QUICK = Profile(requests={1: 400, 8: 480, 32: 960}, cap_s=5.0, warmup=16)


@dataclass
class Cell:
    path: str
    batch: int
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float
    server: str = "-"
    server_cpu_ms: float | None = None  # server process CPU time per request
    client_cpu_ms: float | None = None  # the load generator's CPU per request (wrk only)
    reference: Cell | None = None  # the in-process cell measured beside it (else the first)

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.batch


# --------------------------------------------------------------------------- model


def _existing_demo_version() -> Path | None:
    """The served version directory of ``demo`` under the platform's model base, if any."""
    from serving import layout

    bases = []
    try:
        from mlplatform.settings import Settings

        bases.append(Settings().models_dir)
    except Exception:  # noqa: BLE001 - settings are optional here
        pass
    bases.append(REPO / ".mlplatform" / "serving" / "models")
    for base in bases:
        try:
            version = layout.served_version(base, MODEL)
        except ValueError:
            version = None
        if version is not None:
            return Path(base) / MODEL / str(version)
    return None


def _build_demo_like(path: Path) -> Path:
    """An untrained model with the demo pipeline's raw-feature signature (training.model)."""
    import keras
    import numpy as np

    from training.model import CLASSIFIER, ServingModule, build_model, export_saved_model

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    n = 512
    features: dict[str, np.ndarray] = {
        name: rng.normal(10.0, 3.0, size=(n, 1)).astype(np.float32) for name in NUMERIC
    }
    for name, vocabulary in CATEGORICAL.items():
        features[name] = rng.choice(vocabulary, size=(n, 1)).astype(object)
    model = build_model(CLASSIFIER, [32, 16], NUMERIC, list(CATEGORICAL), features)
    return export_saved_model(ServingModule(model, CLASSIFIER, NUMERIC, list(CATEGORICAL)), path)


def _rows(n: int, seed: int = 11) -> list[dict[str, Any]]:
    import random

    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {name: round(rnd.uniform(0.0, 100.0), 2) for name in NUMERIC}
        row.update({name: rnd.choice(vocab) for name, vocab in CATEGORICAL.items()})
        rows.append(row)
    return rows


GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"


def _predict_request(rows: list[dict[str, Any]]) -> Any:
    """A ``PredictRequest`` for ``demo`` with ``rows`` as one TensorProto per input."""
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from serving.codec.tensor_proto import to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    for name in NUMERIC:
        values = np.asarray([r[name] for r in rows], dtype=np.float32)
        request.inputs[name].CopyFrom(to_tensor_proto(values))
    for name in CATEGORICAL:
        values = np.asarray([r[name].encode() for r in rows], dtype=object)
        request.inputs[name].CopyFrom(to_tensor_proto(values))
    return request


# --------------------------------------------------------------------------- measuring


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: wrk's request script: POST the body file named by $BODY (read once, sent as is)
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "rb"); wrk.body = f:read("*a"); f:close()
"""
_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    """A wrk latency (``812.00us``, ``1.20ms``, ``2.01s``) in milliseconds."""
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * _WRK_UNITS[unit]
    raise ValueError(f"unreadable wrk latency {text!r}")


def _wrk_cell(
    url: str,
    body: bytes,
    batch: int,
    concurrency: int,
    seconds: float,
    work: Path,
    server_cpu: Callable[[], float],
) -> tuple[Cell, float]:
    """Drive ``url`` with wrk (C, one thread, ``concurrency`` keep-alive connections, the body
    sent as is) for ``seconds`` after a 1 s warm-up: a load generator light enough that on 2
    cores the server gets the CPU. Returns the cell (``server_cpu()``, the server's CPU
    seconds, read around the timed run) and wrk's own CPU ms per request."""
    import resource

    (work / "wrk.lua").write_text(WRK_SCRIPT)
    (work / "body.json").write_bytes(body)
    env = {**os.environ, "BODY": str(work / "body.json")}

    def wrk(duration: float) -> str:
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency",
               "-s", str(work / "wrk.lua"), url]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    wrk(1)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = server_cpu()
    out = wrk(seconds)
    server_after = server_cpu()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    fields: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            fields[parts[0]] = parts[1]
        elif parts[:1] == ["Requests/sec:"]:
            fields["rps"] = parts[1]
        elif len(parts) > 2 and parts[1] == "requests" and parts[2] == "in":
            fields["n"] = parts[0]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    n = int(fields["n"])
    cell = Cell(
        "REST wrk",
        batch,
        concurrency,
        n,
        _wrk_ms(fields["50%"]),
        _wrk_ms(fields["99%"]),
        float(fields["rps"]),
    )
    cell.server_cpu_ms = (server_after - server_before) * 1000.0 / max(1, n)
    return cell, cpu * 1000.0 / max(1, n)


def _run_cell(
    path: str,
    batch: int,
    concurrency: int,
    profile: Profile,
    make_call: Callable[[], tuple[Callable[[], Any], Callable[[], None]]],
) -> Cell:
    """Run ``profile.requests[concurrency]`` calls on ``concurrency`` threads (or until the
    time cap); ``make_call`` gives each thread its own ``(call, close)``."""
    total = profile.requests[concurrency]
    latencies: list[float] = []
    lock = threading.Lock()
    issued = [0]
    errors: list[BaseException] = []
    ready = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker() -> None:
        call, close = make_call()
        try:
            for _ in range(max(1, profile.warmup // concurrency)):
                call()
            ready.wait()
            ready.wait()
            mine: list[float] = []
            while True:
                with lock:
                    if issued[0] >= total or time.perf_counter() > deadline[0]:
                        break
                    issued[0] += 1
                started = time.perf_counter()
                call()
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            ready.abort()
        finally:
            close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    try:
        ready.wait()  # all warmed up
        deadline[0] = time.perf_counter() + profile.cap_s
        started = time.perf_counter()
        ready.wait()  # go
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{path} batch {batch} x{concurrency}: {errors[0]!r}") from errors[0]
    latencies.sort()
    p99_index = min(len(latencies) - 1, max(0, round(0.99 * len(latencies)) - 1))
    return Cell(
        path,
        batch,
        concurrency,
        len(latencies),
        statistics.median(latencies) * 1000.0,
        latencies[p99_index] * 1000.0,
        len(latencies) / wall,
    )


# --------------------------------------------------------------------------- report


def _table(cells: list[Cell]) -> str:
    base = {
        (c.batch, c.concurrency): c for c in cells if c.path == "in-process" and c.server == "-"
    }
    lines = [
        "| batch | clients | server | path | requests | p50 ms | p99 ms | req/s | rows/s "
        "| p50 vs in-process | req/s vs in-process | server CPU ms/req | wrk CPU ms/req |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in sorted(cells, key=lambda c: (c.batch, c.concurrency)):
        ref = cell.reference or base[(cell.batch, cell.concurrency)]
        ratio_p50 = "1.0×" if cell is ref else f"{cell.p50_ms / ref.p50_ms:.2f}×"
        ratio_rps = "1.0×" if cell is ref else f"{cell.rps / ref.rps:.2f}×"
        cpu = "-" if cell.server_cpu_ms is None else f"{cell.server_cpu_ms:.2f}"
        client = "-" if cell.client_cpu_ms is None else f"{cell.client_cpu_ms:.3f}"
        lines.append(
            f"| {cell.batch} | {cell.concurrency} | {cell.server} | {cell.path} | {cell.requests} "
            f"| {cell.p50_ms:.2f} | {cell.p99_ms:.2f} | {cell.rps:,.0f} | {cell.rows_per_s:,.0f} "
            f"| {ratio_p50} | {ratio_rps} | {cpu} | {client} |"
        )
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, {platform.system()} {platform.release()}"
    )


# --------------------------------------------------------------------------- main


def _start_server(
    work: Path, base: Path, extra: list[str], log: Any
) -> tuple[subprocess.Popen[bytes], str, str]:
    rest_port, grpc_port = _free_port(), _free_port()
    cmd = [
        sys.executable, "-m", "serving.server", "--model-base", str(base),
        "--port", str(rest_port), "--grpc-port", str(grpc_port),
        "--poll-seconds", "5", "--log-level", "warning",
        *[a.format(work=work) for a in extra],
    ]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return server, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"


def _wait_for_workers(port: int, workers: int, timeout_s: float = 180.0) -> None:
    """Wait until every worker of ``--workers`` serves the model (its status route, asked on
    fresh connections, which the kernel spreads over the workers)."""
    import http.client

    ready: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(ready) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(ready)} of {workers} came up")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/v1/mlplatform/status")
            status = json.loads(conn.getresponse().read())
        except OSError:
            status = {}
        finally:
            conn.close()
        if (status.get("models") or {}).get(MODEL, {}).get("served_version") is not None:
            ready.add(status["worker"]["index"])
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server: the process and its workers (``--workers``)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (~3 minutes)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving.md")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"server configurations to run, comma-separated (default: {','.join(SERVERS)})",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else DEFAULT
    chosen = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SERVERS]
    if unknown or not chosen:
        parser.error(f"--servers: unknown {unknown}; choose from {', '.join(SERVERS)}")
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]

    import numpy as np
    import tensorflow as tf

    from serving import layout
    from serving.client import GrpcPredictionClient, PredictionClient

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    (work / "batching.config").write_text(BATCHING_FILE)
    server = None
    server_log = open(work / "server.log", "w")  # noqa: SIM115 - closed in finally
    try:
        source = _existing_demo_version()
        if source is not None:
            model_source = f"served version of `demo` at `{source}`"
        else:
            source = _build_demo_like(work / "export")
            model_source = "an untrained demo-like model built by the benchmark (training.model)"
        base = work / "models"
        layout.publish_version(base, MODEL, 1, source)
        print(f"model: {model_source}", flush=True)
        loaded = tf.saved_model.load(str(base / MODEL / "1"))
        fn = loaded.signatures["serving_default"]
        specs = fn.structured_input_signature[1]

        def tensors_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                name: tf.constant(
                    np.asarray([r[name] for r in rows], dtype=spec.dtype.as_numpy_dtype)
                    if spec.dtype != tf.string
                    else np.asarray([r[name] for r in rows], dtype=object)
                )
                for name, spec in specs.items()
            }

        from serving.runtime import load_servable
        from serving.runtime.batching import Batcher, read_batching_parameters
        from serving.runtime.predict import call

        servable = load_servable(MODEL, 1, base / MODEL / "1")
        server_fn = servable.signatures["serving_default"]  # the flat call the server makes
        server_specs = servable.input_specs["serving_default"]
        batcher = Batcher(read_batching_parameters(work / "batching.config"))

        cells: list[Cell] = []
        for batch, concurrency in sorted(SHAPES + IN_PROCESS_ONLY):
            rows = _rows(batch)
            tensors = tensors_of(rows)
            arrays = {name: tensor.numpy() for name, tensor in tensors.items()}
            variants: list[tuple[str, Callable[[], Any]]] = [
                ("in-process", lambda tensors=tensors: fn(**tensors)),
                ("in-process, server's call", lambda tensors=tensors: server_fn(**tensors)),
            ]
            if concurrency > 1:  # the batching implementation's own cost, without a protocol
                variants.append(
                    (
                        "in-process + batcher",
                        lambda arrays=arrays: call(server_fn, server_specs, arrays, batcher),
                    )
                )
            for path, run in variants:
                cell = _run_cell(
                    path, batch, concurrency, profile, lambda run=run: (run, (lambda: None))
                )
                cells.append(cell)
                print(f"  batch {batch:>2} x{concurrency:<2} {path:<26} p50 {cell.p50_ms:7.2f} ms")

        for config in chosen:
            server, rest_url, grpc_target = _start_server(work, base, SERVERS[config], server_log)
            with PredictionClient(rest_url) as probe:
                probe.wait_until_available(MODEL, timeout_s=180)
            with GrpcPredictionClient(grpc_target) as probe:
                probe.wait_until_available(MODEL, timeout_s=60)
            if "--workers" in SERVERS[config]:
                workers = int(SERVERS[config][SERVERS[config].index("--workers") + 1])
                _wait_for_workers(int(rest_url.rsplit(":", 1)[1]), workers)
            print(f"server '{config}' up ({time.monotonic() - t0:.0f}s)", flush=True)
            rest_port = int(rest_url.rsplit(":", 1)[1])
            for batch, concurrency in SHAPES:
                rows = _rows(batch)
                in_process = fn(**tensors_of(rows))["score"].numpy()
                with PredictionClient(rest_url) as rest, GrpcPredictionClient(grpc_target) as g:
                    served_rest = np.asarray(rest.predict(MODEL, rows).predictions, np.float32)
                    served_grpc = np.asarray(g.predict(MODEL, rows).predictions, np.float32)
                np.testing.assert_allclose(served_rest.reshape(-1), in_process, rtol=1e-5)
                np.testing.assert_allclose(served_grpc.reshape(-1), in_process, rtol=1e-5)

                def over_bare_rest(
                    rows: list[dict[str, Any]] = rows, port: int = rest_port
                ) -> tuple[Callable[[], Any], Callable[[], None]]:
                    # a bare keep-alive HTTP client, the body encoded once: the server's cost
                    import http.client

                    body = json.dumps({"instances": rows}).encode()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    headers = {"Content-Type": "application/json"}

                    def call() -> None:
                        conn.request("POST", f"/v1/models/{MODEL}:predict", body, headers)
                        response = conn.getresponse()
                        payload = response.read()
                        if response.status != 200:
                            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

                    return call, conn.close

                def over_rest(
                    rows: list[dict[str, Any]] = rows, url: str = rest_url
                ) -> tuple[Callable[[], Any], Callable[[], None]]:
                    client = PredictionClient(url, timeout=60)
                    return (lambda: client.predict(MODEL, rows)), client.close

                def over_grpc(
                    rows: list[dict[str, Any]] = rows, target: str = grpc_target
                ) -> tuple[Callable[[], Any], Callable[[], None]]:
                    client = GrpcPredictionClient(target, timeout=60)
                    return (lambda: client.predict(MODEL, rows)), client.close

                def over_bare_grpc(
                    rows: list[dict[str, Any]] = rows, target: str = grpc_target
                ) -> tuple[Callable[[], Any], Callable[[], None]]:
                    # the request serialized once, the answer left as bytes: the server's cost
                    import grpc

                    # its own connection (grpcio shares one between equal channels): with
                    # --workers the kernel spreads connections, not the calls of one
                    channel = grpc.insecure_channel(
                        target, options=[("grpc.use_local_subchannel_pool", 1)]
                    )
                    predict = channel.unary_unary(GRPC_PREDICT)
                    payload = _predict_request(rows).SerializeToString()
                    return (lambda: predict(payload, timeout=60)), channel.close

                if shutil.which("wrk"):
                    body = json.dumps({"instances": rows}).encode()
                    cell, wrk_cpu = _wrk_cell(
                        f"{rest_url}/v1/models/{MODEL}:predict",
                        body,
                        batch,
                        concurrency,
                        profile.cap_s,
                        work,
                        functools.partial(_cpu_seconds, server.pid),
                    )
                    cell.server, cell.client_cpu_ms = config, wrk_cpu
                    cells.append(cell)
                    print(
                        f"  batch {batch:>2} x{concurrency:<2} {config:<16} REST wrk    "
                        f"p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms  "
                        f"{cell.rps:8.0f} req/s  server CPU {cell.server_cpu_ms:.2f} ms/req  "
                        f"wrk CPU {wrk_cpu:.3f} ms/req",
                        flush=True,
                    )
                for path, make in (
                    ("REST bare", over_bare_rest),
                    ("REST client", over_rest),
                    ("gRPC bare", over_bare_grpc),
                    ("gRPC client", over_grpc),
                ):
                    cpu_before = _cpu_seconds(server.pid)
                    cell = _run_cell(path, batch, concurrency, profile, make)
                    cell.server = config
                    warm = max(1, profile.warmup // concurrency) * concurrency
                    cell.server_cpu_ms = (
                        (_cpu_seconds(server.pid) - cpu_before) * 1000.0 / (cell.requests + warm)
                    )
                    cells.append(cell)
                    print(
                        f"  batch {batch:>2} x{concurrency:<2} {config:<16} {path:<11} "
                        f"p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms  "
                        f"{cell.rps:8.0f} req/s  server CPU {cell.server_cpu_ms:.2f} ms/req",
                        flush=True,
                    )
            if server.poll() is not None:
                raise RuntimeError(
                    f"the server exited early: {(work / 'server.log').read_text()[-2000:]}"
                )
            processes.stop(server)
            # the in-process reference again, beside this server's cells: the machine is
            # shared, so its load drifts during a run; the ratios compare neighbours
            for batch, concurrency in SHAPES:
                tensors = tensors_of(_rows(batch))
                beside = _run_cell(
                    "in-process",
                    batch,
                    concurrency,
                    profile,
                    lambda tensors=tensors: ((lambda: fn(**tensors)), (lambda: None)),
                )
                beside.server = f"beside {config}"
                beside.reference = beside
                for cell in cells:
                    if cell.server == config and (cell.batch, cell.concurrency) == (
                        batch,
                        concurrency,
                    ):
                        cell.reference = beside
                cells.append(beside)
                print(
                    f"  batch {batch:>2} x{concurrency:<2} in-process beside {config}: "
                    f"p50 {beside.p50_ms:.2f} ms, {beside.rps:,.0f} req/s",
                    flush=True,
                )
            server = None

        from serving.codec.json_body import JSON_PARSER as json_parser

        table = _table(cells)
        elapsed = time.monotonic() - t0
        machine = _machine()
        report = "\n".join(
            [
                "# Serving benchmark",
                "",
                f"`benchmarks/bench_serving.py{' --quick' if args.quick else ''}`, "
                f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s. Machine: {machine}; "
                f"1-minute load average {load_before:.1f} before the run, "
                f"{os.getloadavg()[0]:.1f} after (other jobs share the machine: compare the "
                "ratios within this table, not absolute numbers across runs).",
                "",
                f"Model: {model_source}; signature `serving_default` (6 raw features -> `score`). "
                "Servers: `python -m serving.server` (REST + gRPC in one process, or in each "
                "of `--workers 2` processes) on loopback, "
                "with the request log on, off, and on with server-side batching "
                "(`--batching-parameters-file`: max_batch_size 2048, batch_timeout_micros "
                f"1000, num_batch_threads 1; per worker); JSON parser: {json_parser}. In-process: the SavedModel's signature function "
                "called as a user calls it (`fn(**tensors)`, prebuilt tensors); `server's call`: "
                "the flat call the server makes (`SignatureFunction`); `+ batcher`: 32 callers "
                "through the server's Batcher, no protocol. Clients: REST wrk (C, one thread, "
                "keep-alive connections, its own process; its CPU per request in the last "
                "column), REST bare (a keep-alive `http.client` posting a pre-encoded body), "
                "`PredictionClient` (REST row format), gRPC bare (a stub sending a "
                "pre-serialized request) and `GrpcPredictionClient`; Python clients run one "
                "thread each in the benchmark's process. Ratios compare with `in-process` at "
                "the same batch and client count, measured again right after each server's "
                "cells (rows `in-process` of server `beside …`: the machine's load drifts "
                "during a run); server CPU is the server process's "
                "user+system time per request, workers included (Python clients: warm-up "
                "included). Client and "
                "server share the machine's cores.",
                "",
                table,
                "",
            ]
        )
        print()
        print(table)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"\nwritten to {args.out} ({elapsed:.0f}s)")
        return 0
    finally:
        if server is not None:
            processes.stop(server)
        server_log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

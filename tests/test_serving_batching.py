"""Server-side batching (issue 12, item 3): TF Serving's batching parameters file, the batcher
on a real SavedModel, and the server with batching on (REST and gRPC answer as without)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving import layout  # noqa: E402
from serving.api import ApiError  # noqa: E402
from serving.runtime.batching import (  # noqa: E402
    Batcher,
    BatchingParameters,
    read_batching_parameters,
)
from tests.saved_models import build_scorer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TF_SERVING_FILE = """
# as passed to tensorflow_model_server --batching_parameters_file
max_batch_size { value: 16 }
batch_timeout_micros { value: 20000 }
max_enqueued_batches { value: 10 }
num_batch_threads { value: 1 }
pad_variable_length_inputs: true
allowed_batch_sizes: 8
allowed_batch_sizes: 16
"""


def test_reads_tf_servings_batching_parameters_file(tmp_path: Path) -> None:
    path = tmp_path / "batching.config"
    path.write_text(TF_SERVING_FILE)
    assert read_batching_parameters(path) == BatchingParameters(16, 20000, 1, 10)
    path.write_text("max_batch_size: 16\n")  # not TF Serving's format (a wrapper message)
    with pytest.raises(ValueError, match="batching parameters file") as excinfo:
        read_batching_parameters(path)
    assert "\n" not in str(excinfo.value)
    path.write_text("max_batch_size { value: 0 }\n")
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        read_batching_parameters(path)
    path.write_text("max_batch_sise { value: 4 }\n")
    with pytest.raises(ValueError, match="max_batch_sise"):
        read_batching_parameters(path)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scorer(tmp_path_factory.mktemp("batching") / "scorer", 2.0)


def _feed(i: int, rows: int = 1) -> dict[str, Any]:
    return {
        "x": np.full([rows], float(i), dtype=np.float32),
        "c": np.array(["neg" if i % 2 else "a"] * rows, dtype=object),
    }


def test_concurrent_requests_share_signature_calls_and_get_their_own_rows(scorer: Path) -> None:
    from serving.runtime import load_servable
    from serving.runtime.predict import call

    servable = load_servable("scorer", 1, scorer)
    fn = servable.signatures["serving_default"]
    specs = servable.input_specs["serving_default"]
    expected = {i: call(fn, specs, _feed(i, 1 + i % 3), None)["score"] for i in range(24)}

    batcher = Batcher(BatchingParameters(16, 50_000, 1, 10))
    calls: list[int] = []
    original = batcher.run

    def counting_run(fn_: Any, specs_: Any, arrays: Any, run: Any) -> dict[str, Any]:
        def counted(feed: dict[str, Any]) -> dict[str, Any]:
            calls.append(len(feed["x"]))
            return run(feed)

        return original(fn_, specs_, arrays, counted)

    results: dict[int, Any] = {}
    start = threading.Barrier(24)

    def one(i: int) -> None:
        start.wait()
        results[i] = counting_run(
            fn, specs, _feed(i, 1 + i % 3), lambda f: call(fn, specs, f, None)
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for i in range(24):
        np.testing.assert_allclose(results[i]["score"], expected[i], rtol=1e-6)
    assert len(calls) < 24 and max(calls) <= 16 and sum(calls) == sum(1 + i % 3 for i in range(24))


def test_a_full_queue_is_unavailable_at_once() -> None:
    class Spec:
        class shape:  # noqa: N801 - a TensorSpec's shape, duck-typed
            rank = 1

            def __getitem__(self, i: int) -> None:
                return None

        shape = shape()

    release, running = threading.Event(), threading.Event()
    batcher = Batcher(BatchingParameters(1, 0, 1, 1))

    def slow(feed: dict[str, Any]) -> dict[str, Any]:
        running.set()
        release.wait(10)
        return {"y": feed["x"]}

    fn = type("Fn", (), {})()  # a weak-referenceable stand-in for a signature function
    specs = {"x": Spec()}
    answers: list[Any] = []

    def ask(i: int) -> None:
        answers.append(batcher.run(fn, specs, {"x": np.array([i])}, slow))

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    assert running.wait(10)  # the only batch thread is busy with the first request
    second = threading.Thread(target=ask, args=(1,))
    second.start()  # waits in the queue, which is now full (one batch)
    deadline = threading.Event()
    deadline.wait(0.3)
    with pytest.raises(ApiError) as excinfo:
        batcher.run(fn, specs, {"x": np.array([9])}, slow)
    assert excinfo.value.code == "UNAVAILABLE" and "queue is full" in excinfo.value.message
    release.set()
    for thread in (first, second):
        thread.join(10)
    assert sorted(int(a["y"][0]) for a in answers) == [0, 1]


def test_server_with_batching_answers_as_without(scorer: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.client import GrpcPredictionClient
    from serving.server import build_arg_parser, create_app

    base = tmp_path / "models"
    layout.publish_version(base, "scorer", 1, scorer)
    rows = [{"x": float(i), "c": "neg" if i % 2 else "a"} for i in range(5)]
    answers = {}
    for batching in (None, BatchingParameters(8, 5000, 1, 10)):
        app = create_app(base, poll_seconds=0.2, grpc_port=0, batching=batching)
        with TestClient(app) as client:
            results: list[Any] = []

            def post(row: dict[str, Any], client: Any = client, results: list = results) -> None:
                resp = client.post("/v1/models/scorer:predict", json={"instances": [row]})
                results.append((row["x"], resp.status_code, resp.json()["predictions"]))

            threads = [threading.Thread(target=post, args=(row,)) for row in rows]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            with GrpcPredictionClient(f"127.0.0.1:{app.state.grpc_port}") as grpc_client:
                over_grpc = grpc_client.predict("scorer", rows).predictions
        answers[batching is not None] = (sorted(results), over_grpc)
    assert answers[True][0] == answers[False][0]
    assert all(status == 200 for _, status, _ in answers[True][0])
    np.testing.assert_allclose(answers[True][1], answers[False][1], rtol=1e-6)
    args = build_arg_parser().parse_args(
        ["--model-base", "m", "--enable-batching", "--batching-parameters-file", "b.config"]
    )
    assert args.enable_batching and args.batching_parameters_file == Path("b.config")

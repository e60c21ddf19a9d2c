"""Hostile input against the model server: every case gets a fast 400 / INVALID_ARGUMENT (or
503 / RESOURCE_EXHAUSTED when full) with a one-line reason, never a 500, and the server stays
up (issue 12, item 4). Real app, real uvicorn and gRPC servers on loopback, tiny real models."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving import layout  # noqa: E402
from tests.saved_models import build_scorer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

STRICT, LENIENT, PLAIN = "strict", "lenient", "plain"  # config refuses / allows NaN; no config
MAX_ELEMENTS, MAX_DEPTH = 1000, 8
ROW = {"x": 1.0, "c": "a"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model base with three copies of the scorer, and pipeline configs for two of them."""
    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("hostile")
    model = build_scorer(root / "saved", 1.0)
    base = root / "models"
    for name in (STRICT, LENIENT, PLAIN):
        layout.publish_version(base, name, 1, model)
    pipelines = root / "pipelines"
    pipelines.mkdir()
    demo = (REPO / "pipelines" / "demo.yaml").read_text()
    for name, extra in ((STRICT, ""), (LENIENT, "\n  allow_non_finite: true")):
        (pipelines / f"{name}.yaml").write_text(
            demo.replace("name: demo", f"name: {name}").replace(
                f"model_name: {name}", f"model_name: {name}{extra}"
            )
        )
    return {"base": base, "pipelines": pipelines, "home": root / "home"}


def _app(served: dict[str, Path], tmp_path: Path, **kwargs: Any) -> Any:
    from serving.server import create_app

    return create_app(
        served["base"],
        tmp_path / "requests",
        poll_seconds=0.2,
        max_body_bytes=256 * 1024,
        max_elements=MAX_ELEMENTS,
        max_depth=MAX_DEPTH,
        pipelines_dir=served["pipelines"],
        **kwargs,
    )


@pytest.fixture
def client(
    served: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("MLP_HOME", str(served["home"]))
    with TestClient(_app(served, tmp_path, grpc_port=0)) as test_client:
        yield test_client


def _post(client: Any, model: str, body: bytes | str, method: str = "predict") -> Any:
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return client.post(
        f"/v1/models/{model}:{method}", content=data, headers={"Content-Type": "application/json"}
    )


def _refused(resp: Any, *words: str) -> str:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    for word in words:
        assert word in error, error
    return error


def _nested(depth: int) -> str:
    return "[" * depth + "1.0" + "]" * depth


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (f'{{"instances": {_nested(64)}}}', ["nesting deeper than 8"]),
        (f'{{"inputs": {{"x": {_nested(100_000)}, "c": ["a"]}}}}', ["nesting"]),
        ('{"instances": [{"x": 1.0, "c": "\\ud800"}]}', ["surrogate"]),
        ('{"instances": [{"x": 1.0, "\\udfff": "a"}]}', ["surrogate"]),
        ('{"instances": [{"x": 1.0, "c": "a"}], "signature_name": "\\ud83d"}', ["surrogate"]),
        ('{"instances": [{"x": NaN, "c": "a"}]}', ["NaN", "allow_non_finite"]),
        ('{"instances": [{"x": -Infinity, "c": "a"}]}', ["Infinity"]),
        ('{"inputs": {"x": [1e999], "c": ["a"]}}', ["non-finite"]),
        ('{"inputs": {"x": [1e39], "c": ["a"]}}', ["non-finite"]),  # beyond float32
        (json.dumps({"instances": [ROW] * 600}), [f"more than {MAX_ELEMENTS} values"]),
        ('{"instances": [{"x": {"b64": 5}, "c": "a"}]}', []),
        ('{"instances": [{"x": 1.0, "c": {"b64": "%%%"}}]}', ["base64"]),
        ('{"instances": [{"x": [1.0, [2.0]], "c": "a"}]}', []),
        ('{"instances": "x"}', ["non-empty list"]),
        ('{"signature_name": 5, "instances": [{"x": 1.0, "c": "a"}]}', ["signature_name"]),
        ("[1, 2]", ["JSON object"]),
        ('"just a string"', ["JSON object"]),
        ("\xff\xfe{", ["Parse error"]),
        ("{", ["Parse error"]),
        ('{"instances": [{"x": 1.0, "c": "a"}], "instances2": 1}', ["Unknown request keys"]),
    ],
)
def test_malformed_predict_is_400_with_one_line(client: Any, body: str, words: list[str]) -> None:
    _refused(_post(client, STRICT, body), *words)
    assert _post(client, STRICT, json.dumps({"instances": [ROW]})).status_code == 200


def test_non_finite_follows_the_models_config(client: Any) -> None:
    body = '{"instances": [{"x": NaN, "c": "a"}, {"x": Infinity, "c": "b"}]}'
    _refused(_post(client, STRICT, body), "allow_non_finite")
    for model in (LENIENT, PLAIN):  # config allows it / no config: TF Serving's behaviour
        resp = _post(client, model, body)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["predictions"]) == 2
    # a null is a missing value, not a non-finite one: accepted by the strict model too
    assert _post(client, STRICT, '{"instances": [{"x": null, "c": "a"}]}').status_code == 200
    examples = '{"examples": [{"x": NaN, "c": "a"}]}'
    _refused(_post(client, STRICT, examples, "regress"), "allow_non_finite")
    _refused(_post(client, STRICT, '{"examples": [{"x": 1e999, "c": "a"}]}', "regress"))


def _grpc_stub(client: Any) -> Any:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{client.app.state.grpc_port}")
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(model: str, x: Any, c: Any, **extra: Any) -> Any:
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from serving.codec.tensor_proto import to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(to_tensor_proto(np.asarray(x, dtype=np.float32)))
    request.inputs["c"].CopyFrom(to_tensor_proto(np.asarray(c, dtype=object)))
    for name, values in extra.items():
        request.inputs[name].CopyFrom(to_tensor_proto(np.asarray(values)))
    return request


def test_grpc_request_declaring_millions_of_rows_is_refused_before_allocating(
    client: Any,
) -> None:
    """The 229-byte request of the issue: a shape of 4 M rows with one value each (TensorFlow
    repeats the last value to fill the shape). Refused from its declared shape, at once."""
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    request = _predict_request(STRICT, [1.0], ["a"])
    for name, dtype, field, value in (
        ("x", types_pb2.DT_FLOAT, "float_val", 1.0),
        ("c", types_pb2.DT_STRING, "string_val", b"a"),
    ):
        proto = tensor_pb2.TensorProto(
            dtype=dtype,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=4_000_000)]
            ),
        )
        getattr(proto, field).append(value)
        request.inputs[name].CopyFrom(proto)
    assert request.ByteSize() < 300
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as excinfo:
        _grpc_stub(client).Predict(request, timeout=20)
    assert time.perf_counter() - started < 2.0
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit of 1000" in excinfo.value.details()


def test_grpc_non_finite_and_entity_column(client: Any) -> None:
    """Over gRPC a NaN is a missing value (a TensorProto has no null); an infinity is refused
    unless the config allows it; the pipeline's entity column is stripped (as over REST) and
    logged as ``entities``."""
    import grpc

    stub = _grpc_stub(client)
    ok = stub.Predict(_predict_request(STRICT, [float("nan")], ["a"]), timeout=20)
    assert ok.model_spec.version.value == 1
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Predict(_predict_request(STRICT, [float("inf")], ["a"]), timeout=20)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Infinity" in excinfo.value.details()
    stub.Predict(_predict_request(LENIENT, [float("inf")], ["a"]), timeout=20)

    keyed = stub.Predict(
        _predict_request(STRICT, [1.0, 2.0], ["a", "b"], customer_id=[7, 8]), timeout=20
    )
    plain = stub.Predict(_predict_request(STRICT, [1.0, 2.0], ["a", "b"]), timeout=20)
    assert keyed.outputs["score"] == plain.outputs["score"]
    assert client.app.state.request_logger.flush()
    lines = [
        json.loads(line)
        for path in (client.app.state.request_logger.log_dir / STRICT).glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    logged = [r for r in lines if r["protocol"] == "grpc" and "entities" in r]
    assert [r["entities"] for r in logged] == [[7, 8]]
    assert set(logged[0]["inputs"]) == {"x", "c"}


def test_grpc_concurrency_limit_answers_resource_exhausted(
    served: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``max_concurrent=1``, RPCs beyond the one running get RESOURCE_EXHAUSTED at once;
    every other one is answered."""
    import grpc
    from fastapi.testclient import TestClient

    monkeypatch.setenv("MLP_HOME", str(served["home"]))
    with TestClient(_app(served, tmp_path, grpc_port=0, max_concurrent=1)) as busy:
        stub = _grpc_stub(busy)
        request = _predict_request(PLAIN, [1.0] * 64, ["a"] * 64)
        codes: list[Any] = []
        barrier = threading.Barrier(12)

        def fire() -> None:
            barrier.wait()
            for _ in range(5):
                try:
                    stub.Predict(request, timeout=20)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())

        threads = [threading.Thread(target=fire) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes


# --------------------------------------------------------------------------- live uvicorn


@pytest.fixture
def live(
    served: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, Any]]:
    """The app under uvicorn with the entry point's guards: 3 connections at most, 0.5 s to
    send a request head, 1 request in progress at once (in the app and in the protocol)."""
    import uvicorn

    from serving.rest.connections import guarded_protocol

    monkeypatch.setenv("MLP_HOME", str(served["home"]))
    app = _app(served, tmp_path, max_concurrent=1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", http=guarded_protocol(3, 0.5, 1)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def _closed_by_server(conn: socket.socket, within: float) -> bool:
    conn.settimeout(within)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _predict_over(port: int, body: bytes) -> tuple[int, dict[str, Any]]:
    import httpx

    resp = httpx.post(
        f"http://127.0.0.1:{port}/v1/models/{PLAIN}:predict", content=body, timeout=10
    )
    return resp.status_code, resp.json()


def test_connection_cap_and_header_timeout(live: tuple[int, Any]) -> None:
    port, _app_ = live
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    extra = socket.create_connection(("127.0.0.1", port))
    try:
        assert _closed_by_server(extra, 2.0)  # the 4th connection is closed when accepted
        slow = idle[0]
        slow.sendall(b"POST /v1/models/plain:predict HTTP/1.1\r\nHost: x\r\n")  # never ends
        assert all(_closed_by_server(c, 3.0) for c in idle)  # no head within 0.5 s: closed
    finally:
        for conn in [*idle, extra]:
            conn.close()
    status, body = _predict_over(port, json.dumps({"instances": [ROW]}).encode())
    assert status == 200 and len(body["predictions"]) == 1  # real requests still answered


def test_rest_concurrency_limit_answers_503_at_once(live: tuple[int, Any]) -> None:
    """One request holds the only slot (its body never completes); the next is answered 503
    at once, and the slot frees when the first one goes away."""
    port, _app_ = live
    holder = socket.create_connection(("127.0.0.1", port))
    holder.sendall(
        b"POST /v1/models/plain:predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    time.sleep(0.2)
    started = time.perf_counter()
    status, body = _predict_over(port, json.dumps({"instances": [ROW]}).encode())
    assert status == 503 and "busy" in body["error"]
    assert time.perf_counter() - started < 1.0
    holder.close()
    deadline = time.monotonic() + 5
    while _predict_over(port, json.dumps({"instances": [ROW]}).encode())[0] != 200:
        assert time.monotonic() < deadline, "the slot was not freed"
        time.sleep(0.1)


def test_limits_are_validated() -> None:
    from serving.api import Limits

    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=0)

"""TF Serving compatibility of serving/: the REST API replayed from TF Serving's documentation
and its own handler test (tests/data/tf_serving/*.json), classify/regress, malformed input,
and the gRPC API through the gRPC client and raw tensorflow-serving-api stubs."""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlplatform import processes  # noqa: E402
from serving import layout  # noqa: E402
from serving.client import GrpcPredictionClient, PredictionClient, ServingError  # noqa: E402
from tests.services import free_port  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

DATA = Path(__file__).parent / "data" / "tf_serving"
MAX_BODY = 256 * 1024
HP2 = "saved_model_half_plus_two_2_versions"


# --------------------------------------------------------------------------- models


def _v1_saved_model(path: Path, build: Callable[[Any, Any], dict[str, Any]]) -> Path:
    """A TF1-style SavedModel (method names other than predict need the v1 builder)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        signatures = build(tf, tf1)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            builder = tf1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


def _sig(tf1: Any, inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
    info = tf1.saved_model.utils.build_tensor_info
    return tf1.saved_model.signature_def_utils.build_signature_def(
        {k: info(v) for k, v in inputs.items()}, {k: info(v) for k, v in outputs.items()}, method
    )


def _half_plus(b: float) -> Callable[[Any, Any], dict[str, Any]]:
    """The docs' half_plus_three (b=3): predict x -> y, regress/classify on tf.Examples."""

    def build(tf: Any, tf1: Any) -> dict[str, Any]:
        a, bias = tf1.Variable(0.5, name="a"), tf1.Variable(b, name="b")
        serialized = tf1.placeholder(tf.string, [None], name="tf_example")
        parsed = tf1.io.parse_example(serialized, {"x": tf1.io.FixedLenFeature([1], tf.float32)})
        y_example = tf.add(tf.multiply(a, parsed["x"]), bias, name="y_example")
        x = tf1.placeholder(tf.float32, [None], name="x")
        y = tf.add(tf.multiply(a, x), bias, name="y")
        return {
            "serving_default": _sig(tf1, {"x": x}, {"y": y}, "tensorflow/serving/predict"),
            "tensorflow/serving/regress": _sig(
                tf1, {"inputs": serialized}, {"outputs": y_example}, "tensorflow/serving/regress"
            ),
            "tensorflow/serving/classify": _sig(
                tf1, {"inputs": serialized}, {"scores": y_example}, "tensorflow/serving/classify"
            ),
        }

    return build


def _half_plus_two_2_versions(tf: Any, tf1: Any) -> dict[str, Any]:
    """The signatures of TF Serving's saved_model_half_plus_two_2_versions test model."""
    a, b = tf1.Variable(0.5, name="a"), tf1.Variable(2.0, name="b")
    serialized = tf1.placeholder(tf.string, None, name="tf_example")
    parsed = tf1.io.parse_example(serialized, {"x": tf1.io.FixedLenFeature([1], tf.float32)})
    x = tf.reshape(parsed["x"], [-1, 1], name="x")
    y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
    return {
        "serving_default": _sig(tf1, {"x": x}, {"y": y}, "tensorflow/serving/predict"),
        "regress_x_to_y": _sig(
            tf1, {"inputs": serialized}, {"outputs": y}, "tensorflow/serving/regress"
        ),
        "classify_x_to_y": _sig(
            tf1, {"inputs": serialized}, {"scores": y}, "tensorflow/serving/classify"
        ),
    }


def _docs_words(tf: Any, tf1: Any) -> dict[str, Any]:
    word = tf1.placeholder(tf.string, [None], name="word")
    upper = tf.strings.upper(word)
    return {
        "serving_default": _sig(tf1, {"word": word}, {"upper": upper}, "tensorflow/serving/predict")
    }


def _docs_matrix(tf: Any, tf1: Any) -> dict[str, Any]:
    m = tf1.placeholder(tf.float32, [None, 1, 2], name="m")
    total = tf.reduce_sum(m, axis=[1, 2])
    return {"serving_default": _sig(tf1, {"m": m}, {"total": total}, "tensorflow/serving/predict")}


def _docs_tensors(tf: Any, tf1: Any) -> dict[str, Any]:
    tag = tf1.placeholder(tf.string, [None], name="tag")
    signal = tf1.placeholder(tf.int32, [None, 5], name="signal")
    sensor = tf1.placeholder(tf.float32, [None, 2, 2], name="sensor")
    outputs = {
        "tag_len": tf.strings.length(tag),
        "signal_sum": tf.reduce_sum(signal, axis=1),
        "sensor_trace": tf.linalg.trace(sensor),
    }
    inputs = {"tag": tag, "signal": signal, "sensor": sensor}
    return {"serving_default": _sig(tf1, inputs, outputs, "tensorflow/serving/predict")}


def _churn_score(tenure: float, contract: str) -> float:
    bias = 1.0 if contract == "month" else -1.0
    return 1.0 / (1.0 + math.exp(-(bias - 0.1 * tenure)))


def _spend(tenure: float, contract: str) -> float:
    return 10.0 + 2.0 * tenure + (5.0 if contract == "month" else 0.0)


def _mapping_model(path: Path) -> Path:
    """A TF2 SavedModel like the platform's: predict signatures over raw features by name."""
    import tensorflow as tf

    features = {
        "tenure": tf.TensorSpec([None], tf.float32, name="tenure"),
        "contract": tf.TensorSpec([None], tf.string, name="contract"),
    }

    def bias(f: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.where(tf.equal(f["contract"], "month"), 1.0, -1.0)

    class Mapping(tf.Module):
        @tf.function(input_signature=[features])
        def churn(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return {"score": tf.sigmoid(bias(f) - 0.1 * f["tenure"])}

        @tf.function(input_signature=[features])
        def spend(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return {"prediction": 10.0 + 2.0 * f["tenure"] + 2.5 * (bias(f) + 1.0)}

        @tf.function(input_signature=[features])
        def tagged(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return {"prediction": f["tenure"], "tag": tf.strings.join([f["contract"], "!"])}

        @tf.function(input_signature=[{"tenure": features["tenure"]}])
        def two_floats(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return {"a": f["tenure"], "b": 2.0 * f["tenure"]}

        @tf.function(input_signature=[features])
        def multi_class(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            n = tf.shape(f["tenure"])[0]
            logits = tf.stack([f["tenure"], 0.0 * f["tenure"], -f["tenure"]], axis=1)
            classes = tf.tile(tf.constant([["low", "mid", "high"]]), [n, 1])
            return {"scores": tf.nn.softmax(logits), "classes": classes}

        @tf.function(
            input_signature=[
                {
                    "image": tf.TensorSpec([None], tf.string, name="image"),
                    "caption": tf.TensorSpec([None], tf.string, name="caption"),
                }
            ]
        )
        def objects(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            image = tf.cast(tf.strings.length(f["image"]), tf.float32)
            caption = tf.cast(tf.strings.length(f["caption"]), tf.float32)
            return {"score": image / (image + caption)}

        @tf.function(
            input_signature=[{"examples": tf.TensorSpec([None], tf.string, name="examples")}]
        )
        def tfx(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            parsed = tf.io.parse_example(
                f["examples"],
                {
                    "tenure": tf.io.FixedLenFeature([], tf.float32),
                    "contract": tf.io.FixedLenFeature([], tf.string),
                },
            )
            return {"score": tf.sigmoid(bias(parsed) - 0.1 * parsed["tenure"])}

    module = Mapping()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.churn,
            "regress_spend": module.spend,
            "tagged": module.tagged,
            "two_floats": module.two_floats,
            "multi_class": module.multi_class,
            "classify_objects": module.objects,
            "tfx": module.tfx,
        },
    )
    return path


def _fake_saved_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"not really a graph")
    return path


@pytest.fixture(scope="module")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compat")
    build = root / "build"
    base = root / "models"
    for name, version, builder in (
        ("half_plus_three", 123, _half_plus(3.0)),
        (HP2, 123, _half_plus_two_2_versions),
        ("docs_words", 1, _docs_words),
        ("docs_matrix", 1, _docs_matrix),
        ("docs_tensors", 1, _docs_tensors),
        ("hp", 1, _half_plus(2.0)),
        ("hp", 2, _half_plus(3.0)),
    ):
        src = _v1_saved_model(build / f"{name}-{version}", builder)
        layout.publish_version(base, name, version, src)
    layout.publish_version(base, "docs_mapping", 1, _mapping_model(build / "mapping"))
    layout.publish_version(base, "broken", 1, _fake_saved_model(build / "broken"))
    layout.write_models_config(
        base, {HP2: {"Version_Label": 123}, "hp": {"stable": 1, "canary": 2}}
    )
    return base


class _Server:
    """A live server on loopback: ``http`` (an httpx client on the REST port), ``rest_url``,
    ``grpc_target`` and the request ``log_dir``."""

    def __init__(
        self, http: Any, rest_url: str, grpc_target: str, log_dir: Path, app: Any = None
    ) -> None:
        self.app = app
        self.http, self.rest_url, self.grpc_target, self.log_dir = (
            http,
            rest_url,
            grpc_target,
            log_dir,
        )

    def get(self, path: str) -> Any:
        return self.http.get(path)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.http.post(path, **kwargs)


@pytest.fixture(scope="module")
def server(model_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    """One process, one registry: REST (uvicorn) and gRPC, each on a free loopback port."""
    import httpx
    import uvicorn

    from serving.server import create_app

    log_dir = tmp_path_factory.mktemp("requests")
    app = create_app(model_base, log_dir, poll_seconds=0.2, max_body_bytes=MAX_BODY, grpc_port=0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    rest_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=rest_url, timeout=30) as http:
            yield _Server(http, rest_url, f"127.0.0.1:{app.state.grpc_port}", log_dir, app)
    finally:
        uv.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def grpc_client(server: Any) -> Iterator[GrpcPredictionClient]:
    with GrpcPredictionClient(server.grpc_target, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def stubs(server: Any) -> Iterator[tuple[Any, Any]]:
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_target)
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


# --------------------------------------------------------------------------- helpers


def _same(actual: Any, expected: Any, rel: float, where: str = "$") -> None:
    """JSON equality with float tolerance (NaN == NaN); ints and floats compare by value."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _same(actual[key], expected[key], rel, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        assert len(actual) == len(expected), (
            f"{where}: {len(actual)} items, expected {len(expected)}"
        )
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _same(a, e, rel, f"{where}[{i}]")
    elif isinstance(expected, bool) or isinstance(expected, str) or expected is None:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
    else:
        assert isinstance(actual, int | float) and not isinstance(actual, bool), where
        if math.isnan(expected):
            assert math.isnan(actual), f"{where}: {actual!r} is not NaN"
        else:
            assert actual == pytest.approx(expected, rel=rel, abs=1e-9), (
                f"{where}: {actual!r} != {expected!r}"
            )


def _send(server: Any, request: dict[str, Any], raw_body: str | None = None) -> Any:
    if request["method"] == "GET":
        return server.get(request["path"])
    if raw_body is None and "raw_body" in request:
        raw_body = request["raw_body"]
    content = raw_body.encode() if raw_body is not None else json.dumps(request["body"]).encode()
    return server.post(
        request["path"], content=content, headers={"Content-Type": "application/json"}
    )


def _cases(filename: str) -> list[Any]:
    data = json.loads((DATA / filename).read_text())
    assert data["source"].startswith("https://")
    return [pytest.param(case, id=case["name"]) for case in data["cases"]]


# --------------------------------------------------------------------------- REST: replayed docs


@pytest.mark.parametrize("case", _cases("api_rest.json"))
def test_rest_api_documentation_examples(server: Any, case: dict[str, Any]) -> None:
    resp = _send(server, case["request"], case.get("raw_request_body"))
    assert resp.status_code == case["response"]["status"], resp.text
    expected = (
        json.loads(case["raw_response_body"])
        if "raw_response_body" in case
        else case["response"]["body"]
    )
    _same(json.loads(resp.text), expected, rel=1e-5 if case["compare"] == "approx" else 1e-6)
    assert resp.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("case", _cases("http_rest_api_handler_test.json"))
def test_rest_tf_serving_handler_test_cases(server: Any, case: dict[str, Any]) -> None:
    resp = _send(server, case["request"])
    expected = case["response"]
    assert resp.status_code == expected["status"], resp.text
    if "body" in expected:
        _same(resp.json(), expected["body"], rel=1e-6)
    else:
        error = resp.json()["error"]
        assert isinstance(error, str) and error and "\n" not in error
        if expected.get("error_contains"):
            assert expected["error_contains"] in error


def test_rest_metadata_has_tf_serving_shape(server: Any) -> None:
    """GetModelMetadataResponse as JSON: the shape TF Serving's handler test expects for
    saved_model_half_plus_two_2_versions (model_spec + signature_def map of TensorInfo)."""
    meta = server.get(f"/v1/models/{HP2}/metadata").json()
    assert meta["model_spec"] == {"name": HP2, "signature_name": "", "version": "123"}
    assert set(meta["metadata"]) == {"signature_def"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "regress_x_to_y", "classify_x_to_y"}
    unknown = {"dim": [], "unknown_rank": True}
    batch_by_one = {
        "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
        "unknown_rank": False,
    }
    expected = {
        "serving_default": ("tensorflow/serving/predict", "x", "DT_FLOAT", batch_by_one, "y"),
        "regress_x_to_y": ("tensorflow/serving/regress", "inputs", "DT_STRING", unknown, "outputs"),
        "classify_x_to_y": (
            "tensorflow/serving/classify",
            "inputs",
            "DT_STRING",
            unknown,
            "scores",
        ),
    }
    for key, (method, input_name, dtype, shape, output_name) in expected.items():
        sig = sigs[key]
        assert set(sig) == {"inputs", "outputs", "method_name", "defaults"}
        assert sig["method_name"] == method and sig["defaults"] == {}
        assert set(sig["inputs"]) == {input_name} and set(sig["outputs"]) == {output_name}
        tensor = sig["inputs"][input_name]
        assert set(tensor) == {"dtype", "tensor_shape", "name"}
        assert (tensor["dtype"], tensor["tensor_shape"]) == (dtype, shape)
        assert tensor["name"].endswith(":0")
        out = sig["outputs"][output_name]
        assert (out["dtype"], out["tensor_shape"]) == ("DT_FLOAT", batch_by_one)


# --------------------------------------------------------------------------- REST: classify/regress


def test_classify_and_regress_mapping_on_predict_signatures(server: _Server) -> None:
    rows = [{"tenure": 3.0, "contract": "month"}, {"tenure": 12, "contract": "year"}]
    resp = server.post("/v1/models/docs_mapping:classify", json={"examples": rows})
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Model-Version"] == "1"
    p = [_churn_score(3.0, "month"), _churn_score(12.0, "year")]
    _same(
        resp.json(),
        {"results": [[["0", 1 - p[0]], ["1", p[0]]], [["0", 1 - p[1]], ["1", p[1]]]]},
        1e-5,
    )

    # The only output is a float: regress reads it (here the classifier's probability).
    resp = server.post("/v1/models/docs_mapping:regress", json={"examples": rows})
    _same(resp.json(), {"results": p}, 1e-5)
    # 'prediction' is the regression output even next to a string output.
    resp = server.post(
        "/v1/models/docs_mapping:regress", json={"signature_name": "tagged", "examples": rows}
    )
    _same(resp.json(), {"results": [3.0, 12.0]}, 1e-6)
    # scores + classes are read as TF Serving reads a classify signature.
    resp = server.post(
        "/v1/models/docs_mapping:classify",
        json={"signature_name": "multi_class", "examples": [{"tenure": 0.0, "contract": "x"}]},
    )
    third = 1.0 / 3.0
    _same(resp.json(), {"results": [[["low", third], ["mid", third], ["high", third]]]}, 1e-5)
    # TFX convention: a lone string input 'examples' receives the serialized tf.Examples.
    resp = server.post(
        "/v1/models/docs_mapping:classify",
        json={
            "signature_name": "tfx",
            "context": {"contract": "month"},
            "examples": [{"tenure": 3.0}],
        },
    )
    _same(resp.json(), {"results": [[["0", 1 - p[0]], ["1", p[0]]]]}, 1e-5)
    # Native classify/regress signatures (serialized tf.Example input).
    resp = server.post(
        "/v1/models/half_plus_three:classify",
        json={"signature_name": "tensorflow/serving/classify", "examples": [{"x": 4.0}]},
    )
    _same(resp.json(), {"results": [[["", 5.0]]]}, 1e-6)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v1/models/docs_mapping:classify",
            {"signature_name": "two_floats", "examples": [{"tenure": 1.0}]},
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"signature_name": "regress_spend", "examples": [{"tenure": 1.0, "contract": "a"}]},
            "float output 'score'",
        ),
        (
            "/v1/models/docs_mapping:regress",
            {"signature_name": "two_floats", "examples": [{"tenure": 1.0}]},
            "Expected regression signature method_name to be tensorflow/serving/regress",
        ),
        (
            "/v1/models/half_plus_three:classify",
            {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]},
            "Was: tensorflow/serving/regress",
        ),
        (
            "/v1/models/half_plus_three:regress",
            {"signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}]},
            "Was: tensorflow/serving/classify",
        ),
        ("/v1/models/docs_mapping:classify", {"signature_name": "nope", "examples": [{}]}, "nope"),
        ("/v1/models/docs_mapping:classify", {"examples": [{"tenure": 1.0}]}, "Feature: contract"),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": "1", "contract": "a"}]},
            "Expected type: float",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": 1.0, "contract": 3}]},
            "Expected type: string",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": [1.0, 2.0], "contract": "a"}]},
            "number of values 2",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": [[1.0]], "contract": "a"}]},
            "unexpected JSON type: Array",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": None, "contract": "a"}]},
            "unexpected JSON type: Null",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": [1.0, "a"], "contract": "a"}]},
            "Unexpected element type in feature: tenure",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": 1.0, "contract": {"b64": "***"}}]},
            "base64",
        ),
        (
            "/v1/models/docs_mapping:classify",
            {"examples": [{"tenure": 1e300, "contract": "a"}]},
            "loss of precision",
        ),
        ("/v1/models/docs_mapping:classify", {"examples": []}, "empty array"),
        ("/v1/models/docs_mapping:classify", {"examples": {"tenure": 1.0}}, "list/array"),
        ("/v1/models/docs_mapping:classify", {"examples": [[1.0, "a"]]}, "must be JSON object"),
        (
            "/v1/models/docs_mapping:classify",
            {"context": [1], "examples": [{}]},
            "must be JSON object",
        ),
        ("/v1/models/docs_mapping:classify", {"instances": [{}]}, "key 'examples' is expected"),
        (
            "/v1/models/docs_mapping:regress",
            {"examples": [{}], "extra": 1},
            "Unknown request keys: extra",
        ),
    ],
)
def test_classify_regress_bad_requests_are_400(
    server: Any, path: str, body: dict[str, Any], message: str
) -> None:
    resp = server.post(path, json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert message in error and "\n" not in error


# --------------------------------------------------------------------------- REST: malformed input


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/half_plus_three:predict", b'{"instances": [[1.0]]}'),  # wrong nesting
        ("/v1/models/half_plus_three:predict", b'{"inputs": [[1.0], 2.0]}'),  # ragged
        ("/v1/models/docs_matrix:predict", b'{"instances": [[[1, 2]], [[3]]]}'),  # ragged
        (
            "/v1/models/docs_tensors:predict",
            b'{"instances": [{"tag": "a", "signal": [1, 2], "sensor": [[1, 2], [3, 4]]}]}',
        ),
        ("/v1/models/half_plus_three:predict", b'{"instances": ["x", "y"]}'),  # non-numeric
        ("/v1/models/half_plus_three:predict", b'{"instances": [true, false]}'),
        # null is a missing value only for float and string inputs (NaN / ""), never for ints
        (
            "/v1/models/docs_tensors:predict",
            b'{"instances": [{"tag": "a", "signal": [1, 2, null, 4, 5], "sensor": [[1, 2], [3, 4]]}]}',
        ),
        ("/v1/models/half_plus_three:predict", b'{"instances": [[null]]}'),  # wrong nesting
        (
            "/v1/models/half_plus_three:predict",
            b'{"instances": [{"b64": "aGk="}]}',
        ),  # b64 for a float
        ("/v1/models/docs_words:predict", b'{"instances": [{"b64": "not base64!"}]}'),
        ("/v1/models/docs_words:predict", b'{"instances": [{"b64": 5}]}'),
        ("/v1/models/docs_words:predict", b'{"instances": [{"b64": "aGk=", "x": 1}]}'),
        ("/v1/models/docs_tensors:predict", b'{"instances": [{"tag": "a"}, ["b"]]}'),
        (
            "/v1/models/docs_tensors:predict",
            b'{"inputs": {"tag": ["a"], "signal": [[1, 2, 3, 4, 5.5]], "sensor": [[[1, 2], [3, 4]]]}}',
        ),
        (
            "/v1/models/docs_tensors:predict",
            b'{"inputs": {"tag": ["a"], "signal": [[1, 2, 3, 4, 99999999999]], "sensor": [[[1, 2], [3, 4]]]}}',
        ),
        ("/v1/models/half_plus_three:predict", b"[" * 100_000),
        (
            "/v1/models/half_plus_three:predict",
            b'{"instances": [1.0]' + b" " * MAX_BODY + b"}",
        ),  # huge
        ("/v1/models/half_plus_three:predict", b"\xff\xfe{}"),
        (
            "/v1/models/half_plus_three:classify",
            b'{"examples": [{"x": 1.0}], "signature_name": ["a"]}',
        ),
    ],
)
def test_malformed_rest_requests_are_400_and_harmless(server: Any, path: str, body: bytes) -> None:
    resp = server.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    ok = server.post("/v1/models/half_plus_three:predict", json={"instances": [2.0]})
    assert ok.status_code == 200 and ok.json() == {"predictions": [4.0]}


def test_failed_version_is_failed_precondition(server: Any, stubs: tuple[Any, Any]) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2

    resp = server.post("/v1/models/broken:predict", json={"instances": [1.0]})
    assert resp.status_code == 400  # TF Serving maps FAILED_PRECONDITION to HTTP 400
    assert "failed to load" in resp.json()["error"]
    status = server.get("/v1/models/broken").json()["model_version_status"]
    assert status[0]["state"] == "END" and status[0]["status"]["error_code"] == "UNKNOWN"

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "broken"
    with pytest.raises(grpc.RpcError) as excinfo:
        stubs[0].Predict(request, timeout=20)
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# --------------------------------------------------------------------------- gRPC


def test_grpc_predict_classify_regress(grpc_client: GrpcPredictionClient) -> None:
    import numpy as np

    result = grpc_client.predict("half_plus_three", [1.0, 2.0, 5.0])
    assert result.predictions == [3.5, 4.0, 5.5] and result.model_version == 123
    assert result.outputs is not None and result.outputs["y"].dtype == np.float32

    rows = [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]},
    ]
    result = grpc_client.predict("docs_tensors", rows)  # ints become DT_FLOAT for sensor
    assert result.predictions == [
        {"tag_len": 3, "signal_sum": 15, "sensor_trace": 5.0},
        {"tag_len": 3, "signal_sum": 15, "sensor_trace": 12.0},
    ]
    columns = {
        "tag": np.array(["a", "bb"]),
        "signal": np.ones([2, 5]),
        "sensor": np.zeros([2, 2, 2]),
    }
    result = grpc_client.predict("docs_tensors", columns, output_filter=["signal_sum"])
    assert result.predictions == [5, 5] and set(result.outputs) == {"signal_sum"}
    assert grpc_client.predict("docs_words", ["foo"]).predictions == ["FOO"]

    p = _churn_score(3.0, "month")
    result = grpc_client.classify("docs_mapping", [{"tenure": 3.0}], context={"contract": "month"})
    _same(result.predictions, [[["0", 1 - p], ["1", p]]], 1e-5)
    assert result.model_version == 1
    result = grpc_client.regress(
        "docs_mapping",
        [{"tenure": 1.0, "contract": "month"}, {"tenure": 2, "contract": "b"}],
        signature_name="regress_spend",
    )
    assert result.predictions == pytest.approx([_spend(1.0, "month"), _spend(2.0, "b")])
    result = grpc_client.regress(
        "half_plus_three", [{"x": 1.0}, {"x": 2.0}], signature_name="tensorflow/serving/regress"
    )
    assert result.predictions == [3.5, 4.0]
    result = grpc_client.classify(
        "docs_mapping",
        [{"image": {"b64": base64.b64encode(b"image bytes").decode()}, "caption": b"seaside"}],
        signature_name="classify_objects",
    )
    _same(result.predictions, [[["0", 7 / 18], ["1", 11 / 18]]], 1e-5)


def test_grpc_matches_rest(server: Any, grpc_client: GrpcPredictionClient) -> None:
    """Same answers, status and metadata JSON whichever protocol asks."""
    rest = PredictionClient(server.rest_url)
    rows = [{"tenure": 3.0, "contract": "month"}, {"tenure": 40.0, "contract": "year"}]
    assert grpc_client.predict("docs_mapping", rows).predictions == pytest.approx(
        rest.predict("docs_mapping", rows).predictions
    )
    _same(
        grpc_client.classify("docs_mapping", rows).predictions,
        rest.classify("docs_mapping", rows).predictions,
        1e-6,
    )
    for model in ("half_plus_three", HP2, "docs_mapping"):
        assert grpc_client.model_metadata(model) == rest.model_metadata(model)
    for model, kwargs in (("hp", {}), (HP2, {"label": "Version_Label"}), ("hp", {"version": 2})):
        assert grpc_client.model_status(model, **kwargs) == rest.model_status(model, **kwargs)


def test_grpc_version_and_label_routing(grpc_client: GrpcPredictionClient) -> None:
    assert grpc_client.wait_until_available("hp", timeout_s=10) == 1  # stable
    assert grpc_client.predict("hp", [2.0]).predictions == [3.0]
    assert grpc_client.predict("hp", [2.0], version=2).predictions == [4.0]
    result = grpc_client.predict("hp", [2.0], label="canary")
    assert (result.predictions, result.model_version) == ([4.0], 2)
    assert grpc_client.predict("hp", [2.0], label="stable").model_version == 1
    assert grpc_client.regress(
        "hp", [{"x": 2.0}], label="canary", signature_name="tensorflow/serving/regress"
    ).predictions == [4.0]
    statuses = grpc_client.model_status("hp")
    assert [(s["version"], s["state"]) for s in statuses] == [
        ("2", "AVAILABLE"),
        ("1", "AVAILABLE"),
    ]
    assert statuses[0]["status"] == {"error_code": "OK", "error_message": ""}
    meta = grpc_client.model_metadata("hp", version=2)
    assert meta["model_spec"] == {"name": "hp", "signature_name": "", "version": "2"}
    assert (
        meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"][
            "dtype"
        ]
        == "DT_FLOAT"
    )


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (
            lambda c: c.predict("nope", [1.0]),
            "NOT_FOUND",
            "Servable not found for request: Latest(nope)",
        ),
        (lambda c: c.predict("hp", [1.0], version=9), "NOT_FOUND", "Specific(hp, 9)"),
        (
            lambda c: c.model_status("nope"),
            "NOT_FOUND",
            "Could not find any versions of model nope",
        ),
        (lambda c: c.model_status("hp", version=9), "NOT_FOUND", "Could not find version 9"),
        (
            lambda c: c.predict("hp", [1.0], label="nope"),
            "INVALID_ARGUMENT",
            "Unrecognized servable version label: nope",
        ),
        (
            lambda c: c.predict("docs_tensors", {"tag": ["a"]}),
            "INVALID_ARGUMENT",
            "Missing but required: {sensor,signal}",
        ),
        (
            lambda c: c.predict("docs_words", {"word": ["a"], "x": [1.0]}),
            "INVALID_ARGUMENT",
            "Sent extra: {x}",
        ),
        (lambda c: c.predict("docs_matrix", [[1.0, 2.0]]), "INVALID_ARGUMENT", "incompatible"),
        (
            lambda c: c.predict("half_plus_three", ["one"]),
            "INVALID_ARGUMENT",
            "input 'x' cannot be sent as the signature's dtype",
        ),
        (
            lambda c: c.predict("docs_words", ["a"], output_filter=["nope"]),
            "INVALID_ARGUMENT",
            "output tensor alias not found in signature: nope",
        ),
        (
            lambda c: c.predict("docs_words", ["a"], output_filter=["upper", "upper"]),
            "INVALID_ARGUMENT",
            "duplicate output tensor alias",
        ),
        (
            lambda c: c.predict("docs_words", ["a"], signature_name="nope"),
            "INVALID_ARGUMENT",
            "nope",
        ),
        (
            lambda c: c.classify("docs_mapping", [{"tenure": 1.0}]),
            "INVALID_ARGUMENT",
            "Feature: contract",
        ),
        (
            lambda c: c.classify("docs_mapping", [{"tenure": 1.0}], signature_name="two_floats"),
            "INVALID_ARGUMENT",
            "Expected classification signature",
        ),
        (
            lambda c: c.regress("docs_mapping", [{"tenure": 1.0}], signature_name="two_floats"),
            "INVALID_ARGUMENT",
            "Expected regression signature",
        ),
        (lambda c: c.regress("docs_mapping", []), "INVALID_ARGUMENT", "Input is empty"),
    ],
)
def test_grpc_errors_have_tf_serving_codes(
    grpc_client: GrpcPredictionClient, call: Callable[[Any], Any], code: str, message: str
) -> None:
    with pytest.raises(ServingError) as excinfo:
        call(grpc_client)
    assert excinfo.value.code == code
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def _tensor(dtype: Any, dims: list[int], **values: Any) -> Any:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)


def test_grpc_malformed_requests_are_invalid_argument(server: Any, stubs: tuple[Any, Any]) -> None:
    import grpc
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        predict_pb2,
    )

    prediction, models = stubs

    def predict(tensor: Any | None, model: str = "half_plus_three") -> Any:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        if tensor is not None:
            request.inputs["x"].CopyFrom(tensor)
        return request

    bad = {
        "double for float": predict(_tensor(types_pb2.DT_DOUBLE, [1], double_val=[1.0])),
        "string for float": predict(_tensor(types_pb2.DT_STRING, [1], string_val=[b"a"])),
        "content size": predict(_tensor(types_pb2.DT_FLOAT, [4], tensor_content=b"\x00" * 6)),
        "huge shape": predict(_tensor(types_pb2.DT_FLOAT, [10**12], float_val=[1.0])),
        "negative dim": predict(_tensor(types_pb2.DT_FLOAT, [-5], float_val=[1.0])),
        "rank 2": predict(_tensor(types_pb2.DT_FLOAT, [1, 1], float_val=[1.0])),
        "no inputs": predict(None),
        "no model_spec": predict_pb2.PredictRequest(),
    }
    for what, request in bad.items():
        with pytest.raises(grpc.RpcError) as excinfo:
            prediction.Predict(request, timeout=20)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert "\n" not in excinfo.value.details(), what

    # Larger than the server's message limit: refused by gRPC before any decoding.
    huge = predict(_tensor(types_pb2.DT_FLOAT, [MAX_BODY], tensor_content=b"\x00" * 4 * MAX_BODY))
    with pytest.raises(grpc.RpcError) as excinfo:
        prediction.Predict(huge, timeout=20)
    assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "docs_mapping"
    with pytest.raises(grpc.RpcError) as excinfo:
        prediction.Classify(request, timeout=20)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # no examples

    for fields, message in (([], "must be specified"), (["nope"], "not supported")):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
        request.model_spec.name = "hp"
        with pytest.raises(grpc.RpcError) as excinfo:
            prediction.GetModelMetadata(request, timeout=20)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in excinfo.value.details()

    with pytest.raises(grpc.RpcError) as excinfo:
        models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=20)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as excinfo:
        models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=20)
    assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED

    ok = prediction.Predict(
        predict(_tensor(types_pb2.DT_FLOAT, [2], float_val=[1.0, 2.0])), timeout=20
    )
    assert list(ok.outputs["y"].float_val or []) or ok.outputs["y"].tensor_content
    assert (ok.model_spec.name, ok.model_spec.version.value) == ("half_plus_three", 123)
    assert ok.model_spec.signature_name == "serving_default"


def test_grpc_requests_are_logged(server: Any, grpc_client: GrpcPredictionClient) -> None:
    grpc_client.predict("docs_words", ["logme"])
    grpc_client.classify("docs_mapping", [{"tenure": 5.0, "contract": "month"}])
    server.post("/v1/models/docs_words:predict", json={"instances": ["rest"]})
    assert server.app.state.request_logger.flush()  # the log is written off the request path

    def records(model: str) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for path in (server.log_dir / model).glob("*.jsonl")
            for line in path.read_text().splitlines()
        ]

    words = records("docs_words")
    grpc_record = next(
        r for r in words if r["protocol"] == "grpc" and r["inputs"] == {"word": ["logme"]}
    )
    assert grpc_record["method"] == "predict" and grpc_record["format"] == "inputs"
    assert grpc_record["outputs"] == ["LOGME"] and grpc_record["version"] == 1
    assert grpc_record["latency_ms"] >= 0 and grpc_record["time"].endswith("+00:00")
    rest_record = next(r for r in words if r["protocol"] == "rest" and r["inputs"] == ["rest"])
    assert rest_record["format"] == "instances" and rest_record["outputs"] == ["REST"]
    classify = next(
        r
        for r in records("docs_mapping")
        if r["protocol"] == "grpc" and r["inputs"] == [{"contract": "month", "tenure": 5.0}]
    )
    assert classify["method"] == "classify" and classify["format"] == "examples"
    assert classify["outputs"][0][1][0] == "1"
    ids = {grpc_record["request_id"], classify["request_id"], rest_record["request_id"]}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)  # a new uuid4 each (none was sent)


def test_grpc_client_does_not_load_tensorflow_until_constructed() -> None:
    code = (
        "import sys; from serving.client import GrpcPredictionClient; "
        "print('tensorflow' in sys.modules, 'grpc' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "False False"


def test_one_process_serves_rest_and_grpc(model_base: Path, tmp_path: Path) -> None:
    """``python -m serving.server --port P --grpc-port G`` answers both protocols."""
    rest_port, grpc_port = free_port(), free_port()
    while grpc_port == rest_port:
        grpc_port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "serving.server",
        "--model-base",
        str(model_base),
        "--port",
        str(rest_port),
        "--grpc-port",
        str(grpc_port),
        "--log-level",
        "warning",
    ]
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1]
        )
        try:
            with PredictionClient(f"http://127.0.0.1:{rest_port}") as rest:
                assert rest.wait_until_available("hp", timeout_s=90) == 1
                assert rest.predict("hp", [2.0], version=2).predictions == [4.0]
            with GrpcPredictionClient(f"127.0.0.1:{grpc_port}") as client:
                assert client.wait_until_available("hp", timeout_s=30) == 1
                assert client.predict("hp", [2.0], label="canary").predictions == [4.0]
        finally:
            processes.stop(proc, grace_s=30)
    assert proc.returncode is not None, log_path.read_text()


def test_grpc_port_in_use_fails_startup(model_base: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.server import create_app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = create_app(model_base, None, grpc_port=port)
        with pytest.raises(RuntimeError, match="cannot bind"), TestClient(app):
            pass

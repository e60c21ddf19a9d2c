"""Tests for serving/: TF Serving layout, the TF-Serving-compatible REST server, the client."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving import layout  # noqa: E402
from serving.client import PredictionClient, ServingError  # noqa: E402
from tests.saved_models import build_scorer, expected_score  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

W1, W2, W3 = 1.0, 2.0, -1.0
MODEL = "scorer"
MULTI = "multi"


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved_models")
    return {
        "w1": build_scorer(root / "w1", W1),
        "w2": build_scorer(root / "w2", W2),
        "w3": build_scorer(root / "w3", W3),
        "multi": build_scorer(root / "multi", W1, multi=True),
    }


@pytest.fixture
def model_base(tmp_path: Path, saved_models: dict[str, Path]) -> Path:
    """scorer v1 + v2 (stable=1, canary=2) and multi v1."""
    base = tmp_path / "models"
    layout.publish_version(base, MODEL, 1, saved_models["w1"])
    layout.publish_version(base, MODEL, 2, saved_models["w2"])
    layout.publish_version(base, MULTI, 1, saved_models["multi"])
    layout.write_models_config(base, {MODEL: {"stable": 1, "canary": 2}})
    return base


def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _fake_saved_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"not really a graph")
    (path / "variables").mkdir()
    (path / "variables" / "variables.index").write_bytes(b"idx")
    return path


ROWS = [{"x": 1.0, "c": "a"}, {"x": 2.0, "c": "neg"}]


# --------------------------------------------------------------------------- layout


def test_list_versions_ignores_incomplete_and_hidden_dirs(tmp_path: Path) -> None:
    model_dir = tmp_path / MODEL
    for name in ("1", "10", "2"):
        _fake_saved_model(model_dir / name)
    (model_dir / "3").mkdir()  # no saved_model.pb
    _fake_saved_model(model_dir / ".tmp-4-abcd")
    _fake_saved_model(model_dir / "latest")
    assert layout.list_versions(tmp_path, MODEL) == [1, 2, 10]
    assert layout.list_versions(tmp_path, "missing") == []
    assert layout.list_models(tmp_path) == [MODEL]
    assert layout.list_models(tmp_path / "nope") == []


def test_publish_version_is_atomic_and_immutable(tmp_path: Path) -> None:
    src = _fake_saved_model(tmp_path / "export")
    base = tmp_path / "models"
    target = layout.publish_version(base, MODEL, 1, src)
    assert target == base / MODEL / "1"
    assert (target / "variables" / "variables.index").read_bytes() == b"idx"
    layout.publish_version(base, MODEL, 2, src)
    assert layout.list_versions(base, MODEL) == [1, 2]

    with pytest.raises(FileExistsError, match="version 2 already exists"):
        layout.publish_version(base, MODEL, 2, src)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="has no saved_model.pb"):
        layout.publish_version(base, MODEL, 3, empty)
    with pytest.raises(ValueError, match="invalid model name"):
        layout.publish_version(base, "bad/name", 3, src)
    with pytest.raises(ValueError, match="invalid model version"):
        layout.publish_version(base, MODEL, -1, src)
    # No temp dirs left behind; earlier versions untouched.
    assert sorted(p.name for p in (base / MODEL).iterdir()) == ["1", "2"]


def test_models_config_round_trip_and_labels(tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    src = _fake_saved_model(tmp_path / "export")
    base = tmp_path / "models"
    assert layout.read_models_config(base) == {}
    for v in (1, 2, 3):
        layout.publish_version(base, MODEL, v, src)
    layout.publish_version(base, "other", 5, src)
    assert layout.served_version(base, MODEL) == 3  # no labels: highest
    assert layout.served_version(base, "missing") is None

    layout.write_models_config(base, {MODEL: {"stable": 3}})
    text = (base / "models.config").read_text()
    proto = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    scorer = next(c for c in proto.model_config_list.config if c.name == MODEL)
    assert scorer.base_path == str((base / MODEL).resolve())
    assert scorer.model_platform == "tensorflow"
    assert list(scorer.model_version_policy.specific.versions) == [3, 2]  # stable + previous
    assert dict(scorer.version_labels) == {"stable": 3}

    config = layout.read_models_config(base)
    assert config[MODEL]["labels"] == {"stable": 3}
    assert config[MODEL]["versions"] == [3, 2]
    assert config["other"] == {
        "labels": {},
        "versions": [],
        "policy": "latest",
        "base_path": str((base / "other").resolve()),
    }

    layout.set_label(base, MODEL, "stable", 1)
    layout.set_label(base, MODEL, "canary", 3)
    config = layout.read_models_config(base)
    assert config[MODEL]["labels"] == {"canary": 3, "stable": 1}
    assert config[MODEL]["versions"] == [3, 1]
    assert layout.served_version(base, MODEL) == 1
    assert not list(base.glob(".models.config.tmp-*"))

    with pytest.raises(ValueError, match="not published"):
        layout.set_label(base, MODEL, "stable", 9)
    with pytest.raises(ValueError, match="still labelled canary"):
        layout.remove_version(base, MODEL, 3)
    layout.remove_version(base, MODEL, 2)
    assert layout.list_versions(base, MODEL) == [1, 3]
    assert layout.remove_label(base, MODEL, "canary") is True
    assert layout.remove_label(base, MODEL, "canary") is False
    layout.remove_version(base, MODEL, 3)
    assert layout.list_versions(base, MODEL) == [1]
    assert sorted(p.name for p in (base / MODEL).iterdir()) == ["1"]
    with pytest.raises(FileNotFoundError):
        layout.remove_version(base, MODEL, 3)

    (base / "models.config").write_text("model_config_list { bogus: 1 }")
    with pytest.raises(ValueError, match="cannot parse"):
        layout.read_models_config(base)


# --------------------------------------------------------------------------- server (TestClient)


@pytest.fixture
def app_client(model_base: Path, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from serving.server import create_app

    app = create_app(model_base, tmp_path / "logs", poll_seconds=0.1, max_body_bytes=64 * 1024)
    with TestClient(app) as client:
        yield client


def test_status_and_metadata(app_client: Any) -> None:
    resp = app_client.get(f"/v1/models/{MODEL}")
    assert resp.status_code == 200
    statuses = resp.json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["2", "1"]  # stable + labelled canary
    assert statuses[0]["state"] == "AVAILABLE"
    assert statuses[0]["status"] == {"error_code": "OK", "error_message": ""}
    assert app_client.get(f"/v1/models/{MODEL}/labels/stable").json()["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]

    meta = app_client.get(f"/v1/models/{MODEL}/metadata").json()
    assert meta["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["c"]["dtype"] == "DT_STRING"
    assert sig["inputs"]["x"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}],
        "unknown_rank": False,
    }
    assert sig["outputs"]["score"]["dtype"] == "DT_FLOAT"
    assert "name" in sig["inputs"]["x"]
    v2 = app_client.get(f"/v1/models/{MODEL}/versions/2/metadata").json()
    assert v2["model_spec"]["version"] == "2"


def test_predict_row_and_columnar(app_client: Any) -> None:
    resp = app_client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS})
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Model-Version"] == "1"
    preds = resp.json()["predictions"]
    assert preds == pytest.approx(
        [expected_score(1.0, "a", W1), expected_score(2.0, "neg", W1)], rel=1e-6
    )

    resp = app_client.post(
        f"/v1/models/{MODEL}:predict",
        json={"signature_name": "serving_default", "inputs": {"x": [1.0, 3], "c": ["a", "b"]}},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["outputs"] == pytest.approx(
        [expected_score(1, "a", W1), expected_score(3, "b", W1)]
    )

    # b64-encoded string values are accepted ("bmVn" is "neg").
    resp = app_client.post(
        f"/v1/models/{MODEL}:predict", json={"instances": [{"x": 1.0, "c": {"b64": "bmVn"}}]}
    )
    assert resp.json()["predictions"] == pytest.approx([expected_score(1.0, "neg", W1)])


def test_predict_multi_output(app_client: Any) -> None:
    resp = app_client.post(f"/v1/models/{MULTI}:predict", json={"instances": ROWS})
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    assert [p["tag"] for p in preds] == ["a!", "neg!"]
    assert preds[0]["score"] == pytest.approx(expected_score(1.0, "a", W1))
    resp = app_client.post(f"/v1/models/{MULTI}:predict", json={"inputs": {"x": [1.0], "c": ["z"]}})
    outputs = resp.json()["outputs"]
    assert outputs["tag"] == ["z!"]
    assert outputs["score"] == pytest.approx([expected_score(1.0, "z", W1)])


def test_version_and_label_routes(app_client: Any) -> None:
    for path, version, w in (
        (f"/v1/models/{MODEL}/versions/2:predict", "2", W2),
        (f"/v1/models/{MODEL}/versions/1:predict", "1", W1),
        (f"/v1/models/{MODEL}/labels/canary:predict", "2", W2),
        (f"/v1/models/{MODEL}/labels/stable:predict", "1", W1),
    ):
        resp = app_client.post(path, json={"instances": ROWS[:1]})
        assert resp.status_code == 200, (path, resp.text)
        assert resp.headers["X-Model-Version"] == version
        assert resp.json()["predictions"] == pytest.approx([expected_score(1.0, "a", w)])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "JSON Parse error"),
        (b"[" * 60_000, "JSON Parse error"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"instances": [{"x": 1.0}]}).encode(), "missing input(s): c"),
        (json.dumps({"instances": [{"x": 1.0, "c": "a", "z": 1}]}).encode(), "unknown input"),
        (json.dumps({"instances": [{"x": "oops", "c": "a"}]}).encode(), "'x'"),
        (json.dumps({"instances": [{"x": 1.0, "c": 3}]}).encode(), "expected a string"),
        (json.dumps({"inputs": {"x": [[1.0]], "c": ["a"]}}).encode(), "incompatible"),
        (json.dumps({"inputs": {"x": [1.0, [2.0]], "c": ["a", "b"]}}).encode(), "'x'"),
        (json.dumps({"instances": ROWS, "inputs": {}}).encode(), "exactly one of"),
        (json.dumps({"signature_name": "serving_default"}).encode(), "exactly one of"),
        (json.dumps({"instances": []}).encode(), "non-empty list"),
        (json.dumps({"instances": ROWS, "signature_name": "nope"}).encode(), "nope"),
        (b"x" * (64 * 1024 + 1), "exceeds the limit"),
        (json.dumps({"instances": [{"x": 1.0, "c": "a"}], "extra": 1}).encode(), "extra"),
    ],
)
def test_predict_bad_requests_are_400(app_client: Any, body: bytes, message: str) -> None:
    resp = app_client.post(
        f"/v1/models/{MODEL}:predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert message in error
    assert "\n" not in error


def test_oversize_chunked_body_is_400(app_client: Any) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    resp = app_client.post(f"/v1/models/{MODEL}:predict", content=chunks())
    assert resp.status_code == 400
    assert "exceeds the limit" in resp.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/models/nope"),
        ("get", "/v1/models/nope/metadata"),
        ("get", f"/v1/models/{MODEL}/versions/9"),
        ("post", "/v1/models/nope:predict"),
        ("post", "/v1/models/nope:classify"),
        ("post", f"/v1/models/{MODEL}/versions/9:predict"),
        ("post", f"/v1/models/{MODEL}/versions/9:regress"),
        ("post", f"/v1/models/{MODEL}/versions/abc:predict"),
        ("post", f"/v1/models/{MODEL}:explain"),
        ("get", "/v2/whatever"),
    ],
)
def test_unknown_things_are_404(app_client: Any, method: str, path: str) -> None:
    kwargs = {"json": {"instances": ROWS}} if method == "post" else {}
    resp = getattr(app_client, method)(path, **kwargs)
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"/v1/models/{MODEL}/labels/nope"),
        ("get", f"/v1/models/{MODEL}/labels/nope/metadata"),
        ("post", f"/v1/models/{MODEL}/labels/nope:predict"),
        ("post", f"/v1/models/{MODEL}/labels/nope:classify"),
    ],
)
def test_unknown_label_is_400_as_in_tf_serving(app_client: Any, method: str, path: str) -> None:
    """TF Serving answers an unknown label with INVALID_ARGUMENT, i.e. HTTP 400."""
    kwargs = {"json": {"instances": ROWS}} if method == "post" else {}
    resp = getattr(app_client, method)(path, **kwargs)
    assert resp.status_code == 400, resp.text
    assert "Unrecognized servable version label: nope" in resp.json()["error"]


def test_hot_reload_of_versions_and_labels(
    app_client: Any, model_base: Path, saved_models: dict[str, Path]
) -> None:
    def served() -> str:
        resp = app_client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS[:1]})
        assert resp.status_code == 200, resp.text
        return resp.headers["X-Model-Version"]

    assert served() == "1"
    layout.publish_version(model_base, MODEL, 3, saved_models["w3"])
    layout.set_label(model_base, MODEL, "stable", 3)
    _wait_for(lambda: served() == "3")
    resp = app_client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS[:1]})
    assert resp.json()["predictions"] == pytest.approx([expected_score(1.0, "a", W3)])
    # The previous stable version stays loaded.
    versions = {
        s["version"] for s in app_client.get(f"/v1/models/{MODEL}").json()["model_version_status"]
    }
    assert {"1", "2", "3"} <= versions

    # Rollback by label, then removing the bad version.
    layout.set_label(model_base, MODEL, "stable", 1)
    _wait_for(lambda: served() == "1")
    layout.remove_version(model_base, MODEL, 3)
    _wait_for(
        lambda: (
            app_client.post(
                f"/v1/models/{MODEL}/versions/3:predict", json={"instances": ROWS[:1]}
            ).status_code
            == 404
        )
    )


def test_request_log(app_client: Any, tmp_path: Path) -> None:
    app_client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS})
    app_client.post(
        f"/v1/models/{MODEL}/versions/2:predict", json={"inputs": {"x": [1.0], "c": ["a"]}}
    )
    app_client.post(f"/v1/models/{MODEL}:predict", content=b"{bad")  # rejected: not logged
    assert app_client.app.state.request_logger.flush()  # the log is written off the request path
    files = list((tmp_path / "logs" / MODEL).glob("*.jsonl"))
    assert len(files) == 1
    assert len(files[0].stem) == 10  # YYYY-MM-DD
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["model"] == MODEL and first["version"] == 1
    assert first["inputs"] == ROWS
    assert first["outputs"] == pytest.approx(
        [expected_score(1.0, "a", W1), expected_score(2.0, "neg", W1)]
    )
    assert first["latency_ms"] >= 0
    assert first["time"].endswith("+00:00") and first["time"][:10] == files[0].stem
    assert second["version"] == 2 and second["format"] == "inputs"
    assert second["inputs"] == {"x": [1.0], "c": ["a"]}
    assert {(r["protocol"], r["method"]) for r in lines} == {("rest", "predict")}


def test_request_log_carries_request_id_and_entities(
    model_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every logged request has a request id (the client's ``X-Request-Id``, else a new one,
    returned in the response header); a raw row may carry its pipeline's entity column, which
    is removed before the model and logged as ``entities``. Without either, nothing changes."""
    from fastapi.testclient import TestClient

    from serving.server import create_app
    from tests.conftest import REPO

    monkeypatch.setenv("MLP_HOME", str(tmp_path / "home"))
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    demo = (REPO / "pipelines" / "demo.yaml").read_text()
    (pipelines / "scorer.yaml").write_text(
        demo.replace("name: demo", "name: scorer").replace("model_name: demo", "model_name: scorer")
    )
    app = create_app(model_base, tmp_path / "logs", poll_seconds=0.1, pipelines_dir=pipelines)
    with TestClient(app) as client:
        plain = client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS})
        sent = client.post(
            f"/v1/models/{MODEL}:predict",
            json={"instances": [{**ROWS[0], "customer_id": 7}, {**ROWS[1], "customer_id": 8}]},
            headers={"X-Request-Id": "req-42"},
        )
        columns = client.post(
            f"/v1/models/{MODEL}:predict",
            json={"inputs": {"x": [1.0], "c": ["a"], "customer_id": ["c-9"]}},
            headers={"X-Request-Id": "not allowed!"},  # not an id: a new one is made
        )
    assert plain.status_code == sent.status_code == columns.status_code == 200, sent.text
    assert sent.json() == plain.json()  # the entity column never reached the model
    assert sent.headers["X-Request-Id"] == "req-42"
    assert len(plain.headers["X-Request-Id"]) == 32
    assert columns.headers["X-Request-Id"] not in ("not allowed!", plain.headers["X-Request-Id"])
    (log_file,) = (tmp_path / "logs" / MODEL).glob("*.jsonl")
    first, second, third = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert first["request_id"] == plain.headers["X-Request-Id"] and "entities" not in first
    assert first["inputs"] == ROWS
    assert second["request_id"] == "req-42" and second["entities"] == [7, 8]
    assert second["inputs"] == ROWS
    assert third["entities"] == ["c-9"] and third["inputs"] == {"x": [1.0], "c": ["a"]}
    assert third["request_id"] == columns.headers["X-Request-Id"]


def test_classify_and_regress_routes(app_client: Any, tmp_path: Path) -> None:
    """A predict signature with output ``score`` classifies as classes "0"/"1"; its single
    float output also regresses; several outputs without ``prediction`` do not regress."""
    body = {"context": {"c": "a"}, "examples": [{"x": 1.0}, {"x": 2, "c": "neg"}]}
    p1, p2 = expected_score(1.0, "a", W2), expected_score(2.0, "neg", W2)
    for path in (
        f"/v1/models/{MODEL}/labels/canary:classify",
        f"/v1/models/{MODEL}/versions/2:classify",
    ):
        resp = app_client.post(path, json=body)
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Model-Version"] == "2"
        ((l0, s0), (l1, s1)), ((m0, t0), (m1, t1)) = resp.json()["results"]
        assert (l0, l1, m0, m1) == ("0", "1", "0", "1")
        assert (s0, s1, t0, t1) == pytest.approx([1 - p1, p1, 1 - p2, p2], rel=1e-5)
    resp = app_client.post(f"/v1/models/{MODEL}:regress", json=body)
    assert resp.json()["results"] == pytest.approx(
        [expected_score(1.0, "a", W1), expected_score(2.0, "neg", W1)]
    )
    resp = app_client.post(f"/v1/models/{MULTI}:classify", json=body)
    assert resp.status_code == 200 and len(resp.json()["results"]) == 2
    resp = app_client.post(f"/v1/models/{MULTI}:regress", json=body)
    assert resp.status_code == 400
    assert "Expected regression signature method_name" in resp.json()["error"]

    assert app_client.app.state.request_logger.flush()
    records = [
        json.loads(line)
        for f in (tmp_path / "logs" / MODEL).glob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    classify = [r for r in records if r["method"] == "classify"]
    assert len(classify) == 2 and classify[0]["format"] == "examples"
    assert classify[0]["inputs"] == [{"c": "a", "x": 1.0}, {"c": "neg", "x": 2}]
    assert classify[0]["outputs"][0][1] == ["1", pytest.approx(p1, rel=1e-5)]


def test_empty_model_base_then_model_appears(tmp_path: Path, saved_models: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from serving.server import create_app

    base = tmp_path / "empty"
    with TestClient(create_app(base, None, poll_seconds=0.1)) as client:
        assert client.get(f"/v1/models/{MODEL}").status_code == 404
        layout.publish_version(base, MODEL, 7, saved_models["w1"])
        _wait_for(lambda: client.get(f"/v1/models/{MODEL}").status_code == 200)
        resp = client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS[:1]})
        assert resp.status_code == 200 and resp.headers["X-Model-Version"] == "7"
    assert not (tmp_path / "logs").exists()


def test_broken_version_keeps_previous_serving(
    tmp_path: Path, saved_models: dict[str, Path]
) -> None:
    from fastapi.testclient import TestClient

    from serving.server import create_app

    base = tmp_path / "models"
    layout.publish_version(base, MODEL, 1, saved_models["w1"])
    layout.publish_version(base, MODEL, 2, _fake_saved_model(tmp_path / "broken"))
    with TestClient(create_app(base, None, poll_seconds=0.1)) as client:
        statuses = {
            s["version"]: s
            for s in client.get(f"/v1/models/{MODEL}").json()["model_version_status"]
        }
        assert statuses["2"]["state"] == "END"
        assert statuses["2"]["status"]["error_code"] != "OK"
        assert statuses["1"]["state"] == "AVAILABLE"
        resp = client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS[:1]})
        assert resp.status_code == 200 and resp.headers["X-Model-Version"] == "1"


# --------------------------------------------------------------------------- real server + client


@pytest.fixture
def live_server(model_base: Path, tmp_path: Path) -> Iterator[str]:
    import uvicorn

    from serving.server import create_app

    app = create_app(model_base, tmp_path / "logs", poll_seconds=0.1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive()


def test_client_against_live_server(
    live_server: str, model_base: Path, saved_models: dict[str, Path]
) -> None:
    with PredictionClient(live_server, timeout=10) as client:
        assert client.wait_until_available(MODEL, timeout_s=10) == 1
        assert {s["version"] for s in client.model_status(MODEL)} == {"1", "2"}

        result = client.predict(MODEL, ROWS)
        assert result.model_version == 1
        assert result.predictions == pytest.approx(
            [expected_score(1.0, "a", W1), expected_score(2.0, "neg", W1)]
        )
        assert client.predict(MODEL, ROWS, version=2).model_version == 2
        assert client.predict(MODEL, ROWS, label="canary").model_version == 2

        with pytest.raises(ServingError, match="HTTP 404") as excinfo:
            client.predict("nope", ROWS)
        assert excinfo.value.status_code == 404
        with pytest.raises(ServingError, match="missing input") as excinfo:
            client.predict(MODEL, [{"x": 1.0}])
        assert excinfo.value.status_code == 400 and "\n" not in str(excinfo.value)
        with pytest.raises(ValueError):
            client.predict(MODEL, ROWS, version=1, label="stable")
        with pytest.raises(TimeoutError):
            client.wait_until_available("nope", timeout_s=0.3)

        # In-flight requests never fail while a new version is swapped in.
        errors: list[BaseException] = []
        seen: set[int | None] = set()
        stop = threading.Event()

        def hammer() -> None:
            with PredictionClient(live_server) as c:
                while not stop.is_set():
                    try:
                        seen.add(c.predict(MODEL, ROWS).model_version)
                    except BaseException as exc:  # noqa: BLE001
                        errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        layout.publish_version(model_base, MODEL, 3, saved_models["w3"])
        layout.set_label(model_base, MODEL, "stable", 3)
        _wait_for(lambda: 3 in seen)
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors
        assert client.wait_until_available(MODEL, timeout_s=5) == 3

    with pytest.raises(ServingError, match="failed"):
        PredictionClient("http://127.0.0.1:9", timeout=1).model_status(MODEL)


def test_server_cli_help() -> None:
    from serving.server import build_arg_parser

    help_text = build_arg_parser().format_help()
    for flag in ("--model-base", "--port", "--grpc-port", "--host", "--log-dir", "--poll-seconds"):
        assert flag in help_text


def test_package_import_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = "import sys, serving, serving.layout, serving.client; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "False"


def test_publish_cleans_up_temp_dir_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _fake_saved_model(tmp_path / "export")
    base = tmp_path / "models"

    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(layout.versions, "_fsync_tree", boom)
    with pytest.raises(OSError, match="disk full"):
        layout.publish_version(base, MODEL, 1, src)
    assert list((base / MODEL).iterdir()) == []

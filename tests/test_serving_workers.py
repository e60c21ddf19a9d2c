"""``python -m serving.server --workers N``: several processes on one port, one model state.

Every worker polls the same ``models.config``: a promotion and a rollback must be served by all
of them, over REST and gRPC, and the request log must hold every request once.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving import layout  # noqa: E402
from tests.saved_models import build_scorer, expected_score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "scorer"
W1, W2 = 1.0, 2.0
ROW = {"x": 1.5, "c": "pos"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, Any]:
    """One request on a fresh connection (the kernel picks the worker by the new address)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _predict(port: int) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"instances": [ROW]})
        conn.request("POST", f"/v1/models/{MODEL}:predict", body)
        response = conn.getresponse()
        payload = json.loads(response.read())
        assert response.status == 200, payload
        return int(response.headers["X-Model-Version"]), float(payload["predictions"][0])
    finally:
        conn.close()


def _served_by_every_worker(port: int, workers: int, version: int, timeout: float) -> set[int]:
    """Poll the status route on fresh connections until every worker index has answered
    ``version`` as its latest answer; returns the pids seen. AssertionError at the deadline."""
    latest: dict[int, int | None] = {}
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = _get(port, "/v1/mlplatform/status")
        if status == 200 and "worker" in body:
            assert body["worker"]["workers"] == workers
            latest[body["worker"]["index"]] = (body["models"].get(MODEL) or {}).get(
                "served_version"
            )
            pids.add(body["worker"]["pid"])
            if len(latest) == workers and set(latest.values()) == {version}:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"workers did not all serve v{version}: latest answers {latest}")


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved_models")
    return {"w1": build_scorer(root / "w1", W1), "w2": build_scorer(root / "w2", W2)}


def test_workers_follow_promotion_and_rollback(
    tmp_path: Path, saved_models: dict[str, Path]
) -> None:
    import psutil

    from mlplatform.reconcile import wait_until_served
    from serving.client import GrpcPredictionClient

    base = tmp_path / "models"
    layout.publish_version(base, MODEL, 1, saved_models["w1"])
    layout.publish_version(base, MODEL, 2, saved_models["w2"])
    layout.write_models_config(base, {MODEL: {"stable": 1}})
    port, grpc_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--model-base", str(base),
         "--port", str(port), "--grpc-port", str(grpc_port), "--workers", "2",
         "--poll-seconds", "0.2", "--log-dir", str(tmp_path / "requests"),
         "--log-level", "warning", "--pipelines", str(tmp_path / "no-pipelines")],
        cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, "the server exited"
            try:
                if _get(port, f"/v1/models/{MODEL}")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        pids = _served_by_every_worker(port, 2, 1, timeout=120)
        children = {p.pid for p in psutil.Process(server.pid).children()}
        assert len(pids) == 2 and pids <= children

        layout.write_models_config(base, {MODEL: {"stable": 2}})  # promotion
        # what `mlplatform rollback` waits with: every worker must answer the version
        view = wait_until_served(f"http://127.0.0.1:{port}", MODEL, 2, 30)
        assert view.served_version == 2 and view.worker is not None and view.worker[1] == 2
        _served_by_every_worker(port, 2, 2, timeout=30)
        answers = [_predict(port) for _ in range(20)]
        assert {version for version, _ in answers} == {2}
        assert [s for _, s in answers] == pytest.approx([expected_score(1.5, "pos", W2)] * 20)
        with GrpcPredictionClient(f"127.0.0.1:{grpc_port}") as client:
            result = client.predict(MODEL, [ROW])
            assert result.model_version == 2
            assert result.predictions[0] == pytest.approx(expected_score(1.5, "pos", W2))

        layout.write_models_config(base, {MODEL: {"stable": 1}})  # rollback
        assert wait_until_served(f"http://127.0.0.1:{port}", MODEL, 1, 30).served_version == 1
        _served_by_every_worker(port, 2, 1, timeout=30)
        answers = [_predict(port) for _ in range(20)]
        assert {version for version, _ in answers} == {1}
        assert [s for _, s in answers] == pytest.approx([expected_score(1.5, "pos", W1)] * 20)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0
    assert not any(psutil.pid_exists(pid) for pid in pids)
    lines = [
        json.loads(line)
        for path in (tmp_path / "requests" / MODEL).glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    # every predict once (REST on both workers, gRPC), all in one day file, as whole lines
    assert sorted(line["protocol"] for line in lines).count("rest") == 40
    assert len(lines) == 41
    assert sorted({line["version"] for line in lines}) == [1, 2]


def exit_at_start(_index: int) -> None:
    """A worker that fails before it serves."""
    sys.exit(3)


def test_supervisor_stops_when_a_worker_cannot_start() -> None:
    from serving.workers import supervise

    started = time.monotonic()
    assert supervise(exit_at_start, 2, grace_s=5) == 1
    assert time.monotonic() - started < 30


def test_workers_need_a_fixed_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.server import main

    with pytest.raises(SystemExit) as exc:
        main(["--model-base", str(tmp_path), "--port", "0", "--workers", "2"])
    assert exc.value.code == 2
    assert "--workers above 1 needs a fixed --port" in capsys.readouterr().err

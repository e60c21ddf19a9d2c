"""Fault injection: the served model stays what the records say (issue 9, items 2 and 3).

Real pieces throughout: tiny real SavedModels (with TF Serving warm-up records), MLflow on the
per-test SQLite home (``mlp_home``), the real server (FastAPI TestClient, or uvicorn threads when
the CLI must reach it over HTTP), and the ``mlplatform`` CLI entry point in-process.

Faults: the MLflow database lost (a different model must not be promoted over the served one;
``doctor --repair`` restores the numbering); ``models.config`` emptied, pointing at a removed
version, labelling a corrupt version, unparsable, or lost before a fresh start (the server keeps
its last good version, or serves nothing, and says why); rollback onto a corrupt or unloadable
version (refused, nothing changes); rollback waiting for the server to follow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlplatform.cli import main as cli_main  # noqa: E402
from mlplatform.config import load_pipeline  # noqa: E402
from mlplatform.settings import Settings, get_settings  # noqa: E402
from mlplatform.stages import StageError  # noqa: E402
from serving import layout  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.saved_models import build_scorer  # noqa: E402
from tests.services import free_port  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

MODEL = "demo"  # the demo pipeline's serving.model_name
ROWS = [{"x": 1.0, "c": "a"}]


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three different tiny SavedModels (different weights, so different digests)."""
    root = tmp_path_factory.mktemp("saved_models")
    return {
        name: build_scorer(root / name, w, warmup_model=MODEL)
        for name, w in (("a", 1.0), ("b", 2.0), ("c", -1.0))
    }


def _unloadable(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / layout.SAVED_MODEL_PB).write_bytes(b"not a graph")
    return path


def _corrupt(version_dir: Path) -> None:
    (version_dir / layout.SAVED_MODEL_PB).write_bytes(b"bit rot")


def _write_atomically(path: Path, text: str) -> None:
    """Replace a file the way an editor or a config tool does (never seen half-written)."""
    tmp = path.with_name(f".{path.name}.test-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _config_text(labels: dict[str, int], name: str = MODEL) -> str:
    """A models.config labelling versions that need not exist (layout.write refuses that)."""
    lines = "".join(f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in labels.items())
    return f'model_config_list {{\n  config {{\n    name: "{name}"\n{lines}  }}\n}}\n'


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


# --------------------------------------------------------------------------- server only


@pytest.fixture
def base(tmp_path: Path, models: dict[str, Path]) -> Path:
    """demo v1, v2, v3 published; models.config: stable = 2 (so the newest, 3, is not served)."""
    model_base = tmp_path / "models"
    for version, name in ((1, "a"), (2, "b"), (3, "c")):
        layout.publish_version(model_base, MODEL, version, models[name])
    layout.write_models_config(model_base, {MODEL: {"stable": 2}})
    return model_base


@contextlib.contextmanager
def _test_client(model_base: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from serving.server import create_app

    app = create_app(model_base, None, poll_seconds=0.05, retry_seconds=0.2)
    with TestClient(app) as client:
        yield client


def _status(client: Any) -> dict[str, Any]:
    resp = client.get("/v1/mlplatform/status")
    assert resp.status_code == 200, resp.text
    return resp.json()


def _served(client: Any) -> str | None:
    resp = client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS})
    return resp.headers.get("X-Model-Version") if resp.status_code == 200 else None


def _degraded_reason(client: Any) -> str | None:
    return _status(client)["models"].get(MODEL, {}).get("degraded")


def test_publish_records_the_content_hash(base: Path, models: dict[str, Path]) -> None:
    metadata = layout.read_version_metadata(base, MODEL, 2)
    assert metadata is not None and metadata["version"] == 2 and metadata["published_at"]
    assert metadata["sha256"] == layout.saved_model_digest(models["b"])
    assert layout.read_version_digest(base, MODEL, 2) == layout.saved_model_digest(
        base / MODEL / "2"
    )
    assert layout.read_version_digest(base, MODEL, 1) != layout.read_version_digest(base, MODEL, 2)
    (base / MODEL / "2" / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"x")
    with pytest.raises(layout.DigestMismatch, match="does not match its recorded content hash"):
        layout.verify_version_digest(base, MODEL, 2)


def test_config_faults_keep_the_last_good_version_and_report_degraded(
    base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = base / layout.MODELS_CONFIG
    with _test_client(base) as client:
        assert _served(client) == "2"
        assert _status(client) == {
            "status": "ok",
            "reason": None,
            "mode": "models.config",
            "models": {MODEL: {"served_version": 2, "labels": {"stable": 2}, "degraded": None}},
        }

        _write_atomically(config, "")  # emptied
        _wait_for(lambda: _degraded_reason(client) is not None)
        assert _degraded_reason(client) == "models.config has no entry for model demo"
        assert _status(client)["status"] == "degraded"
        assert _served(client) == "2"  # the last good version, not the newest (3)
        assert layout.served_version(base, MODEL) is None

        _write_atomically(config, _config_text({"stable": 9}))  # a removed version
        _wait_for(lambda: "9" in (_degraded_reason(client) or ""))
        assert _degraded_reason(client) == (
            "models.config labels version 9 stable, which is not published"
        )
        assert _served(client) == "2"
        assert layout.served_version(base, MODEL) is None

        _corrupt(base / MODEL / "3")
        layout.set_label(base, MODEL, "stable", 3)  # stable on a corrupt version
        _wait_for(lambda: "version 3 failed to load" in (_degraded_reason(client) or ""))
        assert "does not match its recorded content hash" in _degraded_reason(client)
        assert _served(client) == "2"
        statuses = client.get(f"/v1/models/{MODEL}/versions/3").json()["model_version_status"]
        assert statuses[0]["state"] == "END"

        _write_atomically(config, "model_config_list { bogus")  # unparsable
        _wait_for(lambda: _status(client)["reason"] is not None)
        assert _status(client)["reason"].startswith(f"cannot parse {config}")
        assert _served(client) == "2"
        with pytest.raises(ValueError, match="cannot parse"):
            layout.served_version(base, MODEL)

        layout.write_models_config(base, {MODEL: {"stable": 1}})  # a good config again
        _wait_for(lambda: _served(client) == "1")
        assert _status(client)["status"] == "ok"
        assert _status(client)["models"][MODEL]["degraded"] is None

    degraded_logs = [
        r for r in caplog.records if r.levelno == logging.ERROR and "degraded" in r.getMessage()
    ]
    assert len(degraded_logs) == 4, [r.getMessage() for r in degraded_logs]  # once per change


def test_a_fresh_server_serves_nothing_the_config_does_not_name(base: Path) -> None:
    _write_atomically(base / layout.MODELS_CONFIG, _config_text({"stable": 9}))
    with _test_client(base) as client:
        resp = client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS})
        assert resp.status_code == 404
        assert "labels version 9 stable, which is not published" in resp.json()["error"]
        status = _status(client)
        assert status["status"] == "degraded"
        assert status["models"][MODEL]["served_version"] is None

    (base / layout.MODELS_CONFIG).unlink()  # lost: a config governed this base before
    with _test_client(base) as client:
        assert _served(client) is None
        assert "models.config is missing" in _status(client)["reason"]
    with pytest.raises(ValueError, match="is missing"):
        layout.served_version(base, MODEL)


def test_without_any_config_the_newest_version_serves(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    model_base = tmp_path / "plain"
    layout.publish_version(model_base, MODEL, 1, models["a"])
    layout.publish_version(model_base, MODEL, 2, models["b"])
    with _test_client(model_base) as client:  # TF Serving's --model_base_path mode
        assert _served(client) == "2"
        assert _status(client)["mode"] == "model_base_path"
    assert layout.served_version(model_base, MODEL) == 2


# --------------------------------------------------------------------------- with MLflow


@pytest.fixture
def platform(mlp_home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Settings]:
    """The demo pipeline config and settings on a fresh home; no server on the serving port."""
    monkeypatch.setenv("MLP_SERVING_PORT", str(free_port()))
    return load_pipeline(REPO / "pipelines" / "demo.yaml"), get_settings()


def _register(cfg: Any, settings: Settings, saved_model: Path) -> int:
    import mlflow

    from mlplatform.stages.registry import register
    from mlplatform.stages.train import ensure_experiment

    experiment = ensure_experiment(settings, cfg.name)
    with mlflow.start_run(experiment_id=experiment) as run:
        result = register(cfg, saved_model.as_uri(), run.info.run_id, {}, settings)
    return int(result["model_version"])


def _ship(cfg: Any, settings: Settings, saved_model: Path) -> int:
    from mlplatform.stages.registry import promote

    version = _register(cfg, settings, saved_model)
    promote(cfg, version, settings, candidate_dir=str(saved_model))
    return version


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _mlflow(settings: Settings) -> Any:
    from mlplatform.stages.registry import client

    return client(settings)


def _records(settings: Settings) -> dict[str, Any]:
    """Everything a refused promote or rollback must leave alone."""
    c = _mlflow(settings)
    base = settings.models_dir
    versions = {v.version: dict(v.tags) for v in c.search_model_versions(f"name='{MODEL}'")}
    return {
        "config": (base / layout.MODELS_CONFIG).read_text(),
        "dirs": sorted(p.name for p in (base / MODEL).iterdir()),
        "digests": {v: layout.saved_model_digest(base / MODEL / str(v)) for v in (1, 2)},
        "aliases": dict(c.get_registered_model(MODEL).aliases),
        "tags": versions,
    }


def test_lost_registry_cannot_overwrite_the_served_model_and_doctor_restores_numbering(
    platform: tuple[Any, Settings],
    models: dict[str, Path],
    mlp_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.stages.registry import promote

    cfg, settings = platform
    assert (_ship(cfg, settings, models["a"]), _ship(cfg, settings, models["b"])) == (1, 2)
    digest_b = layout.saved_model_digest(models["b"])
    assert _mlflow(settings).get_model_version(MODEL, "2").tags["content_sha256"] == digest_b

    # The MLflow database is lost. (In this process MLflow caches its store per URI, so the
    # platform is pointed at the empty database that replaces it, as a restarted service is.)
    (mlp_home / "mlflow.db").unlink()
    monkeypatch.setenv("MLP_MLFLOW_TRACKING_URI", f"sqlite:///{mlp_home / 'mlflow-new.db'}")
    settings = get_settings()
    code, out, _ = _cli(capsys, "status")
    assert code == 0
    assert "! demo: MLflow has no versions of demo, but the model base holds v1, v2" in out

    new = _register(cfg, settings, models["c"])
    assert new == 1
    before = {k: v for k, v in _records(settings).items()}
    message = (
        rf"^promote: demo v1 on disk holds a different model \(sha256 [0-9a-f]{{12}}… != "
        rf"{layout.saved_model_digest(models['c'])[:12]}…\): the registry and the model base "
        r"disagree; run `mlplatform doctor demo`$"
    )
    with pytest.raises(StageError, match=message):
        promote(cfg, new, settings, candidate_dir=str(models["c"]))
    assert _records(settings) == before  # label, alias, tags and directories untouched
    assert layout.served_version(settings.models_dir, MODEL) == 2

    code, out, _ = _cli(capsys, "doctor", MODEL)
    assert code == 1
    assert "the registry was reset" in out and "nothing deleted" in out

    code, out, _ = _cli(capsys, "doctor", MODEL, "--repair")
    assert code == 0, out
    assert "repaired demo: registered v1, v2 of demo from the model base" in out
    c = _mlflow(settings)
    recovered = {int(v.version): v.tags for v in c.search_model_versions(f"name='{MODEL}'")}
    assert sorted(recovered) == [1, 2]
    for version in (1, 2):
        assert recovered[version]["recovered_from"] == "model_base"
        assert recovered[version]["content_sha256"] == layout.read_version_digest(
            settings.models_dir, MODEL, version
        )
    assert int(c.get_model_version_by_alias(MODEL, "champion").version) == 2
    aside = [m.name for m in c.search_registered_models() if m.name.startswith("demo.orphaned-")]
    assert len(aside) == 1  # the lost run's registration is kept, renamed aside

    # numbering lines up again: the next model is v3 in MLflow and on disk
    assert _ship(cfg, settings, models["c"]) == 3
    assert layout.served_version(settings.models_dir, MODEL) == 3
    assert _cli(capsys, "doctor", MODEL)[0] == 0


def test_rollback_onto_a_corrupt_or_unloadable_version_changes_nothing(
    platform: tuple[Any, Settings],
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlplatform.stages.registry import rollback

    cfg, settings = platform
    for name in ("a", "b", "c"):
        _ship(cfg, settings, models[name])
    _corrupt(settings.models_dir / MODEL / "2")
    before = {**_records(settings), "digests": None}

    code, out, err = _cli(capsys, "rollback", MODEL)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "mlplatform: rollback refused, nothing changed: cannot serve demo: model demo version 2 "
        "does not match its recorded content hash"
    )
    assert {**_records(settings), "digests": None} == before

    layout.publish_version(settings.models_dir, MODEL, 4, _unloadable(tmp_path / "junk"))
    with pytest.raises(StageError, match=r"cannot serve demo: demo v4 does not load in the server"):
        rollback(MODEL, settings, to_version=4)
    assert _records(settings)["aliases"] == before["aliases"]
    assert layout.read_models_config(settings.models_dir)[MODEL]["labels"] == {"stable": 3}

    code, out, _ = _cli(capsys, "doctor", MODEL)
    assert code == 1
    assert (
        "does not match its recorded sha256" in out
        and "not repaired: roll back to another version or re-promote v2" in out
    )


@contextlib.contextmanager
def _live_server(model_base: Path) -> Iterator[str]:
    import uvicorn

    from serving.server import create_app

    app = create_app(model_base, None, poll_seconds=0.05)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # log_config=None: uvicorn must not reconfigure logging under pytest's capture (capsys)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_rollback_waits_until_the_server_serves_the_target(
    platform: tuple[Any, Settings],
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, settings = platform
    _ship(cfg, settings, models["a"])
    _ship(cfg, settings, models["b"])
    with _live_server(settings.models_dir) as url:
        code, out, err = _cli(capsys, "rollback", MODEL, "--url", url)
        assert code == 0, err
        assert out.splitlines() == [
            "demo: rolled back to v1 (was v2): stable label and alias champion -> v1; "
            "v1 answered 2 warm-up request(s)",
            f"the server at {url} serves v1",
        ]
        code, out, _ = _cli(capsys, "status", MODEL, "--url", url)
        assert f"  server {url}: serves v1" in out and "! " not in out

        stale = tmp_path / "stale-copy"  # a server on another copy never follows this base
        shutil.copytree(settings.models_dir, stale)
        with _live_server(stale) as stale_url:
            code, out, err = _cli(
                capsys, "rollback", MODEL, "--to", "2", "--url", stale_url, "--wait-s", "1"
            )
            assert code == 1
            assert err.strip() == (
                f"mlplatform: the server at {stale_url} still serves v1, not v2, after 1s"
            )
            code, out, _ = _cli(capsys, "status", MODEL, "--url", stale_url)
            assert f"! demo: the server at {stale_url} serves v1, models.config says v2" in out

    nobody = f"http://127.0.0.1:{free_port()}"
    code, out, _ = _cli(capsys, "rollback", MODEL, "--url", nobody)
    assert code == 0
    assert out.splitlines()[-1] == f"no server answering at {nobody}; the next start serves v1"


def test_status_and_doctor_repair_alias_and_config(
    platform: tuple[Any, Settings],
    models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, settings = platform
    _ship(cfg, settings, models["a"])
    _ship(cfg, settings, models["b"])
    _mlflow(settings).set_registered_model_alias(MODEL, "champion", "1")  # by hand

    code, out, _ = _cli(capsys, "status", MODEL)
    assert code == 0
    assert out.startswith("demo: served version 2 (stable label), aliases {")
    assert "! demo: alias champion -> v1 but models.config serves stable v2" in out
    assert f"  server not reachable at {settings.serving_url}" in out
    code, out, _ = _cli(capsys, "doctor")
    assert code == 1
    assert "-> move alias champion to v2" in out

    code, out, _ = _cli(capsys, "doctor", "--repair")
    assert code == 0, out
    assert "repaired demo: alias champion of demo -> v2" in out
    assert int(_mlflow(settings).get_model_version_by_alias(MODEL, "champion").version) == 2

    (settings.models_dir / layout.MODELS_CONFIG).unlink()
    code, out, _ = _cli(capsys, "status")
    assert "demo: served version unknown (models.config unusable)" in out
    assert "is missing" in out and "-> rewrite models.config with stable = champion v2" in out
    code, out, _ = _cli(capsys, "doctor", MODEL, "--repair")
    assert code == 0, out
    assert layout.read_models_config(settings.models_dir)[MODEL]["labels"] == {"stable": 2}
    assert _cli(capsys, "status", "nope")[0] == 2

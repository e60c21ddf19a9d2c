"""The server takes entity keys for models whose pipeline says ``serving.features_from:
online_store`` and fetches their features from the Feast online store (SQLite, and Redis).

End to end with the real app (``serving.server.create_app`` in a TestClient), a tiny real
SavedModel over the demo's feature names that echoes what it was given, and a real Feast online
store materialized from a small batch by the features stage.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import ConfigError, load_pipeline, parse_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages.features import materialize_features
from mlplatform.storage import stage_dir
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC")
NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "usage_minutes"]
CATEGORICAL = ["contract_type", "region"]

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def build_feature_echo(path: Path) -> Path:
    """A SavedModel over the demo's raw features: ``total`` = the sum of the numeric inputs
    (a NaN counts as -1000, so that a null shows), ``text`` = ``contract_type|region``."""
    import tensorflow as tf

    specs = {n: tf.TensorSpec([None], tf.float32, name=n) for n in NUMERIC}
    specs |= {c: tf.TensorSpec([None], tf.string, name=c) for c in CATEGORICAL}

    class Echo(tf.Module):
        @tf.function(input_signature=[specs])
        def serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            values = [tf.where(tf.math.is_nan(inputs[n]), -1000.0, inputs[n]) for n in NUMERIC]
            text = tf.strings.join([inputs["contract_type"], inputs["region"]], separator="|")
            return {"total": tf.add_n(values), "text": text}

    module = Echo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def expected(row: pd.Series) -> dict:
    total = sum(-1000.0 if pd.isna(row[n]) else float(row[n]) for n in NUMERIC)
    return {"total": total, "text": f"{row['contract_type']}|{row['region']}"}


def _batch(seed: int = 1) -> pd.DataFrame:
    df = datagen.generate(300, seed=seed, end=END.to_pydatetime())
    df["customer_id"] = df["customer_id"].astype("int64")
    return df


def _land(cfg, tmp_path, df: pd.DataFrame, version: str) -> None:
    settings = get_settings()
    path = tmp_path / f"{version}.parquet"
    df.to_parquet(path, index=False)
    out = stage_dir(settings.storage, cfg.name, version, "features")
    materialize_features(cfg, path.as_uri(), version, out, settings)


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("event_time").groupby("customer_id").tail(1).set_index("customer_id")


def _set_features_from(pipelines_dir: Path, value: str) -> None:
    path = pipelines_dir / "demo.yaml"
    text = path.read_text().replace(
        "  model_name: demo\n", f"  model_name: demo\n  features_from: {value}\n"
    )
    path.write_text(text)


def _assert_echoes(predictions: list[dict], rows: list[pd.Series]) -> None:
    assert len(predictions) == len(rows)
    for got, row in zip(predictions, rows, strict=True):
        want = expected(row)
        assert got["text"] == want["text"]
        assert math.isclose(got["total"], want["total"], rel_tol=1e-5), (got, want)


@pytest.fixture(scope="module")
def echo_model(tmp_path_factory) -> Path:
    return build_feature_echo(tmp_path_factory.mktemp("echo") / "saved_model")


@pytest.fixture
def model_base(tmp_path, echo_model) -> Path:
    """``demo`` (the pipeline's model) and ``other`` (in no pipeline), both the echo model."""
    import shutil

    base = tmp_path / "models"
    for name in ("demo", "other"):
        shutil.copytree(echo_model, base / name / "1")
    return base


def test_entity_keys_are_served_from_the_sqlite_online_store(
    mlp_home, pipelines_dir, model_base, tmp_path
):
    from fastapi.testclient import TestClient

    from serving.server import create_app

    cfg = load_pipeline(pipelines_dir / "demo.yaml")
    batch = _batch()
    batch["tenure_months"] = batch["tenure_months"].astype(float)
    latest = _latest(batch)
    nulled = int(latest.index[7])
    batch.loc[batch["customer_id"] == nulled, "tenure_months"] = float("nan")
    latest = _latest(batch)
    ids = [int(i) for i in latest.index[:5]] + [nulled]
    keys = {"instances": [{"customer_id": i} for i in ids]}
    log_dir = tmp_path / "requests"

    app = create_app(model_base, log_dir, poll_seconds=0.05, pipelines_dir=pipelines_dir)
    with TestClient(app) as client:
        # features_from: request (the default): an entity key is no input of the model
        refused = client.post("/v1/models/demo:predict", json=keys)
        assert refused.status_code == 400 and "missing input(s)" in refused.json()["error"]

        _set_features_from(pipelines_dir, "online_store")
        time.sleep(0.1)  # the server re-reads the configs, no restart
        early = client.post("/v1/models/demo:predict", json=keys)
        assert early.status_code == 503, early.text
        assert "no online features for pipeline 'demo' yet" in early.json()["error"]

        _land(cfg, tmp_path, batch, "v1")
        served = client.post("/v1/models/demo:predict", json=keys)
        assert served.status_code == 200, served.text
        _assert_echoes(served.json()["predictions"], [latest.loc[i] for i in ids])
        assert pd.isna(latest.loc[nulled, "tenure_months"])  # echoed as -1000: null went in

        columnar = client.post("/v1/models/demo:predict", json={"inputs": {"customer_id": ids[:2]}})
        assert columnar.status_code == 200, columnar.text
        outputs = columnar.json()["outputs"]
        assert outputs["text"] == [expected(latest.loc[i])["text"] for i in ids[:2]]

        raw = {n: latest.loc[ids[0], n] for n in NUMERIC + CATEGORICAL}
        raw = {k: v.item() if hasattr(v, "item") else v for k, v in raw.items()}
        as_sent = client.post("/v1/models/demo:predict", json={"instances": [raw]})
        assert as_sent.status_code == 200, "raw feature rows stopped working"
        _assert_echoes(as_sent.json()["predictions"], [latest.loc[ids[0]]])

        unknown = client.post(
            "/v1/models/demo:predict",
            json={
                "instances": [
                    {"customer_id": ids[0]},
                    {"customer_id": 999999},
                    {"customer_id": 424242},
                ]
            },
        )
        assert unknown.status_code == 400
        assert unknown.json()["error"] == (
            "entity customer_id 999999, 424242 not in the online store of pipeline 'demo' "
            "(feature view customer_activity)"
        )
        typed = client.post("/v1/models/demo:predict", json={"instances": [{"customer_id": "x1"}]})
        assert typed.status_code == 400
        assert (
            "entity customer_id of instance 0 must be an integer, got 'x1'" in typed.json()["error"]
        )

        other = client.post("/v1/models/other:predict", json=keys)
        assert other.status_code == 400 and "missing input(s)" in other.json()["error"]

        # a newer batch reaches the next request
        newer = batch.assign(event_time=batch["event_time"] + pd.Timedelta(days=1), region="south")
        _land(cfg, tmp_path, newer, "v2")
        fresh = client.post("/v1/models/demo:predict", json=keys)
        assert all(p["text"].endswith("|south") for p in fresh.json()["predictions"])

    lines = [json.loads(x) for f in log_dir.rglob("*.jsonl") for x in f.read_text().splitlines()]
    entity_lines = [x for x in lines if "entities" in x]
    assert entity_lines[0]["entities"] == ids
    assert set(entity_lines[0]["inputs"][0]) == set(NUMERIC + CATEGORICAL)


def test_grpc_predict_takes_entity_keys_through_the_same_pre_step(
    mlp_home, pipelines_dir, model_base, tmp_path
):
    """gRPC Predict with only the entity column gets the same features, errors and request
    log as REST (one runtime pre-step); a raw-feature request's entity column is stripped."""
    from fastapi.testclient import TestClient

    from serving.client import GrpcPredictionClient, ServingError
    from serving.server import create_app

    _set_features_from(pipelines_dir, "online_store")
    cfg = load_pipeline(pipelines_dir / "demo.yaml")
    batch = _batch(seed=5)
    batch["tenure_months"] = batch["tenure_months"].astype(float)
    nulled = int(_latest(batch).index[3])
    batch.loc[batch["customer_id"] == nulled, "tenure_months"] = float("nan")
    _land(cfg, tmp_path, batch, "v1")
    latest = _latest(batch)
    ids = [int(i) for i in latest.index[:4]]
    assert nulled in ids
    log_dir = tmp_path / "requests"

    app = create_app(
        model_base, log_dir, poll_seconds=0.05, pipelines_dir=pipelines_dir, grpc_port=0
    )
    with (
        TestClient(app) as client,
        GrpcPredictionClient(f"127.0.0.1:{app.state.grpc_port}", timeout=20) as grpc_client,
    ):
        by_grpc = grpc_client.predict("demo", {"customer_id": ids})
        _assert_echoes(by_grpc.predictions, [latest.loc[i] for i in ids])
        by_rest = client.post("/v1/models/demo:predict", json={"inputs": {"customer_id": ids}})
        assert by_rest.status_code == 200, by_rest.text
        assert by_rest.json()["outputs"]["text"] == [p["text"] for p in by_grpc.predictions]

        with pytest.raises(ServingError) as unknown:
            grpc_client.predict("demo", {"customer_id": [ids[0], 999999]})
        assert unknown.value.code == "INVALID_ARGUMENT"
        assert (
            "entity customer_id 999999 not in the online store of pipeline 'demo' "
            "(feature view customer_activity)"
        ) in str(unknown.value)

        raw = {n: [latest.loc[ids[0], n].item()] for n in NUMERIC}
        raw |= {c: [str(latest.loc[ids[0], c])] for c in CATEGORICAL}
        stripped = grpc_client.predict("demo", {**raw, "customer_id": [ids[0]]})
        _assert_echoes(stripped.predictions, [latest.loc[ids[0]]])

        with pytest.raises(ServingError) as other:
            grpc_client.predict("other", {"customer_id": ids})  # in no pipeline: no pre-step
        assert other.value.code == "INVALID_ARGUMENT"

    lines = [json.loads(x) for f in log_dir.rglob("*.jsonl") for x in f.read_text().splitlines()]
    grpc_lines = [x for x in lines if x["protocol"] == "grpc" and "entities" in x]
    assert [x["entities"] for x in grpc_lines] == [ids, [ids[0]]]
    assert set(grpc_lines[0]["inputs"]) == set(NUMERIC + CATEGORICAL)


def test_entity_keys_on_the_redis_online_store(
    mlp_home, pipelines_dir, model_base, tmp_path, monkeypatch, redis_connection
):
    from fastapi.testclient import TestClient

    from serving.server import create_app

    monkeypatch.setenv("MLP_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("MLP_FEAST_REDIS_CONNECTION", redis_connection)
    _set_features_from(pipelines_dir, "online_store")
    cfg = load_pipeline(pipelines_dir / "demo.yaml")
    batch = _batch(seed=3)
    _land(cfg, tmp_path, batch, "v1")
    latest = _latest(batch)
    ids = [int(i) for i in latest.index[:20]]

    app = create_app(model_base, None, poll_seconds=0.05, pipelines_dir=pipelines_dir)
    with TestClient(app) as client:
        served = client.post(
            "/v1/models/demo:predict", json={"instances": [{"customer_id": i} for i in ids]}
        )
        assert served.status_code == 200, served.text
        _assert_echoes(served.json()["predictions"], [latest.loc[i] for i in ids])
        unknown = client.post("/v1/models/demo:predict", json={"instances": [{"customer_id": 7}]})
        assert (
            unknown.status_code == 400 and "customer_id 7 not in the online store" in unknown.text
        )


def test_features_from_is_checked_and_two_pipelines_cannot_share_an_entity_model(pipelines_dir):
    from serving.api import ApiError
    from serving.runtime.online_features import OnlineFeatureSources

    text = (REPO / "pipelines" / "demo.yaml").read_text()
    assert parse_pipeline(text).serving.features_from == "request"
    with pytest.raises(ConfigError, match=r"serving.features_from: Input should be 'request' or"):
        parse_pipeline(
            text.replace("  model_name: demo\n", "  model_name: demo\n  features_from: feast\n")
        )

    _set_features_from(pipelines_dir, "online_store")
    twin = (pipelines_dir / "demo.yaml").read_text().replace("name: demo\n", "name: twin\n", 1)
    (pipelines_dir / "twin.yaml").write_text(twin)
    with pytest.raises(ApiError) as err:
        OnlineFeatureSources(pipelines_dir).for_model("demo")
    assert "model 'demo' is the serving.model_name of pipelines demo, twin" in str(err.value)
    assert OnlineFeatureSources(pipelines_dir).for_model("other") is None

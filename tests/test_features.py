"""Features, training set and missing values from the batch to the served model; ``reset``.

* a training set with missing values trains a real model (the trainer, called in-process at world
  size 1) whose SavedModel answers rows with ``null`` for any feature through the real server:
  a numeric null is the training mean (plus a was-missing input where training had missing
  values), a categorical null is the OOV bucket, like an unseen category;
* ``mlplatform reset NAME [--features]`` removes exactly what it says, and nothing while a run is
  alive;
* the new config fields (``retrain.window_days``, ``features.min_rows``) are checked by field.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.cli import main as cli
from mlplatform.config import ConfigError, load_pipeline, parse_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages.features import build_training_set, materialize_features
from mlplatform.storage import stage_dir, to_path
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def _batch_with_nulls(n: int = 400) -> pd.DataFrame:
    df = datagen.generate(n, seed=11, end=END)
    rng = np.random.default_rng(0)
    df["tenure_months"] = df["tenure_months"].astype(float)
    df.loc[rng.choice(n, n // 10, replace=False), "tenure_months"] = np.nan
    df["contract_type"] = df["contract_type"].astype(object)
    df.loc[rng.choice(n, n // 20, replace=False), "contract_type"] = None
    return df


def _training_set(cfg, settings, tmp_path, df: pd.DataFrame) -> dict:
    path = tmp_path / "batch.parquet"
    df.to_parquet(path, index=False)
    out = stage_dir(settings.storage, cfg.name, "r1", "features")
    materialize_features(cfg, path.as_uri(), "v1", out, settings)
    out = stage_dir(settings.storage, cfg.name, "r1", "training_set")
    return build_training_set(cfg, path.as_uri(), out, settings)


def _train(cfg, training_set: dict, out_dir) -> str:
    """The trainer in-process (world size 1, no MLflow); returns the SavedModel directory."""
    from training.train import main as train

    spec = {
        "pipeline": cfg.name,
        "label": cfg.features.label,
        "numeric_features": cfg.features.numeric,
        "categorical_features": cfg.features.categorical,
        "model": {**cfg.model.model_dump(), "epochs": 3, "batch_size": 64, "hidden_units": [16]},
        "train_uri": training_set["train_uri"],
        "holdout_uri": training_set["holdout_uri"],
        "output_dir": str(out_dir),
    }
    assert train(["--spec-json", json.dumps(spec)]) == 0
    return str(out_dir / "saved_model")


def test_a_model_trained_with_missing_values_answers_null_through_the_server(mlp_home, tmp_path):
    from fastapi.testclient import TestClient

    from serving.server import create_app

    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    settings = get_settings()
    training_set = _training_set(cfg, settings, tmp_path, _batch_with_nulls())
    assert training_set["train_rows"] + training_set["holdout_rows"] == 400, "rows were dropped"
    assert training_set["imputed"]["tenure_months"] == 40
    assert training_set["imputed"]["contract_type"] == 20

    saved_model = _train(cfg, training_set, tmp_path / "train")
    base = tmp_path / "models"
    shutil.copytree(saved_model, base / "demo" / "1")
    train = pd.read_parquet(to_path(training_set["train_uri"]))
    full = {
        "tenure_months": 12.0,
        "monthly_charges": 70.0,
        "support_calls": 2.0,
        "usage_minutes": 300.0,
        "contract_type": "one-year",
        "region": "north",
    }
    rows = [
        full,
        dict.fromkeys(full),  # every feature missing
        {**full, "monthly_charges": None},  # never missing in training: the mean, no flag
        {**full, "monthly_charges": float(train["monthly_charges"].astype("float32").mean())},
        {**full, "contract_type": None},  # missing category: OOV ...
        {**full, "contract_type": "a category never seen"},  # ... like an unseen one
        {**full, "tenure_months": None},  # missing in training: the mean plus a flag
    ]
    with TestClient(create_app(base, None, poll_seconds=0.1)) as client:
        response = client.post("/v1/models/demo:predict", json={"instances": rows})
        assert response.status_code == 200, response.text
        scores = response.json()["predictions"]
        columnar = client.post(
            "/v1/models/demo:predict",
            json={"inputs": {k: [None, v] for k, v in full.items()}},
        )
        assert columnar.status_code == 200, columnar.text
    assert len(scores) == len(rows) and all(math.isfinite(s) and 0 <= s <= 1 for s in scores)
    assert scores[2] == pytest.approx(scores[3], abs=1e-4)
    assert scores[4] == pytest.approx(scores[5], abs=1e-6)
    assert columnar.json()["outputs"][0] == pytest.approx(scores[1], abs=1e-6)


# ------------------------------------------------------------------------------------ reset


def _state(mlp_home):
    """A pipeline's Feast files, markers, checkpoints and a run directory, as runs leave them."""
    settings = get_settings()
    feast = settings.feast_dir / "demo"
    (feast / "offline").mkdir(parents=True)
    (feast / "offline" / "v1.parquet").write_bytes(b"x")
    (feast / "registry.db").write_bytes(b"x")
    (feast / "online.db").write_bytes(b"x")
    storage = to_path(settings.storage) / "demo"
    (storage / "run1" / "training_set").mkdir(parents=True)
    (storage / "last_validated.json").write_text("{}")
    (storage / "checkpoints" / "k").mkdir(parents=True)
    other = settings.feast_dir / "other" / "registry.db"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    return feast, storage, other


def test_reset_removes_exactly_what_it_says(mlp_home, capsys):
    feast, storage, other = _state(mlp_home)
    assert cli(["reset", "demo", "--features"]) == 0
    out = capsys.readouterr().out
    assert f"reset demo: removed {feast} (Feast: offline store of 1 batch file(s), registry.db, online.db)" in out  # fmt: skip
    assert not feast.exists() and (storage / "last_validated.json").exists()
    assert (storage / "checkpoints").exists() and other.exists()

    assert cli(["reset", "demo"]) == 0
    out = capsys.readouterr().out
    assert f"removed {storage / 'last_validated.json'}" in out
    assert f"removed {storage / 'checkpoints'} (trainer checkpoints)" in out
    assert not (storage / "last_validated.json").exists() and not (storage / "checkpoints").exists()
    assert (storage / "run1" / "training_set").is_dir() and other.exists()

    assert cli(["reset", "demo"]) == 0
    assert "reset demo: nothing to remove" in capsys.readouterr().out


def test_reset_refuses_while_a_run_is_alive_and_bad_names(mlp_home, capsys, monkeypatch):
    from mlplatform import runs

    feast, _, _ = _state(mlp_home)
    monkeypatch.setenv(runs.RUNNER_PID_ENV, str(os.getpid()))
    runs.acquire(get_settings(), "demo", "manual__r1", wait_s=0, stale_after_s=600)
    assert cli(["reset", "demo"]) == 1
    err = capsys.readouterr().err
    assert "reset refused, nothing removed: run manual__r1 of demo" in err and "\n" not in err[:-1]
    assert feast.exists()
    assert cli(["reset", "../demo"]) == 1
    assert "is not a pipeline name" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- config


def test_window_and_min_rows_are_checked_by_field():
    text = (REPO / "pipelines" / "demo.yaml").read_text()
    cfg = parse_pipeline(text)
    assert cfg.retrain.window_days is None and cfg.features.min_rows == 100
    windowed = parse_pipeline(text.replace("on_drift: true", "on_drift: true\n  window_days: 30"))
    assert windowed.retrain.window_days == 30
    with pytest.raises(ConfigError, match=r"retrain.window_days: Input should be greater than 0"):
        parse_pipeline(text.replace("on_drift: true", "on_drift: true\n  window_days: 0"))
    with pytest.raises(ConfigError, match=r"features.min_rows: Input should be greater"):
        parse_pipeline(
            text.replace("holdout_fraction: 0.2", "holdout_fraction: 0.2\n  min_rows: 1")
        )
    with pytest.raises(ConfigError, match="'mlp_ingested_at' is reserved"):
        parse_pipeline(text.replace("label: churned", "label: mlp_ingested_at"))

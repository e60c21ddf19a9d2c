"""Data and features you can trust: faults a user found in the features and training_set stages.

Each test failed on the code before the fix: a re-sent batch left both copies in the offline store
and the point-in-time join picked either (49 % old values at 1,000 rows); a renamed feature broke
the next run with a KeyError; rows with a null feature were dropped silently and a null category
became the string "None"; string entity ids failed the int64 cast; degenerate training sets
(too few rows, one class, an all-null feature) went on to the trainer. Real Feast (local
provider, dask offline store, SQLite online store) on small datagen batches.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.reset import reset_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages import StageError
from mlplatform.stages.features import (
    build_training_set,
    feature_store,
    materialize_features,
    offline_dir,
    stored_batches,
)
from mlplatform.storage import stage_dir, to_path
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC")
TRAP = 9999.0  # a feature value no honest join may return for an earlier label


@pytest.fixture
def cfg():
    return load_pipeline(REPO / "pipelines" / "demo.yaml")


@pytest.fixture
def settings(mlp_home):
    return get_settings()


def _with(cfg, **changes):
    """A copy of ``cfg`` with ``section={field: value}`` changes."""
    update = {k: getattr(cfg, k).model_copy(update=v) for k, v in changes.items()}
    return cfg.model_copy(update=update)


def _batch(n: int = 300, seed: int = 1, **kwargs) -> pd.DataFrame:
    df = datagen.generate(n, seed=seed, end=END.to_pydatetime(), **kwargs)
    df["customer_id"] = df["customer_id"].astype("int64")
    return df


def _land(cfg, settings, tmp_path, df: pd.DataFrame, version: str) -> tuple[dict, str]:
    """The features stage on ``df`` as batch ``version``; returns (result, data_uri)."""
    path = tmp_path / f"{version}.parquet"
    df.to_parquet(path, index=False)
    out = stage_dir(settings.storage, cfg.name, version, "features")
    return materialize_features(cfg, path.as_uri(), version, out, settings), path.as_uri()


def _training_set(cfg, settings, data_uri: str, run: str) -> tuple[dict, pd.DataFrame]:
    out = stage_dir(settings.storage, cfg.name, run, "training_set")
    result = build_training_set(cfg, data_uri, out, settings)
    return result, pd.read_parquet(to_path(result["training_set_uri"]))


# ------------------------------------------------------------------- history supersedes


@pytest.mark.parametrize("window_days", [None, 90])
def test_a_resent_batch_supersedes_every_old_value(cfg, settings, tmp_path, window_days):
    cfg = _with(cfg, retrain={"window_days": window_days})
    original = _batch(1000)
    corrected = original.copy()
    corrected["tenure_months"] += 1000.0  # every value corrected
    corrected["churned"] = 1 - corrected["churned"]
    _land(cfg, settings, tmp_path, original, "v-original")
    landed, uri = _land(cfg, settings, tmp_path, corrected, "v-corrected")

    _, ts = _training_set(cfg, settings, uri, "r2")
    old_share = float((ts["tenure_months"] < 1000).mean())
    assert old_share == 0.0, f"{old_share:.1%} of the training set holds superseded values"
    assert len(ts) == 1000 and landed["superseded_rows"] == 1000
    merged = ts.merge(corrected, on=["customer_id", "event_time"], suffixes=("", "_sent"))
    assert (merged["churned"] == merged["churned_sent"]).all(), "a superseded label survived"

    # the online store serves the corrected values too
    store = feature_store(cfg, settings)
    latest = corrected.sort_values("event_time").groupby("customer_id").tail(1).head(5)
    online = store.get_online_features(
        features=[f"{cfg.features.view}:tenure_months"],
        entity_rows=[{"customer_id": int(c)} for c in latest["customer_id"]],
    ).to_dict()
    assert np.allclose(online["tenure_months"], latest["tenure_months"])


def test_a_partial_resend_keeps_the_rows_it_does_not_resend(cfg, settings, tmp_path):
    cfg = _with(cfg, retrain={"window_days": 90})
    original = _batch(400)
    _land(cfg, settings, tmp_path, original, "v-original")
    fixed = original.iloc[:100].copy()
    fixed["monthly_charges"] = 199.0  # same keys, newer copies
    landed, _ = _land(cfg, settings, tmp_path, fixed, "v-fix")
    # the training set of the original batch's window: 400 rows, 100 of them corrected
    _, ts = _training_set(cfg, settings, (tmp_path / "v-original.parquet").as_uri(), "r")
    assert len(ts) == 400 and int((ts["monthly_charges"] == 199.0).sum()) == 100
    assert landed["superseded_rows"] == 100 and landed["stored_batches"] == 2


# --------------------------------------------------------------- changed definitions


def test_a_renamed_feature_stops_in_one_line_and_reset_recovers(cfg, settings, tmp_path, capsys):
    _land(cfg, settings, tmp_path, _batch(300, seed=1), "v1")
    numeric = [c if c != "usage_minutes" else "usage" for c in cfg.features.numeric]
    renamed = _with(cfg, features={"numeric": numeric})
    batch = _batch(300, seed=2).rename(columns={"usage_minutes": "usage"})
    before = sorted(p.name for p in stored_batches(offline_dir(cfg, settings)))
    with pytest.raises(StageError) as err:
        _land(renamed, settings, tmp_path, batch, "v2")
    message = str(err.value)
    assert "\n" not in message
    assert "'usage' is missing from 1 stored batch(es)" in message
    assert "stored but no longer declared: usage_minutes" in message
    assert "mlplatform reset demo --features" in message
    assert sorted(p.name for p in stored_batches(offline_dir(cfg, settings))) == before

    removed = reset_pipeline(settings, "demo", features_only=True)
    assert len(removed) == 1 and "offline store of 1 batch file(s)" in removed[0]
    _, uri = _land(renamed, settings, tmp_path, batch, "v2")
    result, ts = _training_set(renamed, settings, uri, "r2")
    assert result["rows"] == 300 and "usage" in ts.columns


def test_an_added_feature_stops_and_a_dropped_one_is_dropped_from_history(cfg, settings, tmp_path):
    first = _batch(300, seed=1)
    _land(cfg, settings, tmp_path, first, "v1")
    batch = _batch(300, seed=2).assign(plan_age=3.0)
    added = _with(cfg, features={"numeric": [*cfg.features.numeric, "plan_age"]})
    with pytest.raises(StageError, match=r"'plan_age' is missing from 1 stored batch\(es\)"):
        _land(added, settings, tmp_path, batch, "v2")

    dropped = _with(cfg, features={"categorical": ["contract_type"]}, retrain={"window_days": 120})
    landed, uri = _land(dropped, settings, tmp_path, batch, "v2")
    assert landed["dropped_columns"] == ["region"] and landed["stored_batches"] == 2
    result, ts = _training_set(dropped, settings, uri, "r2")
    in_window = int((first["event_time"] <= batch["event_time"].max()).sum())
    assert result["rows"] == 300 + in_window and "region" not in ts.columns


# --------------------------------------------------------------------- missing values


def test_rows_with_missing_values_are_kept_and_counted(cfg, settings, tmp_path):
    batch = _batch(300)
    batch["tenure_months"] = batch["tenure_months"].astype(float)
    batch.loc[[3, 30, 60, 90, 120], "tenure_months"] = np.nan
    batch["contract_type"] = batch["contract_type"].astype(object)
    batch.loc[[5, 50, 150], "contract_type"] = None
    _, uri = _land(cfg, settings, tmp_path, batch, "v1")
    result, ts = _training_set(cfg, settings, uri, "r1")
    assert len(ts) == 300 == result["train_rows"] + result["holdout_rows"]
    assert result["imputed"] == {
        "tenure_months": 5,
        "monthly_charges": 0,
        "support_calls": 0,
        "usage_minutes": 0,
        "contract_type": 3,
        "region": 0,
    }
    assert ts["contract_type"].isna().sum() == 3
    assert not ts["contract_type"].isin(["None", "nan", "<NA>"]).any()


# ------------------------------------------------------------------------ entity keys


def test_string_entity_keys_work_end_to_end(cfg, settings, tmp_path):
    batch = _batch(300)
    batch["customer_id"] = "C-" + batch["customer_id"].astype(str)
    landed, uri = _land(cfg, settings, tmp_path, batch, "v1")
    assert landed["entity_kind"] == "string"
    result, ts = _training_set(cfg, settings, uri, "r1")
    assert result["rows"] == 300 and ts["customer_id"].str.startswith("C-").all()
    online = (
        feature_store(cfg, settings)
        .get_online_features(
            features=[f"{cfg.features.view}:region"],
            entity_rows=[{"customer_id": batch["customer_id"].iloc[-1]}],
        )
        .to_dict()
    )
    assert online["region"] == [batch["region"].iloc[-1]]  # its latest row (sorted by time)

    # integer ids join a string-keyed history as strings ...
    more = _batch(300, seed=2)
    assert _land(cfg, settings, tmp_path, more, "v2")[0]["entity_kind"] == "string"


def test_string_ids_cannot_join_an_integer_history(cfg, settings, tmp_path):
    _land(cfg, settings, tmp_path, _batch(300), "v1")
    batch = _batch(300, seed=2)
    batch["customer_id"] = "C-" + batch["customer_id"].astype(str)
    with pytest.raises(StageError, match=r"holds integer ids so far.*'C-\d+'.*reset demo"):
        _land(cfg, settings, tmp_path, batch, "v2")


# --------------------------------------------------------------- point in time + window


def test_no_feature_value_stamped_after_a_label_reaches_the_training_set(cfg, settings, tmp_path):
    """Batch 2 re-measures batch 1's customers a day later with trap values; with a window over
    both, batch 1's labels join batch 1's values and only batch 2's own labels see the trap."""
    cfg = _with(cfg, retrain={"window_days": 120})
    first = _batch(300, seed=1)
    later = first.copy()
    later["event_time"] = later["event_time"] + timedelta(days=1)
    later["usage_minutes"] = TRAP
    _land(cfg, settings, tmp_path, first, "v1")
    _, uri = _land(cfg, settings, tmp_path, later, "v2")
    _, ts = _training_set(cfg, settings, uri, "r2")
    assert len(ts) == 600
    early = ts.merge(first[["customer_id", "event_time"]], on=["customer_id", "event_time"])
    assert len(early) == 300
    assert not (early["usage_minutes"] == TRAP).any(), "a value stamped after its label leaked"
    assert (ts["usage_minutes"] == TRAP).sum() == 300


def test_the_window_holds_the_validated_history_within_n_days(cfg, settings, tmp_path):
    old = _batch(300, seed=1, days=30)
    old["event_time"] -= timedelta(days=60)  # 60 to 90 days before END
    new = _batch(300, seed=2, days=30)  # the 30 days before END
    _land(cfg, settings, tmp_path, old, "v-old")
    _, uri = _land(cfg, settings, tmp_path, new, "v-new")
    latest = new["event_time"].max()
    for days, expected in ((None, 300), (45, 300), (120, 600)):
        windowed = _with(cfg, retrain={"window_days": days})
        result, ts = _training_set(windowed, settings, uri, f"w{days}")
        assert len(ts) == expected, (days, result)
        assert result["window_days"] == days and ts["event_time"].max() == latest
    result, ts = _training_set(_with(cfg, retrain={"window_days": 75}), settings, uri, "w75")
    assert ts["event_time"].min() >= latest - timedelta(days=75)
    assert 300 < len(ts) == result["rows"] < 600


# ---------------------------------------------------------- stop before training


def _sorted_by_label(df: pd.DataFrame) -> pd.DataFrame:
    """Label 0 rows first in time, then label 1: the newest 20 % hold-out has one class."""
    df = df.sort_values("churned", kind="mergesort", ignore_index=True)
    df["event_time"] = sorted(df["event_time"])
    return df


def _all_null_feature(df: pd.DataFrame) -> pd.DataFrame:
    df["support_calls"] = np.nan
    return df


def _one_class(df: pd.DataFrame) -> pd.DataFrame:
    df["churned"] = 0
    return df


@pytest.mark.parametrize(
    ("rows", "corrupt", "expected"),
    [
        (60, None, "60 row(s) to train on, fewer than features.min_rows=100"),
        (300, _one_class, "label 'churned' is 0 in all 240 training rows"),
        (300, _sorted_by_label, "label 'churned' is 1 in all 60 hold-out"),
        (300, _all_null_feature, "feature 'support_calls' is missing in all rows"),
    ],
    ids=["too-few-rows", "one-class", "one-class-hold-out", "all-null-feature"],
)
def test_training_that_cannot_mean_anything_stops_before_the_trainer(
    cfg, settings, tmp_path, rows, corrupt, expected
):
    batch = _batch(rows)
    if corrupt is not None:
        batch = corrupt(batch)
    _, uri = _land(cfg, settings, tmp_path, batch, "v1")
    out = stage_dir(settings.storage, cfg.name, "r1", "training_set")
    with pytest.raises(StageError) as err:
        build_training_set(cfg, uri, out, settings)
    message = str(err.value)
    assert expected in message and "hint:" in message and "\n" not in message
    assert not (out / "train.parquet").exists(), "a training set was handed on"

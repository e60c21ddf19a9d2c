"""Materialization the platform owns: apply only changed definitions, a ledger of what is online,
no gap after a failure, no roll-back of newer values, corrections that reach Redis.

Before this, every run called ``feast apply`` and materialized its batch's window; a run that
failed mid-materialization left its interval half written with nothing to say so, a correction
of an older interval rolled newer online values back (SQLite writes unconditionally), and on
Redis a corrected batch with the same event times never replaced the old values (Feast skips
rows whose event time is not newer). Real Feast (local provider, dask offline store, SQLite or a
real redis-server) on small datagen batches; the one fault injected is the online store's write
method raising after writing half its rows.
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages import StageError
from mlplatform.stages.features import feast_root, feature_store, materialize_features
from mlplatform.stages.materialize import APPLIED_FILE, LEDGER_FILE
from mlplatform.storage import stage_dir
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC")


@pytest.fixture
def cfg():
    return load_pipeline(REPO / "pipelines" / "demo.yaml")


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request, mlp_home, monkeypatch) -> str:
    """Each test that takes it runs on the SQLite and on a real Redis online store."""
    if request.param == "redis":
        monkeypatch.setenv("MLP_FEAST_ONLINE_STORE", "redis")
        monkeypatch.setenv(
            "MLP_FEAST_REDIS_CONNECTION", request.getfixturevalue("redis_connection")
        )
    return request.param


def _batch(n: int = 300, seed: int = 1, shift_days: float = 0) -> pd.DataFrame:
    df = datagen.generate(n, seed=seed, end=(END + timedelta(days=shift_days)).to_pydatetime())
    df["customer_id"] = df["customer_id"].astype("int64")
    return df


def _land(cfg, tmp_path, df: pd.DataFrame, version: str) -> dict:
    """The features stage on ``df`` as data version ``version``."""
    settings = get_settings()
    path = tmp_path / f"{version}.parquet"
    df.to_parquet(path, index=False)
    out = stage_dir(settings.storage, cfg.name, version, "features")
    return materialize_features(cfg, path.as_uri(), version, out, settings)


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("event_time").groupby("customer_id").tail(1).set_index("customer_id")


def _online(cfg, ids, feature: str = "tenure_months") -> np.ndarray:
    store = feature_store(cfg, get_settings())
    rows = [{"customer_id": int(i)} for i in ids]
    got = store.get_online_features(features=[f"{cfg.features.view}:{feature}"], entity_rows=rows)
    return np.array(got.to_dict()[feature], dtype="float64")


def _ledger(cfg) -> dict:
    return json.loads((feast_root(cfg.name, get_settings()) / LEDGER_FILE).read_text())


class _Calls:
    """Counts FeatureStore.apply / materialize calls (the real methods still run)."""

    def __init__(self, monkeypatch) -> None:
        from feast import FeatureStore

        self.apply = self.materialize = 0
        real_apply, real_materialize = FeatureStore.apply, FeatureStore.materialize

        def apply(store, *args, **kwargs):
            self.apply += 1
            return real_apply(store, *args, **kwargs)

        def materialize(store, *args, **kwargs):
            self.materialize += 1
            return real_materialize(store, *args, **kwargs)

        monkeypatch.setattr(FeatureStore, "apply", apply)
        monkeypatch.setattr(FeatureStore, "materialize", materialize)


# ------------------------------------------------------------------ apply + ledger


def test_apply_runs_once_and_a_rerun_changes_nothing(cfg, mlp_home, tmp_path, monkeypatch):
    calls = _Calls(monkeypatch)
    first = _batch(300, seed=1)
    one = _land(cfg, tmp_path, first, "v1")
    assert one["applied"] and one["apply"] == "applied: first apply"
    assert [m["data_version"] for m in one["materialized"]] == ["v1"]
    assert one["materialized_batches"] == 1 and one["materialization"].startswith(
        "materialized 1 interval(s) (v1 ["
    )
    assert one["materialized_rows"] == 300 and (calls.apply, calls.materialize) == (1, 1)

    root = feast_root(cfg.name, get_settings())
    before = {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    again = _land(cfg, tmp_path, first, "v1")
    assert not again["applied"] and again["apply"].startswith("skipped: definitions unchanged")
    assert again["materialization"].startswith("already materialized: v1 [")
    assert again["materialized"] == [] and again["materialized_from"] is None
    assert again["ingested_at"] == one["ingested_at"]
    assert (calls.apply, calls.materialize) == (1, 1), "a re-run called Feast"
    after = {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before, "a re-run of the same data version changed a Feast file"

    # the next batch: no apply, exactly its own event-time interval
    later = _batch(300, seed=2, shift_days=61)
    two = _land(cfg, tmp_path, later, "v2")
    assert not two["applied"] and (calls.apply, calls.materialize) == (1, 2)
    assert two["materialized_from"] == later["event_time"].min().isoformat()
    end = later["event_time"].max() + timedelta(seconds=1)
    assert two["materialized_to"] == end.isoformat() and two["materialized_rows"] == 300
    ledger = _ledger(cfg)
    assert [(i["data_version"], i["rows"]) for i in ledger["intervals"]] == [
        ("v1", 300),
        ("v2", 300),
    ]
    assert ledger["intervals"][1]["start"] == later["event_time"].min().isoformat()
    assert ledger["definitions_sha256"] == two["definitions_sha256"]
    applied = json.loads((root / APPLIED_FILE).read_text())
    assert applied["sha256"] == two["definitions_sha256"]


def test_changed_definitions_or_a_lost_store_apply_and_rematerialize_all(cfg, mlp_home, tmp_path):
    first, later = _batch(300, seed=1), _batch(300, seed=2, shift_days=61)
    _land(cfg, tmp_path, first, "v1")
    _land(cfg, tmp_path, later, "v2")

    dropped = cfg.model_copy(
        update={"features": cfg.features.model_copy(update={"categorical": ["contract_type"]})}
    )
    changed = _land(dropped, tmp_path, later, "v2")
    assert changed["apply"] == "applied: definitions changed"
    assert [m["data_version"] for m in changed["materialized"]] == ["v1", "v2"]
    assert changed["dropped_columns"] == ["region"]

    root = feast_root(cfg.name, get_settings())
    (root / "online.db").unlink()
    lost = _land(dropped, tmp_path, later, "v2")
    assert lost["apply"] == "applied: the SQLite online store file is missing"
    assert [m["data_version"] for m in lost["materialized"]] == ["v1", "v2"]
    ids = _latest(later).index[:20]
    assert np.allclose(_online(cfg, ids), _latest(later).loc[ids, "tenure_months"])

    (root / LEDGER_FILE).write_text("{not json")  # a torn ledger: trust nothing
    torn = _land(dropped, tmp_path, later, "v2")
    assert not torn["applied"] and len(torn["materialized"]) == 2


# ------------------------------------------------------------- supersede, order


def test_a_superseding_batch_rematerializes_and_the_last_landed_wins(cfg, tmp_path, store_kind):
    original = _batch(300, seed=1)
    corrected = original.assign(tenure_months=original["tenure_months"] + 1000.0)
    _land(cfg, tmp_path, original, "v1")
    fix = _land(cfg, tmp_path, corrected, "v1-fix")
    assert fix["superseded_rows"] == 300 and [m["data_version"] for m in fix["materialized"]] == [
        "v1-fix"
    ]
    ids = _latest(original).index
    assert np.allclose(_online(cfg, ids), _latest(corrected)["tenure_months"]), store_kind

    # re-running the old version lands it again as newest (its file was emptied): it wins online
    rerun = _land(cfg, tmp_path, original, "v1")
    assert rerun["superseded_rows"] == 300 and len(rerun["materialized"]) == 1
    assert np.allclose(_online(cfg, ids), _latest(original)["tenure_months"]), store_kind


def test_a_correction_of_an_older_interval_does_not_roll_newer_values_back(cfg, mlp_home, tmp_path):
    old = _batch(300, seed=1)
    new = old.assign(
        event_time=old["event_time"] + timedelta(days=40), tenure_months=old["tenure_months"] + 500
    )
    _land(cfg, tmp_path, old, "v-old")
    _land(cfg, tmp_path, new, "v-new")
    fix = _land(cfg, tmp_path, old.assign(tenure_months=old["tenure_months"] + 1000), "v-old-fix")
    ids = _latest(new).index
    online = _online(cfg, ids)
    assert np.allclose(online, _latest(new)["tenure_months"]), "older values replaced newer ones"
    # the window runs from the corrected interval to the end of the history
    assert fix["materialized_from"] == old["event_time"].min().isoformat()
    end = new["event_time"].max() + timedelta(seconds=1)
    assert fix["materialized_to"] == end.isoformat() and fix["materialized_rows"] == 600


# --------------------------------------------------------------------- failures


def _fail_once_halfway(monkeypatch, store_kind: str) -> dict:
    """The online store's write writes the first half of its rows, then raises, once."""
    if store_kind == "redis":
        from feast.infra.online_stores.redis import RedisOnlineStore as Store
    else:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore as Store
    real = Store.online_write_batch
    state = {"failed": 0}

    def write(self, config, table, data, progress):
        if state["failed"]:
            return real(self, config, table, data, progress)
        state["failed"] += 1
        real(self, config, table, data[: len(data) // 2], progress)
        raise ConnectionError("online store went away mid-write")

    monkeypatch.setattr(Store, "online_write_batch", write)
    return state


@pytest.mark.parametrize("next_run", ["same version", "next batch"])
def test_a_failed_materialization_leaves_no_gap(cfg, tmp_path, monkeypatch, store_kind, next_run):
    first, later = _batch(300, seed=1), _batch(300, seed=2, shift_days=61)
    state = _fail_once_halfway(monkeypatch, store_kind)
    with pytest.raises(StageError) as err:
        _land(cfg, tmp_path, first, "v1")
    message = str(err.value)
    assert state["failed"] == 1 and "\n" not in message
    assert "online store went away mid-write" in message
    assert "batch(es) v1 stay pending and the next run materializes them" in message
    assert not (feast_root(cfg.name, get_settings()) / LEDGER_FILE).exists()
    ids = _latest(first).index
    assert np.isnan(_online(cfg, ids)).any(), "the injected fault wrote everything"

    if next_run == "same version":
        result = _land(cfg, tmp_path, first, "v1")
        assert [m["data_version"] for m in result["materialized"]] == ["v1"]
        expected = _latest(first)
    else:
        result = _land(cfg, tmp_path, later, "v2")
        assert [m["data_version"] for m in result["materialized"]] == ["v1", "v2"]
        assert result["materialized_from"] == first["event_time"].min().isoformat()
        expected = _latest(pd.concat([first, later]))
    assert not result["applied"], "the failed run's apply was not recorded: a second apply"
    assert np.allclose(_online(cfg, expected.index), expected["tenure_months"]), "a gap"
    recorded = [i["data_version"] for i in _ledger(cfg)["intervals"]]
    assert recorded == (["v1"] if next_run == "same version" else ["v1", "v2"])
    assert _land(cfg, tmp_path, first, "v1")["materialization"].startswith("already materialized")


def test_switching_the_online_store_to_redis_rematerializes(cfg, mlp_home, tmp_path, monkeypatch,
                                                           redis_connection):  # fmt: skip
    first = _batch(300, seed=1)
    _land(cfg, tmp_path, first, "v1")
    monkeypatch.setenv("MLP_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("MLP_FEAST_REDIS_CONNECTION", redis_connection)
    moved = _land(cfg, tmp_path, first, "v1")
    assert moved["apply"].startswith("applied: online store changed (sqlite:")
    assert moved["apply"].endswith(f"-> redis:{redis_connection})")
    assert [m["data_version"] for m in moved["materialized"]] == ["v1"]
    ids = _latest(first).index
    assert np.allclose(_online(cfg, ids), _latest(first)["tenure_months"])

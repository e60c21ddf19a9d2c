"""Feast's Redis online store on a real redis-server, and the training/serving skew check."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import INGESTED_AT_COLUMN, load_pipeline
from mlplatform.settings import get_settings
from mlplatform.skew import SkewDetected, assert_no_skew, check_skew
from mlplatform.stages.features import feature_store, materialize_features
from mlplatform.stages.ingest import ingest
from mlplatform.storage import stage_dir, to_path
from tests.cli_inprocess import CliResult, run_cli
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()


@pytest.fixture
def cfg():
    return load_pipeline(REPO / "pipelines" / "demo.yaml")


def _ingest_and_materialize(cfg, tmp_path, seed: int = 1) -> pd.DataFrame:
    """Ingest a batch and materialize it; returns the batch as ingest handed it on."""
    settings = get_settings()
    path = datagen.write(datagen.generate(300, seed=seed, end=END), tmp_path / f"b{seed}.csv")
    run = f"r{seed}"
    result = ingest(cfg, str(path), stage_dir(settings.storage, cfg.name, run, "ingest"), settings)
    out = stage_dir(settings.storage, cfg.name, run, "features")
    materialize_features(cfg, result["data_uri"], result["data_version"], out, settings)
    return pd.read_parquet(to_path(result["data_uri"]))


def _write_online(store, cfg, rows: pd.DataFrame) -> None:
    """Write ``rows`` to the online store only; the view's source names the ingestion time as its
    created timestamp, so Feast wants that column too."""
    rows = rows.assign(**{INGESTED_AT_COLUMN: pd.Timestamp.now(tz="UTC")})
    columns = ["customer_id", "event_time", INGESTED_AT_COLUMN, *cfg.features.all]
    store.write_to_online_store(cfg.features.view, rows[columns])


def _online(store, cfg, ids) -> pd.DataFrame:
    refs = [f"{cfg.features.view}:{f}" for f in cfg.features.all]
    rows = [{cfg.source.entity: int(i)} for i in ids]
    return store.get_online_features(features=refs, entity_rows=rows).to_df()


def test_redis_online_store_serves_the_latest_values_and_skew_is_caught(
    mlp_home, tmp_path, cfg, monkeypatch, redis_connection
):
    import redis

    monkeypatch.setenv("MLP_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("MLP_FEAST_REDIS_CONNECTION", redis_connection)
    batch = _ingest_and_materialize(cfg, tmp_path)
    host, port = redis_connection.split(":")
    assert redis.Redis(host=host, port=int(port)).dbsize() > 0, "nothing was written to Redis"

    settings = get_settings()
    store = feature_store(cfg, settings)
    latest = batch.sort_values("event_time").groupby("customer_id").tail(1)
    latest = latest.set_index("customer_id").sort_index()
    online = _online(store, cfg, latest.index).set_index("customer_id").sort_index()
    for name in cfg.features.numeric:
        assert (online[name].astype("float32") == latest[name].astype("float32")).all(), name
    for name in cfg.features.categorical:
        assert (online[name] == latest[name]).all(), name

    clean = assert_no_skew(cfg, settings, sample=40)
    assert clean.ok and clean.entities == 40 and clean.features == cfg.features.all

    # serving sees another value than training would: one entity's row rewritten online only
    victim = int(latest.index[3])
    row = latest.loc[[victim]].reset_index()
    offline_value = float(row.at[0, "monthly_charges"])
    row["monthly_charges"] = (row["monthly_charges"] + 11.5).astype("float32")
    row["event_time"] = row["event_time"] + timedelta(seconds=1)
    _write_online(store, cfg, row)
    report = check_skew(cfg, settings, sample=1000)
    assert [(m.entity, m.feature) for m in report.mismatches] == [(victim, "monthly_charges")]
    assert report.mismatches[0].online == pytest.approx(offline_value + 11.5, abs=1e-3)
    assert report.mismatches[0].offline == pytest.approx(offline_value, abs=1e-3)
    with pytest.raises(SkewDetected) as err:
        assert_no_skew(cfg, settings, sample=1000)
    message = str(err.value)
    assert "\n" not in message and f"customer_id={victim}: monthly_charges online=" in message
    assert "1 value(s) differ between online and offline" in message


def _cli(*args: str) -> CliResult:
    return run_cli(*args, cwd=REPO)


def test_skew_cli_on_the_sqlite_store_passes_then_reports_a_diff(mlp_home, tmp_path, cfg):
    batch = _ingest_and_materialize(cfg, tmp_path, seed=2)
    ok = _cli("skew", "demo", "--sample", "25")
    assert ok.returncode == 0, ok.stderr
    assert "skew: none: online equals offline for 25 entities x 6 features" in ok.stdout

    store = feature_store(cfg, get_settings())
    latest = batch.sort_values("event_time").groupby("customer_id").tail(1).head(2).copy()
    latest["region"] = "atlantis"
    latest["event_time"] = latest["event_time"] + timedelta(seconds=1)
    _write_online(store, cfg, latest)
    bad = _cli("skew", "demo", "--sample", "1000")
    assert bad.returncode == 1
    assert "feature" in bad.stdout and "atlantis" in bad.stdout  # the table: entity, feature, ...
    assert len(bad.stdout.strip().splitlines()) == 3  # header + 2 mismatches
    error = bad.stderr.strip()
    assert "\n" not in error and "2 value(s) differ" in error and "region online=atlantis" in error

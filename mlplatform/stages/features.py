"""Features: Feast apply + materialize, and the point-in-time correct training set.

Contracts:

* ``materialize_features(cfg, data_uri, data_version, out_dir, settings)`` adds the validated batch
  to the view's offline source (one Parquet file per data version, so re-runs are idempotent),
  applies the definitions of :mod:`feature_repo.definitions`, materializes the batch's time window
  into the online store and returns ``feature_service``, ``feature_view`` and the window.
* ``build_training_set(cfg, data_uri, out_dir, settings)`` uses the batch's (entity, timestamp,
  label) rows as the entity frame, asks Feast for the service's features as of each timestamp, and
  splits by time: the newest ``holdout_fraction`` is the hold-out that the gate scores every model on.
  Returns ``training_set_uri``, ``train_uri``, ``holdout_uri`` and row counts.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings
from mlplatform.stages import StageError
from mlplatform.storage import to_path, to_uri

log = logging.getLogger(__name__)


def feature_store(cfg: PipelineConfig, settings: Settings):
    """A Feast ``FeatureStore`` for the pipeline, configured from settings (no YAML needed)."""
    from feast import FeatureStore
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.repo_config import RepoConfig

    root = settings.feast_dir / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    if settings.feast_online_store == "redis":
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        online = RedisOnlineStoreConfig(connection_string=settings.feast_redis_connection)
    else:
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

        online = SqliteOnlineStoreConfig(path=str(root / "online.db"))
    config = RepoConfig(
        project=cfg.name,
        registry=str(root / "registry.db"),
        provider="local",
        online_store=online,
        offline_store=DaskOfflineStoreConfig(),
        entity_key_serialization_version=3,
        repo_path=str(root),
    )
    return FeatureStore(config=config)


def offline_dir(cfg: PipelineConfig, settings: Settings) -> Path:
    return settings.feast_dir / cfg.name / "offline"


def _feature_frame(cfg: PipelineConfig, df: pd.DataFrame) -> pd.DataFrame:
    cols = [
        cfg.source.entity,
        cfg.source.timestamp,
        *cfg.features.numeric,
        *cfg.features.categorical,
    ]
    out = df[cols].copy()
    out[cfg.source.entity] = out[cfg.source.entity].astype("int64")
    for c in cfg.features.numeric:
        out[c] = out[c].astype("float32")
    for c in cfg.features.categorical:
        out[c] = out[c].astype(str)
    return out


def materialize_features(
    cfg: PipelineConfig, data_uri: str, data_version: str, out_dir: Path, settings: Settings
) -> dict[str, object]:
    from feature_repo.definitions import build_definitions

    df = pd.read_parquet(to_path(data_uri))
    missing = [c for c in cfg.features.all if c not in df.columns]
    if missing:
        raise StageError(
            f"features: batch {data_uri} lacks declared feature column(s) {', '.join(missing)}"
        )
    src_dir = offline_dir(cfg, settings)
    src_dir.mkdir(parents=True, exist_ok=True)
    _feature_frame(cfg, df).to_parquet(src_dir / f"{data_version}.parquet", index=False)

    store = feature_store(cfg, settings)
    entity, view, service = build_definitions(cfg, src_dir)
    store.apply([entity, view, service])
    ts = df[cfg.source.timestamp]
    start, end = ts.min().to_pydatetime(), ts.max().to_pydatetime() + timedelta(seconds=1)
    store.materialize(start_date=start, end_date=end, feature_views=[view.name])
    log.info("materialized %s from %s to %s", view.name, start, end)
    return {
        "feature_service": service.name,
        "feature_view": view.name,
        "materialized_from": start.isoformat(),
        "materialized_to": end.isoformat(),
    }


def build_training_set(
    cfg: PipelineConfig, data_uri: str, out_dir: Path, settings: Settings
) -> dict[str, object]:
    from feature_repo.definitions import service_name

    df = pd.read_parquet(to_path(data_uri))
    if cfg.features.label not in df.columns:
        raise StageError(
            f"training_set: batch {data_uri} has no label column {cfg.features.label!r}"
        )
    entity_df = df[[cfg.source.entity, cfg.source.timestamp, cfg.features.label]].copy()
    entity_df[cfg.source.entity] = entity_df[cfg.source.entity].astype("int64")
    store = feature_store(cfg, settings)
    service = store.get_feature_service(service_name(cfg))
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    joined = joined.dropna(subset=cfg.features.all).sort_values(
        cfg.source.timestamp, ignore_index=True
    )
    if len(joined) < 10:
        raise StageError(
            f"training_set: only {len(joined)} rows have features within ttl {cfg.features.ttl_days}d"
        )
    cut = int(len(joined) * (1 - cfg.features.holdout_fraction))
    full, train, holdout = (
        out_dir / "training_set.parquet",
        out_dir / "train.parquet",
        out_dir / "holdout.parquet",
    )
    joined.to_parquet(full, index=False)
    joined.iloc[:cut].to_parquet(train, index=False)
    joined.iloc[cut:].to_parquet(holdout, index=False)
    return {
        "training_set_uri": to_uri(full),
        "train_uri": to_uri(train),
        "holdout_uri": to_uri(holdout),
        "train_rows": cut,
        "holdout_rows": len(joined) - cut,
    }

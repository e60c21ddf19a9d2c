"""Features: the validated history in Feast's offline store, and the point-in-time training set.

The offline store of a pipeline is ``<home>/feast/<pipeline>/offline/<data_version>.parquet``, one
file per validated batch (only batches that passed validation get here), with the columns entity,
event time, label, the declared features and :data:`INGESTED_AT` — when the batch landed (UTC).
Missing values stay missing: NaN for numeric features, null for categorical ones (never the
string ``"None"``). Entity keys keep their type: integer ids are ``int64``, anything else strings
(:func:`entity_kind`); a later batch's integer ids join a string-keyed history as strings.
With a remote ``MLP_STORAGE_URI`` these files are published to and restored from the object
store (:mod:`mlplatform.stages.offline_sync`); Feast itself always reads local files.

History supersedes, never mixes: when a batch lands, every older copy of one of its (entity,
event time) rows is removed from the older files, so a re-sent batch with corrected values
replaces the old values in every point-in-time join and in the online store. The Feast source
also names :data:`INGESTED_AT` as its ``created_timestamp_column``; Feast 0.67's dask offline
store does not honour it when two copies share an event time (measured: half the joined rows
kept the old copy), hence the removal, which holds for every offline store.

Changed definitions: a feature dropped from the config is dropped from the stored batches
(rewritten in place); a feature added or renamed, a changed type, label or entity key cannot be
filled from stored batches, so the stage stops with one line naming the columns and the command
that starts the history afresh (``mlplatform reset <pipeline> --features``; :mod:`.offline_schema`).

Contracts:

* ``materialize_features(cfg, data_uri, data_version, out_dir, settings)`` lands the validated
  batch in the offline store (a re-run of a data version still stored whole changes nothing;
  one partly superseded since lands again as newest), applies :mod:`feature_repo.definitions`
  if they changed and materializes what the online store lacks (:mod:`.materialize`). Returns
  ``feature_service``, ``feature_view``, ``applied``/``apply``/``definitions_sha256``,
  ``materialization`` (one line), ``materialized`` (intervals), ``materialized_batches``,
  ``materialized_from``/``_to``, ``materialized_rows``, ``entity_kind``, ``ingested_at``,
  ``superseded_rows`` (older copies removed), ``stored_batches`` and ``dropped_columns``
  (removed after a feature was dropped).
* ``build_training_set(cfg, data_uri, out_dir, settings)`` takes the label rows of the history
  (newest copies): with ``retrain.window_days`` null the batch's own rows, else every stored row
  whose event time lies in ``[T - window_days, T]`` (``T``: the batch's latest event time); asks
  Feast for the service's features as of each row's time (point in time: no value stamped after a
  label's time), splits by time (the newest ``holdout_fraction`` is the gate's hold-out) and stops
  with :class:`StageError` when training cannot mean anything (:func:`check_training_set`).
  Returns the URIs, row counts, the window and ``imputed`` (missing values per feature, which the
  model imputes: numeric with the training mean plus a was-missing input, categorical as OOV).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlplatform.config import INGESTED_AT_COLUMN, PipelineConfig
from mlplatform.settings import Settings
from mlplatform.stages import StageError, offline_sync
from mlplatform.stages.offline_schema import (
    check_stored_definitions,
    drop_columns,
    offline_columns,
    reset_hint,
)
from mlplatform.storage import to_path, to_uri

log = logging.getLogger(__name__)

INGESTED_AT = INGESTED_AT_COLUMN
EntityKind = Literal["int64", "string"]


def feature_store(cfg: PipelineConfig, settings: Settings):
    """A Feast ``FeatureStore`` for the pipeline, configured from settings (no YAML needed)."""
    return feature_store_for(cfg.name, settings)


def feature_store_for(pipeline: str, settings: Settings):
    """The Feast ``FeatureStore`` of project ``pipeline`` under ``<home>/feast/<pipeline>``."""
    from feast import FeatureStore
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.repo_config import RepoConfig

    root = feast_root(pipeline, settings)
    root.mkdir(parents=True, exist_ok=True)
    online: Any  # Feast's Redis or SQLite online store config
    if settings.feast_online_store == "redis":
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        # skip_dedup: write unconditionally, as SQLite does; Feast's default skips a row whose
        # event time is not newer, so a superseding batch's corrections never reached Redis
        online = RedisOnlineStoreConfig(
            connection_string=settings.feast_redis_connection, skip_dedup=True
        )
    else:
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

        online = SqliteOnlineStoreConfig(path=str(root / "online.db"))
    config = RepoConfig(
        project=pipeline,
        registry=str(root / "registry.db"),
        provider="local",
        online_store=online,
        offline_store=DaskOfflineStoreConfig(),
        entity_key_serialization_version=3,
        repo_path=str(root),
    )
    return FeatureStore(config=config)


def feast_root(pipeline: str, settings: Settings) -> Path:
    """``<home>/feast/<pipeline>``: offline files, registry and SQLite online store."""
    return settings.feast_dir / pipeline


def offline_dir(cfg: PipelineConfig, settings: Settings) -> Path:
    return feast_root(cfg.name, settings) / "offline"


# ------------------------------------------------------------------------------ offline files


def entity_kind(keys: pd.Series) -> EntityKind:
    """``"int64"`` for integer keys (floats that are all whole numbers included), else
    ``"string"``."""
    if pd.api.types.is_bool_dtype(keys):
        return "string"
    if pd.api.types.is_integer_dtype(keys):
        return "int64"
    if pd.api.types.is_float_dtype(keys):
        values = keys.dropna().to_numpy()
        return "int64" if np.all(np.mod(values, 1) == 0) else "string"
    return "string"


def _as_kind(keys: pd.Series, kind: EntityKind) -> pd.Series:
    if kind == "int64":
        return keys.astype("int64")
    if pd.api.types.is_float_dtype(keys):
        keys = keys.astype("int64")  # whole-number floats: "7", not "7.0"
    return keys.astype(str).astype(object)


def _text(column: pd.Series) -> pd.Series:
    """Strings, with missing values kept as None (not the string "None" or "nan")."""
    return column.astype(object).map(lambda v: None if pd.isna(v) else str(v))


def offline_frame(
    cfg: PipelineConfig, df: pd.DataFrame, kind: EntityKind, ingested_at: pd.Timestamp
) -> pd.DataFrame:
    """The batch as it is stored: typed columns of :func:`offline_columns`."""
    out = pd.DataFrame(
        {
            cfg.source.entity: _as_kind(df[cfg.source.entity], kind),
            cfg.source.timestamp: pd.to_datetime(df[cfg.source.timestamp], utc=True),
            INGESTED_AT: pd.Series(ingested_at, index=df.index),
            cfg.features.label: df[cfg.features.label],
        }
    )
    for c in cfg.features.numeric:
        try:
            out[c] = pd.to_numeric(df[c]).astype("float32")
        except (TypeError, ValueError) as exc:
            raise StageError(
                f"features: numeric feature {c!r} of this batch holds non-numbers ({exc}); "
                "hint: add an expectation on its type to the suite, or declare it categorical"
            ) from None
    for c in cfg.features.categorical:
        out[c] = _text(df[c])
    return out.reset_index(drop=True)


def _arrow_schema(cfg: PipelineConfig, frame: pd.DataFrame):
    """Explicit column types, so an all-missing column is still float32 / string."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    fixed = {
        cfg.source.timestamp: pa.timestamp("ns", tz="UTC"),
        INGESTED_AT: pa.timestamp("ns", tz="UTC"),
        **{c: pa.float32() for c in cfg.features.numeric},
        **{c: pa.string() for c in cfg.features.categorical},
    }
    if frame[cfg.source.entity].dtype == object:
        fixed[cfg.source.entity] = pa.string()
    for name, typ in fixed.items():
        schema = schema.set(schema.get_field_index(name), pa.field(name, typ))
    return schema


def write_atomic(frame: pd.DataFrame, path: Path, schema: Any = None) -> None:
    """Write Parquet aside (a dot-file, which readers of the directory skip), then rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def stored_batches(directory: Path) -> list[Path]:
    """The stored batch files (``<data_version>.parquet``), sorted by name."""
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def _stored_entity_kind(schema, entity: str) -> EntityKind:
    import pyarrow as pa

    typ = schema.field(entity).type
    return "int64" if pa.types.is_integer(typ) else "string"


def _history_kind(cfg: PipelineConfig, files: list[Path], batch: pd.Series) -> EntityKind:
    """The entity kind of the history (the batch's own for an empty store); integer ids join a
    string-keyed history as strings; string ids cannot join an integer-keyed one."""
    import pyarrow.parquet as pq

    kind = entity_kind(batch)
    if not files:
        return kind
    stored = _stored_entity_kind(pq.read_schema(files[0]), cfg.source.entity)
    if stored == "int64" and kind == "string":
        sample = next((str(v) for v in batch if not str(v).lstrip("-").isdigit()), batch.iloc[0])
        raise StageError(
            f"features: entity {cfg.source.entity!r} of {cfg.name!r} holds integer ids so far, "
            f"this batch has other ids (e.g. {sample!r}); {reset_hint(cfg)}"
        )
    return stored


def supersede(cfg: PipelineConfig, directory: Path) -> int:
    """Remove every copy of an (entity, event time) row but the newest (by :data:`INGESTED_AT`,
    then file name) from the stored batches; returns how many rows were removed. Files left
    empty are deleted."""
    files = stored_batches(directory)
    if len(files) < 2:
        return 0
    key = [cfg.source.entity, cfg.source.timestamp]
    parts = []
    for i, path in enumerate(files):
        keys = pd.read_parquet(path, columns=[*key, INGESTED_AT])
        parts.append(keys.assign(_file=i, _row=np.arange(len(keys))))
    keys = pd.concat(parts, ignore_index=True).sort_values(
        [INGESTED_AT, "_file", "_row"], kind="mergesort"
    )
    older = keys[keys.duplicated(key, keep="last")]
    for i, rows in older.groupby("_file")["_row"]:
        path = files[int(i)]
        kept = pd.read_parquet(path).drop(index=rows.to_numpy())
        if kept.empty:
            path.unlink()
        else:
            write_atomic(kept, path, _arrow_schema(cfg, kept))
    return len(older)


def _landed_already(frame: pd.DataFrame, target: Path, schema: Any) -> pd.Timestamp | None:
    """The ingestion time of ``target`` when it holds exactly ``frame``'s rows and values (it is
    then the newest copy of all of them: a later batch would have removed some); else None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not target.exists():
        return None
    stored = pq.read_table(target)
    fresh = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    if stored.drop_columns([INGESTED_AT]).equals(fresh.drop_columns([INGESTED_AT])):
        return pd.Timestamp(stored.column(INGESTED_AT)[0].as_py())
    return None


def land_batch(
    cfg: PipelineConfig, df: pd.DataFrame, data_version: str, directory: Path
) -> dict[str, Any]:
    """Store the validated batch as the newest copy of its rows (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{data_version}.parquet"
    others = [p for p in stored_batches(directory) if p != target]
    dropped = check_stored_definitions(cfg, others) if others else set()
    kind = _history_kind(cfg, others, df[cfg.source.entity])
    if dropped:
        drop_columns(others, dropped)
        log.warning("dropped column(s) %s from %d stored batch(es)", sorted(dropped), len(others))
    frame = offline_frame(cfg, df, kind, pd.Timestamp(datetime.now(UTC)))
    ingested_at = _landed_already(frame, target, _arrow_schema(cfg, frame))
    if ingested_at is None:
        ingested_at = frame[INGESTED_AT].iloc[0]
        write_atomic(frame, target, _arrow_schema(cfg, frame))
    superseded = supersede(cfg, directory)
    if superseded:
        log.info("removed %d older copies of rows that batch %s re-sent", superseded, data_version)
    return {
        "entity_kind": kind,
        "ingested_at": ingested_at.isoformat(),
        "superseded_rows": superseded,
        "stored_batches": len(stored_batches(directory)),
        "dropped_columns": sorted(dropped),
    }


def materialize_features(
    cfg: PipelineConfig, data_uri: str, data_version: str, out_dir: Path, settings: Settings
) -> dict[str, object]:
    """Run the features stage (see the module docstring)."""
    from feature_repo.definitions import build_definitions
    from mlplatform.stages.materialize import apply_definitions, materialize_pending

    df = pd.read_parquet(to_path(data_uri))
    missing = [c for c in [*cfg.features.all, cfg.features.label] if c not in df.columns]
    if missing:
        raise StageError(
            f"features: batch {data_uri} lacks declared column(s) {', '.join(missing)}; "
            "hint: check features.numeric/categorical/label against the source's columns"
        )
    src_dir = offline_dir(cfg, settings)
    offline_sync.restore(cfg.name, src_dir, settings)
    landed = land_batch(cfg, df, data_version, src_dir)

    store = feature_store(cfg, settings)
    entity, view, service = build_definitions(cfg, src_dir, landed["entity_kind"])
    root = feast_root(cfg.name, settings)
    applied = apply_definitions(store, [entity, view, service], root, settings)
    files = stored_batches(src_dir)
    done = materialize_pending(store, cfg, files, root, applied, settings, data_version)
    log.info("%s; %s", applied["apply"], done["materialization"])
    offline_sync.publish(cfg.name, src_dir, settings)
    return {
        "feature_service": service.name,
        "feature_view": view.name,
        **applied,
        **done,
        **landed,
    }


# ------------------------------------------------------------------------------ training set


def read_history(cfg: PipelineConfig, settings: Settings) -> pd.DataFrame:
    """Every stored row (the newest copy of each (entity, event time) row), with the columns of
    :func:`offline_columns`."""
    offline_sync.restore(cfg.name, offline_dir(cfg, settings), settings)
    files = stored_batches(offline_dir(cfg, settings))
    if not files:
        return pd.DataFrame(columns=offline_columns(cfg))
    frames = [pd.read_parquet(p, columns=offline_columns(cfg)) for p in files]
    history = pd.concat(frames, ignore_index=True).sort_values(INGESTED_AT, kind="mergesort")
    key = [cfg.source.entity, cfg.source.timestamp]
    return history.drop_duplicates(key, keep="last", ignore_index=True)


def label_rows(
    cfg: PipelineConfig, batch: pd.DataFrame, history: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The (entity, event time, label) rows to train on and a description of the window.

    ``retrain.window_days`` null: the batch's own rows; N: every history row whose event time
    lies in ``[T - N days, T]``, ``T`` the batch's latest event time. Labels are the history's
    (newest copies); a batch key the history lacks means the features stage did not store it.
    """
    entity, ts = cfg.source.entity, cfg.source.timestamp
    times = pd.to_datetime(batch[ts], utc=True)
    keys = pd.DataFrame({entity: _as_kind(batch[entity], entity_kind(history[entity])), ts: times})
    stored = keys.merge(history[[entity, ts]], on=[entity, ts], how="left", indicator=True)
    absent = int((stored["_merge"] == "left_only").sum())
    if absent:
        raise StageError(
            f"training_set: {absent} row(s) of the batch are not in the offline store of "
            f"{cfg.name!r}; hint: run the features stage for this batch first"
        )
    latest, days = times.max(), cfg.retrain.window_days
    if days is None:
        rows = history.merge(keys, on=[entity, ts], how="inner")
        window = {"window_days": None, "window_from": times.min(), "window_to": latest}
    else:
        start = latest - timedelta(days=days)
        rows = history[(history[ts] >= start) & (history[ts] <= latest)]
        window = {"window_days": days, "window_from": start, "window_to": latest}
    rows = rows[[entity, ts, cfg.features.label]].sort_values([ts, entity], kind="mergesort")
    window = {k: v.isoformat() if isinstance(v, pd.Timestamp) else v for k, v in window.items()}
    return rows.reset_index(drop=True), window


def point_in_time_join(cfg: PipelineConfig, rows: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Feast's historical retrieval of the service's features as of each row's event time."""
    from feature_repo.definitions import service_name

    store = feature_store(cfg, settings)
    service = store.get_feature_service(service_name(cfg))
    joined = store.get_historical_features(entity_df=rows, features=service).to_df()
    if len(joined) != len(rows):
        raise StageError(
            f"training_set: the point-in-time join returned {len(joined)} rows for "
            f"{len(rows)} label rows; hint: `mlplatform reset {cfg.name} --features` rebuilds "
            "the feature store"
        )
    columns = [cfg.source.entity, cfg.source.timestamp, cfg.features.label, *cfg.features.all]
    joined = joined[columns].sort_values(
        [cfg.source.timestamp, cfg.source.entity], kind="mergesort", ignore_index=True
    )
    for c in cfg.features.categorical:
        joined[c] = _text(joined[c])
    return joined


def split_by_time(cfg: PipelineConfig, joined: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, hold-out): the newest ``holdout_fraction`` of the rows is the hold-out; both
    hold at least one row."""
    n = len(joined)
    cut = min(n - 1, max(1, int(n * (1 - cfg.features.holdout_fraction))))
    return joined.iloc[:cut], joined.iloc[cut:]


def check_training_set(cfg: PipelineConfig, train: pd.DataFrame, holdout: pd.DataFrame) -> None:
    """Stop (one-line :class:`StageError` with a hint) when training cannot mean anything: fewer
    rows than ``features.min_rows``, a feature with no value in the training rows, or, for a
    classifier, a label with one class in the training rows or in the hold-out."""
    n, label = len(train) + len(holdout), cfg.features.label
    if n < cfg.features.min_rows:
        window = cfg.retrain.window_days
        raise StageError(
            f"training_set: {n} row(s) to train on, fewer than features.min_rows="
            f"{cfg.features.min_rows} (retrain.window_days={window}); hint: send a larger batch, "
            "widen retrain.window_days, or lower features.min_rows"
        )
    for c in cfg.features.all:
        if train[c].isna().all():
            where = "all" if holdout[c].isna().all() else "the training"
            raise StageError(
                f"training_set: feature {c!r} is missing in {where} rows ({len(train)} train, "
                f"{len(holdout)} hold-out); hint: check the source column, or remove {c!r} "
                "from features"
            )
    if cfg.model.kind != "tabular_classifier":
        return
    for part, rows in (("training rows", train), ("hold-out", holdout)):
        classes = sorted(pd.unique(rows[label]).tolist())
        if len(classes) < 2:
            raise StageError(
                f"training_set: label {label!r} is {classes[0]!r} in all {len(rows)} {part} "
                f"({n} rows, hold-out = the newest {cfg.features.holdout_fraction:.0%} by event "
                "time); hint: the data may be sorted by label or too small; send rows of both "
                "classes across time or widen retrain.window_days"
            )


def build_training_set(
    cfg: PipelineConfig, data_uri: str, out_dir: Path, settings: Settings
) -> dict[str, object]:
    """Run the training_set stage (see the module docstring)."""
    batch = pd.read_parquet(to_path(data_uri))
    for c in (cfg.source.entity, cfg.source.timestamp, cfg.features.label):
        if c not in batch.columns:
            raise StageError(f"training_set: batch {data_uri} has no column {c!r}")
    history = read_history(cfg, settings)
    if history.empty:
        raise StageError(
            f"training_set: the offline store of {cfg.name!r} is empty; "
            "hint: run the features stage first"
        )
    rows, window = label_rows(cfg, batch, history)
    joined = point_in_time_join(cfg, rows, settings)
    train, holdout = split_by_time(cfg, joined)
    check_training_set(cfg, train, holdout)
    full, train_path, holdout_path = (
        out_dir / "training_set.parquet",
        out_dir / "train.parquet",
        out_dir / "holdout.parquet",
    )
    joined.to_parquet(full, index=False)
    train.to_parquet(train_path, index=False)
    holdout.to_parquet(holdout_path, index=False)
    imputed = {c: int(joined[c].isna().sum()) for c in cfg.features.all}
    if any(imputed.values()):
        log.info("missing values the model imputes: %s", {k: v for k, v in imputed.items() if v})
    return {
        "training_set_uri": to_uri(full),
        "train_uri": to_uri(train_path),
        "holdout_uri": to_uri(holdout_path),
        "rows": len(joined),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        **window,
        "imputed": imputed,
    }

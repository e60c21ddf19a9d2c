"""Delayed labels: ground truth that arrives after the prediction, joined to the request log.

Store: ``<home>/labels/<pipeline>/<received>-<md5[:12]>.parquet``, one file per delivery
(versioned: a delivery whose rows were already stored, by content hash, is not stored again).
Each file holds the pipeline's entity column, ``label_time`` (UTC) and ``label``, and
``mlp_received_at`` (when the platform got it). Deliveries come from ``mlplatform labels NAME
--data FILE`` (:func:`store_labels`) or, for scheduled checks, from ``monitoring.labels_uri``,
which every check imports first (:func:`import_source`). A delivery is a CSV/Parquet file (or any
source URI of :mod:`mlplatform.sources`) with the pipeline's entity (``source.entity``), time
(``source.timestamp``: when the outcome was known) and label (``features.label``) columns.

Join (:func:`join_labels`): a label is matched to the *latest* request of its entity made at or
before the label's time and at most ``monitoring.label_delay_hours`` before it (pandas
``merge_asof`` by entity, direction backward, that tolerance); a label with no such request
is counted as unmatched. Requests that carry no entity key cannot be joined. Each check
evaluates the labels *received* in its window, so every label counts once, in the first check
after it arrived, however late it came.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.monitoring.requests import PREDICTION, REQUEST_TIME
from mlplatform.monitoring.state import Window
from mlplatform.settings import Settings
from mlplatform.stages import StageError

log = logging.getLogger(__name__)

LABEL_TIME, LABEL, RECEIVED_AT = "label_time", "label", "mlp_received_at"


def labels_dir(settings: Settings, pipeline: str) -> Path:
    return settings.home_dir / "labels" / pipeline


def normalize(cfg: PipelineConfig, frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """A delivery as stored: entity, ``label_time`` (UTC) and ``label``; raises
    :class:`StageError` (one line) for a missing column, a bad time or a missing label."""
    entity, when, label = cfg.source.entity, cfg.source.timestamp, cfg.features.label
    missing = [c for c in (entity, when, label) if c not in frame.columns]
    if missing:
        raise StageError(
            f"labels: {where}: missing column(s) {missing}; a delivery holds the pipeline's "
            f"entity ({entity}), time ({when}) and label ({label}) columns"
        )
    try:
        times = pd.to_datetime(frame[when], utc=True)
    except (ValueError, TypeError) as exc:
        raise StageError(f"labels: {where}: column {when!r} is not a time: {exc}") from None
    if times.isna().any() or frame[label].isna().any() or frame[entity].isna().any():
        raise StageError(
            f"labels: {where}: {entity}, {when} and {label} must not be empty "
            f"({int(times.isna().sum())} times, {int(frame[label].isna().sum())} labels, "
            f"{int(frame[entity].isna().sum())} entities are)"
        )
    out = pd.DataFrame(
        {entity: frame[entity].to_numpy(), LABEL_TIME: times, LABEL: frame[label].to_numpy()}
    )
    return out.sort_values([LABEL_TIME, entity], kind="mergesort", ignore_index=True)


def _digest(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.md5(hashed.tobytes()).hexdigest()  # noqa: S324 - a content id, not security


def store_labels(
    cfg: PipelineConfig,
    frame: pd.DataFrame,
    settings: Settings,
    where: str,
    now: datetime | None = None,
) -> dict[str, object]:
    """Store one delivery (see the module doc); ``{"rows", "file", "stored"}`` where ``stored``
    is False when the same rows were stored before."""
    rows = normalize(cfg, frame, where)
    digest = _digest(rows)[:12]
    directory = labels_dir(settings, cfg.name)
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(directory.glob(f"*-{digest}.parquet"))
    if existing:
        return {"rows": len(rows), "file": str(existing[0]), "stored": False}
    received = now or datetime.now(UTC)
    rows[RECEIVED_AT] = pd.Timestamp(received)
    target = directory / f"{received.strftime('%Y%m%dT%H%M%S%fZ')}-{digest}.parquet"
    tmp = target.with_suffix(".tmp")
    rows.to_parquet(tmp, index=False)
    tmp.replace(target)
    log.info("stored %d labels of %s in %s", len(rows), cfg.name, target)
    return {"rows": len(rows), "file": str(target), "stored": True}


def read_source(cfg: PipelineConfig, uri: str, settings: Settings) -> pd.DataFrame:
    """Every row of a labels source URI (a file, glob, ``s3://`` or ``sql+`` URI)."""
    from mlplatform.sources import read_chunks, resolve

    with tempfile.TemporaryDirectory() as staging:
        source = resolve(uri, cfg, settings, Path(staging))
        frames = [c.frame for c in read_chunks(source, settings.ingest_chunk_rows)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def import_source(cfg: PipelineConfig, settings: Settings, now: datetime) -> dict[str, object]:
    """Store ``monitoring.labels_uri``'s rows as a delivery (nothing new when unchanged)."""
    uri = cfg.monitoring.labels_uri
    if not uri:
        return {"rows": 0, "stored": False}
    return store_labels(cfg, read_source(cfg, uri, settings), settings, uri, now)


def received_in(cfg: PipelineConfig, settings: Settings, window: Window) -> pd.DataFrame:
    """The labels received in ``window`` (every delivery file whose receipt time is in it)."""
    frames = []
    for path in sorted(labels_dir(settings, cfg.name).glob("*.parquet")):
        frame = pd.read_parquet(path)
        received = pd.Timestamp(frame[RECEIVED_AT].iloc[0]) if len(frame) else None
        if received is None or received > pd.Timestamp(window.end):
            continue
        if window.start is not None and received <= pd.Timestamp(window.start):
            continue
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[cfg.source.entity, LABEL_TIME, LABEL, RECEIVED_AT])
    return pd.concat(frames, ignore_index=True)


def _key(column: pd.Series) -> pd.Series:
    """Entity keys compared as text (a CSV reads 42, the request log may hold "42")."""
    return column.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))


def join_labels(
    requests: pd.DataFrame, labels: pd.DataFrame, entity: str, delay_hours: float
) -> tuple[pd.DataFrame, int]:
    """``(joined, unmatched)``: each label with the prediction of the request it belongs to
    (see the module doc), and how many labels found no request."""
    if labels.empty:
        return pd.DataFrame(columns=[entity, LABEL_TIME, LABEL, REQUEST_TIME, PREDICTION]), 0
    keyed = requests[requests[entity].notna()].copy()
    keyed["_key"] = _key(keyed[entity])
    left = labels.copy()
    left["_key"] = _key(left[entity])
    left = left.sort_values(LABEL_TIME, kind="mergesort")
    right = keyed[["_key", REQUEST_TIME, PREDICTION]].sort_values(REQUEST_TIME, kind="mergesort")
    left[LABEL_TIME] = pd.to_datetime(left[LABEL_TIME], utc=True).astype("datetime64[ns, UTC]")
    right[REQUEST_TIME] = right[REQUEST_TIME].astype("datetime64[ns, UTC]")
    joined = pd.merge_asof(
        left,
        right,
        left_on=LABEL_TIME,
        right_on=REQUEST_TIME,
        by="_key",
        direction="backward",
        tolerance=pd.Timedelta(timedelta(hours=delay_hours)),
    )
    matched = joined[joined[REQUEST_TIME].notna()].drop(columns="_key")
    return matched.reset_index(drop=True), int(len(joined) - len(matched))

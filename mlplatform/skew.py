"""Training/serving skew: do the online features equal the offline point-in-time latest ones?

Serving reads features from Feast's online store (SQLite or Redis); training reads them from the
offline store through a point-in-time join. Both must say the same for the same entity, or a model
is served other inputs than it was trained on.

Contract: ``check_skew(cfg, settings, sample=100, seed=0)`` takes up to ``sample`` entities of the
pipeline's feature view (a seeded random sample of those in its offline source), and for each one

* *offline*: Feast ``get_historical_features`` as of that entity's newest event time in the
  offline source (the point-in-time latest row; TTL and duplicate rules are Feast's, as for a
  training set),
* *online*: Feast ``get_online_features`` for the entity,

and compares every feature of the view (numbers as float32, the type both stores keep; both null is
equal). It returns a :class:`SkewReport`; :func:`assert_no_skew` raises :class:`SkewDetected`
(a :class:`~mlplatform.stages.StageError`) whose one line counts the differences and shows the
first few as ``entity=..: feature online=.. offline=..``; ``report.lines()`` is the full diff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings
from mlplatform.stages import StageError

#: mismatches quoted in the one-line error
SHOWN_IN_ERROR = 3


@dataclass(frozen=True)
class Mismatch:
    """One feature of one entity that the two stores disagree on."""

    entity: Any
    feature: str
    online: Any
    offline: Any


@dataclass
class SkewReport:
    """The outcome of :func:`check_skew`."""

    view: str
    entity_column: str
    entities: int
    features: list[str]
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self) -> str:
        compared = f"{self.entities} entities x {len(self.features)} features of {self.view}"
        if self.ok:
            return f"skew: none: online equals offline for {compared}"
        return (
            f"skew: {len(self.mismatches)} value(s) differ between online and offline ({compared})"
        )

    def lines(self) -> list[str]:
        """A table: entity, feature, online, offline (one line per mismatch)."""
        head = f"{self.entity_column:>12}  {'feature':<20} {'online':>16} {'offline':>16}"
        rows = [
            f"{_show(m.entity):>12}  {m.feature:<20} {_show(m.online):>16} {_show(m.offline):>16}"
            for m in self.mismatches
        ]
        return [head, *rows] if rows else []


class SkewDetected(StageError):
    """Online and offline features differ; ``report`` holds every difference."""

    def __init__(self, report: SkewReport) -> None:
        shown = "; ".join(
            f"{report.entity_column}={_show(m.entity)}: {m.feature} online={_show(m.online)} "
            f"offline={_show(m.offline)}"
            for m in report.mismatches[:SHOWN_IN_ERROR]
        )
        more = len(report.mismatches) - SHOWN_IN_ERROR
        super().__init__(
            f"{report.summary()}: {shown}" + (f"; and {more} more" if more > 0 else "")
        )
        self.report = report


def _show(value: Any) -> str:
    if _is_null(value):
        return "null"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def values_equal(online: Any, offline: Any, numeric: bool) -> bool:
    """Equal as the stores keep them: both null, float32-equal numbers, or equal text."""
    if _is_null(online) or _is_null(offline):
        return _is_null(online) and _is_null(offline)
    if numeric:
        a, b = np.float32(online), np.float32(offline)
        return bool(a == b or (math.isnan(a) and math.isnan(b)))
    return str(online) == str(offline)


def _offline_rows(store, cfg: PipelineConfig) -> pd.DataFrame:
    """(entity, event time) of every row of the view's offline source."""
    view = store.get_feature_view(cfg.features.view)
    path = getattr(view.batch_source, "path", None)
    if not path or not Path(path).exists():
        raise StageError(
            f"skew: feature view {cfg.features.view!r} has no offline data at {path}: "
            "run the pipeline (features stage) first"
        )
    columns = [cfg.source.entity, view.batch_source.timestamp_field or cfg.source.timestamp]
    frame = pd.read_parquet(path, columns=columns)
    frame.columns = ["entity", "ts"]
    return frame


def sample_entities(rows: pd.DataFrame, sample: int, seed: int = 0) -> pd.DataFrame:
    """Up to ``sample`` entities of ``rows`` (columns ``entity``, ``ts``), seeded and sorted,
    each with its newest event time ``ts``."""
    latest = rows.groupby("entity", as_index=False)["ts"].max()
    if len(latest) > sample:
        latest = latest.sample(n=sample, random_state=seed)
    return latest.sort_values("entity", ignore_index=True)


def check_skew(
    cfg: PipelineConfig, settings: Settings, sample: int = 100, seed: int = 0
) -> SkewReport:
    """Compare online with offline point-in-time latest features (see the module doc)."""
    from mlplatform.stages.features import feature_store

    if sample < 1:
        raise StageError(f"skew: --sample must be at least 1 (got {sample})")
    store = feature_store(cfg, settings)
    try:
        store.get_feature_view(cfg.features.view)
    except Exception:  # FeatureViewNotFoundException: nothing applied yet
        raise StageError(
            f"skew: no feature view {cfg.features.view!r} in the {cfg.name} feature store: "
            "run the pipeline (features stage) first"
        ) from None
    picked = sample_entities(_offline_rows(store, cfg), sample, seed)
    entity, features = cfg.source.entity, cfg.features.all
    refs = [f"{cfg.features.view}:{f}" for f in features]
    entity_df = pd.DataFrame(
        {entity: picked["entity"].astype("int64"), "event_timestamp": picked["ts"]}
    )
    offline = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    offline = offline.drop_duplicates(subset=[entity], keep="last").set_index(entity)
    rows = [{entity: int(e)} for e in entity_df[entity]]
    online = store.get_online_features(features=refs, entity_rows=rows).to_df().set_index(entity)
    report = SkewReport(cfg.features.view, entity, len(entity_df), list(features))
    for key in entity_df[entity]:
        for name in features:
            on = online.at[key, name] if key in online.index else None
            off = offline.at[key, name] if key in offline.index else None
            if not values_equal(on, off, numeric=name in cfg.features.numeric):
                report.mismatches.append(Mismatch(int(key), name, _plain(on), _plain(off)))
    return report


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def assert_no_skew(
    cfg: PipelineConfig, settings: Settings, sample: int = 100, seed: int = 0
) -> SkewReport:
    """:func:`check_skew`, raising :class:`SkewDetected` on any difference."""
    report = check_skew(cfg, settings, sample, seed)
    if not report.ok:
        raise SkewDetected(report)
    return report

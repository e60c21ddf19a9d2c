"""One monitor check of a pipeline: drift of recent inputs, the live metric on delayed labels.

``run_check(cfg, out_dir, settings, run)``:

* **reference** = the champion's training set (its ``training_set_uri`` lineage tag,
  :mod:`mlplatform.monitoring.champion`); no champion yet: skipped with the reason.
* **current** = the request-log rows of the champion's model made in the check's window (after
  the previous check, :mod:`mlplatform.monitoring.state`), plus the newest validated batch when
  it was validated in the window and is not the champion's own training data.
* **drift** (:mod:`mlplatform.monitoring.drift`) on ``features.numeric``/``categorical`` when
  current has at least ``monitoring.min_rows`` rows; the HTML report goes to
  ``out_dir/reports/drift.html``.
* **live metric**: the labels received in the window (``monitoring.labels_uri`` imported
  first), joined to the request log (:mod:`mlplatform.monitoring.labels`), scored with
  ``gate.metric`` when at least ``min_rows`` labels joined, and compared with the champion's
  hold-out metric.
* Neither part has ``min_rows`` rows: :class:`NotEnoughRows` (the task is skipped with the
  reason; the window is not advanced, so those rows count next time).

The check is **triggered** when the drift share reaches ``monitoring.drift_share`` or the live
metric is worse than the champion's hold-out metric by more than ``monitoring.max_metric_drop``;
``reason`` says which, in one line. The figures go to MLflow against the champion version, the
result to the state file (``mlplatform status``) and to ``out_dir/drift.json``.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.monitoring import champion as champions
from mlplatform.monitoring import labels as label_store
from mlplatform.monitoring.drift import compute_drift
from mlplatform.monitoring.requests import PREDICTION, request_rows
from mlplatform.monitoring.state import Window, read_state, window_for, write_state
from mlplatform.scoring import metric_value
from mlplatform.settings import Settings
from mlplatform.stages import StageSkipped
from mlplatform.storage import to_path, to_uri

log = logging.getLogger(__name__)

REPORT_NAME = "drift.html"


class NotEnoughRows(StageSkipped):
    """Too few rows to judge drift or the live metric; the check is skipped with the reason."""


def newest_batch(
    cfg: PipelineConfig, settings: Settings, window: Window, champion_data: str | None
) -> tuple[pd.DataFrame | None, str | None]:
    """``(rows, data_version)`` of the newest validated batch when it was validated in
    ``window`` and is not the champion's training data; ``(None, None)`` otherwise."""
    marker = to_path(settings.storage) / cfg.name / "last_validated.json"
    try:
        info = json.loads(marker.read_text())
        validated = datetime.fromtimestamp(marker.stat().st_mtime, UTC)
    except (FileNotFoundError, ValueError):
        return None, None
    if validated > window.end or (window.start is not None and validated <= window.start):
        return None, None
    version = info.get("data_version")
    if version and version == champion_data:
        return None, None
    try:
        return pd.read_parquet(to_path(info["data_uri"])), version
    except (KeyError, OSError, ValueError) as exc:
        log.warning("newest validated batch not read (%s): %s", marker, exc)
        return None, None


def _live_metric(
    cfg: PipelineConfig, settings: Settings, window: Window
) -> tuple[pd.DataFrame, int, int]:
    """``(joined labels, labels received, unmatched)`` of the labels received in ``window``."""
    imported = label_store.import_source(cfg, settings, window.end)
    if imported.get("stored"):
        log.info("imported %s labels from monitoring.labels_uri", imported["rows"])
    labels = label_store.received_in(cfg, settings, window)
    if labels.empty:
        return labels, 0, 0
    times = pd.to_datetime(labels[label_store.LABEL_TIME], utc=True)
    delay = timedelta(hours=cfg.monitoring.label_delay_hours)
    span = Window(
        (times.min() - delay - timedelta(microseconds=1)).to_pydatetime(),
        times.max().to_pydatetime(),
    )
    requests = request_rows(
        settings.request_log_dir,
        cfg.serving.model_name,
        span,
        cfg.features.all,
        cfg.source.entity,
    )
    joined, unmatched = label_store.join_labels(
        requests, labels, cfg.source.entity, cfg.monitoring.label_delay_hours
    )
    return joined, len(labels), unmatched


def _metric_drop(higher_is_better: bool, baseline: float, live: float) -> float:
    """How much worse ``live`` is than ``baseline`` (positive: worse)."""
    return (baseline - live) if higher_is_better else (live - baseline)


def run_check(
    cfg: PipelineConfig,
    out_dir: Path,
    settings: Settings,
    run: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run one check (see the module doc); returns its result (a small JSON-able dict)."""
    mon = cfg.monitoring
    now = now or datetime.now(UTC)
    window = window_for(read_state(settings, cfg.name), run, now)
    champion = champions.find_champion(cfg, settings)
    if champion is None:
        raise StageSkipped(
            f"monitor {cfg.name}: model {cfg.serving.model_name!r} has no champion yet: nothing "
            "to monitor"
        )
    if not champion.training_set_uri:
        raise StageSkipped(
            f"monitor {cfg.name}: champion v{champion.version} has no training_set_uri tag: no "
            "reference data"
        )
    features = cfg.features.all
    requests = request_rows(
        settings.request_log_dir, champion.model_name, window, features, cfg.source.entity
    )
    batch, batch_version = newest_batch(cfg, settings, window, champion.data_version)
    parts = [requests[features]] + ([batch[features]] if batch is not None else [])
    current = pd.concat(parts, ignore_index=True)
    joined, received, unmatched = _live_metric(cfg, settings, window)

    result: dict[str, Any] = {
        "checked_at": now.isoformat(),
        "window_start": window.start.isoformat() if window.start else None,
        "window_end": window.end.isoformat(),
        "model_name": champion.model_name,
        "champion_version": champion.version,
        "rows_requests": len(requests),
        "rows_batch": 0 if batch is None else len(batch),
        "batch_version": batch_version,
        "rows_current": len(current),
        "drift_share": None,
        "drifted_features": [],
        "report": None,
        "metric": cfg.gate.metric,
        "live_metric": None,
        "champion_metric": champion.holdout_metric,
        "labels_received": received,
        "label_rows": len(joined),
        "labels_unmatched": unmatched,
        "notes": [],
    }
    reasons: list[str] = []
    if len(current) >= mon.min_rows:
        reference = pd.read_parquet(to_path(champion.training_set_uri), columns=features)
        drift = compute_drift(
            reference,
            current,
            cfg.features.numeric,
            cfg.features.categorical,
            mon.drift_share,
            out_dir / "reports" / REPORT_NAME,
        )
        result |= {
            "drift_share": round(drift.share, 4),
            "drifted_features": drift.drifted,
            "drift_scores": {k: round(v, 6) for k, v in drift.scores.items()},
            "drift_methods": drift.methods,
            "rows_reference": drift.rows_reference,
            "report": to_uri(drift.report) if drift.report else None,
            "report_offline": drift.offline,
        }
        if drift.share >= mon.drift_share:
            reasons.append(
                f"drift: {len(drift.drifted)} of {len(features)} features drifted (share "
                f"{drift.share:.2f} >= {mon.drift_share}): {', '.join(drift.drifted)}"
            )
    else:
        result["notes"].append(
            f"drift not checked: {len(current)} current rows < monitoring.min_rows {mon.min_rows}"
        )

    if len(joined) >= mon.min_rows:
        live = metric_value(
            cfg.gate.metric,
            joined[label_store.LABEL].to_numpy(),
            joined[PREDICTION].to_numpy(dtype="float64"),
        )
        result["live_metric"] = round(live, 6) if math.isfinite(live) else None
        baseline = champion.holdout_metric
        if math.isfinite(live) and baseline is not None:
            drop = _metric_drop(cfg.gate.higher_is_better, baseline, live)
            result["metric_drop"] = round(drop, 6)
            if drop > mon.max_metric_drop:
                reasons.append(
                    f"metric drop: {cfg.gate.metric} {live:.4f} on {len(joined)} labelled "
                    f"requests vs champion v{champion.version}'s hold-out {baseline:.4f} (worse "
                    f"by {drop:.4f} > monitoring.max_metric_drop {mon.max_metric_drop})"
                )
        elif not math.isfinite(live):
            result["notes"].append(
                f"live {cfg.gate.metric} is not a number (one class, or predictions missing)"
            )
    elif received:
        result["notes"].append(
            f"live metric not computed: {len(joined)} labels joined to requests "
            f"({unmatched} unmatched) < monitoring.min_rows {mon.min_rows}"
        )

    if result["drift_share"] is None and result["live_metric"] is None:
        raise NotEnoughRows(
            f"monitor {cfg.name}: too few rows to judge: {len(current)} requests/batch rows "
            f"and {len(joined)} joined labels since "
            f"{window.start.isoformat() if window.start else 'the start'}, "
            f"monitoring.min_rows is {mon.min_rows}"
        )
    result["triggered"] = bool(reasons)
    result["reason"] = "; ".join(reasons) if reasons else _calm(result, mon.drift_share)
    result["mlflow_run_id"] = champions.log_check(cfg, settings, champion, run, result)
    (out_dir / "drift.json").write_text(json.dumps(result, indent=2, default=str))
    write_state(settings, cfg.name, run, window, result)
    log.info("monitor %s: %s", cfg.name, result["reason"])
    return result


def _calm(result: dict[str, Any], threshold: float) -> str:
    """The one line of a check that crossed nothing."""
    parts = []
    if result["drift_share"] is not None:
        parts.append(f"drift share {result['drift_share']:.2f} < {threshold}")
    if result.get("metric_drop") is not None:
        parts.append(f"{result['metric']} drop {result['metric_drop']:.4f} within the allowed")
    return "no threshold crossed: " + ", ".join(parts)

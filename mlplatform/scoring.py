"""Score a SavedModel on a DataFrame of raw features, and the gate's metrics.

The SavedModel contract (see ``training/``): ``serving_default`` takes each raw feature by name as a
rank-1 tensor and returns ``{"score": [N]}`` (classifier) or ``{"prediction": [N]}`` (regressor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.config import PipelineConfig


def find_saved_model(root: Path) -> Path:
    """The directory under ``root`` (or ``root`` itself) holding ``saved_model.pb``."""
    if (root / "saved_model.pb").exists():
        return root
    hits = sorted(root.rglob("saved_model.pb"), key=lambda p: len(p.parts))
    if not hits:
        raise FileNotFoundError(f"no saved_model.pb under {root}")
    return hits[0].parent


#: how a missing categorical value is fed to a model (``training.model.MISSING_CATEGORY``: OOV)
MISSING_CATEGORY = ""


def feature_columns(cfg: PipelineConfig, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's inputs from raw feature columns: float32 with NaN for a missing numeric value,
    strings with ``MISSING_CATEGORY`` for a missing category (never ``"None"``)."""
    columns = {
        c: pd.to_numeric(df[c]).to_numpy(dtype="float32", na_value=np.nan)
        for c in cfg.features.numeric
    }
    for c in cfg.features.categorical:
        text = df[c].astype(str).to_numpy(dtype=object)  # str(v) of each value, vectorized
        text[df[c].isna().to_numpy()] = MISSING_CATEGORY
        columns[c] = text.astype(str)
    return columns


def feature_tensors(cfg: PipelineConfig, df: pd.DataFrame) -> dict:
    import tensorflow as tf

    return {name: tf.constant(col) for name, col in feature_columns(cfg, df).items()}


def predict_frame(saved_model_dir: Path, cfg: PipelineConfig, df: pd.DataFrame) -> np.ndarray:
    """Run ``serving_default`` on ``df``; returns the score/prediction vector."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    out = fn(**feature_tensors(cfg, df))
    key = "score" if "score" in out else next(iter(out))
    return out[key].numpy().reshape(-1)


def metric_value(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The gate's metric; NaN when it is undefined (a non-finite prediction, or AUC on one
    class), never an exception."""
    from sklearn import metrics

    y_pred = np.asarray(y_pred, dtype=np.float64)
    if not np.isfinite(y_pred).all() or (metric == "auc" and len(np.unique(y_true)) < 2):
        return float("nan")
    if metric == "auc":
        return float(metrics.roc_auc_score(y_true, y_pred))
    if metric == "accuracy":
        return float(metrics.accuracy_score(y_true, (y_pred >= 0.5).astype(int)))
    if metric == "rmse":
        return float(np.sqrt(metrics.mean_squared_error(y_true, y_pred)))
    if metric == "mae":
        return float(metrics.mean_absolute_error(y_true, y_pred))
    raise ValueError(f"unknown metric {metric!r}")

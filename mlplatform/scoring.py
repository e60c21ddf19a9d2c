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


def feature_tensors(cfg: PipelineConfig, df: pd.DataFrame) -> dict:
    import tensorflow as tf

    inputs = {c: tf.constant(df[c].to_numpy(dtype="float32")) for c in cfg.features.numeric}
    inputs |= {c: tf.constant(df[c].astype(str).to_numpy()) for c in cfg.features.categorical}
    return inputs


def predict_frame(saved_model_dir: Path, cfg: PipelineConfig, df: pd.DataFrame) -> np.ndarray:
    """Run ``serving_default`` on ``df``; returns the score/prediction vector."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    out = fn(**feature_tensors(cfg, df))
    key = "score" if "score" in out else next(iter(out))
    return out[key].numpy().reshape(-1)


def metric_value(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn import metrics

    if metric == "auc":
        return float(metrics.roc_auc_score(y_true, y_pred))
    if metric == "accuracy":
        return float(metrics.accuracy_score(y_true, (y_pred >= 0.5).astype(int)))
    if metric == "rmse":
        return float(np.sqrt(metrics.mean_squared_error(y_true, y_pred)))
    if metric == "mae":
        return float(metrics.mean_absolute_error(y_true, y_pred))
    raise ValueError(f"unknown metric {metric!r}")

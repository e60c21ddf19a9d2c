"""The champion the monitor judges, and where its results go in MLflow.

:func:`find_champion`: the model version with alias ``champion`` of ``serving.model_name``; its
reference data is the training set named by its lineage tag ``training_set_uri``, its baseline
metric the hold-out metric its training run logged (``holdout_<gate.metric>``; the gate's tag
``gate_<metric>`` on the version when the run has none).

:func:`log_check`: one MLflow run per check in the pipeline's experiment (run name
``monitor <run>``; a retry of the same Airflow run logs to the same MLflow run; tags ``mlplatform.kind=monitor``, ``model_name``, ``model_version``) with the
figures: ``drift_share``, ``drifted_features``, ``rows_current``, ``rows_reference``,
``drift_score.<feature>`` per feature, and, when labels were joined, ``live_<metric>``,
``label_rows`` and ``metric_drop``; the check's JSON summary is its artifact ``drift.json``.
The champion version gets tags ``last_drift_share``, ``last_drift_at``, ``last_drifted_features``,
``last_drift_run`` (and ``last_live_<metric>``), so the registry UI shows the latest result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings

KIND_TAG = "mlplatform.kind"


@dataclass(frozen=True)
class Champion:
    model_name: str
    version: int
    run_id: str | None
    training_set_uri: str | None
    holdout_metric: float | None
    data_version: str | None


def find_champion(cfg: PipelineConfig, settings: Settings) -> Champion | None:
    """The serving model's champion version (see the module doc), or None without one."""
    from mlflow.exceptions import MlflowException

    from mlplatform.stages.registry import CHAMPION, client

    c = client(settings)
    name = cfg.serving.model_name
    try:
        mv = c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    tags = mv.tags or {}
    baseline = None
    if mv.run_id:
        try:
            baseline = c.get_run(mv.run_id).data.metrics.get(f"holdout_{cfg.gate.metric}")
        except MlflowException:
            baseline = None
    if baseline is None and tags.get(f"gate_{cfg.gate.metric}"):
        baseline = float(tags[f"gate_{cfg.gate.metric}"])
    return Champion(
        model_name=name,
        version=int(mv.version),
        run_id=mv.run_id,
        training_set_uri=tags.get("training_set_uri"),
        holdout_metric=baseline,
        data_version=tags.get("data_version"),
    )


def _quoted(text: str) -> str:
    """``text`` inside a single-quoted MLflow filter string."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def log_check(
    cfg: PipelineConfig, settings: Settings, champion: Champion, run: str, result: dict[str, Any]
) -> str:
    """Log one check's figures (see the module doc); returns the MLflow run id."""
    import mlflow

    from mlplatform.stages.registry import client
    from mlplatform.stages.train import ensure_experiment

    c = client(settings)
    experiment_id = ensure_experiment(settings, cfg.name)
    tags = {
        KIND_TAG: "monitor",
        "model_name": champion.model_name,
        "model_version": str(champion.version),
        "airflow_run_id": run,
        "triggered": str(bool(result.get("triggered"))),
    }
    if result.get("reason"):
        tags["reason"] = str(result["reason"])[:5000]
    earlier = c.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = 'monitor' and tags.airflow_run_id = '{_quoted(run)}'",
        max_results=1,
    )
    if earlier:  # a retried check logs to the run of its first try
        run_id = earlier[0].info.run_id
        for key, value in tags.items():
            c.set_tag(run_id, key, value)
    else:
        run_id = c.create_run(experiment_id, run_name=f"monitor {run}", tags=tags).info.run_id
    metrics: dict[str, float] = {}
    for key in ("drift_share", "rows_current", "rows_reference", "label_rows", "metric_drop"):
        if _finite(result.get(key)):
            metrics[key] = float(result[key])
    if result.get("drift_share") is not None:
        metrics["drifted_features"] = float(len(result.get("drifted_features") or []))
    for feature, score in (result.get("drift_scores") or {}).items():
        if _finite(score):
            metrics[f"drift_score.{feature}"] = float(score)
    if _finite(result.get("live_metric")):
        metrics[f"live_{cfg.gate.metric}"] = float(result["live_metric"])
    try:
        mlflow.set_tracking_uri(settings.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            if metrics:
                mlflow.log_metrics(metrics)
            mlflow.log_dict(result, "drift.json")
    except Exception:
        c.set_terminated(run_id, "FAILED")
        raise
    version = str(champion.version)
    version_tags = {"last_drift_at": str(result.get("checked_at")), "last_drift_run": run_id}
    if result.get("drift_share") is not None:
        version_tags["last_drift_share"] = f"{result['drift_share']:.4f}"
        version_tags["last_drifted_features"] = ",".join(result.get("drifted_features") or [])
    if _finite(result.get("live_metric")):
        version_tags[f"last_live_{cfg.gate.metric}"] = f"{result['live_metric']:.4f}"
    for key, value in version_tags.items():
        c.set_model_version_tag(champion.model_name, version, key, value)
    return run_id

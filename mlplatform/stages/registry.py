"""Register, gate and promote: MLflow model versions with aliases, and the TF Serving layout.

Contracts:

* ``register(cfg, model_uri, run_id, tags, settings)`` creates a model version of the registered
  model ``serving.model_name`` from the training run's logged SavedModel, tags it with lineage, and
  points alias ``challenger`` at it. Idempotent: a run registers at most one version.
* ``gate(cfg, version, holdout_uri, settings)`` scores challenger and champion on the same hold-out
  with the config's metric; raises :class:`GateRefused` (one line: metric, values, threshold) when
  the challenger is below the floor or regresses more than allowed. No champion: only the floor.
* ``promote(cfg, version, settings)`` publishes the registered SavedModel as TF Serving version
  ``<version>`` (atomic directory rename), labels it ``stable`` in ``models.config`` and moves alias
  ``champion``. A failure before the label change leaves the served version and champion as they were.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.scoring import find_saved_model, metric_value, predict_frame
from mlplatform.settings import Settings
from mlplatform.stages import GateRefused, StageError
from mlplatform.storage import to_path

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"


def client(settings: Settings):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def alias_version(settings: Settings, model_name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client(settings).get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def register(
    cfg: PipelineConfig, model_uri: str, run_id: str, tags: dict[str, str], settings: Settings
) -> dict[str, object]:
    from mlflow.exceptions import MlflowException

    c = client(settings)
    name = cfg.serving.model_name
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=cfg.description, tags={"pipeline": cfg.name})
    existing = [v for v in c.search_model_versions(f"name='{name}'") if v.run_id == run_id]
    if existing:
        mv = existing[0]
    else:
        mv = c.create_model_version(name, source=model_uri, run_id=run_id, tags=tags)
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    log.info("registered %s version %s (alias %s)", name, mv.version, CHALLENGER)
    return {"model_name": name, "model_version": int(mv.version), "mlflow_run_id": run_id, "model_uri": f"models:/{name}/{mv.version}"}


def download_saved_model(settings: Settings, model_name: str, version: int, dst: Path) -> Path:
    """Fetch a registered version's artifact and return its SavedModel directory."""
    import mlflow

    client(settings)
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=str(dst))
    return find_saved_model(Path(local))


def gate(cfg: PipelineConfig, version: int, holdout_uri: str, settings: Settings) -> dict[str, object]:
    name, g = cfg.serving.model_name, cfg.gate
    holdout = pd.read_parquet(to_path(holdout_uri))
    y = holdout[cfg.features.label].to_numpy()
    champion = alias_version(settings, name, CHAMPION)
    with tempfile.TemporaryDirectory() as tmp:
        challenger_dir = download_saved_model(settings, name, version, Path(tmp) / "challenger")
        challenger_value = metric_value(g.metric, y, predict_frame(challenger_dir, cfg, holdout))
        champion_value = None
        if champion is not None and champion != version:
            champion_dir = download_saved_model(settings, name, champion, Path(tmp) / "champion")
            champion_value = metric_value(g.metric, y, predict_frame(champion_dir, cfg, holdout))
    client(settings).set_model_version_tag(name, str(version), f"gate_{g.metric}", f"{challenger_value:.4f}")
    sign = 1 if g.higher_is_better else -1
    result = {
        "metric": g.metric,
        "challenger_version": version,
        "challenger": round(challenger_value, 4),
        "champion_version": champion,
        "champion": None if champion_value is None else round(champion_value, 4),
        "holdout_rows": len(holdout),
    }
    if g.min is not None and sign * (challenger_value - g.min) < 0:
        bound = "floor" if g.higher_is_better else "ceiling"
        raise GateRefused(
            f"gate refused {name} v{version}: {g.metric}={challenger_value:.4f} is past the {bound} {g.min} on {len(holdout)} hold-out rows"
        )
    if champion_value is not None and sign * (challenger_value - champion_value) < -g.max_regression:
        raise GateRefused(
            f"gate refused {name} v{version}: {g.metric}={challenger_value:.4f} vs champion v{champion} "
            f"{champion_value:.4f} regresses more than the allowed {g.max_regression} on {len(holdout)} hold-out rows"
        )
    log.info("gate passed: %s", result)
    return {**result, "decision": "promote"}


def promote(cfg: PipelineConfig, version: int, settings: Settings) -> dict[str, object]:
    from serving import layout

    name = cfg.serving.model_name
    base = settings.models_dir
    base.mkdir(parents=True, exist_ok=True)
    previous = layout.served_version(base, name)
    if version not in layout.list_versions(base, name):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                src = download_saved_model(settings, name, version, Path(tmp))
            except FileNotFoundError as exc:
                raise StageError(f"promote: registered {name} v{version} holds no SavedModel: {exc}") from None
            layout.publish_version(base, name, version, src)
    layout.set_label(base, name, "stable", version)
    client(settings).set_registered_model_alias(name, CHAMPION, str(version))
    log.info("promoted %s v%s (previously served: %s)", name, version, previous)
    return {"model_name": name, "served_version": version, "previous_version": previous, "model_base": str(base)}

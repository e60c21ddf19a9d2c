"""Register, gate and promote: MLflow model versions with aliases, and the TF Serving layout.

Contracts:

* ``register(cfg, model_uri, run_id, tags, settings)`` creates a model version of the registered
  model ``serving.model_name`` from the training run's logged SavedModel, tags it with lineage, and
  points alias ``challenger`` at it. Idempotent: a run registers at most one version.
* ``gate(cfg, version, holdout_uri, settings)`` scores challenger and champion on the same hold-out
  with the config's metric; raises :class:`GateRefused` (one line: metric, values, threshold) when
  the challenger is below the floor or regresses more than allowed. No champion: only the floor.
* ``promote(cfg, version, settings, candidate_dir)`` publishes the infra-validated SavedModel as
  TF Serving version ``<version>`` (atomic directory rename), labels it ``stable`` in
  ``models.config`` and moves alias ``champion`` (or ``canary`` for both with ``serving.canary``).
  A failure before the label change leaves the served version and champion as they were.
* ``rollback(model_name, settings, to_version)`` points ``stable`` and ``champion`` back at the
  previous published version (or the one given) in one config rewrite: seconds, no restart.
"""

from __future__ import annotations

import logging
import os
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
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
    return {
        "model_name": name,
        "model_version": int(mv.version),
        "mlflow_run_id": run_id,
        "model_uri": f"models:/{name}/{mv.version}",
    }


def download_saved_model(settings: Settings, model_name: str, version: int, dst: Path) -> Path:
    """Fetch a registered version's artifact and return its SavedModel directory."""
    import mlflow

    client(settings)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{version}", dst_path=str(dst)
    )
    return find_saved_model(Path(local))


def _score(
    cfg: PipelineConfig, saved_model: Path, holdout: pd.DataFrame
) -> tuple[float, dict[str, float]]:
    """Overall metric and, for each ``gate.slices`` value with enough rows, the slice metric."""
    g = cfg.gate
    y = holdout[cfg.features.label].to_numpy()
    pred = predict_frame(saved_model, cfg, holdout)
    overall = metric_value(g.metric, y, pred)
    slices: dict[str, float] = {}
    for column in g.slices:
        for value, idx in holdout.groupby(column).indices.items():
            if len(idx) < g.min_slice_rows or (g.metric == "auc" and len(set(y[idx])) < 2):
                continue
            slices[f"{column}={value}"] = metric_value(g.metric, y[idx], pred[idx])
    return overall, slices


def gate(
    cfg: PipelineConfig, version: int, holdout_uri: str, settings: Settings
) -> dict[str, object]:
    name, g = cfg.serving.model_name, cfg.gate
    holdout = pd.read_parquet(to_path(holdout_uri))
    champion = alias_version(settings, name, CHAMPION)
    with tempfile.TemporaryDirectory() as tmp:
        challenger_value, challenger_slices = _score(
            cfg, download_saved_model(settings, name, version, Path(tmp) / "c"), holdout
        )
        champion_value, champion_slices = None, {}
        if champion is not None and champion != version:
            champion_value, champion_slices = _score(
                cfg, download_saved_model(settings, name, champion, Path(tmp) / "p"), holdout
            )
    client(settings).set_model_version_tag(
        name, str(version), f"gate_{g.metric}", f"{challenger_value:.4f}"
    )
    sign = 1 if g.higher_is_better else -1
    result = {
        "metric": g.metric,
        "challenger_version": version,
        "challenger": round(challenger_value, 4),
        "champion_version": champion,
        "champion": None if champion_value is None else round(champion_value, 4),
        "holdout_rows": len(holdout),
        "slices": {k: round(v, 4) for k, v in challenger_slices.items()},
    }
    where = f"on {len(holdout)} hold-out rows"
    if g.min is not None and sign * (challenger_value - g.min) < 0:
        bound = "floor" if g.higher_is_better else "ceiling"
        raise GateRefused(
            f"gate refused {name} v{version}: {g.metric}={challenger_value:.4f} is past the {bound} {g.min} {where}"
        )
    if (
        champion_value is not None
        and sign * (challenger_value - champion_value) < -g.max_regression
    ):
        raise GateRefused(
            f"gate refused {name} v{version}: {g.metric}={challenger_value:.4f} vs champion v{champion} "
            f"{champion_value:.4f} regresses more than the allowed {g.max_regression} {where}"
        )
    for key, value in challenger_slices.items():
        before = champion_slices.get(key)
        if before is not None and sign * (value - before) < -g.max_regression:
            raise GateRefused(
                f"gate refused {name} v{version}: slice {key}: {g.metric}={value:.4f} vs champion v{champion} "
                f"{before:.4f} regresses more than the allowed {g.max_regression} {where}"
            )
    log.info("gate passed: %s", result)
    return {**result, "decision": "promote"}


def promote(
    cfg: PipelineConfig, version: int, settings: Settings, candidate_dir: str | None = None
) -> dict[str, object]:
    """Publish ``candidate_dir`` (infra-validated, with warm-up file) or the registered SavedModel.

    Without ``serving.canary`` the new version becomes ``stable`` and alias ``champion``; with it,
    label and alias ``canary`` (stable and champion stay until :func:`promote_canary`).
    """
    from serving import layout

    name = cfg.serving.model_name
    base = settings.models_dir
    base.mkdir(parents=True, exist_ok=True)
    previous = layout.served_version(base, name)
    if version not in layout.list_versions(base, name):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                src = (
                    find_saved_model(Path(candidate_dir))
                    if candidate_dir
                    else download_saved_model(settings, name, version, Path(tmp))
                )
            except FileNotFoundError as exc:
                raise StageError(f"promote: {name} v{version} holds no SavedModel: {exc}") from None
            layout.publish_version(base, name, version, src)
    label, alias = ("canary", "canary") if cfg.serving.canary else ("stable", CHAMPION)
    layout.set_label(base, name, label, version)
    if label == "stable":
        layout.remove_label(base, name, "canary")
    client(settings).set_registered_model_alias(name, alias, str(version))
    log.info("promoted %s v%s as %s (previously served: %s)", name, version, label, previous)
    return {"model_name": name, "served_version": layout.served_version(base, name), "label": label,
            "version": version, "previous_version": previous, "model_base": str(base)}  # fmt: skip


def set_stable(model_name: str, version: int, settings: Settings) -> None:
    """Point label ``stable`` and alias ``champion`` at a published version; drop ``canary``."""
    from serving import layout

    base = settings.models_dir
    if version not in layout.list_versions(base, model_name):
        published = layout.list_versions(base, model_name)
        raise StageError(
            f"{model_name} v{version} is not published in {base} (published: {published or 'none'})"
        )
    layout.set_label(base, model_name, "stable", version)
    layout.remove_label(base, model_name, "canary")
    client(settings).set_registered_model_alias(model_name, CHAMPION, str(version))


def rollback(
    model_name: str, settings: Settings, to_version: int | None = None
) -> dict[str, object]:
    """Serve the previous published version (or ``to_version``) again and move ``champion`` back.

    The rolled-back version stays on disk (tag ``rolled_back``) so it can be inspected or restored.
    """
    from serving import layout

    base = settings.models_dir
    current = layout.served_version(base, model_name)
    if current is None:
        raise StageError(f"rollback: {model_name} has no served version in {base}")
    if to_version is None:
        older = [v for v in layout.list_versions(base, model_name) if v < current]
        if not older:
            raise StageError(
                f"rollback: {model_name} v{current} is the oldest published version; nothing to roll back to"
            )
        to_version = older[-1]
    set_stable(model_name, to_version, settings)
    if to_version != current:
        client(settings).set_model_version_tag(model_name, str(current), "rolled_back", "true")
    log.info("rolled back %s from v%s to v%s", model_name, current, to_version)
    return {"model_name": model_name, "from_version": current, "served_version": to_version}

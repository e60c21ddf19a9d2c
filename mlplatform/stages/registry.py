"""Register, gate and promote: MLflow model versions with aliases, and the TF Serving layout.

Contracts:

* ``register(cfg, model_uri, run_id, tags, settings)`` creates a model version of the registered
  model ``serving.model_name`` from the training run's logged SavedModel, tags it with lineage, and
  points alias ``challenger`` at it. Idempotent: a run registers at most one version.
* ``gate(cfg, version, holdout_uri, settings)`` scores challenger and champion on the same hold-out
  with the config's metric; raises :class:`GateRefused` (one line: metric, values, threshold) when
  the challenger is below the floor or regresses more than allowed. No champion: only the floor.
  A refusal is also sent as alert ``gate_refused`` with its figures (:mod:`mlplatform.alerts`).
  A challenger metric that is NaN or infinite (the model answered NaN, AUC on one class) is
  refused with the reason, never promoted and never a crash; a champion whose metric is not a
  number cannot be compared with, so the challenger is judged by the floor alone (noted in the
  result's ``champion_note``). A challenger trained on the same data, training config and trainer
  code as a version that was rolled back is refused before scoring
  (:mod:`mlplatform.stages.rolled_back`): a retrain does not undo a rollback.
* ``promote(cfg, version, settings, candidate_dir)`` publishes the infra-validated SavedModel as
  TF Serving version ``<version>`` (atomic directory rename, content sha256 recorded in the
  directory and as tag ``content_sha256``), labels it ``stable`` in ``models.config`` and moves
  alias ``champion`` (or ``canary`` for both with ``serving.canary``). An existing version
  directory is reused only if it holds the same content; otherwise (the registry and the model
  base disagree) it raises and changes nothing. A failure before the label change leaves the
  served version and champion as they were.
* ``rollback(model_name, settings, to_version)`` first checks the target (content hash, load in
  the server's loader, warm-up), then points ``stable`` and ``champion`` back at the previous
  published version (or the one given) in one config rewrite: seconds, no restart. A target that
  fails the check changes nothing.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.contracts import PromoteOutput, RegisterOutput
from mlplatform.scoring import find_saved_model, metric_value, predict_frame
from mlplatform.settings import Settings
from mlplatform.stages import GateRefused, StageError
from mlplatform.stages.rolled_back import ROLLED_BACK_TAG
from mlplatform.storage import to_path

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"
CONTENT_SHA256 = "content_sha256"  # model-version tag: the served SavedModel's content hash


def client(settings: Settings):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def ensure_registry(settings: Settings) -> None:
    """Create the registry's tables now (an embedded SQLite registry migrates on first use). Call
    before starting processes that share it: two first users of a fresh SQLite file run MLflow's
    migrations at once, and one fails (``CircularDependencyError`` / "duplicate column")."""
    client(settings).search_registered_models(max_results=1)


def alias_version(settings: Settings, model_name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client(settings).get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def register(
    cfg: PipelineConfig, model_uri: str, run_id: str, tags: dict[str, str], settings: Settings
) -> RegisterOutput:
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
        # a logged model's URI (models:/m-...) must name its model id too: an MLflow server
        # refuses the source without it (the SQLite store let it pass); mlflow.register_model
        # passes it the same way
        model_id = (
            model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        )
        mv = c.create_model_version(
            name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
        )
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
) -> tuple[float, dict[str, float], str]:
    """Overall metric, the slice metric of each ``gate.slices`` value with enough rows, and why
    the overall metric is not a finite number ("" when it is)."""
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
    return overall, slices, _why_not_finite(g.metric, y, pred, overall)


def _why_not_finite(metric: str, y: np.ndarray, pred: np.ndarray, value: float) -> str:
    if math.isfinite(value):
        return ""
    bad = int((~np.isfinite(np.asarray(pred, dtype=np.float64))).sum())
    if bad:
        return f"the model answered NaN or infinity for {bad} of {len(pred)} rows"
    if metric == "auc" and len(np.unique(y)) < 2:
        return "the hold-out holds one class only"
    return f"{metric} overflowed"


def gate(
    cfg: PipelineConfig,
    version: int,
    holdout_uri: str,
    settings: Settings,
    alert_fields: dict[str, object] | None = None,
) -> dict[str, object]:
    """Judge challenger ``version`` against the champion (see the module doc). A refusal is sent
    as alert ``gate_refused`` (:mod:`mlplatform.alerts`) with the figures it was made on and
    ``alert_fields`` (the Airflow run, the log link), then raised."""
    from mlplatform import alerts

    try:
        return _judge(cfg, version, holdout_uri, settings)
    except GateRefused as exc:
        figures = {k: v for k, v in exc.figures.items() if k != "slices"}
        alerts.send(cfg, "gate_refused", str(exc), **{**figures, **(alert_fields or {})})
        raise


def _judge(
    cfg: PipelineConfig, version: int, holdout_uri: str, settings: Settings
) -> dict[str, object]:
    from mlplatform.stages.rolled_back import IDENTITY_TAGS, rolled_back_twin

    name, g = cfg.serving.model_name, cfg.gate
    champion = alias_version(settings, name, CHAMPION)
    twin = rolled_back_twin(client(settings), name, version)
    if twin is not None:
        raise GateRefused(
            f"gate refused {name} v{version}: it was trained on the same data, training config "
            f"and trainer code as v{twin}, which was rolled back; change the data or the config, "
            f"or remove tag rolled_back from v{twin} to allow it",
            {
                "challenger_version": version,
                "champion_version": champion,
                "rolled_back_twin": twin,
                "identity": list(IDENTITY_TAGS),
            },
        )
    holdout = pd.read_parquet(to_path(holdout_uri))
    where = f"on {len(holdout)} hold-out rows"
    with tempfile.TemporaryDirectory() as tmp:
        challenger_value, challenger_slices, why = _score(
            cfg, download_saved_model(settings, name, version, Path(tmp) / "c"), holdout
        )
        client(settings).set_model_version_tag(
            name, str(version), f"gate_{g.metric}", f"{challenger_value:.4f}"
        )
        _refuse_not_finite(
            name, version, g.metric, challenger_value, challenger_slices, why, where, champion
        )
        champion_value: float | None = None
        champion_slices: dict[str, float] = {}
        champion_note: str | None = None
        if champion is not None and champion != version:
            champion_value, champion_slices, why = _score(
                cfg, download_saved_model(settings, name, champion, Path(tmp) / "p"), holdout
            )
            if why:  # nothing to compare with: the challenger is judged by the floor alone
                champion_note = f"champion v{champion}: {g.metric} is not a number ({why})"
                log.warning("gate: %s; judging the challenger by the floor alone", champion_note)
                champion_value = None
            champion_slices = {k: v for k, v in champion_slices.items() if math.isfinite(v)}
    sign = 1 if g.higher_is_better else -1
    result: dict[str, Any] = {
        "metric": g.metric,
        "challenger_version": version,
        "challenger": round(challenger_value, 4),
        "champion_version": champion,
        "champion": None if champion_value is None else round(champion_value, 4),
        "holdout_rows": len(holdout),
        "slices": {k: round(v, 4) for k, v in challenger_slices.items()},
    }
    if champion_note:
        result["champion_note"] = champion_note
    if g.threshold is not None and sign * (challenger_value - g.threshold) < 0:
        bound = "floor" if g.higher_is_better else "ceiling"
        raise GateRefused(
            f"gate refused {name} v{version}: {g.metric}={challenger_value:.4f} is past the {bound} {g.threshold} {where}",
            {**result, bound: g.threshold},
        )
    if (
        champion_value is not None
        and sign * (challenger_value - champion_value) < -g.max_regression
    ):
        raise GateRefused(
            f"gate refused {name} v{version}: {g.metric}={challenger_value:.4f} vs champion v{champion} "
            f"{champion_value:.4f} regresses more than the allowed {g.max_regression} {where}",
            {**result, "max_regression": g.max_regression},
        )
    for key, value in challenger_slices.items():
        before = champion_slices.get(key)
        if before is not None and sign * (value - before) < -g.max_regression:
            raise GateRefused(
                f"gate refused {name} v{version}: slice {key}: {g.metric}={value:.4f} vs champion v{champion} "
                f"{before:.4f} regresses more than the allowed {g.max_regression} {where}",
                {**result, "slice": key, "max_regression": g.max_regression},
            )
    log.info("gate passed: %s", result)
    return {**result, "decision": "promote"}


def _refuse_not_finite(
    name: str,
    version: int,
    metric: str,
    value: float,
    slices: dict[str, float],
    why: str,
    where: str,
    champion: int | None = None,
) -> None:
    """GateRefused when the challenger's metric, overall or on a slice, is NaN or infinite: a
    model is never promoted on a metric that is not a number."""
    figures = {
        "metric": metric,
        "challenger_version": version,
        "challenger": value,
        "champion_version": champion,
    }
    if why:
        raise GateRefused(
            f"gate refused {name} v{version}: {metric}={value} {where}: {why}; a model is never "
            "promoted on a metric that is not a number (hint: check the training log and the "
            "hold-out for values the model cannot handle)",
            figures,
        )
    for key, slice_value in slices.items():
        if not math.isfinite(slice_value):
            raise GateRefused(
                f"gate refused {name} v{version}: slice {key}: {metric}={slice_value} {where}; "
                "a model is never promoted on a metric that is not a number",
                {**figures, "slice": key, "challenger": slice_value},
            )


def _version_tag(settings: Settings, model_name: str, version: int, key: str) -> str | None:
    """A model-version tag, or None if the version or the tag does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return (client(settings).get_model_version(model_name, str(version)).tags or {}).get(key)
    except MlflowException:
        return None


def _served_or_none(base: Path, model_name: str) -> int | None:
    """The served version, or None when models.config cannot be read (it is rewritten next)."""
    from serving import layout

    try:
        return layout.served_version(base, model_name)
    except ValueError:
        return None


def _candidate(
    settings: Settings, name: str, version: int, candidate_dir: str | None, tmp: Path
) -> Path:
    """The SavedModel to publish: ``candidate_dir``'s, else the registered version's."""
    try:
        if candidate_dir:
            return find_saved_model(Path(candidate_dir))
        return download_saved_model(settings, name, version, tmp)
    except FileNotFoundError as exc:
        raise StageError(f"promote: {name} v{version} holds no SavedModel: {exc}") from None


def _publish_or_reuse(
    settings: Settings, name: str, version: int, candidate_dir: str | None
) -> str:
    """Publish the candidate as ``version``, or reuse the published one if it is the same model.

    Returns the content sha256. A version directory that exists is reused only when its files
    hash to the candidate's digest (an idempotent re-run); without ``candidate_dir`` the
    expected digest is the version's ``content_sha256`` tag (a label move), else the registered
    artifact's. Anything else raises StageError and changes nothing.
    """
    from serving import layout

    base = settings.models_dir
    published = version in layout.list_versions(base, name)
    expected = None if candidate_dir else _version_tag(settings, name, version, CONTENT_SHA256)
    with tempfile.TemporaryDirectory() as tmp:
        src = None
        if expected is None:
            src = _candidate(settings, name, version, candidate_dir, Path(tmp))
            expected = layout.saved_model_digest(src)
        if published:
            on_disk = layout.saved_model_digest(base / name / str(version))
            if on_disk != expected:
                raise StageError(
                    f"promote: {name} v{version} on disk holds a different model "
                    f"(sha256 {on_disk[:12]}… != {expected[:12]}…): the registry and the model "
                    f"base disagree; run `mlplatform doctor {name}`"
                )
            return on_disk
        if src is None:  # a label move to a version the model base no longer holds
            raise StageError(
                f"promote: {name} v{version} has content_sha256 {expected[:12]}… but is not in "
                f"the model base {base}; publish it again from its infra-validated candidate "
                f"(run the pipeline) or run `mlplatform doctor {name}`"
            )
        try:
            layout.publish_version(base, name, version, src, expected_sha256=expected)
        except (FileExistsError, ValueError) as exc:
            raise StageError(f"promote: {name} v{version}: {exc}") from None
    return expected


def promote(
    cfg: PipelineConfig, version: int, settings: Settings, candidate_dir: str | None = None
) -> PromoteOutput:
    """Publish ``candidate_dir`` (infra-validated, with warm-up file) or the registered SavedModel.

    Without ``serving.canary`` the new version becomes ``stable`` and alias ``champion``; with it,
    label and alias ``canary`` (stable and champion stay until :func:`promote_canary`). The
    content digest is recorded in the version directory and as model-version tag
    ``content_sha256``. If version ``<version>`` is already on disk with other content (the
    registry and the model base disagree, e.g. after losing the MLflow database), raises
    StageError and changes nothing.
    """
    from serving import layout

    name = cfg.serving.model_name
    base = settings.models_dir
    base.mkdir(parents=True, exist_ok=True)
    previous = _served_or_none(base, name)
    digest = _publish_or_reuse(settings, name, version, candidate_dir)
    c = client(settings)
    c.set_model_version_tag(name, str(version), CONTENT_SHA256, digest)
    label, alias = ("canary", "canary") if cfg.serving.canary else ("stable", CHAMPION)
    try:
        layout.set_label(base, name, label, version)
        if label == "stable":
            layout.remove_label(base, name, "canary")
    except ValueError as exc:
        raise StageError(
            f"promote: {name} v{version}: {exc}; run `mlplatform doctor {name}`"
        ) from None
    c.set_registered_model_alias(name, alias, str(version))
    log.info("promoted %s v%s as %s (previously served: %s)", name, version, label, previous)
    return {
        "model_name": name,
        "served_version": _served_or_none(base, name),
        "label": label,
        "version": version,
        "previous_version": previous,
        "model_base": str(base),
        "content_sha256": digest,
    }


def set_stable(model_name: str, version: int, settings: Settings) -> None:
    """Point label ``stable`` and alias ``champion`` at a published version; drop ``canary``."""
    from serving import layout

    base = settings.models_dir
    if version not in layout.list_versions(base, model_name):
        published = layout.list_versions(base, model_name)
        raise StageError(
            f"{model_name} v{version} is not published in {base} (published: {published or 'none'})"
        )
    try:
        layout.set_label(base, model_name, "stable", version)
        layout.remove_label(base, model_name, "canary")
    except ValueError as exc:
        raise StageError(f"{model_name}: {exc}; run `mlplatform doctor {model_name}`") from None
    client(settings).set_registered_model_alias(model_name, CHAMPION, str(version))


def check_servable_version(model_name: str, version: int, settings: Settings) -> dict[str, object]:
    """Check that published ``version`` can serve before anything points at it (StageError).

    Its files must hash to the digest recorded at publishing and to its MLflow
    ``content_sha256`` tag (when the registry has one), it must load with the server's loader
    and answer its warm-up records (or one ``serving_default`` call). Changes nothing.
    """
    from mlplatform.stages.infra_validate import InfraValidationFailed, check_published_version

    tag = _version_tag(settings, model_name, version, CONTENT_SHA256)
    try:
        return check_published_version(
            settings.models_dir, model_name, version, tag, what=f"cannot serve {model_name}"
        )
    except InfraValidationFailed as exc:
        raise StageError(str(exc)) from None


def rollback(
    model_name: str, settings: Settings, to_version: int | None = None
) -> dict[str, object]:
    """Serve the previous published version (or ``to_version``) again and move ``champion`` back.

    The target is checked first (:func:`check_servable_version`: content hash, load, warm-up);
    if it fails, StageError (one line) and nothing changes: label, alias and tags stay. The
    rolled-back version stays on disk (tag ``rolled_back``) so it can be inspected or restored.
    """
    from serving import layout

    base = settings.models_dir
    try:
        current = layout.served_version(base, model_name)
    except ValueError as exc:
        if to_version is None:
            raise StageError(f"rollback: {model_name}: {exc}; name the version with --to") from None
        current = None
    if current is None and to_version is None:
        raise StageError(
            f"rollback: {model_name} has no valid served version in {base}; name one with --to"
        )
    if to_version is None:
        assert current is not None  # raised above when neither is known
        older = [v for v in layout.list_versions(base, model_name) if v < current]
        if not older:
            raise StageError(
                f"rollback: {model_name} v{current} is the oldest published version; "
                "nothing to roll back to"
            )
        to_version = older[-1]
    if to_version not in layout.list_versions(base, model_name):
        published = layout.list_versions(base, model_name)
        raise StageError(
            f"{model_name} v{to_version} is not published in {base} "
            f"(published: {published or 'none'})"
        )
    try:
        checked = check_servable_version(model_name, to_version, settings)
    except StageError as exc:
        raise StageError(f"rollback refused, nothing changed: {exc}") from None
    set_stable(model_name, to_version, settings)
    if current is not None and to_version != current:
        client(settings).set_model_version_tag(model_name, str(current), ROLLED_BACK_TAG, "true")
    log.info(
        "rolled back %s from v%s to v%s (%s)", model_name, current, to_version, checked["checked"]
    )
    return {
        "model_name": model_name,
        "from_version": current,
        "served_version": to_version,
        "checked": checked["checked"],
    }
